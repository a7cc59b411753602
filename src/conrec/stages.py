"""The stage registry: what each pipeline stage reads and writes, declared once.

Why a registry: the pipeline's order, the fingerprint of what can change a stage's outputs, the
check that its inputs are current, the readable-output check on reuse, the CLI's hints ("run
`conrec sid` first") and the README's stage table all come from :data:`STAGE_REGISTRY`, so they
cannot disagree, and adding a stage is one entry here (plus its module), not an edit of the
pipeline. This module imports nothing from conrec: the runners are named, not imported, so that
``conrec --help`` stays instant and :mod:`conrec.runs` can use the registry without a cycle.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: conrec.config is not imported at run time (see above)
    from conrec.config import PipelineConfig


@dataclass(frozen=True)
class Stage:
    """One pipeline stage.

    ``sections``: the config sections it reads itself (a stage's fingerprint also covers every
    earlier stage's sections and ``seed``, since upstream outputs change with them). ``inputs``:
    earlier stages whose outputs it reads and which must be current; ``optional_inputs``: read only
    when the run has them (eval reports baselines alone without an LM). ``outputs``: files it
    writes, relative to the run directory, checked for readability before a finished stage is
    reused; a path ending in ``/`` is a model directory (its files are verified). ``runner``:
    ``"module:function"``, called as ``function(*stage.runner_args(cfg), console=..., **kwargs)``;
    ``resumable``: it takes ``resume=`` (checkpointed training). ``own_section``: the runner
    receives only its one config section and the run directory, ``function(section, run_dir, ...)``,
    instead of the whole config (the stages not converted yet still read other stages' sections).
    """

    name: str
    summary: str
    sections: tuple[str, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    runner: str
    optional_inputs: tuple[str, ...] = ()
    resumable: bool = False
    own_section: bool = False

    def __post_init__(self) -> None:
        if self.own_section and len(self.sections) != 1:
            raise ValueError(f"stage {self.name!r}: own_section needs exactly one config section, got {self.sections}")

    @property
    def command(self) -> str:
        """The CLI command that runs this stage alone (named like the stage)."""
        return f"conrec {self.name}"

    def runner_args(self, cfg: PipelineConfig) -> tuple[Any, ...]:
        """The runner's positional arguments: ``(section, run_dir)`` with ``own_section``, else ``(cfg,)``."""
        if self.own_section:
            return (getattr(cfg, self.sections[0]), cfg.run_dir)
        return (cfg,)

    def load_runner(self) -> Callable[..., Any]:
        """Import the runner (each stage pulls in its heavy libraries only when it runs)."""
        module, func = self.runner.split(":")
        runner: Callable[..., Any] = getattr(importlib.import_module(module), func)
        return runner


STAGE_REGISTRY: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage(
            "data", "load events and items, split by time, build future-window labels", ("data",), (),
            ("data/events.parquet", "data/items.parquet", "data/samples.parquet", "data/stats.json"),
            "conrec.data.stage:run", own_section=True,
        ),
        Stage(
            "sid", "encode item text, quantize, write the collision-free SID map", ("sid",), ("data",),
            ("sid/sid_map.parquet", "sid/quantizer.pt", "sid/embeddings.npy", "sid/stats.json"),
            "conrec.sid.stage:run",
        ),
        Stage(
            "sft", "supervised fine-tuning on SID tasks", ("sft",), ("data", "sid"),
            ("sft/stats.json", "sft/model/"), "conrec.llm.sft:run", resumable=True,
        ),
        Stage(
            "grpo", "progressive GRPO with the future-negative reward", ("grpo", "decode"), ("data", "sid", "sft"),
            ("grpo/stats.json", "grpo/model/"), "conrec.llm.grpo:run", resumable=True,
        ),
        Stage(
            "eval", "baselines and LMs on the eval split, report and plots", ("eval", "decode"), ("data", "sid"),
            ("eval/metrics.json", "eval/report.md"), "conrec.eval.stage:run", optional_inputs=("sft", "grpo"),
        ),
    )
}
STAGES: tuple[str, ...] = tuple(STAGE_REGISTRY)


def fingerprint_sections(stage: str) -> list[str]:
    """Config sections that can change ``stage``'s outputs: ``seed``, its own and every earlier stage's."""
    sections: list[str] = ["seed"]
    for s in STAGES[: STAGES.index(stage) + 1]:
        sections.extend(x for x in STAGE_REGISTRY[s].sections if x not in sections)
    return sections


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def section_hashes(cfg: PipelineConfig, stage: str) -> dict[str, str]:
    """One hash per config section in :func:`fingerprint_sections` (which one changed, for messages)."""
    dumped = cfg.model_dump(mode="json")
    return {k: _hash(dumped[k]) for k in fingerprint_sections(stage)}


def stage_fingerprint(cfg: PipelineConfig, stage: str) -> str:
    """Hash of every config section that can change ``stage``'s outputs (its own and upstream).

    Here rather than in :mod:`conrec.pipeline` so that a stage (SFT tags its checkpoints with it)
    can import it without importing the pipeline, which imports the stages' runners.
    """
    dumped = cfg.model_dump(mode="json")
    return _hash({k: dumped[k] for k in fingerprint_sections(stage)})


def stage_table() -> str:
    """The README's stage table (markdown), generated from the registry; ``python -m conrec.stages`` prints it."""

    def code(items: tuple[str, ...]) -> str:
        return ", ".join(f"`{x}`" for x in items) or "—"

    rows = ["| stage | command | config sections | needs stages | writes |", "|---|---|---|---|---|"]
    for s in STAGE_REGISTRY.values():
        needs = code(s.inputs) + (f" (and {code(s.optional_inputs)} when present)" if s.optional_inputs else "")
        rows.append(f"| {s.name}: {s.summary} | `{s.command}` | {code(s.sections)} | {needs} | {code(s.outputs)} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(stage_table())
