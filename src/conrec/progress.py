"""Progress display that also shows life when stdout is not a terminal.

Why: rich's live progress bars only redraw on a terminal; with stdout redirected (``nohup``, CI,
a scheduler, ``> log``) they print nothing until the task ends, so a 20-minute SFT looked dead.
:class:`StageProgress` is a drop-in :class:`rich.progress.Progress`: on a terminal it is exactly
that; elsewhere it prints one plain line per unfinished task every ``interval`` seconds (from a
timer thread, so a long step still gets its line) and a last line per task when it finishes (or, unfinished,
when the display stops), in the order the tasks finish. A dumb terminal
(``TERM=dumb``: Emacs buffers, some CI runners' ptys) or ``TTY_INTERACTIVE=0`` counts as elsewhere: rich's
live display does not redraw there, so a stage showed nothing until it ended; so does a pipe or file
with ``FORCE_COLOR`` set (often in CI), where rich's bar wrote a dozen carriage-return redraws a second into
the log. Colour stays ``FORCE_COLOR``'s business (:func:`live_display`).

The interval is ``$CONREC_PROGRESS_SECONDS`` (default 30 s). The plain lines follow the bar's
columns: no remaining time where the bar has no remaining column (``remaining=False``). Where it has
one, the lines recompute it from the average pace up to the moment of printing: rich's own estimate
only changes when the task advances, so through one long step (a 10-minute baseline after fast ones)
the lines repeated "~0:00:03 left" for ten minutes. The pace counts only the steps done in this process: a
task added at a resumed step (``add_task(..., completed=500)``) did not take this process's time for those
500, and counting them gave "~0:00:16 left" for a minute's work.

:func:`stage_progress` builds the stages' bars so they stay readable in an 80-column terminal: rich
squeezes every column to fit and cuts what does not fit with an ellipsis ("0:02:…"); here the times
keep their full width and the bar (at most 40 cells) absorbs the shortfall. Where the bar alone cannot
(GRPO's 40-cell status at 60 columns), the status text, then the label, is cut with an ellipsis
(:func:`fit_widths`): rich's own squeeze cut the step count and the time left away.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

from rich.console import Console
from rich.measure import Measurement
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column, Table

PROGRESS_ENV = "CONREC_PROGRESS_SECONDS"
DEFAULT_INTERVAL_S = 30.0


def progress_interval() -> float:
    """Seconds between progress lines off-terminal (``$CONREC_PROGRESS_SECONDS``, default 30)."""
    raw = os.environ.get(PROGRESS_ENV)
    try:
        value = float(raw) if raw else DEFAULT_INTERVAL_S
    except ValueError:
        value = DEFAULT_INTERVAL_S
    return value if value > 0 else DEFAULT_INTERVAL_S


def _clock(seconds: float | None) -> str:
    return str(timedelta(seconds=int(seconds))) if seconds is not None else "?"


def remaining_now(completed: float, total: float | None, elapsed: float | None, start: float = 0.0) -> float | None:
    """Seconds left at the average pace so far, ``elapsed`` counted up to now (None before any progress).
    ``start``: the count the task began at in this process (a resumed run's restored step), whose steps took
    none of ``elapsed``.

    Why not rich's ``time_remaining``: it is computed at the last advance and frozen until the next, so a long
    step after fast ones kept printing the fast ones' estimate; this one grows while a step takes long."""
    done = completed - start
    if not total or not elapsed or done <= 0 or completed >= total:
        return None
    return (total - completed) * elapsed / done


def task_line(task: Task, remaining: bool = True, start: float = 0.0) -> str:
    """``SFT: 5/20 (25%), 0:00:12 elapsed, ~0:00:36 left, loss 9.787`` (pure, for one task); no "left" when
    ``remaining`` is off (a bar without a remaining-time column); ``start``: the count the task was added with
    (see :func:`remaining_now`)."""
    parts = [f"{task.description}: {task.completed:g}"]
    if task.total:
        parts[0] += f"/{task.total:g} ({100 * task.completed / task.total:.0f}%)"
    # a finished task's own time (rich's elapsed runs on until the whole group stops: encoding items got the
    # RQ-VAE's seconds added), as the terminal bar's elapsed column shows it
    parts.append(f"{_clock(task.finished_time if task.finished else task.elapsed)} elapsed")
    left = remaining_now(task.completed, task.total, task.elapsed, start) if remaining and not task.finished else None
    if left is not None:
        parts.append(f"~{_clock(left)} left")
    extra = [str(v) for v in task.fields.values() if str(v).strip()]
    return ", ".join(parts + extra)


def live_display(console: Console) -> bool:
    """Whether ``console`` shows a live, redrawn bar (else: the timed plain lines).

    Why not ``console.is_terminal``: rich calls a dumb terminal a terminal, yet its live display never redraws
    on one (``is_interactive`` is False), so neither the bar nor the lines appeared until the stage ended; and it
    calls any output a terminal when ``FORCE_COLOR`` is set, so a CI log got ~12 redraws a second joined by
    carriage returns (3 MB for a 20-minute SFT). A live bar needs an interactive console whose file is a real
    terminal, or one declared a terminal on purpose (``Console(force_terminal=True)``, ``TTY_COMPATIBLE=1``,
    ``TTY_INTERACTIVE=1``); ``FORCE_COLOR`` alone asks for colour, not for redraws."""
    if not console.is_interactive:
        return False
    declared = getattr(console, "_force_terminal", None)  # rich keeps the constructor's force_terminal here
    if declared or os.environ.get("TTY_COMPATIBLE") == "1" or os.environ.get("TTY_INTERACTIVE") == "1":
        return True
    isatty = getattr(console.file, "isatty", None)
    try:
        return bool(isatty is not None and isatty())
    except ValueError:  # a closed file (rich has the same guard)
        return False


class StageProgress(Progress):
    """A rich Progress on a terminal; timed plain lines (see module doc) anywhere else."""

    # (bar column, columns cut in turn) for fit_widths; None: rich's own layout (stage_progress sets one)
    fit: tuple[int, list[int]] | None = None

    def __init__(self, *columns: Any, console: Console | None = None, interval: float | None = None, **kwargs: Any) -> None:
        super().__init__(*columns, console=console, **kwargs)
        self.plain = not live_display(self.console)
        self.remaining = any(isinstance(c, TimeRemainingColumn) for c in self.columns)  # the plain lines follow the bar
        self.interval = interval if interval is not None else progress_interval()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reported: set[TaskID] = set()  # tasks whose last line is out
        self._start_counts: dict[TaskID, float] = {}  # each task's count when added: the steps before took no time here

    def add_task(self, description: str, start: bool = True, total: float | None = 100.0, completed: int = 0,
                 visible: bool = True, **fields: Any) -> TaskID:
        task_id = super().add_task(description, start=start, total=total, completed=completed, visible=visible, **fields)
        self._start_counts[task_id] = completed
        return task_id

    def start(self) -> None:
        if not self.plain:
            super().start()
            return
        if self._thread is None and not self.disable:
            self._stop.clear()
            self._thread = threading.Thread(target=self._tick, name="conrec-progress", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if not self.plain:
            super().stop()
            return
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            self.print_lines(final=True)

    def make_tasks_table(self, tasks: Iterable[Task]) -> Table:
        """rich's table, with the column widths of :attr:`fit` (:func:`fit_widths`) where a layout is set."""
        table = super().make_tasks_table(tasks)
        if self.fit is not None:
            bar, shrink = self.fit
            cols = table.columns
            measure = self.console.options
            natural = [
                max([column.min_width or 0] + [Measurement.get(self.console, measure, cell).maximum for cell in column.cells])
                for column in cols
            ]
            room = self.console.width - (len(cols) - 1)  # one space between columns (Table.grid padding)
            for i, width in enumerate(fit_widths(natural, bar, shrink, room)):
                cols[i].width = width
                if width < natural[i]:
                    cols[i].no_wrap, cols[i].overflow = True, "ellipsis"
        return table

    def update(self, task_id: TaskID, **kwargs: Any) -> None:
        super().update(task_id, **kwargs)
        self._report_finished(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._report_finished(task_id)

    def _report_finished(self, task_id: TaskID) -> None:
        """Off a terminal, a task's last line as it finishes: at the group's stop, it came after the lines of the
        tasks that ran after it."""
        if not self.plain or self._thread is None:
            return
        with self._lock:
            task = self._tasks[task_id]
            due = task.finished and task.started and task_id not in self._reported
            if due:
                self._reported.add(task_id)
        if due:
            self._print(task)

    def print_lines(self, final: bool = False) -> None:
        """One line per unfinished task (started tasks only); on ``final``, every task whose last line is not out."""
        with self._lock:
            tasks = [t for t in self._tasks.values() if t.started and t.id not in self._reported]
            if final:
                self._reported.update(t.id for t in tasks)
        for task in tasks:
            if final or not task.finished:
                self._print(task)

    def _print(self, task: Task) -> None:
        self.console.print(task_line(task, self.remaining, self._start_counts.get(task.id, 0.0)), markup=False, highlight=False, soft_wrap=True)

    def _tick(self) -> None:
        next_at = time.monotonic() + self.interval
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            self.print_lines()
            next_at += self.interval


BAR_MAX_WIDTH = 40
BAR_MIN_WIDTH = 4


def fit_widths(natural: Sequence[int], bar: int, shrink: Sequence[int], room: int) -> list[int]:
    """Column widths in ``room`` cells: every column its ``natural`` width but the bar, which takes what is left
    (:data:`BAR_MIN_WIDTH` to :data:`BAR_MAX_WIDTH`); when even the shortest bar does not fit, the ``shrink``
    columns give up cells in that order (down to one each). The others (step count, times) never shrink.

    Why not rich's squeeze: it shrinks the widest wrappable columns only until two are equally wide (a 40-cell
    bar and GRPO's 40-cell status), then cuts every column evenly, the count and the time left included."""
    widths = list(natural)
    excess = sum(w for i, w in enumerate(widths) if i != bar) + BAR_MIN_WIDTH - room
    for i in shrink:
        cut = max(0, min(excess, widths[i] - 1))
        widths[i] -= cut
        excess -= cut
    widths[bar] = max(BAR_MIN_WIDTH, min(BAR_MAX_WIDTH, room - sum(w for i, w in enumerate(widths) if i != bar)))
    return widths


def stage_progress(
    *fields: ProgressColumn | str,
    console: Console | None = None,
    label: str = "[bold]{task.description}",
    count: bool = True,
    remaining: bool = True,
    transient: bool = False,
    disable: bool = False,
) -> StageProgress:
    """``label``, a bar, ``done/total``, extra ``fields`` (columns or format strings), elapsed, remaining;
    ``disable``: shows nothing, on a terminal or off it (a step with nothing to count).

    The time columns and the count never shrink; the bar absorbs the shortfall on narrow terminals, then the
    status ``fields``, then the label, are cut with an ellipsis (:func:`fit_widths`).
    """
    columns: list[ProgressColumn] = [
        TextColumn(label, table_column=Column(no_wrap=True)),
        BarColumn(bar_width=None, table_column=Column(ratio=1, max_width=BAR_MAX_WIDTH, min_width=1)),
    ]
    if count:
        columns.append(MofNCompleteColumn(table_column=Column(no_wrap=True, justify="right")))
    status = range(len(columns), len(columns) + len(fields))
    columns += [TextColumn(f) if isinstance(f, str) else f for f in fields]
    columns.append(TimeElapsedColumn(table_column=Column(no_wrap=True, min_width=7)))
    if remaining:
        columns.append(TimeRemainingColumn(table_column=Column(no_wrap=True, min_width=7)))
    progress = StageProgress(*columns, console=console, transient=transient, expand=False, disable=disable)
    progress.fit = (1, [*status, 0])  # the bar absorbs; then the status texts, then the label, are cut
    return progress
