"""Precision, device, checkpointing, compile and loader settings: the ``compute`` section, resolved in one place.

Why one module: SFT, GRPO and decoding must agree on where and in which precision they run, and
a CPU machine must never be asked for something only a GPU can do. :class:`ComputeConfig` is what a
user writes; :func:`resolve_compute` turns it, plus what the machine has, into a
:class:`ResolvedCompute` (a pure function of its arguments, so every branch is testable on a CPU);
:func:`trainer_kwargs` gives the HF ``TrainingArguments`` fields (``SFTConfig`` and ``GRPOConfig``
take the same ones).

The defaults are "off on CPU": ``precision: auto`` is bf16 on a GPU that supports it (fp32 master
weights, bf16 autocast: the HF Trainer's mixed precision), fp32 everywhere else. An explicit
``bf16``/``fp16`` or ``device: cuda`` on a machine without a GPU is a :class:`ConfigError` naming the
setting, never a silent fp32 CPU run.

The trained model is saved in float32 whatever the training precision (a CPU can always load it);
:data:`PRECISION_FILE` beside the weights records the training precision, so decoding and slate
scoring on a GPU run in the same one (:func:`inference_dtype`), and on a CPU in float32.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from conrec.errors import ConfigError
from conrec.run_lock import ACCELERATE_PRECISION_VARIABLE, is_worker_rank

if TYPE_CHECKING:  # torch is imported where it is used: conrec.config (and `conrec --help`) must stay light
    import torch
    from rich.console import Console

Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16", "fp16")
PRECISION_FILE = "conrec_precision.json"


def torch_dtype(precision: Precision) -> torch.dtype:
    """The torch dtype of a precision name."""
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


class ComputeConfig(BaseModel):
    """Where and how fast the LM stages run (placement: not part of any stage's fingerprint).

    The per-device batch sizes stay with the stage they shape (``sft.train.batch_size`` and
    ``sft.train.grad_accum``, ``grpo.batch_size``): they change the optimisation, so they are
    fingerprinted; nothing here changes what is learned beyond floating-point rounding.
    """

    model_config = ConfigDict(extra="forbid")

    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="training device: auto = the GPU if torch sees one, else the CPU; cuda without a GPU is an error"
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="mixed precision of training, rollouts and GPU decoding: auto = bf16 on a GPU that supports it, "
        "else fp32 (CPU runs are always fp32); bf16/fp16 without a GPU is an error",
    )
    gradient_checkpointing: bool = Field(
        False, description="recompute activations in the backward pass: less GPU memory for ~30% more compute (long prompts, big batches)"
    )
    compile: bool = Field(
        False,
        description="torch.compile the model for training (GPU only: helps on long runs with stable shapes; "
        "the first steps pay the compile time)",
    )
    dataloader_workers: int = Field(
        0, ge=0, description="DataLoader worker processes (GPU runs: 2-4 keep the GPU fed; 0 on CPU, where workers take cores from compute)"
    )
    tf32: bool = Field(True, description="allow TF32 matrix products on Ampere+ GPUs (ignored on CPU)")


@dataclass(frozen=True)
class ResolvedCompute:
    """The settings a run actually uses on this machine (see :func:`resolve_compute`)."""

    device: str  # "cpu" | "cuda"
    precision: Precision
    gradient_checkpointing: bool
    compile: bool
    dataloader_workers: int
    tf32: bool

    @property
    def use_cpu(self) -> bool:
        return self.device == "cpu"

    @property
    def dtype(self) -> torch.dtype:
        return torch_dtype(self.precision)


def resolve_compute(cfg: ComputeConfig, cuda_available: bool | None = None, bf16_supported: bool | None = None) -> ResolvedCompute:
    """What ``cfg`` means on a machine with (or without) a GPU; :class:`ConfigError` for what it cannot do.

    ``cuda_available`` / ``bf16_supported`` default to what torch reports (tests pass them).
    """
    import torch

    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    if bf16_supported is None:
        bf16_supported = bool(cuda_available and torch.cuda.is_bf16_supported())
    if cfg.device == "cuda" and not cuda_available:
        raise ConfigError("compute.device is cuda but torch sees no GPU (set compute.device: auto or cpu)")
    device = "cuda" if cfg.device == "cuda" or (cfg.device == "auto" and cuda_available) else "cpu"
    precision: Precision
    if cfg.precision == "auto":
        precision = "bf16" if device == "cuda" and bf16_supported else "fp32"
    else:
        precision = cfg.precision
    if precision != "fp32" and device == "cpu":
        why = "torch sees no GPU" if not cuda_available else "compute.device is cpu"
        raise ConfigError(
            f"compute.precision {precision} needs a GPU but {why}: mixed precision is GPU-only here "
            "(set compute.precision: auto or fp32 for a CPU run)"
        )
    if precision == "bf16" and not bf16_supported:
        raise ConfigError("compute.precision bf16: this GPU does not support bfloat16 (use fp16 or auto)")
    if cfg.compile and device == "cpu":
        raise ConfigError("compute.compile is GPU-only (on CPU the compile time exceeds what it saves): set it to false")
    return ResolvedCompute(device, precision, cfg.gradient_checkpointing, cfg.compile, cfg.dataloader_workers, cfg.tf32)


LAUNCHER_PRECISION_ENV = ACCELERATE_PRECISION_VARIABLE  # what `accelerate launch --mixed_precision` / its config file set


def pin_launcher_precision(rc: ResolvedCompute, console: Console | None = None) -> str | None:
    """Make a launcher's mixed precision agree with ``compute.precision`` (resolved in ``rc``); return the
    launcher's own value when it was overridden (and warn on ``console``), else None.

    Why: transformers' ``TrainingArguments`` falls back to ``$ACCELERATE_MIXED_PRECISION`` when neither
    ``bf16`` nor ``fp16`` is set, so the shipped accelerate config (``mixed_precision: bf16``) trained an
    ``fp32`` run in bf16 autocast, on a CPU too, while the model files recorded fp32. ``compute.precision``
    is the one setting; the launcher's is overridden, with a warning, never silently obeyed."""
    import os

    given = os.environ.get(LAUNCHER_PRECISION_ENV)
    if given is None:
        return None
    want = "no" if rc.precision == "fp32" else rc.precision
    os.environ[LAUNCHER_PRECISION_ENV] = want
    if given.strip().lower() == want:
        return None
    if console is not None and not is_worker_rank():  # every process overrides it; the main one says so
        console.print(f"[yellow]warning:[/] {launcher_precision_warning(given, rc)}")
    return given


def launcher_precision_warning(given: str, rc: ResolvedCompute) -> str:
    """The warning that the launcher's mixed precision ``given`` gives way to ``rc``'s, with what the user can do.

    Why: on a CPU it said "set compute.precision to choose it", and ``compute.precision: bf16`` there is refused
    (:func:`resolve_compute`): the hint led to a second error. A CPU run is fp32, and the warning says so."""
    said = f"the launcher's mixed precision ({given}) is overridden by compute.precision ({rc.precision} here)"
    if rc.use_cpu:
        return f"{said}; this run trains on the CPU, which is always fp32 (mixed precision needs a GPU)"
    return f"{said}; set compute.precision to choose it"


def trainer_kwargs(rc: ResolvedCompute) -> dict[str, Any]:
    """The ``TrainingArguments`` fields for ``rc`` (SFTConfig and GRPOConfig take them unchanged).

    Non-reentrant checkpointing: it works with frozen inputs (LoRA) without
    ``enable_input_require_grads`` and under DDP.
    """
    return {
        "use_cpu": rc.use_cpu,
        "bf16": rc.precision == "bf16",
        "fp16": rc.precision == "fp16",
        "tf32": rc.tf32 if rc.device == "cuda" else None,
        "activation_checkpointing": rc.gradient_checkpointing,
        "activation_checkpointing_kwargs": {"use_reentrant": False} if rc.gradient_checkpointing else None,
        "torch_compile": rc.compile,
        "dataloader_num_workers": rc.dataloader_workers,
        "dataloader_pin_memory": rc.device == "cuda",
    }


def record_precision(model_dir: Path, rc: ResolvedCompute) -> None:
    """Write :data:`PRECISION_FILE` into a model dir being saved (call inside its atomic write)."""
    (Path(model_dir) / PRECISION_FILE).write_text(json.dumps({"precision": rc.precision, "device": rc.device}) + "\n")


def trained_precision(model_dir: Path) -> Precision:
    """The precision a model dir was trained in (fp32 when not recorded: older runs, foreign models)."""
    p = Path(model_dir) / PRECISION_FILE
    try:
        value = json.loads(p.read_text()).get("precision", "fp32")
    except (OSError, ValueError, AttributeError):
        return "fp32"
    return value if value in PRECISIONS else "fp32"


def inference_dtype(model_dir: Path, device: torch.device | str) -> torch.dtype:
    """Decoding/scoring dtype: the training precision on a GPU, float32 on a CPU (CPU half precision is slow)."""
    import torch

    if torch.device(device).type != "cuda":
        return torch.float32
    return torch_dtype(trained_precision(model_dir))
