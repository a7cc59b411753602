"""The end-of-run summary for a terminal or a log: one row per model, five columns, 80 columns wide.

Why its own table: the full results (every metric at every K, the CIs, the tuning, the slates) are
in ``report.md``; what a terminal shows first, often a non-TTY log squeezed to 80 columns (CI,
``nohup``, ``tee``), must stay readable there. Before, a model-per-column table was cut into cells
like ``[-0.…`` and ``popula…``. Five short columns fit: model, FHR@K with its CI, the paired
difference vs the best baseline, HR@K, and Candidate Acc@1 of the exposure-controlled evaluation.
Narrower than the table (about 65 columns), each model gets one wrapped line instead.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from conrec.eval.compare import SMALL_N, ci_label, is_reference
from conrec.eval.report import interval_text, number_or_none


def _value(row: Mapping[str, Any], key: str) -> str:
    v = number_or_none(row.get(key))
    return "–" if v is None else f"{v:.3f}"


def delta_cell(row: Mapping[str, Any], key: str) -> str:
    """``+0.021*``: the paired difference vs the best baseline; ``*`` when its CI excludes 0 on at least
    :data:`~conrec.eval.compare.SMALL_N` points (the row's ``n_samples``, where recorded); ``ref`` for the best
    baseline itself; ``–`` where no difference was computed (no baseline evaluated, or no CI)."""
    d = number_or_none(row.get(key + "_diff"))
    if d is None:
        return "ref" if is_reference(row, key) else "–"
    ci = row.get(key + "_diff_ci")
    excludes_zero = isinstance(ci, (list, tuple)) and len(ci) == 2 and (ci[0] > 0 or ci[1] < 0)
    n = number_or_none(row.get("n_samples"))
    return f"{d:+.3f}" + ("*" if excludes_zero and (n is None or n >= SMALL_N) else "")


@dataclass(frozen=True)
class SummaryTable:
    """The summary as a table, or, where the terminal is narrower than the table's shortest layout,
    one wrapped line per model. Why: rich cuts the cells of a table that cannot fit (``…``) and drops
    whole columns, so a 40-column terminal showed neither the differences nor Candidate Acc."""

    table: Table
    lines: tuple[Text, ...]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if Measurement.get(console, options.update_width(10_000), self.table).maximum <= options.max_width:
            yield self.table
            return
        yield Text(str(self.table.title), style="italic")
        yield from self.lines
        yield Text(str(self.table.caption), style="dim")


def _cells(table: Table) -> Iterator[list[str]]:
    columns = [list(col.cells) for col in table.columns]
    for r in range(table.row_count):
        yield [str(cells[r]) for cells in columns]


def summary_table(
    metrics: Mapping[str, Mapping[str, Any]], ks: Sequence[int], slates: Mapping[str, Mapping[str, Any]] | None = None
) -> SummaryTable:
    """Model | FHR@K [CI at the rows' level] | Δ vs best | HR@K | Cand. Acc@1 at the largest K (rows in ``metrics`` order)."""
    k = max(ks) if ks else 20
    fhr = f"FHR@{k}"
    level = ci_label(metrics)
    table = Table(
        title="results (full table: report.md)",
        caption=f"Δ: paired FHR difference vs the best baseline (ref); *: its {level} excludes 0 ({SMALL_N}+ points). HR: the next dislike in the "
        "top-K; Cand. Acc@1: each of that day's dislikes ranked first among its exposures",
        box=box.SIMPLE_HEAD,
        header_style="bold",
        pad_edge=False,
    )
    table.add_column("model", no_wrap=True)
    table.add_column(f"{fhr} [{level}]", justify="right", no_wrap=True)
    table.add_column("Δ vs best", justify="right", no_wrap=True)
    table.add_column(f"HR@{k}", justify="right", no_wrap=True)
    table.add_column("Cand. Acc@1", justify="right", no_wrap=True)
    for model, row in metrics.items():
        cand = _value(slates.get(model, {}), "CandAcc@1") if slates else "–"
        table.add_row(model, _value(row, fhr) + interval_text(row, fhr + "_ci"), delta_cell(row, fhr), _value(row, f"HR@{k}"), cand)
    heads = [str(col.header) for col in table.columns]
    lines = tuple(Text(f"{row[0]}: " + ", ".join(f"{h} {v}" for h, v in zip(heads[1:], row[1:]))) for row in _cells(table))
    return SummaryTable(table, lines)
