"""An exponential moving average of the weights while SFT trains (Polyak averaging).

Why: on small logs the valid score of neighbouring checkpoints swings by more than its CI (0.09
FHR@20 150 steps apart in the simulated world), so the last or the best single checkpoint is partly
noise. The average of the recent weights is a cheap, standard variance reduction: it is updated after
every optimiser step and is what early stopping scores and what the stage saves. It is written into
each checkpoint (``ema.pt``), so a resumed run continues the same average.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from conrec.io import write_torch
from conrec.llm.model.checkpoints import saved_checkpoint

EMA_FILE = "ema.pt"


class EmaWeights(TrainerCallback):
    """Keeps ``shadow = decay * shadow + (1 - decay) * param`` for every trainable floating parameter."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must lie in (0, 1), got {decay}")
        self.decay = decay
        self.shadow = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad and p.is_floating_point()}
        self.updates = 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        # early on the average would be dominated by the initial weights: warm up as 1 - 1/(n+1)
        self.updates += 1
        d = min(self.decay, 1.0 - 1.0 / (self.updates + 1))
        for n, p in model.named_parameters():
            s = self.shadow.get(n)
            if s is not None:
                s.lerp_(p.detach().to(s.dtype), 1.0 - d)

    @contextmanager
    def applied(self, model: torch.nn.Module) -> Iterator[None]:
        """The model carries the averaged weights inside the block, its own weights again after it."""
        saved = {n: p.detach().clone() for n, p in model.named_parameters() if n in self.shadow}
        self.copy_to(model)
        try:
            yield
        finally:
            with torch.no_grad():
                for n, p in model.named_parameters():
                    if n in saved:
                        p.copy_(saved[n])

    @torch.no_grad()
    def copy_to(self, model: torch.nn.Module) -> None:
        for n, p in model.named_parameters():
            if n in self.shadow:
                p.copy_(self.shadow[n])

    def save(self, path: Path) -> None:
        write_torch({"decay": self.decay, "updates": self.updates, "shadow": self.shadow}, path)

    def load(self, path: Path) -> None:
        """Continue the average saved with a checkpoint (same parameters; the config fingerprint guarantees it)."""
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved["shadow"].keys() != self.shadow.keys():
            raise ValueError(f"{path}: the averaged weights do not match this model's parameters")
        for n, t in saved["shadow"].items():
            self.shadow[n].copy_(t)
        self.updates = int(saved["updates"])

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> Any:
        if model is not None:
            self.update(model)
        return control

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        # runs before the checkpoint is marked complete (the stage lists this callback first)
        if (ckpt := saved_checkpoint(args, state)) is not None:
            self.save(ckpt / EMA_FILE)
        return control
