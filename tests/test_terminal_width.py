"""Progress lines and tables read well in an 80-column terminal (issue 14): nothing cut with "…"."""

from __future__ import annotations

import io

import polars as pl
from rich.console import Console

from conrec.data.analyze import render_table as analyze_table
from conrec.progress import BAR_MAX_WIDTH, stage_progress


def _render(width: int, label: str, field: str) -> str:
    buf = io.StringIO()
    console = Console(file=buf, width=width, color_system=None)
    progress = stage_progress("{task.fields[info]}", console=console, label=label)
    progress.add_task("x", total=100, completed=37, info=field)
    console.print(progress.make_tasks_table(progress.tasks))
    return buf.getvalue()


def test_progress_times_are_never_cut_at_80_columns() -> None:
    # the GRPO line of the demo: before, it rendered as "... 0:00:… 0:00:00"
    line = _render(80, "GRPO 1:some_pos", "reward -0.032 hit 0.00 zero-adv 0%")
    assert "…" not in line
    assert "37/100" in line and "reward -0.032 hit 0.00 zero-adv 0%" in line
    assert line.rstrip().endswith("-:--:--")  # remaining time: full width
    assert len(line.rstrip("\n")) <= 80


def test_progress_bar_is_capped_on_wide_terminals() -> None:
    line = _render(200, "SFT", "loss 3.120")
    bar = "".join(ch for ch in line if ch in "━╸╺ ").strip()
    assert 10 <= len(line.split("SFT", 1)[1].split("37/100")[0].strip()) <= BAR_MAX_WIDTH
    assert bar


def test_analyze_table_headers_fit_80_columns() -> None:
    table = pl.DataFrame(
        {
            "split": ["test"], "horizon_days": [14.0], "samples": [251], "mean_future_items": [12.2],
            "item_coverage": [0.326], "mean_future_categories": [5.4], "category_coverage": [0.41],
        }
    )
    buf = io.StringIO()
    Console(file=buf, width=80, color_system=None).print(analyze_table(table))
    out = buf.getvalue()
    assert "…" not in out
    for word in ("future", "items", "covered", "cats", "N days", "32.6%", "12.20"):
        assert word in out
    assert max(len(line) for line in out.splitlines()) <= 80
