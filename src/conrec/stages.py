"""The stage registry and the stage protocol: what each pipeline stage reads and writes, declared once.

Why a registry: the pipeline's order, the fingerprint of what can change a stage's outputs, the
check that its inputs are current, the readable-output check on reuse, the CLI's hints ("run
`conrec sid` first") and the docs' stage table (docs/pipeline.md) all come from :data:`STAGE_REGISTRY`, so they
cannot disagree, and adding a stage is one entry here (plus its module), not an edit of the
pipeline, which only iterates the registry.

The protocol (:class:`Stage`): a stage declares

* ``sections``: the config sections it depends on, its own first, then any other section (or
  dotted subsection, e.g. ``sft.prompt``) whose settings it needs, e.g. GRPO needs the prompt
  layout the SFT model was trained on and the decoding rules the rewards follow. Reading another
  stage's settings is therefore a declaration, never a reach into the whole config;
* ``placement``: sections it receives only to decide *where and how fast* something runs
  (device, batch size), never *what* is computed; they are not fingerprinted (the SFT stage scores
  its discernment questions with ``decode``'s device and batch size, and scores are
  batch-independent up to float32 rounding);
* ``inputs`` (and ``optional_inputs``): the upstream stages whose outputs it reads, and
  ``outputs``: the run-directory keys it writes (checked for readability before a finished stage is
  reused);
* ``produces_model``: its outputs include a trained model directory (the output ending in ``/``)
  that ``conrec predict``/``score``/``serve`` and the eval stage can load; the list of model names
  (:data:`MODEL_STAGES`) and their directories come from this flag, never from spelled-out names;
* ``preflight`` (optional): ``"module:function"`` called as ``function(section, run_dir)`` by
  :meth:`Stage.precheck`, before the pipeline touches the run: the refusals the runner would make from its
  settings and the run's existing inputs (sid: item columns its settings name, a category level without categories,
  every item text empty; SFT: settings that contradict each other, the copy bias's levels; GRPO: its
  group batch, an SFT model it can train, enough prompts; eval: item columns it names that the data stage's items
  lack, which the pipeline also checks as soon as those items exist, before any training stage);
  the runner calls it too, so a direct call is refused alike;
* ``runner``: ``"module:function"`` called as ``function(section, run_dir, console=..., **kwargs)``.
  ``section`` is the stage's one config section when it declares one, else an instance of its
  ``bundle``, a small frozen dataclass below with one field per declared section (named by the
  section's last component: ``sft.prompt`` -> ``prompt``). ``run_dir`` is where it reads its inputs
  and writes its outputs, at the fixed paths of :class:`conrec.runs.RunDir`; a child run
  (:mod:`conrec.experiments`) makes unchanged upstream outputs available there by links, so a
  runner never knows or cares where an input was produced. No runner receives the whole
  :class:`~conrec.config.PipelineConfig`.

The fingerprint of a stage (:func:`stage_fingerprint`) hashes exactly what it depends on: its own
``sections`` and, transitively, those of every stage it reads (their outputs change with them), less the
few settings in them that decide only how or where it runs (:data:`EXECUTION_SETTINGS`).
One scheme serves the pipeline's reuse decision, SFT's checkpoint tag and the child runs' link
decision.

This module imports nothing from conrec at run time: the runners are named, not imported, so that
``conrec --help`` stays instant and :mod:`conrec.runs` can use the registry without a cycle.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import importlib
import json
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: conrec.config is not imported at run time (see above)
    from conrec.config import PipelineConfig
    from conrec.data.config import SplitConfig
    from conrec.eval.config import EvalConfig
    from conrec.llm.config import DecodeConfig, GrpoConfig, PromptConfig, SftConfig
    from conrec.llm.model.precision import ComputeConfig
    from conrec.sid.config import SidConfig


# --------------------------------------------------------------------------- section bundles
@dataclass(frozen=True)
class SidSections:
    """What the sid stage reads: its section, the run's ``seed`` (the quantizer's default seed) and the
    data's ``split`` settings (which training events the optional collaborative vectors may use)."""

    sid: SidConfig
    seed: int
    split: SplitConfig


@dataclass(frozen=True)
class SftSections:
    """What the SFT stage reads: its section, ``seed``, the data's ``split`` settings (which events the
    timeline task may train on: the baselines' fit rule), and ``decode`` and ``compute`` for placement only (see module doc)."""

    sft: SftConfig
    seed: int
    split: SplitConfig
    decode: DecodeConfig
    compute: ComputeConfig


@dataclass(frozen=True)
class GrpoSections:
    """What the GRPO stage reads: its section; ``sft`` (the prompt layout the model was trained on, the
    discernment questions it is measured on); ``decode.exclude_history`` (which the rewards follow); ``seed``;
    the data's ``split`` settings (which events the co-dislike and Swing reward signals may be fitted on:
    the baselines' fit rule, per user under the per-user protocol);
    ``decode`` and ``compute`` for placement only (where and in what batches the discernment questions are
    scored; device and precision). Only the one decode setting is fingerprinted: a K or a beam width for
    ``conrec predict`` does not change what GRPO trains, and made the GRPO model stale."""

    grpo: GrpoConfig
    sft: SftConfig
    exclude_history: bool
    seed: int
    split: SplitConfig
    decode: DecodeConfig
    compute: ComputeConfig


@dataclass(frozen=True)
class EvalSections:
    """What the eval stage reads: its section; ``decode`` and ``prompt`` (how an LM is queried); the data's
    ``split`` settings (protocol, horizons, refit period: which events baselines may be fitted on)."""

    eval: EvalConfig
    decode: DecodeConfig
    split: SplitConfig
    prompt: PromptConfig


def _field(key: str) -> str:
    """The bundle field of a declared section: its last component (``sft.prompt`` -> ``prompt``)."""
    return key.rsplit(".", 1)[-1]


def _get(cfg: Any, key: str) -> Any:
    """The value of a (dotted) section key in a config object or its JSON dump."""
    node = cfg
    for part in key.split("."):
        node = node[part] if isinstance(node, dict) else getattr(node, part)
    return node


