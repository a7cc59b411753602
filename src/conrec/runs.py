"""The run directory: the one contract between stages.

Every stage reads its inputs from and writes its outputs to fixed paths below ``run_dir``; a stage
is finished when its ``_done.json`` marker exists (written last, atomically). Rerunning a pipeline
skips finished stages unless forced.

Layout::

    run_dir/
      config.yaml                  the resolved pipeline config of the last run
      .conrec.lock                 held by the process writing the run (conrec.run_lock)
      .conrec.lock.owner           that process's pid, command line and start, while it holds the lock
      data/events.parquet          canonical events  (user_id, item_id, ts, feedback)
      data/items.parquet           canonical items   (item_id, title, text, category, ...)
      data/samples.parquet         evaluation points (see conrec.data.samples)
      data/exposures.parquet       every shown item + outcome -1/0/+1 (see conrec.data.exposures)
      data/stats.json
      sid/embeddings.npy           item vectors, rows in items.parquet order (the quantizer's input)
      sid/text_vectors.npy         the text encoder's vectors alone (the content baseline's)
      sid/quantizer.pt             RQ-VAE / residual k-means checkpoint
      sid/sid_map.parquet          item_id <-> SID codes (a bijection)
      sid/stats.json
      sft/model/                   HF model dir (+ tokenizer with SID tokens)
      <stage>/_invalidated.json    beside a finished stage a rerun of an earlier one cleared: which one
      grpo/model/                  HF model dir after progressive GRPO
      grpo/stage_<i>/              per-stage checkpoints and logs
      eval/predictions/<model>.parquet
      eval/metrics.json  eval/report.md  eval/*.png
      ablations/<what>/<row>/      child runs (conrec.experiments): unchanged stages linked here, parent.json
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conrec.errors import StageInputError, spoken_list
from conrec.io import unwritable, write_json, write_text
from conrec.source_files import change as source_change
from conrec.stages import (
    FINGERPRINT_FILE,
    MODEL_STAGES,
    STAGE_REGISTRY,
    STAGES,
    changed_sections,
    fingerprint_sections,
    fixes_text,
    model_output,
    read_inputs,
    reads_any,
    revision_sections,
    section_as_hashed,
    section_hashes_any_view,
    setting_changes,
    setting_of,
    settings_added,
    stage_fingerprints,
    upstream_closure,
    without_settings,
)

if TYPE_CHECKING:
    from rich.console import Console

    from conrec.config import PipelineConfig

__all__ = ["FINGERPRINT_FILE", "PARENT_FILE", "STAGES", "RunDir"]  # STAGES, FINGERPRINT_FILE: re-exported from conrec.stages (the registry)

PARENT_FILE = "parent.json"  # a child run's record of its parent and linked stages (conrec.experiments)
INVALIDATED_FILE = "_invalidated.json"  # beside a finished stage that a rerun of an earlier one cleared: which one
RERUN_EFFECT = {  # what an earlier stage's rerun replaced under the stages built on it (RunDir.model_problem)
    "data": "the tables it was trained on were rebuilt",
    "sid": "the SID map it was trained on was rebuilt",
    "sft": "the SFT model it was trained from was retrained",
}
MAX_CHANGES_SHOWN = 4  # settings a stale message names before "and N more"
STALE_MARK = "> **Stale:**"
"""The first words of a Markdown file marked stale (a quote, so that what follows still renders): an ablation table
(:mod:`conrec.ablation_stale`), a stage's report (:attr:`conrec.stages.Stage.reports`)."""


def _why(exc: BaseException) -> str:
    """An error's reason, without the traceback: ``strerror`` for an OSError, else its text."""
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def mark_stale_file(path: Path, why: str) -> bool:
    """Put a :data:`STALE_MARK` line saying ``why`` on top of the Markdown file ``path``, once; False when there is no
    such file or it is marked already."""
    try:
        text = path.read_text(encoding="utf-8")  # as written (conrec.io.write_text), whatever the machine's locale
    except (FileNotFoundError, NotADirectoryError):
        return False
    if text.startswith(STALE_MARK):
        return False
    write_text(f"{STALE_MARK} {why}\n\n{text}", path)
    return True


PROMPT_PREFIX_KEY = "prompts_with_special_prefix"
"""Recorded (true) beside every stage finished since the LM's prompts carry the tokenizer's special prefix
(:mod:`conrec.llm.inference.prompt_ids`); not hashed, so no fingerprint changed. A grpo or eval record without it,
in a run whose tokenizer has such a prefix, is stale (:meth:`RunDir.stale_reason`)."""


def _asks_the_lm(cfg: PipelineConfig, stage: str) -> bool:
    """Whether ``stage``'s outputs depend on how the LM's prompts are encoded: GRPO's rollouts, an eval that decodes
    an LM, an SFT that picks its checkpoint by decoding valid points (early stopping)."""
    if stage == "grpo":
        return True
    if stage == "eval":
        return any(m in cfg.eval.models for m in MODEL_STAGES)
    return stage == "sft" and cfg.sft.train.early_stopping is not None


