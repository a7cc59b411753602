"""Valid FHR@K while SFT trains: the learning curve, early stopping and the best checkpoint.

Why: a fixed step count is either too short (the dense timeline task keeps improving for many
epochs) or too long (a small model overfits the training users); the right amount is a property of
the data, so it is measured, on valid points only, during training. Every ``eval_steps`` optimiser
steps the model ranks the catalogue for a fixed seeded draw of valid points (with the section's own
``search`` and ``num_beams``, every item the user rated before the point excluded, as the eval excludes it;
``decode`` only says where and in what batches), and FHR@K is recorded. The best weights are kept in
memory (a CPU copy); after ``patience`` evaluations without a new best, training stops; at the end
the best weights are restored, so the saved model is the one valid chose. The curve, the best weights
and the patience count are written into each checkpoint (``early_stopping.pt``), so a resumed run
stops where, and ends with the weights that, the uninterrupted run would.

Valid points must lie after the training events: the SFT stage refuses this callback unless the
data stage trains up to the valid cut-off (``data.split.train_until: valid``).

The points carry the eval's seen set (:func:`scored_points`). Why: they excluded only their ``hist_items`` (the newest
``data.split.max_history`` events), while the eval and ``conrec predict --split`` exclude every item rated before the
point (:mod:`conrec.eval.seen`), so the curve that chose the checkpoint, and that the report prints, was another
metric than the eval's valid FHR@K of the same weights: on per-user MovieLens-100K an untrained demo-size model put
an item rated before the window in the top-20 of 114 of 400 points (316 slots), 0.0500 against the eval's 0.0525
(the SFT audit of 7 December 2026).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import polars as pl
import torch
from rich.console import Console
from transformers import TrainerCallback

from conrec.eval.metrics import fhr_at_k
from conrec.io import write_torch
from conrec.llm.config import DecodeConfig, EarlyStoppingConfig, PromptConfig
from conrec.llm.model.checkpoints import saved_checkpoint
from conrec.runs import RunDir
from conrec.sid.sid_map import SidMap

STOPPER_FILE = "early_stopping.pt"


class ValidFhrCallback(TrainerCallback):
    """Scores ``points`` every ``cfg.eval_steps`` steps; keeps the best weights; stops on patience.

    ``points``: what :func:`scored_points` returns (with the eval's seen set; a frame without it excludes only its
    ``hist_items``)."""

    def __init__(
        self,
        cfg: EarlyStoppingConfig,
        points: pl.DataFrame,
        tokenizer: Any,
        sid_map: SidMap,
        prompt_cfg: PromptConfig,
        decode_cfg: DecodeConfig,
        console: Console | None = None,
        ema: Any = None,
    ) -> None:
        self.cfg = cfg
        self.ema = ema  # an EmaWeights: the averaged weights are scored and kept instead of the raw ones
        self.points = points
        self.futures = [set(f or ()) for f in points["future_negs"].to_list()]
        self.tokenizer = tokenizer
        self.sid_map = sid_map
        self.prompt_cfg = prompt_cfg
        # checkpoints are chosen by the LM alone (the decoding-time popularity prior is not trained), with the search
        # settings of the early-stopping section: `decode` is placement only for SFT (device, batch size), so a
        # search setting read from it would change the chosen checkpoint without changing the SFT fingerprint
        self.decode_cfg = decode_cfg.model_copy(
            update={"popularity_prior": 0.0, "search": cfg.search, "num_beams": cfg.num_beams, "exclude_history": True}
        )
        self.console = console
        self.curve: list[dict[str, float]] = []
        self.best: float = float("-inf")
        self.best_step: int = 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self._since_best = 0
        # time spent scoring inside the training loop (this call's), which the trainer's train_runtime includes:
        # throughput figures subtract it (the final scoring, after the loop, is not in train_runtime)
        self.seconds_in_loop = 0.0

    def score(self, model: Any) -> float:
        """FHR@K of ``model`` on the fixed valid points (the model is put back in training mode)."""
        from conrec.llm.inference.predict import Predictor

        was_training = model.training
        try:
            preds = Predictor(model, self.tokenizer, self.sid_map, self.prompt_cfg, self.decode_cfg).predict_samples(self.points, self.cfg.k)
        finally:
            model.train(was_training)
        ranked = preds["items"].to_list()
        return float(sum(fhr_at_k(r, f, self.cfg.k) for r, f in zip(ranked, self.futures)) / max(1, len(ranked)))

    def _evaluate(self, model: Any, step: int, control: Any) -> None:
        if self.ema is not None:
            with self.ema.applied(model):
                self._evaluate_weights(model, step, control)
        else:
            self._evaluate_weights(model, step, control)

    def _evaluate_weights(self, model: Any, step: int, control: Any) -> None:
        value = self.score(model)
        self.curve.append({"step": float(step), f"FHR@{self.cfg.k}": value})
        if value > self.best + self.cfg.min_delta:
            self.best, self.best_step, self._since_best = value, step, 0
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            self._since_best += 1
            if self._since_best >= self.cfg.patience:
                control.should_training_stop = True
        if self.console is not None:
            self.console.print(
                f"SFT step {step}: valid FHR@{self.cfg.k} {value:.3f} (best {self.best:.3f} at step {self.best_step})"
            )

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> Any:
        if model is not None and state.global_step % self.cfg.eval_steps == 0:
            started = time.perf_counter()
            self._evaluate(model, state.global_step, control)
            self.seconds_in_loop += time.perf_counter() - started
        return control

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> Any:
        if model is None:
            return control
        if not self.curve or self.curve[-1]["step"] != state.global_step:
            self._evaluate(model, state.global_step, control)  # the final weights are a candidate too
        if self.best_state is not None:
            model.load_state_dict(self.best_state)
        return control

    def save(self, path: Path) -> None:
        write_torch(
            {"curve": self.curve, "best": self.best, "best_step": self.best_step, "since_best": self._since_best, "best_state": self.best_state},
            path,
        )

    def load(self, path: Path) -> None:
        """Continue from the state saved with a checkpoint (same model and points: the config fingerprint guarantees it)."""
        saved = torch.load(path, map_location="cpu", weights_only=True)
        self.curve = [dict(p) for p in saved["curve"]]
        self.best, self.best_step, self._since_best = float(saved["best"]), int(saved["best_step"]), int(saved["since_best"])
        self.best_state = saved["best_state"]

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        # runs before the checkpoint is marked complete (the stage lists this callback before the marker)
        if (ckpt := saved_checkpoint(args, state)) is not None:
            self.save(ckpt / STOPPER_FILE)
        return control

    def summary(self) -> dict[str, Any]:
        """What stats.json records: the curve, the best step and its value."""
        return {"learning_curve": self.curve, "best_step": self.best_step, f"best_valid_FHR@{self.cfg.k}": self.best, "k": self.cfg.k}


def valid_points(samples: pl.DataFrame, max_points: int, seed: int) -> pl.DataFrame:
    """The fixed seeded draw of valid points scored during training (sample_id order)."""
    chosen = samples.filter(pl.col("split") == "valid")
    if chosen.height > max_points:
        chosen = chosen.sample(n=max_points, seed=seed, shuffle=False)
    return chosen.sort("sample_id")


def scored_points(run_dir: RunDir, samples: pl.DataFrame, max_points: int, seed: int) -> pl.DataFrame:
    """:func:`valid_points` with every item each user rated before the point attached, read from the run's events as
    ``conrec predict --split`` reads them (:func:`conrec.llm.inference.predict.split_samples_seen`): the callback's
    top-K leaves out exactly what the eval's does, so its FHR@K is the eval's valid FHR@K of the same weights."""
    from conrec.llm.inference.predict import split_samples_seen

    return split_samples_seen(run_dir, valid_points(samples, max_points, seed))