@dataclass(frozen=True)
class Stage:
    """One pipeline stage (see the module docstring for the protocol).

    ``resumable``: the runner takes ``resume=`` (checkpointed training). ``distributed``: the runner runs in every
    process of a launch (torchrun, ``accelerate launch``), the main one writing the run's records; another stage runs in
    one process: the library refuses it on a launch's worker ranks (:func:`conrec.run_lock.refuse_on_worker_rank`), the
    CLI under the launchers themselves (:func:`conrec.run_lock.refuse_under_launcher`). ``produces_model``: one
    output is a loadable model directory (see :func:`model_output`). ``bundle``: the class of the
    runner's ``section`` argument when more than one section is declared. ``selects``: which of its ``inputs`` and
    ``optional_inputs`` a config makes it read, ``selects(config, stage)``, a pure function of a config object, its JSON
    dump or the stage's bundle (:func:`_get` reads all three; eval: :func:`_eval_reads`); None = every input, and every
    optional input the run has. An input it selects must be current; an optional input it selects is read when the run
    has it. ``selects_note``: the rule in words, for the stage table. ``source_files``: (dotted) config keys of files
    outside the run that the stage reads (the user's events and items, a local encoder or backbone,
    extra item vectors); their state is recorded when the stage runs, and a later change makes the
    stage and every stage built on it stale (:mod:`conrec.source_files`). ``revision``: raised when a fix
    changes what the stage writes from the same settings and inputs, so that outputs an older conrec wrote
    are stale rather than served or reported as current (:data:`REVISIONS` says why each was raised).
    ``revision_scope``: for a fix that changed what some settings write only, ``revision_scope(r, sections)`` says
    whether revision ``r`` applies to outputs made with ``sections`` (the stage's sections as JSON dumps by key, as
    fingerprinted); None: every revision applies to every setting. Outputs the fix left as they were keep the revision
    before it (:meth:`revision_for`), so they stay current: data revisions 3 and 4 changed per-user splits only, and raising
    them for every run would have rerun every global-time run (the demo, the simulator) to write the same files; sft
    revision 2 changed runs with ``sft.train.early_stopping`` only. ``revision_late_scope``: the same for a fix whose
    scope was found after fingerprints had hashed it for every setting (data revision 2). Today's fingerprints keep
    hashing it (:meth:`revision_for`), so that records made since stay current; a record from before it whose settings
    it does not concern is current too (:meth:`current_revisions`, :func:`stage_fingerprints`), and no stale message
    names it (:meth:`fixes_since`). ``reports``: its outputs written for a person to read (Markdown, relative to the
    run directory), which nothing reads back: when a rerun of an earlier stage clears the stage they get a stale first
    line (:meth:`conrec.runs.RunDir.clear`), since they stay on disk looking current.
    """

    name: str
    summary: str
    sections: tuple[str, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    runner: str
    optional_inputs: tuple[str, ...] = ()
    resumable: bool = False
    distributed: bool = False
    placement: tuple[str, ...] = ()
    bundle: Any = None
    selects: Callable[[Any, str], bool] | None = None
    selects_note: str = ""
    produces_model: bool = False
    source_files: tuple[str, ...] = ()
    preflight: str | None = None
    revision: int = 0
    revision_scope: Callable[[int, Mapping[str, Any]], bool] | None = None
    revision_late_scope: Callable[[int, Mapping[str, Any]], bool] | None = None
    reports: tuple[str, ...] = ()

    def revision_for(self, sections: Mapping[str, Any]) -> int:
        """The revision of outputs made with ``sections`` (section key -> JSON dump): the latest one that applies to
        them (``revision_scope``; ``revision_late_scope`` is not asked), 0 when none does. What fingerprints hash and
        records hold."""
        applies = self.revision_scope or (lambda _r, _s: True)
        return max((r for r in range(1, self.revision + 1) if applies(r, sections)), default=0)

    def fixes_since(self, recorded: int, sections: Mapping[str, Any]) -> list[int]:
        """The revisions after ``recorded`` that apply to outputs made with ``sections`` (``revision_scope`` and
        ``revision_late_scope``), oldest first: every fix that outputs recorded at ``recorded`` lack. Why all of them,
        for the stale message: naming only the latest hid an earlier, larger one (a per-user run from before data
        revision 3 was stale with revision 4's reason alone)."""
        scopes = [s for s in (self.revision_scope, self.revision_late_scope) if s is not None]
        return [r for r in range(recorded + 1, self.revision + 1) if all(applies(r, sections) for applies in scopes)]

    def current_revisions(self, sections: Mapping[str, Any]) -> list[int]:
        """The revisions a record of outputs made with ``sections`` may hold and be current, oldest first: today's
        (:meth:`revision_for`) and each earlier one that no fix since concerns (:meth:`fixes_since`: a revision outside
        its ``revision_late_scope``). Why: a simulator run recorded at data revision 1 was retrained from its data on for
        revision 2 (NaN float ids; the simulator writes text ids), and wrote the same files, SID map and models."""
        today = self.revision_for(sections)
        return [r for r in range(today + 1) if r == today or not self.fixes_since(r, sections)]

    def __post_init__(self) -> None:
        if self.produces_model and sum(o.endswith("/") for o in self.outputs) != 1:
            raise ValueError(f"stage {self.name!r} produces a model: exactly one of its outputs must be a directory (ending in /)")
        received = [*self.sections, *self.placement]
        if self.bundle is None:
            if len(received) != 1:
                raise ValueError(f"stage {self.name!r} reads {received}: more than one section needs a bundle type")
        elif sorted(_field(k) for k in received) != sorted(f.name for f in fields(self.bundle)):
            raise ValueError(f"stage {self.name!r}: bundle {self.bundle.__name__} must have one field per section of {received}")

    @property
    def command(self) -> str:
        """The CLI command that runs this stage alone (named like the stage)."""
        return f"conrec {self.name}"

    def section_of(self, cfg: PipelineConfig) -> Any:
        """The runner's ``section`` argument: the stage's one section, or its bundle of exactly the declared sections."""
        received = [*self.sections, *self.placement]
        if self.bundle is None:
            return _get(cfg, received[0])
        return self.bundle(**{_field(k): _get(cfg, k) for k in received})

    def precheck(self, cfg: PipelineConfig) -> None:
        """Refuse, before the run is touched, what the stage would refuse at its start: a ``compute``
        placement this machine cannot give (bf16 without a GPU), and what its ``preflight`` refuses from the
        settings and the run's inputs. The stage invalidated itself and every later stage, and rewrote the
        run's config.yaml, before it said so."""
        if "compute" in self.placement:
            from conrec.llm.model.precision import resolve_compute

            resolve_compute(cfg.compute)
        if self.preflight is not None:
            _load(self.preflight)(self.section_of(cfg), Path(cfg.run_dir))

    def source_paths(self, cfg: PipelineConfig) -> dict[str, Any]:
        """The files (or directories) outside the run that the config points this stage at, by config key."""
        return {k: _get(cfg, k) for k in self.source_files}

    def selects_input(self, cfg: Any, stage: str) -> bool:
        """Whether the config (an object, its JSON dump or this stage's bundle) asks this stage to read input or optional
        input ``stage`` (an optional one when the run has it)."""
        return self.selects is None or self.selects(cfg, stage)

    def load_runner(self) -> Callable[..., Any]:
        """Import the runner (each stage pulls in its heavy libraries only when it runs)."""
        return _load(self.runner)

    def call(self, cfg: PipelineConfig, run_dir: str | Path | None = None, **kwargs: Any) -> Any:
        """Call the runner with ``cfg``'s sections for this stage, in ``run_dir`` (default ``cfg.run_dir``).

        No input check and no bookkeeping: :func:`conrec.pipeline.run_stage` adds those; tests and
        benchmarks call a stage's code directly through this.
        """
        return self.load_runner()(self.section_of(cfg), Path(run_dir if run_dir is not None else cfg.run_dir), **kwargs)


def _load(ref: str) -> Callable[..., Any]:
    """The function a ``"module:function"`` reference names, its module imported now."""
    module, func = ref.split(":")
    function: Callable[..., Any] = getattr(importlib.import_module(module), func)
    return function


PER_USER_DATA_REVISIONS = frozenset({3, 4})
"""The data revisions (:data:`REVISIONS`) that changed what ``data.split.protocol: per_user`` writes only."""


def _data_revision_scope(revision: int, sections: Mapping[str, Any]) -> bool:
    """Data revisions 3 and 4 (:data:`REVISIONS`) changed the train and the valid points of ``data.split.protocol:
    per_user`` only: the global-time split never took a dislike at its cut-off's second (its shares are cut by time),
    so its runs keep revision 2 and stay current."""
    split = (sections.get("data") or {}).get("split") or {}
    return revision not in PER_USER_DATA_REVISIONS or split.get("protocol") == "per_user"


FLOAT_ID_DATA_REVISIONS = frozenset({2})
"""The data revisions (:data:`REVISIONS`) that changed tables read with a float id column only."""

TEXT_ID_SOURCES = frozenset({"simulator", "movielens100k"})
"""The ``data.source`` values whose ids are never a float column: the simulator writes them as text (``u0000``,
``i00041``) and movielens100k reads every column of its files as text (:func:`conrec.data.sources.movielens100k.read_atomic`)."""


def _data_revision_late_scope(revision: int, sections: Mapping[str, Any]) -> bool:
    """Data revision 2 (:data:`REVISIONS`: a NaN or infinite float id was an id of its own) changed only tables read
    with a float id column, which no :data:`TEXT_ID_SOURCES` source reads: their records from before it stay current.
    Found after it had been hashed for every run (a late scope: :class:`Stage`). Revision 1 keeps applying to every
    source: a record from before it may come from any older conrec (a 4 December simulator run's samples lack the
    ``hist_negatives`` column), so it cannot be told current; nor can a source whose files may hold float ids."""
    return revision not in FLOAT_ID_DATA_REVISIONS or (sections.get("data") or {}).get("source") not in TEXT_ID_SOURCES


EARLY_STOPPING_SFT_REVISIONS = frozenset({2})
"""The SFT revisions (:data:`REVISIONS`) that changed what ``sft.train.early_stopping`` runs write only."""


def _sft_revision_scope(revision: int, sections: Mapping[str, Any]) -> bool:
    """SFT revision 2 (:data:`REVISIONS`) changed the valid score that early stopping keeps a checkpoint by: a run
    without ``sft.train.early_stopping`` (the presets, the demo, the per-user and simulator recipes) trains the same
    model, so its runs keep revision 1 and stay current."""
    train = (sections.get("sft") or {}).get("train") or {}
    return revision not in EARLY_STOPPING_SFT_REVISIONS or train.get("early_stopping") is not None


def _eval_reads(cfg: Any, stage: str) -> bool:
    """The eval stage's inputs for a config: the data always; an LM stage that ``eval.models`` names (when the run has
    it); the sid stage only for what reads its outputs, an LM (the SID map it decodes with) or a baseline whose registry
    entry reads ``sid/text_vectors.npy`` (:attr:`conrec.eval.baselines.BaselineSpec.reads_sid`: ``content``).

    Why: an eval of the other baselines alone (``eval.models: []``) needed a current sid stage, which it never read:
    ``conrec eval`` refused on a run with only its data, and a rerun of the sid stage cleared and re-tuned it."""
    if stage == "sid":
        from conrec.eval.baselines import sid_readers

        return bool(_get(cfg, "eval.models")) or bool(sid_readers(_get(cfg, "eval.baselines")))
    return stage == "data" or stage in _get(cfg, "eval.models")


STAGE_REGISTRY: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage(
            "data", "load events and items, split by time, build future-window labels", ("data",), (),
            ("data/events.parquet", "data/items.parquet", "data/samples.parquet", "data/stats.json"),
            "conrec.data.stage:run", source_files=("data.events_path", "data.items_path"), revision=4,
            revision_scope=_data_revision_scope, revision_late_scope=_data_revision_late_scope,
        ),
        Stage(
            "sid", "encode item text, quantize, write the collision-free SID map", ("sid", "seed", "data.split"), ("data",),
            ("sid/sid_map.parquet", "sid/quantizer.pt", "sid/embeddings.npy", "sid/text_vectors.npy", "sid/stats.json"),
            "conrec.sid.stage:run", bundle=SidSections, source_files=("sid.encoder.model_path", "sid.encoder.extra_vectors_path"),
            preflight="conrec.sid.preflight:preflight",
        ),
        Stage(
            "sft", "supervised fine-tuning on SID tasks", ("sft", "seed", "data.split"), ("data", "sid"),
            ("sft/stats.json", "sft/model/"), "conrec.llm.training.sft:run", resumable=True, distributed=True, placement=("decode", "compute"), bundle=SftSections,
            produces_model=True, source_files=("sft.model.path",), preflight="conrec.llm.training.sft:preflight", revision=2,
            revision_scope=_sft_revision_scope,
        ),
        Stage(
            "grpo", "progressive GRPO with the future-negative reward", ("grpo", "sft", "decode.exclude_history", "seed", "data.split"),
            ("data", "sid", "sft"), ("grpo/stats.json", "grpo/model/"), "conrec.llm.training.grpo:run", resumable=True, distributed=True,
            placement=("decode", "compute"),
            bundle=GrpoSections, produces_model=True, preflight="conrec.llm.training.grpo:preflight",
        ),
        Stage(
            "eval", "baselines and LMs on the eval split, report and plots", ("eval", "decode", "data.split", "sft.prompt"),
            ("data", "sid"), ("eval/metrics.json", "eval/report.md"), "conrec.eval.stage:run", optional_inputs=("sft", "grpo"),
            bundle=EvalSections, selects=_eval_reads, selects_note="`sid` for an LM or the `content` baseline; `sft`, `grpo` as `eval.models` names them",
            preflight="conrec.eval.preflight:preflight", revision=2, reports=("eval/report.md",),
        ),
    )
}
STAGES: tuple[str, ...] = tuple(STAGE_REGISTRY)
MODEL_STAGES: tuple[str, ...] = tuple(s.name for s in STAGE_REGISTRY.values() if s.produces_model)
DISTRIBUTED_STAGES: tuple[str, ...] = tuple(s.name for s in STAGE_REGISTRY.values() if s.distributed)

