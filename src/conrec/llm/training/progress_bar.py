"""One progress bar over a trainer's optimiser steps, for the SFT and GRPO stages alike.

Why one class: both stages show a bar with one live status text (SFT its loss, GRPO its reward and
zero-advantage share), both must stop the display when training raises (no live bar or line timer
left printing), and both resume a bar at the trainer's restored step.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from transformers import TrainerCallback

from conrec.progress import StageProgress, stage_progress


class StepProgressCallback(TrainerCallback):
    """A rich progress bar over optimiser steps with one status field (main process only)."""

    def __init__(self, console: Console, description: str, label: str | None = None, show: bool = True) -> None:
        self.console = console
        self.description = description
        self.label = label
        self.show = show
        self.progress: StageProgress | None = None
        self.task: Any = None
        self._last_step: int | None = None  # the final step, counted once its log is in (:meth:`on_step_end`)

    def on_train_begin(self, args, state, control, **kwargs):
        if self.show and state.is_world_process_zero:
            extra = {"label": self.label} if self.label else {}
            self.progress = stage_progress("{task.fields[status]}", console=self.console, **extra)
            self.progress.start()
            self.task = self.progress.add_task(self.description, total=state.max_steps, completed=state.global_step, status="")

    def on_step_end(self, args, state, control, **kwargs):
        """Count the step; the final one only once its log is in (:meth:`on_log`, else :meth:`close`).

        Why: the trainer calls ``on_step_end`` before ``on_log`` for the same step, and off a terminal the bar
        prints its last line as the count completes, so that line showed the step before's status (GRPO's
        "last reward" of step 1 of 2, SFT's loss of the log before)."""
        if self.progress is None:
            return
        if state.global_step >= state.max_steps:
            self._last_step = state.global_step
            return
        self.progress.update(self.task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        """After the subclasses' status update for the step's log: the final step counted, its line with that status."""
        self._count_last_step()

    def show_status(self, text: str) -> None:
        """Replace the bar's status text (a no-op off the main process or before training begins)."""
        if self.progress is not None:
            self.progress.update(self.task, status=text)

    def on_train_end(self, args, state, control, **kwargs):
        self.close()

    def close(self) -> None:
        """Stop the display (also when training raised: no live bar or line timer left behind)."""
        self._count_last_step()
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def _count_last_step(self) -> None:
        if self.progress is not None and self._last_step is not None:
            self.progress.update(self.task, completed=self._last_step)
        self._last_step = None
