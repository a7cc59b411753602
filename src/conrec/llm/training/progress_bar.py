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

    def on_train_begin(self, args, state, control, **kwargs):
        if self.show and state.is_world_process_zero:
            extra = {"label": self.label} if self.label else {}
            self.progress = stage_progress("{task.fields[status]}", console=self.console, **extra)
            self.progress.start()
            self.task = self.progress.add_task(self.description, total=state.max_steps, completed=state.global_step, status="")

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)

    def show_status(self, text: str) -> None:
        """Replace the bar's status text (a no-op off the main process or before training begins)."""
        if self.progress is not None:
            self.progress.update(self.task, status=text)

    def on_train_end(self, args, state, control, **kwargs):
        self.close()

    def close(self) -> None:
        """Stop the display (also when training raised: no live bar or line timer left behind)."""
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