PER_USER_TEXT: dict[tuple[str, int], str] = {
    ("eval", 2): "where a user held several evaluated points (data.split.protocol: per_user) its confidence intervals and "
    "paired differences resampled the points as if independent, 2.3 to 2.9 times too narrow; they now resample users. ",
}
"""The part of a revision's reason (:data:`REVISIONS`, stage and revision) that concerns ``data.split.protocol: per_user``
only, while the rest concerns every run: :func:`fixes_text` leaves it out for a run of another protocol (a global-split
run holds one evaluated point per user, whose intervals eval revision 2 left as they were)."""

REVISIONS: dict[str, dict[int, str]] = {
    "data": {
        1: "reading fixes for events and items files (a later CSV time 1700000000.0 was dropped, fractional epoch seconds "
        "refused the file, empty ids were users and items of their own, Spark read ISO times ts_format does not); "
        "every source's tables are read again",
        2: "a NaN or infinite value in a float id column was an id of its own (a user or item 'NaN'); it is now a "
        "missing id, dropped and counted; every source's tables are read again",
        3: "under data.split.protocol: per_user, a train-share dislike at the same second as its user's valid start (test "
        "start with train_until test), frequent in logs rated in bursts, was an extra train point whose future set was "
        "itself alone (13.5% of MovieLens-100K's train samples) and which the baselines never saw; train points now "
        "stop before that second (global-time runs are unchanged and stay current)",
        4: "under data.split.protocol: per_user, a valid-share dislike at the same second as its user's test start was a "
        "valid point whose future set was itself alone (9.5% of MovieLens-100K's valid points), and valid points drive "
        "eval.tune and SFT's early stopping; valid points now stop before that second, as train points stop before the "
        "valid start since the fix before it (global-time runs are unchanged and stay current)",
    },
    "sft": {
        1: "its prompts and training windows showed only budget - count items of a segment whose budget lay between "
        "its item count and twice it (15 older dislikes under max_neg_items 20 showed 5)",
        2: "with sft.train.early_stopping, the valid FHR@K that chose the checkpoint (the learning curve of sft/stats.json "
        "and the report) excluded only each point's max_history window, not every item the user rated before the point as "
        "the eval does, so it was another metric than the eval's valid FHR@K and could keep another checkpoint; it now "
        "excludes what the eval excludes (runs without early stopping are unchanged and stay current)",
    },
    "eval": {
        1: "an earlier evaluation's predictions and slate metrics that it did not rewrite were kept, and the results "
        "table and the inspector showed them as its own",
        2: PER_USER_TEXT[("eval", 2)] + "Candidate Acc@1 and MRR scored only the next dislike, always the earliest item of its slate, which rewarded "
        "predicting the rating order; they now average over every same-day dislike as the target. Items the user rated "
        "before the max_history window were not excluded from the top-K; now every item rated before t is",
    },
}
"""Why each stage's :attr:`Stage.revision` was raised: what its outputs from before got wrong (the stale message
says it). A stage built on a revised one is stale with it (its fingerprint holds its inputs' fingerprints)."""
"""The stages that train a servable model, in pipeline order (later = built on the earlier ones)."""
FINGERPRINT_FILE = "_fingerprint.json"


