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


def test_grpo_bar_keeps_its_count_and_times_at_narrow_widths() -> None:
    """GRPO's ~40-cell status at 60 columns (and a long stage name or a 100% share at 80): rich squeezed every
    column, and the bar lost its step count and time left ("GRPO 1:f… … last reward ... 0:00:12 0:0"). The status
    text is cut instead; SFT's short status still fits whole."""
    cases = [
        (60, "GRPO 1:full", "last reward -0.062 hit 0.00 zero-adv 0%"),
        (80, "GRPO 2:positive_budget", "last reward -0.118 hit 0.12 zero-adv 100%"),
        (80, "GRPO 0:recent_neg", "last reward -0.118 hit 0.12 zero-adv 100%"),
        (50, "GRPO 2:positive_budget", "last reward -0.118 hit 0.12 zero-adv 100%"),  # status, then name cut
    ]
    for width, label, status in cases:
        line = _render(width, label, status).rstrip("\n")
        assert len(line) <= width, (width, line)
        assert "37/100" in line and line.endswith(" 0:00:00 -:--:--"), (width, line)
        assert status not in line and "…" in line, (width, line)
        assert width < 60 or "last reward" in line, (width, line)  # the status, cut, not gone
    assert "GRPO 2:positive_budget" in _render(80, "GRPO 2:positive_budget", "last reward")  # the name, whole
    sft = _render(60, "SFT", "last loss 1.889").rstrip("\n")
    assert "37/100 last loss 1.889 0:00:00 -:--:--" in sft and "…" not in sft and len(sft) <= 60, sft


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


def _results_with_cis() -> tuple[dict[str, dict[str, object]], dict[str, dict[str, float]]]:
    """Worst-case cells: the longest baseline names, negative CI bounds, every column filled."""
    metrics: dict[str, dict[str, object]] = {}
    names = ["popularity", "itemknn", "category", "sasrec", "ease", "taste_exposure", "swing", "sft", "grpo"]
    for n, model in enumerate(names):
        row: dict[str, object] = {"FHR@20": 0.2 + 0.01 * n, "FHR@20_ci": [0.181, 0.223], "HR@20": 0.3 + 0.01 * n}
        if model == "taste_exposure":
            pass  # the best baseline: reference
        else:
            row.update({"FHR@20_diff": -0.0214 + 0.01 * n, "FHR@20_diff_ci": [-0.0525, 0.0101 + 0.02 * n], "FHR@20_vs": "taste_exposure"})
        metrics[model] = row
    metrics["grpo"]["FHR@20_diff_ci"] = [0.021, 0.094]
    slates = {m: {"CandAcc@1": 0.25 + 0.01 * i} for i, m in enumerate(names)}
    return metrics, slates


def test_results_summary_fits_80_columns_without_a_tty() -> None:
    from conrec.eval.summary import summary_table

    metrics, slates = _results_with_cis()
    buf = io.StringIO()  # not a TTY: what CI, nohup and tee see
    console = Console(file=buf, width=80, color_system=None)
    assert not console.is_terminal
    console.print(summary_table(metrics, [5, 10, 20], slates))
    out = buf.getvalue()
    assert "…" not in out
    assert max(len(line) for line in out.splitlines()) <= 80
    header = next(line for line in out.splitlines() if "model" in line)
    for word in ("FHR@20 [95% CI]", "Δ vs best", "HR@20", "Cand. Acc@1"):
        assert word in header
    rows = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    te = rows["taste_exposure"]
    assert "0.250 [0.181, 0.223]" in te and "ref" in te and te.split("ref")[1].split() == ["0.350", "0.300"]
    pop = rows["popularity"]
    assert "-0.021" in pop and "-0.021*" not in pop  # CI [-0.053, 0.010] includes 0: no star
    grpo = rows["grpo"]
    assert "+0.059*" in grpo and grpo.split()[-1] == "0.330"  # CI excludes 0; its Cand. Acc@1