@dataclass(frozen=True)
class Clearing:
    """What a stage run clears as it starts, checked clearable (:meth:`RunDir.check_clearable`, which makes these):
    ``stage`` and the later stages built on it, in order."""

    stage: str
    stages: tuple[str, ...]


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
    def text_vectors(self) -> Path:
        """The item-text encoder's vectors alone (``embeddings`` may add a collaborative part)."""
        return self.sid / "text_vectors.npy"

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

    def model_dir(self, name: str) -> Path:
        """The final model dir of model stage ``name`` (:data:`~conrec.stages.MODEL_STAGES`): the one
        lookup that the eval stage, ``conrec predict``/``score``, the server and the output checks share."""
        if name not in MODEL_STAGES:
            from conrec.errors import ConfigError

            raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(MODEL_STAGES)}")
        return self.root / model_output(name).rstrip("/")

    def has_model(self, name: str) -> bool:
        """Whether LM stage ``name`` left a loadable-looking model (its ``config.json``); says nothing
        about whether it is current: see :meth:`model_problem`."""
        return (self.model_dir(name) / "config.json").exists()

    def model_problem(self, cfg: PipelineConfig, name: str) -> str | None:
        """Why model ``name`` must not answer for ``cfg`` (missing, unfinished, made with another
        configuration, unreadable), or None when it is current.

        The one staleness check of a model: ``conrec predict``/``score``/``serve`` and the eval stage
        all ask it, so none of them serves a GRPO model trained on an SFT model that was since
        retrained with other settings. It is the pipeline's own reuse rule (:meth:`stale_reason`).
        """
        if not self.has_model(name):
            return f"no model at {self.model_dir(name).absolute()}"
        return self.stale_message(cfg, name)

    def stale_message(self, cfg: PipelineConfig, stage: str) -> str | None:
        """:meth:`stale_reason` as a person reads it: a stage that had finished and was cleared by a rerun of an
        earlier one says which (:meth:`invalidated_by`) rather than "not finished". For refusals and pages
        (``require_current``, :meth:`model_problem`, the inspector); the pipeline's own logic reads the bare reason."""
        why = self.stale_reason(cfg, stage)
        if why == "not finished" and (cleared := self.invalidated_by(stage)) is not None:
            return cleared
        return why

    def invalidated_by(self, stage: str) -> str | None:
        """Why ``stage``, which had finished, was marked unfinished by a rerun of an earlier stage
        (:meth:`invalidate_from` records which), or None when no such rerun cleared it. In a child run whose
        ``stage`` is linked to its parent's (:mod:`conrec.experiments`), the rerun was the parent's: it says so.

        Why: after ``conrec sid`` was rerun, ``conrec predict`` refused the finished SFT model as "not finished";
        it is refused because the SID map it was trained on was rebuilt, and the refusal should say so."""
        try:
            by = json.loads((self.stage_dir(stage) / INVALIDATED_FILE).read_text()).get("by")
        except (OSError, ValueError, AttributeError):
            return None
        if by not in STAGES or STAGES.index(by) >= STAGES.index(stage):
            return None
        owner, where = self, ""
        if self.stage_dir(stage).is_symlink():  # the note is the parent's, seen through the link
            owner = RunDir(self.stage_dir(stage).resolve().parent)
            where = f" in the parent run {owner.root}"
        if not owner.is_done(by):
            return f"`conrec {by}` was run again{where} after it finished and has not finished since"
        return f"`conrec {by}` was run again{where} after it finished, so {RERUN_EFFECT.get(by, f'the {by} outputs it was built on were rebuilt')}"

    def rerun_hint(self, cfg: PipelineConfig, stage: str) -> str:
        """What to run so that ``stage`` is current for ``cfg``: the earliest stage up to it that is not
        (a hint that named ``stage`` itself was refused by it when an earlier one had to run first), and, while another
        process holds the run, that it does (:meth:`busy_note`). For refusals only: the lock probe is not free."""
        reads = self.reads_closure(cfg, stage)
        # each stage's own check: the first stage stale on its own is the first stale at all (a stage is stale through
        # an earlier one only), without walking each one's upstream again
        earliest = next((s for s in reads if self._own_stale_reason(cfg, s) is not None), stage)
        then = f" and the stages after it up to {stage}" if earliest != stage else ""
        return f"run `conrec {earliest}`{then} with it, or `conrec demo` with it (it reruns whatever is not current)" + self.busy_note(earliest)

    def busy_note(self, stage: str) -> str:
        """``"; another conrec process holds the run now ..."`` while one does (a stage running on it), else "": a
        clause a refusal adds to its advice, which stays (the running stage may be another, or run other settings).

        Why: with `conrec sft` retraining the run in place, a refusal said only "run `conrec sft`", which that process
        was doing and which a second one may not do. The probe takes the lock for an instant when it is free
        (:func:`conrec.run_lock.held_elsewhere`), so only a refusal being said asks it, never a periodic check."""
        from conrec.run_lock import LOCK_FILE, held_elsewhere, holder_description

        if not held_elsewhere(self.root):
            return ""
        holder = holder_description(self.root)
        return (
            f"; another conrec process{f' ({holder})' if holder else ''} holds {self.root} now (its {LOCK_FILE}: a stage "
            f"is running on it): if that is `conrec {stage}` with this config, wait for it to finish instead"
        )

    def reads(self, cfg: PipelineConfig, stage: str) -> list[str]:
        """The stages ``stage`` reads for ``cfg``, in pipeline order: the declared inputs its config selects, and each
        optional input the run has and the config selects (eval reads an LM stage only if it exists and ``eval.models``
        names it; the sid stage only for an LM or the ``content`` baseline: :func:`conrec.stages.read_inputs`). What the
        pipeline checks before a stage starts (:func:`conrec.pipeline.check_upstream`) and what it is stale with."""
        spec = STAGE_REGISTRY[stage]
        ups = {u for u in read_inputs(stage, cfg) if u in spec.inputs or self.stage_dir(u).exists()}
        return [s for s in STAGES if s in ups]

    def reads_closure(self, cfg: PipelineConfig, stage: str) -> list[str]:
        """``stage`` and the stages it reads for ``cfg`` (:meth:`reads`), directly or not, in pipeline order. Unlike
        :func:`conrec.stages.upstream_closure` (what a config could make a stage read), only what this run's stage
        reads: an optional input the run lacks is left out."""
        seen, todo = set(), [stage]
        while todo:
            if (s := todo.pop()) not in seen:
                seen.add(s)
                todo += self.reads(cfg, s)
        return [s for s in STAGES if s in seen]

    def stale_reason(self, cfg: PipelineConfig, stage: str) -> str | None:
        """Why ``stage`` cannot be reused with ``cfg`` (unfinished, other config, unreadable output, or built on a stage
        that is not current); None if it can.

        Transitive: a stage is stale when a stage it reads, directly or not (:meth:`reads_closure`), is not finished, not
        made for ``cfg`` or built on a stage rebuilt since, in a run of its own or a child run alike. Why: a stage records
        the identities of the stages it read directly, and a rerun clears the later stages of its own run, not those of a
        child run linked to it (:mod:`conrec.experiments`). After a parent's SFT was retrained, a child's GRPO was stale
        (its SFT rebuilt) but the eval that scored that GRPO model was not (its GRPO unchanged), so
        ``run_pipeline(cfg, stages=("eval",))`` skipped it as current while ``conrec eval`` refused it. An earlier stage's
        files are not checked here (:meth:`output_problem`): one damaged since does not change what was built from it,
        and each reader checks the files it reads (the pipeline before a stage starts, a model load)."""
        if (why := self._own_stale_reason(cfg, stage)) is not None:
            return why
        # the earliest first: the cause, not its consequences; the files outside the run that they read were checked
        # with stage's own (its check covers every stage it is built on)
        for up in self.reads_closure(cfg, stage)[:-1]:
            if (why := self._own_stale_reason(cfg, up, files=False, sources=False)) is not None:
                if why == "not finished":
                    return f"built on a {up} stage that is not finished"
                return f"built on a {up} stage that is not current ({why.removesuffix('; rerun it')})"
        return None

    def _own_stale_reason(self, cfg: PipelineConfig, stage: str, files: bool = True, sources: bool = True) -> str | None:
        """:meth:`stale_reason` of ``stage`` by its own record and outputs (``files``: its outputs checked too), the
        stages it reads left aside but for the identities it recorded of them (:meth:`_rebuilt_upstream`) and for the
        files outside the run they read and their fixes since (``sources``: those files checked; a caller that checked
        a later stage's has checked them)."""
        if not self.is_done(stage):
            return "not finished"
        rec = self.fingerprint_record(stage)
        if rec is None:
            return "finished without a configuration record"
        if rec.get("fingerprint") not in stage_fingerprints(cfg, stage):
            # compared as the record was hashed (an older conrec's view), so an unchanged section is never named
            # a section it no longer reads, hashed by an older conrec (a baselines-only eval's sid), may be the change
            changed = changed_sections(cfg, stage, rec.get("sections") or {}) or changed_sections(
                cfg, stage, rec.get("sections") or {}, read_now=False
            )
            if changed:
                # the settings first: with other settings the stage reruns whatever a fix since says, and a fix of the
                # record's settings (data 3, per_user) may not concern the config's at all (switched to global_time)
                lines, added = self._setting_differences(cfg, stage, rec, changed)
                if added and not lines:  # no setting it was made with has changed: conrec has settings it had not
                    return self._added_since(cfg, stage, rec, added)
                more = f"; and {len(lines) - MAX_CHANGES_SHOWN} more" if len(lines) > MAX_CHANGES_SHOWN else ""
                what = "; ".join(lines[:MAX_CHANGES_SHOWN]) + more if lines else f"{', '.join(changed)} changed"
                return f"made with a different configuration ({what})"
            if (why := self._older_revision(stage, rec, cfg)) is not None:
                return why
            if (why := self._rebuilt_upstream(rec)) is not None:
                return why
            return "made by a conrec version whose stage read other settings (the config is unchanged); rerun it"
        for up in upstream_closure(stage, cfg) if sources else ():  # a file read by it or a stage it is built on changed (eval: its LMs')
            up_rec = rec if up == stage else self.fingerprint_record(up)
            now = STAGE_REGISTRY[up].source_paths(cfg)
            if up_rec is not None and (why := source_change(up_rec.get("source_files") or {}, now)) is not None:
                return why
        if "upstream" not in rec and STAGE_REGISTRY[stage].inputs and (self.root / PARENT_FILE).is_file():
            # a child run's linked stages are its parent's, rebuilt without clearing the child's own stages
            return "made by an older conrec that did not record which stages it was built on (this run's linked stages may have been rebuilt since); rerun it"
        if (why := self._rebuilt_upstream(rec)) is not None:
            return why
        if (why := self._prompts_without_prefix(cfg, stage, rec)) is not None:
            return why
        return self.output_problem(stage) if files else None

    def _prompts_without_prefix(self, cfg: PipelineConfig, stage: str, rec: dict[str, Any]) -> str | None:
        """Why ``stage``, recorded by a conrec that fed the LM its prompts without the tokenizer's special prefix,
        is stale: its outputs came from the LM's prompts (GRPO's rollouts, eval's decoding, SFT's early stopping) and
        the run's tokenizer puts a BOS before a text, which SFT trains with and every path now gives. None when the
        record says the prompts had it (:data:`PROMPT_PREFIX_KEY`), the stage asked the LM nothing, or the tokenizer
        adds nothing (the shipped SmolLM2 one): those outputs are what this conrec makes, and the run stays current."""
        if rec.get(PROMPT_PREFIX_KEY) is True or not _asks_the_lm(cfg, stage):
            return None
        from conrec.llm.model.tokenizer_prefix import adds_special_prefix

        if not adds_special_prefix(self.sft_model):
            return None
        return (
            f"made by an older conrec whose {stage} stage gave the LM its prompts without the tokenizer's special "
            "prefix (its BOS token), which SFT trains with and every prompt now starts with; rerun it"
        )

    def _recorded_configs(self) -> list[dict[str, Any]]:
        """The run's config.yaml as JSON dumps: as today's conrec reads it (today's defaults filled in), then as written
        ([] when it is missing or does not load; the first alone when only it loads)."""
        import yaml

        from conrec.config import load_config
        from conrec.config_yaml import load_yaml
        from conrec.errors import ConfigError

        path = self.root / "config.yaml"
        if not path.is_file():
            return []
        try:
            dumps = [load_config(path).model_dump(mode="json")]
        except (ConfigError, OSError):
            return []
        try:
            written = load_yaml(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, yaml.YAMLError):  # it loaded above: rewritten meanwhile
            return dumps
        return [*dumps, written] if isinstance(written, dict) else dumps

    def _setting_differences(self, cfg: PipelineConfig, stage: str, rec: dict[str, Any], changed: list[str]) -> tuple[list[str], list[str]]:
        """The settings of the ``changed`` sections that differ, ``key: recorded -> now``, and the settings conrec has
        added since the record was made that the config holds at their default (``[], []`` when the record's settings
        cannot be told). Read from the settings the record holds; for a record from before they were recorded, from
        the run's config.yaml where its section is the one recorded (:meth:`_config_record`). Else the caller names
        the sections, ``sft changed`` (all a stale message said before: which of a section's dozens of settings had
        changed, e.g. sft.train.logging_steps, was left to guess).

        Why the added ones apart: a run made before a setting existed recorded its section without it, so the section
        differs today although the run's own config is used unchanged, and every stage of a 5 December 2026 run was
        stale "with a different configuration (data changed)" for ``data.feedback_labels`` and ``data.ts_format``,
        hiding the stage revisions it was really stale for. An added setting the config sets to another value is a
        change (``key: unset -> value``); an added one is named as such only when, without it, each changed section
        hashes as recorded, so no change of another setting is hidden."""
        real = cfg.model_dump(mode="json")
        # as section_settings hashes them, but for every changed section: one it no longer reads may be among them
        now = {k: section_as_hashed(k, setting_of(real, k)) for k in changed}
        recorded = rec.get("settings")
        if not isinstance(recorded, dict):
            recorded = self._config_record(stage, rec)
        if any(k not in recorded for k in changed):
            return [], []
        unset = list(dict.fromkeys(a for k in changed for a in settings_added(k, recorded[k], now[k])))
        defaults = _unset_values(real, unset)
        added = [a for a in unset if a in defaults and setting_of(real, a) == defaults[a]]
        # each setting once: a section and its subsection are both fingerprinted (data, data.split; sft, sft.prompt)
        lines = list(dict.fromkeys(
            c for k in changed
            for c in setting_changes(k, recorded[k], without_settings(now[k], _inside(k, added)), setting_of(real, k))
        ))
        if added and not lines and not self._hashes_as_recorded(rec, real, changed, added):
            return [], []
        return lines, added

    @staticmethod
    def _hashes_as_recorded(rec: dict[str, Any], real: dict[str, Any], changed: list[str], added: list[str]) -> bool:
        """Whether each ``changed`` section of the config dump ``real``, without the ``added`` settings, has the hash
        ``rec`` recorded under a view some conrec hashed with: then nothing but those settings differs."""
        hashes = rec.get("sections") or {}
        try:
            return all(hashes.get(k) in section_hashes_any_view(k, without_settings(setting_of(real, k), _inside(k, added))) for k in changed)
        except (KeyError, TypeError):  # an added setting the view puts at a stand-in (an execution setting): not as hashed
            return False

    def _added_since(self, cfg: PipelineConfig, stage: str, rec: dict[str, Any], added: list[str]) -> str:
        """The stale message of ``stage`` whose record differs from ``cfg`` only by the settings ``added`` to conrec
        since it was made, at their defaults: those settings, and beside them the fix or rebuild that also makes it
        stale (:meth:`_older_revision`, :meth:`_rebuilt_upstream`); never "a different configuration"."""
        shown = ", ".join(added[:MAX_CHANGES_SHOWN]) + (f" and {len(added) - MAX_CHANGES_SHOWN} more" if len(added) > MAX_CHANGES_SHOWN else "")
        note = f"settings added since ({shown}) are at their defaults, and no setting it was made with has changed"
        why = self._older_revision(stage, rec, cfg) or self._rebuilt_upstream(rec)
        if why is None:
            return f"made by an older conrec: {note}; rerun it"
        return f"{why.removesuffix('; rerun it')}; {note}; rerun it"

    def _config_record(self, stage: str, rec: dict[str, Any]) -> dict[str, Any]:
        """The sections of the run's config.yaml whose hash, under any view a conrec hashed with
        (:func:`conrec.stages.section_hashes_any_view`), is the one ``rec`` recorded ({} when none is, or the file does
        not load): what an older conrec made the stage with, for its stale message, as today's view shows it. Compared
        under today's view only, a record from before the bookkeeping settings joined never matched (their real values).
        Each section is read as today's conrec reads the file, else as written: read with today's defaults, a section
        from before a setting was added never matched (5 December 2026: ``data.feedback_labels``), while as written it
        is the section recorded, without that setting."""
        hashes = rec.get("sections") or {}
        found: dict[str, Any] = {}
        for dumped in self._recorded_configs():
            for k in fingerprint_sections(stage):
                if k in found:
                    continue
                try:
                    value = setting_of(dumped, k)
                    if hashes.get(k) in section_hashes_any_view(k, value):
                        found[k] = section_as_hashed(k, value)
                except (KeyError, TypeError, AttributeError):  # as written, a section may lack what a view reads
                    continue
        return found

    def _rebuilt_upstream(self, rec: dict[str, Any]) -> str | None:
        """Which stage a finished stage's record says it was built on has been rebuilt or removed since (records
        from before identities were recorded carry none)."""
        for up, identity in (rec.get("upstream") or {}).items():
            if up in STAGES and self.stage_identity(up) != identity:
                return f"built on a {up} stage that was rebuilt or removed since"
        return None

    def _older_revision(self, stage: str, rec: dict[str, Any], cfg: PipelineConfig) -> str | None:
        """Whether ``stage``, or a stage its outputs are built on, was written by a conrec whose stage has been
        fixed since (:data:`conrec.stages.REVISIONS`): what it got wrong, for the stale message; every fix between the
        recorded revision and today's that applies to its settings (a per-user run from before data revision 3 lacks 3
        and 4), not only the latest.

        Asked only when the settings are the same (:meth:`stale_reason` names a change of settings first). The revision
        compared is the one the record's own settings have today (:meth:`conrec.stages.Stage.revision_for`; ``cfg``'s
        for a record without them): a revision that applies to some settings only (data 3 and 4: per-user splits) does
        not make a record of other settings "fixed since" when the config has changed to them since.

        Every stage fixed since is named, not only the first: a model from before revisions was stale with the data
        fixes alone, which left its tables as they were, never with the SFT fix that changed it. Several are one
        sentence, the same for each stage built on them (``conrec serve`` names a shared cause once)."""
        fixed = self._fixed_since(stage, rec, cfg)
        if not fixed:
            return None
        if len(fixed) == 1:
            ((up, text),) = fixed.items()
            what = f"made by an older conrec whose {stage} stage" if up == stage else f"built on a {up} stage that an older conrec made, and that stage"
            return f"{what} has been fixed since ({text}); rerun it"
        parts = "; ".join(f"{up}: {text}" for up, text in fixed.items())
        return f"made by an older conrec whose {spoken_list([*fixed])} stages have been fixed since ({parts}); rerun it"

    def own_fixes(self, cfg: PipelineConfig, stage: str) -> str | None:
        """What the fixes to ``stage`` itself since its record got wrong (:func:`conrec.stages.fixes_text`), or None
        (none, or no record): for the line of a stage the pipeline reruns after a stage it reads was rebuilt, which
        would otherwise not say that the stage itself was fixed since (an SFT model from before the prompt-budget fix)."""
        rec = self.fingerprint_record(stage)
        return self._fixed_since(stage, rec, cfg, only_itself=True).get(stage) if rec is not None else None

    def _fixed_since(self, stage: str, rec: dict[str, Any], cfg: PipelineConfig, only_itself: bool = False) -> dict[str, str]:
        """What the fixes since their records got wrong (:func:`conrec.stages.fixes_text`, for the settings they were
        made with), of ``stage`` (record ``rec``) and of each stage it reads for ``cfg``, directly or not, that has
        any, in pipeline order (``only_itself``: of ``stage`` alone)."""
        fixed: dict[str, str] = {}
        for up in [stage] if only_itself else upstream_closure(stage, cfg):  # the stages it reads for cfg (an eval of no LM: not sft's)
            up_rec = rec if up == stage else self.fingerprint_record(up)
            recorded = up_rec.get("revision", 0) if up_rec is not None else None
            spec, settings = STAGE_REGISTRY[up], (up_rec or {}).get("settings")
            if not (isinstance(settings, dict) and all(k in settings for k in spec.sections)):
                settings = revision_sections(cfg, up)
            if isinstance(recorded, int) and (fixes := spec.fixes_since(recorded, settings)):
                fixed[up] = fixes_text(up, fixes, settings)
        return fixed

    def stage_identity(self, stage: str) -> str | None:
        """A digest of ``stage``'s done marker and fingerprint record: it changes whenever the stage is
        run again (None: unfinished). A stage records its inputs' identities as they were when it started, and is refused
        at its end if one changed meanwhile (:func:`conrec.pipeline.refuse_if_rebuilt`).

        Why: inside one run, rerunning a stage clears the markers of everything after it. A child run's
        linked stage is the parent's, and a parent rebuilt from a refreshed file never reached the child's
        own stages: a child GRPO model trained on the old SFT model stayed "current"."""
        parts = [self.stage_dir(stage) / "_done.json", self.stage_dir(stage) / FINGERPRINT_FILE]
        try:
            blobs = [p.read_bytes() for p in parts]
        except OSError:
            return None
        return hashlib.sha256(b"\0".join(blobs)).hexdigest()[:16]

    def build_identities(self, stage: str) -> dict[str, str | None]:
        """The identities (:meth:`stage_identity`) of ``stage`` and of every stage it is built on: compared before and
        after a command reads a model and its tables, so that no answer mixes a model with data of a later stage run
        (a child run's linked stages included, which a parent's rerun does not clear here)."""
        return {s: self.stage_identity(s) for s in upstream_closure(stage)}

    def input_identities(self, stage: str) -> dict[str, str | None]:
        """The identities (:meth:`stage_identity`) of the stage runs ``stage`` reads (its declared inputs): what a
        resumable stage's checkpoints are tagged with, so that a data or SID rerun with the same settings (an events
        file refreshed in place) is never resumed across."""
        return {s: self.stage_identity(s) for s in STAGE_REGISTRY[stage].inputs}

    def fingerprint_record(self, stage: str) -> dict[str, Any] | None:
        """The ``{fingerprint, sections, settings, seconds, ...}`` the pipeline recorded beside ``stage`` (None: none or unreadable)."""
        fp = self.stage_dir(stage) / FINGERPRINT_FILE
        try:
            rec = json.loads(fp.read_text()) if fp.is_file() else None
        except (OSError, json.JSONDecodeError):
            return None
        return rec if isinstance(rec, dict) else None

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
        # a nonce: a stage rerun within the same second must still change its identity (stage_identity)
        payload = {"stage": stage, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(info or {}), "nonce": secrets.token_hex(8)}
        write_json(payload, self.stage_dir(stage) / "_done.json")
        (self.stage_dir(stage) / INVALIDATED_FILE).unlink(missing_ok=True)  # finished again: no earlier rerun's note

    def clear_done(self, stage: str) -> None:
        (self.stage_dir(stage) / "_done.json").unlink(missing_ok=True)

    def detach_from(self, stage: str) -> None:
        """Remove the links to another run's stages (a child run's, :mod:`conrec.experiments`) from
        ``stage`` on, so that running ``stage`` here writes this run's own directory.

        Why: ``conrec sft -r <child>`` followed the child's link into the parent, cleared the parent's
        markers and replaced the parent's model, without holding the parent's lock."""
        detached = [s for s in STAGES[STAGES.index(stage) :] if self.stage_dir(s).is_symlink()]
        for s in detached:
            self.stage_dir(s).unlink()
        record = self.root / PARENT_FILE  # what is linked, kept true
        if detached and record.is_file():
            try:
                info = json.loads(record.read_text())
                info["linked"] = [s for s in info.get("linked", []) if s not in detached]
                write_json(info, record)
            except (OSError, ValueError, AttributeError):
                pass

    def invalidate_from(self, stage: str, cfg: PipelineConfig | None = None) -> list[str]:
        """Mark ``stage`` and every later stage built on it unfinished (marker and fingerprint removed), and return
        them; a later stage that had finished keeps a note of which rerun cleared it (:meth:`invalidated_by`), ``stage``
        loses its own. Refused, with nothing cleared, where one of their directories is not writable (:meth:`check_clearable`).

        A later stage is built on it when it reads a cleared stage for ``cfg`` (:func:`conrec.stages.reads_any`: an
        eval reads the LMs ``eval.models`` names), or when its own record says it read one, or has no such record;
        without ``cfg``, every later stage. Why: once a stage starts rewriting its outputs, what downstream stages built
        from the old outputs is stale, and a crash before the stage finishes must not leave any of them "finished";
        but an eval of the SFT model alone, cleared by every GRPO rerun, was scored again by the next ``conrec demo``
        though it reads no GRPO output, and its fingerprint and record leave GRPO out.
        """
        return self.clear(self.check_clearable(stage, cfg))

    def clear(self, clearing: Clearing, console: Console | None = None) -> list[str]:
        """:meth:`invalidate_from` for the stages :meth:`check_clearable` found clearable (``clearing``), not checked
        again. Why: a stage start checks them before it writes anything (its ``config.yaml``, :meth:`detach_from`), then
        clears them; each stage run looked at every directory twice. Taken before :meth:`detach_from`, ``clearing`` may
        name a stage whose link that removed: its directory is gone, and clearing it does nothing. ``console``: where a
        report's stale line that could not be written is said (stderr by default).

        The reports' stale lines come after every stage is cleared, and are best-effort (:meth:`_mark_reports_stale`):
        a report that could not be read or rewritten (a full disk) aborted the clear half-way, leaving an eval marked
        done on an SFT that was being retrained."""
        (self.stage_dir(clearing.stage) / INVALIDATED_FILE).unlink(missing_ok=True)
        for s in clearing.stages:
            if s != clearing.stage and self.is_done(s):
                write_json({"by": clearing.stage, "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, self.stage_dir(s) / INVALIDATED_FILE)
            self.clear_done(s)
            (self.stage_dir(s) / FINGERPRINT_FILE).unlink(missing_ok=True)
        for s in clearing.stages:
            if s != clearing.stage:
                self._mark_reports_stale(s, clearing.stage, console)
        return list(clearing.stages)

    def _mark_reports_stale(self, stage: str, by: str, console: Console | None = None) -> None:
        """Mark the reports ``stage`` wrote (:attr:`conrec.stages.Stage.reports`: ``eval/report.md``) stale, as a rerun of
        the earlier stage ``by`` clears it; where one cannot be marked, a warning line on ``console`` (stderr by default).

        Why: the rerun leaves them on disk, and nothing but ``_invalidated.json`` said that ``eval/report.md`` no longer
        described the run's models (an SFT rerun, even one interrupted at once), while the ablation tables built on the
        same stages got a stale line (:mod:`conrec.ablation_stale`). The stage's own rerun replaces them. A courtesy:
        the stage is cleared already, so a report that cannot be rewritten is said, never a failed stage start."""
        spec = STAGE_REGISTRY[stage]
        for rel in spec.reports:
            try:
                mark_stale_file(
                    self.root / rel,
                    f"`conrec {by}` was run again after this report was written, so its numbers may not describe the run's "
                    f"models and data any more: run `{spec.command}` (or `conrec demo`) to write it again.",
                )
            except (OSError, UnicodeError) as exc:
                from rich.markup import escape

                from conrec.console_text import error_console

                said = console or error_console()
                said.print(f"[yellow]warning:[/] {escape(rel)} could not be marked stale ({escape(_why(exc))}); it no longer "
                           f"describes the run: run `{spec.command}` to write it again", highlight=False)

    def _cleared_from(self, stage: str, cfg: PipelineConfig | None) -> list[str]:
        """The stages :meth:`invalidate_from` clears: ``stage`` and the later ones built on it."""
        cleared = [stage]
        for s in STAGES[STAGES.index(stage) + 1 :]:
            if cfg is None or reads_any(s, cleared, cfg) or self._recorded_reads_any(s, cleared):
                cleared.append(s)
        return cleared

    def check_clearable(self, stage: str, cfg: PipelineConfig | None = None) -> Clearing:
        """The stages :meth:`invalidate_from` would clear, for :meth:`clear`; raises a one-line
        :class:`conrec.errors.StageInputError` unless every one can be cleared (their directories writable), before
        anything is cleared. A stage linked from another run is not looked at: :meth:`detach_from` removes the link,
        and nothing is written there.

        Why: ``conrec sft`` on a run whose ``eval/`` was read-only removed the SFT and GRPO done markers, then stopped on
        eval's, before any training: the run's models were no longer served, for a command that did nothing."""
        cleared = self._cleared_from(stage, cfg)
        for s in cleared:
            d = self.stage_dir(s)
            if d.is_symlink() or not d.is_dir() or (why := unwritable(d)) is None:
                continue
            raise StageInputError(
                f"the {stage} stage cannot start: {d} is {why}, and starting it marks the {s} stage there unfinished; "
                "nothing was changed: make it writable, or copy the run (cp -a) and run the copy"
            )
        return Clearing(stage, tuple(cleared))

    def _recorded_reads_any(self, stage: str, stages: list[str]) -> bool:
        """Whether ``stage``'s record says it was built on one of ``stages``, or cannot say (no record, or one from
        before the stages it read were recorded): a finished stage made with another config may read what this one
        does not (an eval of the GRPO model, rerun with ``eval.models: [sft]``)."""
        rec = self.fingerprint_record(stage)
        upstream = rec.get("upstream") if rec is not None else None
        return not isinstance(upstream, dict) or any(u in stages for u in upstream)

    def output_problem(self, stage: str) -> str | None:
        """Why ``stage``'s outputs are not usable (missing or unreadable file), or None if they are.

        Cheap on purpose (run on every skipped stage): Parquet footers, JSON files, the ``.npy``
        header and model dirs' JSON files and safetensors headers; no table or weights is loaded.
        """
        outputs = STAGE_REGISTRY[stage].outputs
        try:
            for rel in outputs:
                if not rel.endswith("/"):
                    _check_readable(self.root / rel)
        except (OSError, ValueError) as exc:
            return str(exc)
        for rel in (o for o in outputs if o.endswith("/")):  # model directories: every file verified
            from conrec.errors import StageInputError
            from conrec.llm.model.model_files import verify_model_dir

            try:
                verify_model_dir(self.root / rel)
            except StageInputError as exc:
                return str(exc)
        return None


def _inside(key: str, settings: list[str]) -> list[str]:
    """The dotted ``settings`` under section ``key``, relative to it (``data.ts_format`` in ``data``: ``ts_format``)."""
    return [s[len(key) + 1 :] for s in settings if s.startswith(key + ".")]


def _unset_values(dumped: dict[str, Any], settings: list[str]) -> dict[str, Any]:
    """What today's conrec gives each of the dotted ``settings`` of the config dump ``dumped`` that is a setting of its
    config (not a key inside a mapping one, as ``data.spark.conf``'s) when the config does not set it: its default, or
    what it is derived from the other settings ({} when the config without them does not validate). What a setting
    added since a run was made stands at when a config is silent about it."""
    if not settings:
        return {}
    from pydantic import ValidationError

    from conrec.config import PipelineConfig, config_reference

    keys = [k.split(".") for k, _, _ in config_reference()]
    fields = {".".join(parts[:n]) for parts in keys for n in range(1, len(parts) + 1)}  # a whole section too (eval.facet_rule)
    settings = [s for s in settings if s in fields]
    if not settings:
        return {}
    try:
        filled = PipelineConfig.model_validate(without_settings(dumped, settings)).model_dump(mode="json")
    except ValidationError:
        return {}
    return {s: setting_of(filled, s) for s in settings}


def _check_readable(path: Path) -> None:
    """Raise ValueError naming ``path`` unless it exists and its header/format reads."""
    if not path.is_file():
        raise ValueError(f"{path} is missing")
    try:
        if path.suffix == ".parquet":
            import polars as pl

            pl.read_parquet_schema(path)
        elif path.suffix == ".json":
            import json

            json.loads(path.read_bytes())
        elif path.suffix == ".npy":
            import numpy as np

            np.load(path, mmap_mode="r")
        elif path.stat().st_size == 0:
            raise ValueError("empty file")
    except Exception as exc:  # each reader raises its own types for a corrupt file
        raise ValueError(f"{path} is unreadable ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