def model_output(stage: str) -> str:
    """The run-directory key of the model directory written by model stage ``stage`` (e.g. ``grpo/model/``)."""
    spec = STAGE_REGISTRY.get(stage)
    if spec is None or not spec.produces_model:
        raise KeyError(stage)
    return next(o for o in spec.outputs if o.endswith("/"))
"""Beside each finished stage's outputs: ``{fingerprint, sections, settings, seconds, ...}`` (written by the pipeline; ``settings``: the sections as hashed, for the stale message)."""


def read_inputs(stage: str, cfg: Any = None) -> tuple[str, ...]:
    """The stages whose outputs ``stage`` reads: its ``inputs`` and, for a config ``cfg`` (a
    :class:`~conrec.config.PipelineConfig` or its JSON dump), the ``optional_inputs`` it selects
    (:meth:`Stage.selects_input`: eval reads the LMs ``eval.models`` names, and the sid stage only for an LM or the
    ``content`` baseline); without ``cfg``, every input and optional input.

    Why per config: an eval scoring no LM (``eval.models: []``, the ablations' baselines child) was fingerprinted with
    the ``sft`` and ``grpo`` settings, so a GRPO learning rate re-tuned every baseline, and an eval of the SFT model
    alone decoded again after a GRPO change, each "made with a different configuration (grpo.learning_rate ...)"."""
    spec = STAGE_REGISTRY[stage]
    every = (*spec.inputs, *spec.optional_inputs)
    return every if cfg is None else tuple(u for u in every if spec.selects_input(cfg, u))


