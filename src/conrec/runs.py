"""The run directory: the one contract between stages.

Every stage reads its inputs from and writes its outputs to fixed paths below ``run_dir``; a stage
is finished when its ``_done.json`` marker exists (written last, atomically). Rerunning a pipeline
skips finished stages unless forced.

Layout::

    run_dir/
      config.yaml                  the resolved pipeline config of the last run
      data/events.parquet          canonical events  (user_id, item_id, ts, feedback)
      data/items.parquet           canonical items   (item_id, title, text, category, ...)
      data/samples.parquet         evaluation points (see conrec.data.samples)
      data/exposures.parquet       every shown item + outcome -1/0/+1 (see conrec.data.exposures)
      data/stats.json
      sid/embeddings.npy           item vectors, rows in items.parquet order
      sid/quantizer.pt             RQ-VAE / residual k-means checkpoint
      sid/sid_map.parquet          item_id <-> SID codes (a bijection)
      sid/stats.json
      sft/model/                   HF model dir (+ tokenizer with SID tokens)
      grpo/model/                  HF model dir after progressive GRPO
      grpo/stage_<i>/              per-stage checkpoints and logs
      eval/predictions/<model>.parquet
      eval/metrics.json  eval/report.md  eval/*.png
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conrec.io import read_json, write_json

STAGES = ("data", "sid", "sft", "grpo", "eval")


@dataclass(frozen=True)
class RunDir:
    root: Path

    def __init__(self, root: str | Path) -> None:
        object.__setattr__(self, "root", Path(root))

    # --- data
    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def events(self) -> Path:
        return self.data / "events.parquet"

    @property
    def items(self) -> Path:
        return self.data / "items.parquet"

    @property
    def samples(self) -> Path:
        return self.data / "samples.parquet"

    @property
    def exposures(self) -> Path:
        """Every shown item with its outcome (see :mod:`conrec.data.exposures`)."""
        return self.data / "exposures.parquet"

    # --- sid
    @property
    def sid(self) -> Path:
        return self.root / "sid"

    @property
    def embeddings(self) -> Path:
        return self.sid / "embeddings.npy"

    @property
    def quantizer(self) -> Path:
        return self.sid / "quantizer.pt"

    @property
    def sid_map(self) -> Path:
        return self.sid / "sid_map.parquet"

    # --- llm
    @property
    def sft(self) -> Path:
        return self.root / "sft"

    @property
    def sft_model(self) -> Path:
        return self.sft / "model"

    @property
    def grpo(self) -> Path:
        return self.root / "grpo"

    @property
    def grpo_model(self) -> Path:
        return self.grpo / "model"

    # --- eval
    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def predictions(self) -> Path:
        return self.eval / "predictions"

    @property
    def report(self) -> Path:
        return self.eval / "report.md"

    # --- stage markers
    def stage_dir(self, stage: str) -> Path:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
        return self.root / stage

    def is_done(self, stage: str) -> bool:
        return (self.stage_dir(stage) / "_done.json").exists()

    def mark_done(self, stage: str, info: dict[str, Any] | None = None) -> None:
        payload = {"stage": stage, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"), **(info or {})}
        write_json(payload, self.stage_dir(stage) / "_done.json")

    def done_info(self, stage: str) -> dict[str, Any]:
        return read_json(self.stage_dir(stage) / "_done.json", what=f"{stage} stage marker")

    def clear_done(self, stage: str) -> None:
        (self.stage_dir(stage) / "_done.json").unlink(missing_ok=True)
