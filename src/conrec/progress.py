"""Stage progress bars that stay readable in an 80-column terminal.

Why: rich squeezes every column of a progress line to fit the terminal and cuts the ones that do
not fit with an ellipsis, so at 80 columns the times read "0:02:…". Here the times keep their full
width, the bar takes what is left (at most 40 cells, at least a sliver), and labels stay short.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column

BAR_MAX_WIDTH = 40


def stage_progress(
    *fields: ProgressColumn | str,
    console: Console | None = None,
    label: str = "[bold]{task.description}",
    count: bool = True,
    remaining: bool = True,
    transient: bool = False,
) -> Progress:
    """``label``, a bar, ``done/total``, extra ``fields`` (columns or format strings), elapsed, remaining.

    The time columns never shrink; the bar absorbs the shortfall on narrow terminals.
    """
    columns: list[ProgressColumn] = [
        TextColumn(label, table_column=Column(no_wrap=True)),
        BarColumn(bar_width=None, table_column=Column(ratio=1, max_width=BAR_MAX_WIDTH, min_width=1)),
    ]
    if count:
        columns.append(MofNCompleteColumn(table_column=Column(no_wrap=True, justify="right")))
    columns += [TextColumn(f) if isinstance(f, str) else f for f in fields]
    columns.append(TimeElapsedColumn(table_column=Column(no_wrap=True, min_width=7)))
    if remaining:
        columns.append(TimeRemainingColumn(table_column=Column(no_wrap=True, min_width=7)))
    return Progress(*columns, console=console, transient=transient, expand=False)