def upstream_closure(stage: str, cfg: Any = None) -> list[str]:
    """``stage`` and every stage it reads, directly or through its inputs, in pipeline order: for ``cfg``, the
    optional inputs it selects (:func:`read_inputs`); without one, every optional input."""
    seen: set[str] = set()
    todo = [stage]
    while todo:
        s = todo.pop()
        if s not in seen:
            seen.add(s)
            todo.extend(read_inputs(s, cfg))
    return [s for s in STAGES if s in seen]


def reads_any(stage: str, stages: Collection[str], cfg: Any = None) -> bool:
    """Whether ``stage`` reads (directly, :func:`read_inputs`) one of ``stages`` for ``cfg``; without one, whether it may
    read one. What a rerun clears and what the pipeline reruns after it (:meth:`conrec.runs.RunDir.invalidate_from`),
    the rule the fingerprint follows: an eval of the SFT model alone does not read GRPO, nor a baselines-only eval SFT."""
    return any(u in stages for u in read_inputs(stage, cfg))


def fingerprint_sections(stage: str, cfg: Any = None) -> list[str]:
    """Config sections that can change ``stage``'s outputs: its own declared ones and those of every stage it reads
    (for ``cfg``, of the optional inputs it selects; without one, of all of them: what a record may hold)."""
    sections: list[str] = []
    for s in upstream_closure(stage, cfg):
        sections.extend(x for x in STAGE_REGISTRY[s].sections if x not in sections)
    return sections


def stage_hash(obj: Any) -> str:
    """The fingerprints' hash: 16 hex digits of the SHA-256 of ``obj``'s canonical JSON."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


_hash = stage_hash


def _json(value: Any) -> Any:
    """A section value as it appears in the config's JSON dump (pydantic sections dumped, scalars as is)."""
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value


EXECUTION_SETTINGS: dict[str, Any] = {
    "data.engine": "polars",
    "data.streaming": "auto",
    "data.streaming_min_events": 20_000_000,
    "data.partition_events": 4_000_000,
    "data.spark.master": None,
    "decode.top_k": 20,
    "sid.encoder.cache_dir": None,
    # bookkeeping: how often a trainer logs and checkpoints, how many checkpoints it keeps, whether the SID stage reuses
    # cached text vectors; none changes a weight or a score (a checkpoint is for resuming; the cache holds the same vectors)
    "sid.encoder.cache": True,
    "sft.train.logging_steps": 10,
    "sft.train.save_steps": 500,
    "sft.train.save_total_limit": 1,
    "grpo.save_steps": 10,
}
"""Settings that decide how or where a stage runs, never what it writes, with the value each is hashed at.

The data engines write identical files (``tests/test_data_engines.py``, ``tests/test_data_engine_spark.py``)
wherever Spark runs (``data.spark.conf`` stays fingerprinted: a Spark SQL setting can change how a file is
read); ``decode.top_k`` is ``conrec predict``'s K, which no stage reads (eval ranks max(eval.ks)). Switching
to streaming or Spark reran every stage, with identical results; a new ``logging_steps`` retrained SFT, GRPO and eval.
Each is hashed at a fixed stand-in, the default it had when this was introduced: a later change of a default must
not change every recorded fingerprint. Fingerprints recorded before, with the real values, are still accepted
(:func:`stage_fingerprints`). Settings that may change numbers stay fingerprinted: thread counts, batch sizes and
devices (float sums in another order)."""

_FIRST_EXECUTION_SETTINGS = frozenset(
    ("data.engine", "data.streaming", "data.streaming_min_events", "data.partition_events", "data.spark.master", "decode.top_k",
     "sid.encoder.cache_dir")
)
"""The :data:`EXECUTION_SETTINGS` older conrec versions hashed at stand-ins (before the bookkeeping ones joined)."""


SOURCE_PATH = "<a path outside the run: its files are compared, not its name>"
"""The stand-in of a set ``Stage.source_files`` path. Why: the configuration names the user's files by absolute
path, so a project directory copied or moved elsewhere reran every stage on the same files. What the files
hold is compared instead (:func:`conrec.source_files.change`, against the path the config names now)."""


_View = tuple[frozenset[str], bool]
"""Which settings a fingerprint hashes at stand-ins: (those of :data:`EXECUTION_SETTINGS`, whether source paths)."""
TODAY: _View = (frozenset(EXECUTION_SETTINGS), True)
_VIEWS: tuple[_View, ...] = (TODAY, (_FIRST_EXECUTION_SETTINGS, True), (_FIRST_EXECUTION_SETTINGS, False), (frozenset(), False))
"""Today's view, then the views older conrec versions recorded: the first execution settings at stand-ins, the
bookkeeping ones real (before they joined), with source paths at their stand-in or real (6 December 2026, morning),
and every value real (before that)."""


def changed_sections(cfg: PipelineConfig, stage: str, recorded: dict[str, str], read_now: bool = True) -> list[str]:
    """The sections of a finished ``stage`` whose ``recorded`` hashes differ from ``cfg``'s, compared under the
    :data:`_VIEWS` view that leaves the fewest differing (today's first on a tie): the sections a stale message names.

    ``read_now=False``: every section the record holds that the stage may read (:func:`fingerprint_sections` without a
    config), not only those it reads for ``cfg``. Why: an older conrec's eval of baselines only hashed the ``sid``
    settings, which it no longer reads; after one of them changed, no section read now differed and the message said
    "the config is unchanged"; the caller asks this when the sections read now name none.

    Why: a record an older conrec made hashed the bookkeeping settings (the :data:`EXECUTION_SETTINGS` added later)
    at their real values. Compared under today's view, every section whose bookkeeping value is not its stand-in
    (``preset:tiny``'s ``logging_steps: 5``) was called changed: a new ``eval.seed`` was reported as "sft, eval
    changed". Whether the stage is current is decided by its whole fingerprint (:func:`stage_fingerprints`), not here;
    a bookkeeping setting changed since such a record was made is a change to it (the record holds only hashes)."""
    dumped = cfg.model_dump(mode="json")
    # the sections it reads now: an older record of an eval may hold the sft and grpo settings of LMs it does not score
    closure = fingerprint_sections(stage, dumped if read_now else None)
    keys = [k for k in closure if k in recorded]  # a section the record lacks: read otherwise then
    return min(
        ([k for k in keys if _hash(_hashed_view(k, _get(dumped, k), view)) != recorded[k]] for view in _VIEWS),
        key=len,
    )


def setting_of(dumped: dict[str, Any], key: str) -> Any:
    """The value of the dotted setting or section ``key`` in a config's JSON dump."""
    return _get(dumped, key)


def section_as_hashed(key: str, value: Any) -> Any:
    """Section ``key``'s dumped ``value`` as today's fingerprints see it (what :func:`section_settings` records)."""
    return _hashed_view(key, value)


def section_hashes_any_view(key: str, value: Any) -> set[str]:
    """Section ``key``'s dumped ``value`` hashed as each of :data:`_VIEWS` hashes it: the hashes a record made with
    that value may hold, whichever conrec made it."""
    return {_hash(_hashed_view(key, value, view)) for view in _VIEWS}


ADDED_SETTINGS: dict[str, Any] = {}
"""Settings added to the config after runs were recorded (dotted path -> the value, as JSON, that does what runs made
without them did): at that value a fingerprint leaves them out (:func:`_hashed_view`), so runs made before they existed
stay current. Why: a fingerprint hashes each section's whole dump, so a new field, even at a default that changes
nothing, made every existing run rerun the stages whose sections hold it, blamed on "<key>: unset -> <default>". A
field added with a default that changes what a stage does belongs here only with the value that does not (and a fix
to what a stage writes raises its revision instead: :data:`REVISIONS`). Empty until a field is added; development.md
says how."""


def _without_added(key: str, value: Any) -> Any:
    """``value`` (section ``key``'s dump) without the :data:`ADDED_SETTINGS` under it that hold their neutral value."""
    neutral = {s[len(key) + 1 :]: v for s, v in ADDED_SETTINGS.items() if s.startswith(key + ".")}
    found = [s for s, v in neutral.items() if (held := _lookup(value, s)) is not _UNSET and held == v]
    return without_settings(value, found, keep=_leaf_settings(key)) if found else value


@functools.cache
def _leaf_settings(key: str) -> frozenset[str]:
    """The settings under section ``key`` that hold no settings of their own, relative to it: a mapping among them is
    a setting's value (``data.columns``, ``data.spark.conf``), which :func:`_without_added` must not drop when keys
    registered inside it leave it empty, since runs made before those keys existed hashed it as ``{}``."""
    from conrec.config import config_reference  # here: this module imports no conrec module at import time

    keys = [k for k, _, _ in config_reference() if k.startswith(key + ".")]
    return frozenset(k[len(key) + 1 :] for k in keys if not any(o.startswith(k + ".") for o in keys))


def _lookup(value: Any, setting: str) -> Any:
    """The value of the dotted ``setting`` inside the mapping ``value``, :data:`_UNSET` where it has none."""
    node = value
    for part in setting.split("."):
        if not isinstance(node, dict) or part not in node:
            return _UNSET
        node = node[part]
    return node


def without_settings(value: dict[str, Any], settings: Collection[str], keep: Collection[str] = ()) -> dict[str, Any]:
    """A copy of the mapping ``value`` without the dotted ``settings`` inside it (those it does not hold are passed over),
    and without a mapping inside it that was left empty by their removal, unless its dotted path is in ``keep``. A
    mapping that was empty before is kept.

    Why the emptied ones too: a section added to the config whose settings are registered one by one in
    :data:`ADDED_SETTINGS` (``eval.<baseline>.grid``, ``.power``) left ``<baseline>: {}`` in the hashed dump, which a run
    made before it existed does not hold, so its eval was stale although every new setting was at its neutral value.
    Why ``keep``: a mapping setting (``data.feedback_labels``) dumped ``{}`` in runs made before a key registered inside
    it existed; dropped, it would no longer hash as they recorded it. (A section that dumped ``{}`` and later gains
    registered settings cannot be told from a new one here, and is dropped: none dumps ``{}`` today.)"""
    value = copy.deepcopy(value)
    for setting in settings:
        *parents, leaf = setting.split(".")
        path: list[dict[str, Any]] = [value]
        for part in parents:
            child = path[-1].get(part)
            if not isinstance(child, dict):
                break
            path.append(child)
        else:
            if leaf in path[-1]:
                path[-1].pop(leaf)
                for depth in range(len(parents), 0, -1):
                    if path[depth] or ".".join(parents[:depth]) in keep:
                        break
                    path[depth - 1].pop(parents[depth - 1])
    return value


def settings_added(key: str, old: Any, new: Any) -> list[str]:
    """The dotted settings under section ``key`` that ``new`` holds and ``old`` lacks altogether (a key of one mapping
    the other does not have, compared as :func:`setting_changes` compares): in a record made before conrec had them,
    what :func:`setting_changes` shows as ``unset -> <value>``, a change only when the value is not the default that
    stands for the config's silence (:meth:`conrec.runs.RunDir.stale_reason` tells)."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return []
    return [s for k, v in new.items() for s in ([f"{key}.{k}"] if k not in old else settings_added(f"{key}.{k}", old[k], v))]


def _hashed_view(key: str, value: Any, view: _View = TODAY) -> Any:
    """Section ``key``'s dumped ``value`` as fingerprints see it: :data:`EXECUTION_SETTINGS` at their stand-ins,
    a set source path (the stages' ``source_files``) as :data:`SOURCE_PATH` (each as ``view`` says), and the
    :data:`ADDED_SETTINGS` at their neutral value left out."""
    if not isinstance(value, dict):
        return value
    value = _without_added(key, value)
    paths = {f for spec in STAGE_REGISTRY.values() for f in spec.source_files} if view[1] else set()
    inside = [s for s in (*view[0], *paths) if s.startswith(key + ".")]
    if not inside:
        return value
    value = copy.deepcopy(value)
    for setting in inside:
        *parents, leaf = setting[len(key) + 1 :].split(".")
        node = _lookup(value, ".".join(parents)) if parents else value
        if not isinstance(node, dict):  # its mapping left out as added (ADDED_SETTINGS): runs made before had no stand-in
            continue
        if setting in view[0]:
            node[leaf] = EXECUTION_SETTINGS[setting]
        elif node.get(leaf) is not None:
            node[leaf] = SOURCE_PATH
    return value


def section_settings(cfg: PipelineConfig, stage: str) -> dict[str, Any]:
    """Each config section in :func:`fingerprint_sections` as the fingerprint sees it (:func:`_hashed_view`): what the
    pipeline records beside a finished stage, so that a later stale message can name the settings that changed (only
    the sections it reads for ``cfg``: an eval of no LM records no ``sft`` or ``grpo``)."""
    dumped = cfg.model_dump(mode="json")
    return {k: _hashed_view(k, _get(dumped, k)) for k in fingerprint_sections(stage, dumped)}


def setting_changes(key: str, old: Any, new: Any, real_new: Any = None) -> list[str]:
    """``"dotted.key: old -> new"`` for each setting under ``key`` that differs between two section values (pure;
    mappings compared key by key, anything else whole; a key one side lacks is ``unset``).

    ``old`` and ``new`` are compared as hashed (:func:`section_settings`); ``real_new``, the section as configured, is
    what a set source path is shown as: the hashed :data:`SOURCE_PATH` stand-in said only "<a path outside the run:
    ...>". A recorded one is shown as ``a path`` (its name is not recorded)."""
    if isinstance(old, dict) and isinstance(new, dict):
        real = real_new if isinstance(real_new, dict) else {}
        return [
            c for k in dict.fromkeys([*old, *new])
            for c in setting_changes(f"{key}.{k}", old.get(k, _UNSET), new.get(k, _UNSET), real.get(k))
        ]
    if old == new:
        return []
    shown_old = "a path" if old == SOURCE_PATH else _shown(old)
    return [f"{key}: {shown_old} -> {_shown(real_new if new == SOURCE_PATH and real_new is not None else new)}"]


_UNSET = object()


def _shown(value: Any) -> str:
    """A setting's value in a message: text as itself, anything else as JSON (``null``, ``[1, 2]``)."""
    return "unset" if value is _UNSET else value if isinstance(value, str) else json.dumps(value)


def _fingerprint(
    stage: str, own: dict[str, Any], inputs: dict[str, str | None], view: _View = TODAY, revisions: Mapping[str, int] | None = None
) -> str:
    """The fingerprint of ``stage`` from its ``own`` sections and its ``inputs``' fingerprints; its revision is today's
    (:meth:`Stage.revision_for`) unless ``revisions`` gives an earlier current one (:func:`_revision_choices`)."""
    sections = {k: _hash(_hashed_view(k, v, view)) for k, v in own.items()}
    hashed: dict[str, Any] = {"stage": stage, "sections": sections, "inputs": inputs}
    revision = (revisions or {}).get(stage, STAGE_REGISTRY[stage].revision_for(own))
    if revision:  # revision 0 is not hashed: fingerprints from before revisions hold
        hashed["revision"] = revision
    return _hash(hashed)


def stage_revision(cfg: Any, stage: str) -> int:
    """:meth:`Stage.revision_for` ``stage``'s sections in ``cfg`` (a config object or its JSON dump): the revision its
    outputs made with ``cfg`` have today."""
    return STAGE_REGISTRY[stage].revision_for(revision_sections(cfg, stage))


def revision_sections(cfg: Any, stage: str) -> dict[str, Any]:
    """``stage``'s sections in ``cfg`` (a config object or its JSON dump) as JSON dumps by key: what
    :meth:`Stage.revision_for` and :meth:`Stage.fixes_since` read."""
    return {k: _json(_get(cfg, k)) for k in STAGE_REGISTRY[stage].sections}


def fixes_text(stage: str, fixes: Sequence[int], sections: Mapping[str, Any] | None = None) -> str:
    """What ``stage``'s outputs from before ``fixes`` (revisions, oldest first) got wrong (:data:`REVISIONS`): the one
    fix's reason, or each reason after its revision number; for outputs made with ``sections`` (as
    :meth:`Stage.fixes_since` reads them) of a protocol other than per_user, without what concerns per-user splits only
    (:data:`PER_USER_TEXT`)."""
    per_user = sections is None or _split_protocol(sections) in (None, "per_user")

    def reason(r: int) -> str:
        part = None if per_user else PER_USER_TEXT.get((stage, r))
        return REVISIONS[stage][r].replace(part, "") if part else REVISIONS[stage][r]

    if len(fixes) == 1:
        return reason(fixes[0])
    return "; ".join(f"revision {r}: {reason(r)}" for r in fixes)


def _split_protocol(sections: Mapping[str, Any]) -> str | None:
    """``data.split.protocol`` in a stage's sections by key (``data`` or ``data.split``), None where they hold none."""
    split = sections.get("data.split") or (sections.get("data") or {}).get("split") or {}
    protocol = split.get("protocol") if isinstance(split, dict) else None
    return protocol if isinstance(protocol, str) else None


def stage_fingerprint(cfg: PipelineConfig, stage: str) -> str:
    """What ``stage``'s outputs depend on: its own declared ``sections`` and the fingerprint of every
    stage it reads for ``cfg`` (:func:`read_inputs`; so, transitively, their sections: :func:`fingerprint_sections`).

    The one fingerprint scheme: the pipeline records it beside a finished stage and reuses the stage
    only while it is unchanged; a runner computes the same value from what it received
    (:func:`received_fingerprint`) to tag its checkpoints; a child run links a parent's stage only
    when it is equal. Here rather than in :mod:`conrec.pipeline` so that a stage can import it
    without importing the pipeline, which imports the stages' runners.
    """
    return _stage_fingerprint(cfg, stage, view=TODAY)


READS = ("config", "inputs", "every")
"""Which upstream stages a fingerprint hashes (:func:`_dumped_fingerprint`): those the config selects (today's rule,
:func:`read_inputs`); every declared input and the selected optional ones (before an eval of no LM and no ``content``
baseline stopped reading the sid stage); every input and optional input (before an eval hashed only the LMs it
scores)."""


def _stage_fingerprint(cfg: PipelineConfig, stage: str, view: _View, reads: str = "config") -> str:
    return _dumped_fingerprint(cfg.model_dump(mode="json"), stage, view, reads)


def _dumped_fingerprint(
    dumped: dict[str, Any], stage: str, view: _View, reads: str = "config", revisions: Mapping[str, int] | None = None
) -> str:
    """:func:`_stage_fingerprint` of a config's JSON dump, hashing the upstream stages ``reads`` names (:data:`READS`:
    the older ones are the fingerprints older versions recorded), each at the revision ``revisions`` gives (today's
    where it gives none)."""
    spec = STAGE_REGISTRY[stage]
    if reads == "config":
        upstream = read_inputs(stage, dumped)
    elif reads == "inputs":
        upstream = (*spec.inputs, *(u for u in spec.optional_inputs if spec.selects_input(dumped, u)))
    else:
        upstream = read_inputs(stage)
    inputs: dict[str, str | None] = {u: _dumped_fingerprint(dumped, u, view, reads, revisions) for u in upstream}
    return _fingerprint(stage, {k: _get(dumped, k) for k in spec.sections}, inputs, view, revisions)


def _revision_choices(dumped: dict[str, Any], stage: str) -> list[dict[str, int]]:
    """Each choice of a current revision (:meth:`Stage.current_revisions`) for the stages ``stage`` is built on, itself
    included, that differs from today's somewhere ({} first: today's everywhere); a record hashed with any of them
    is current (:func:`stage_fingerprints`)."""
    choices: list[dict[str, int]] = [{}]
    for s in upstream_closure(stage):
        earlier = STAGE_REGISTRY[s].current_revisions(revision_sections(dumped, s))[:-1]
        choices += [{**c, s: r} for c in choices for r in earlier]
    return choices


def stage_fingerprints(cfg: PipelineConfig, stage: str) -> set[str]:
    """The fingerprints a finished ``stage`` may have recorded and still be current for ``cfg``: today's, and
    those older versions recorded for the same settings (:data:`_VIEWS`: real values before
    :data:`EXECUTION_SETTINGS` and source paths were hashed at stand-ins), so that a run made with Spark, streaming
    or the user's own files is not rerun for the upgrade; each also with the upstream stages older versions hashed
    (:data:`READS`): every optional input (an eval before it hashed only the LMs it scores), so that an eval of fewer
    LMs made before is current while the ``sft`` and ``grpo`` settings it hashed are the same; and the sid stage (an
    eval of no LM and no ``content`` baseline before it stopped reading it), while its settings are the same. Where
    ``eval.models`` names every LM (the default and the presets) the three are the same fingerprint. And each with an
    earlier revision of a stage it is built on that no fix since concerns (:func:`_revision_choices`), as that conrec
    hashed it (a simulator run's data stage from before data revision 2)."""
    dumped = cfg.model_dump(mode="json")
    return {
        _dumped_fingerprint(dumped, stage, view, reads, revisions)
        for view in _VIEWS for reads in READS for revisions in _revision_choices(dumped, stage)
    }


def recorded_fingerprint(run_dir: str | Path, stage: str) -> str | None:
    """The fingerprint the pipeline recorded beside ``stage``'s outputs in ``run_dir`` (None: none recorded)."""
    path = Path(run_dir) / stage / FINGERPRINT_FILE
    try:
        rec = json.loads(path.read_text()) if path.is_file() else None
    except (OSError, json.JSONDecodeError):
        return None
    fp = rec.get("fingerprint") if isinstance(rec, dict) else None
    return fp if isinstance(fp, str) else None


def received_fingerprint(stage: str, section: Any, run_dir: str | Path) -> str:
    """:func:`stage_fingerprint` computed inside a runner, from the ``section`` it received and the
    fingerprints recorded beside its inputs in ``run_dir``: equal to the pipeline's value whenever
    the inputs are current (which the pipeline checks before it calls the runner)."""
    spec = STAGE_REGISTRY[stage]
    own = {k: _json(section if spec.bundle is None else getattr(section, _field(k))) for k in spec.sections}
    # the inputs its section selects (a bundle's field is its section's first component: eval.models)
    upstream = read_inputs(stage, section)
    return _fingerprint(stage, own, {u: recorded_fingerprint(run_dir, u) for u in upstream})


def stage_table() -> str:
    """The stage table of docs/pipeline.md (markdown), generated from the registry; ``python -m conrec.stages`` prints it."""

    def code(items: tuple[str, ...]) -> str:
        return ", ".join(f"`{x}`" for x in items) or "—"

    rows = ["| stage | command | config sections | needs stages | writes |", "|---|---|---|---|---|"]
    for s in STAGE_REGISTRY.values():
        needs = code(s.inputs) + (f" (and {code(s.optional_inputs)} when present)" if s.optional_inputs else "")
        needs += f"; {s.selects_note}" if s.selects_note else ""
        sections = code(s.sections) + (f" ({code(s.placement)} for placement only)" if s.placement else "")
        rows.append(f"| {s.name}: {s.summary} | `{s.command}` | {sections} | {needs} | {code(s.outputs)} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(stage_table())
