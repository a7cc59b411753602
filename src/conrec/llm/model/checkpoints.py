"""Crash-safe Trainer checkpoints, shared by SFT and GRPO.

The HF Trainer writes ``checkpoint-<step>/`` file by file (weights, optimizer, scheduler, RNG state,
``trainer_state.json``), so a SIGKILL while saving leaves a directory that looks like a checkpoint
but cannot be resumed from (e.g. weights written, trainer state not yet). Here a checkpoint counts
only once complete: :class:`CompleteCheckpointMarker` writes ``_complete.json`` into it after the
Trainer's ``on_save`` (every file written), and :func:`newest_complete_checkpoint` resumes from the
newest marked checkpoint whose files still read, deleting newer incomplete ones. Keeping at least
two checkpoints (:data:`MIN_KEPT`) means a kill while saving falls back to the previous one.

A checkpoint also belongs to one configuration: :func:`prepare_checkpoint_dir` stores a fingerprint
beside them and discards them when it changes (training them further would mix two runs), and the number of
processes that trained them: a launch with another number is refused (:func:`process_change`), not resumed.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from conrec.io import write_json

COMPLETE_FILE = "_complete.json"
OWNER_FILE = "_owner.json"
MIN_KEPT = 2
_CKPT = re.compile(r"^checkpoint-(\d+)$")


def saved_checkpoint(args: Any, state: Any) -> Path | None:
    """In ``on_save``: the ``checkpoint-<step>`` directory the Trainer has just written, on the main
    process only (None elsewhere, or if there is none), for callbacks that add their own state to it."""
    ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
    return ckpt if state.is_world_process_zero and ckpt.is_dir() else None


class CompleteCheckpointMarker(TrainerCallback):
    """Marks ``checkpoint-<step>`` complete once the Trainer has written all of its files."""

    def on_save(self, args, state, control, **kwargs):
        if (ckpt := saved_checkpoint(args, state)) is not None:
            write_json({"step": int(state.global_step)}, ckpt / COMPLETE_FILE)
        return control


class NoCheckpointAtTheEnd(TrainerCallback):
    """Skips the checkpoint of the step that ends training (the step budget, or a callback's stop).

    The HF Trainer saves one there, and resuming from it trains one step past the budget: its epoch
    loop checks ``max_steps`` only after a step (transformers 5.23). That extra step moves the weights
    (GRPO's constant learning rate) or the EMA average, so a crash between the last step and the
    written model did not end like an uninterrupted run. Without that checkpoint, such a crash
    resumes from the one before and repeats the last steps, as after any other crash. It must come
    after every callback that can stop training (the early stopper), so it sees their decision.
    """

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps or control.should_training_stop:
            control.should_save = False
        return control


def untied_missing_keys(model: Any, missing: list[str]) -> list[str]:
    """``missing`` less the weights tied to one that was loaded (the same tensor under another name), in order.

    Why: a model with tied embeddings (SmolLM2, Gemma 3, the tiny models) saves the shared tensor once, under the
    embedding's name, so a checkpoint lacks ``lm_head.weight`` and loading it fills the head through the embedding.
    A key that is no parameter (a buffer) or whose tensor nothing loaded stays: it is really missing."""
    params = dict(model.named_parameters(remove_duplicate=False))
    loaded = {id(t) for name, t in params.items() if name not in missing}
    return [k for k in missing if k not in params or id(params[k]) not in loaded]


class TiedHeadLoad:
    """Trainer mixin: the Trainer's "There were missing keys in the checkpoint model loaded" warning leaves out
    the weights tied to a loaded one (:func:`untied_missing_keys`), so it is said only when a key is really missing.

    Why: every SFT and GRPO resume printed ``missing keys ... ['lm_head.weight']`` (transformers 5.23 treats the
    tied head as missing unless the model lists it in ``_keys_to_ignore_on_save``, which Llama and Gemma 3 do not),
    which is harmless and read as a broken checkpoint. Place it before the Trainer class in the bases."""

    model: Any

    def _issue_warnings_after_load(self, load_result: Any) -> None:
        missing = untied_missing_keys(self.model, list(load_result.missing_keys))
        super()._issue_warnings_after_load(load_result._replace(missing_keys=missing))  # type: ignore[misc]  # the Trainer's


class LogAtEachCheckpoint(TrainerCallback):
    """Logs the loss at every checkpoint step, so that a resumed run still knows the whole run's loss.

    The Trainer sums the loss between two logs in memory only. A checkpoint taken between logs does
    not hold that sum, and a run resumed from it could average only the steps it ran itself (its
    ``training_loss``). With a log at each checkpoint, the saved ``log_history`` covers every step up to
    it: :func:`whole_run_mean_loss` adds the two parts.
    """

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_save:
            control.should_log = True
        return control


def whole_run_mean_loss(
    log_history: list[dict[str, Any]], resumed_at: int, resumed_mean: float, total_steps: int
) -> tuple[float, int]:
    """(mean training loss, the number of steps it averages) of a run resumed at step ``resumed_at``.

    ``resumed_mean`` is the Trainer's mean over steps ``resumed_at + 1 .. total_steps``; the steps before
    come from the logged losses (each the mean since the log before it). If those do not reach exactly
    ``resumed_at`` (a checkpoint written without :class:`LogAtEachCheckpoint`), the earlier steps cannot be
    recovered, and the result is ``resumed_mean`` over the resumed steps only, which the count says.
    """
    resumed_steps = total_steps - resumed_at
    before, last = 0.0, 0
    for entry in log_history:
        step = int(entry.get("step", 0))
        if "loss" in entry and last < step <= resumed_at:
            before += float(entry["loss"]) * (step - last)
            last = step
    if resumed_at == 0 or last != resumed_at or total_steps <= 0:
        return resumed_mean, resumed_steps
    return (before + resumed_mean * resumed_steps) / total_steps, total_steps


def _checkpoints(folder: Path) -> list[tuple[int, Path]]:
    found = [(int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := _CKPT.match(p.name))] if folder.is_dir() else []
    return sorted(found, reverse=True)


def _complete(ckpt: Path) -> bool:
    """Marked complete, and its trainer state and weights' headers still read."""
    from conrec.errors import StageInputError
    from conrec.llm.model.model_files import verify_safetensors

    if not (ckpt / COMPLETE_FILE).is_file() or not (ckpt / "trainer_state.json").is_file():
        return False
    try:
        json.loads((ckpt / "trainer_state.json").read_bytes())
        for shard in ckpt.glob("*.safetensors"):
            verify_safetensors(shard)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, StageInputError):
        return False
    return True


def last_complete_checkpoint(folder: Path, clean: bool = True) -> Path | None:
    """:func:`newest_complete_checkpoint` without the names of the incomplete ones."""
    return newest_complete_checkpoint(folder, clean)[0]


def newest_complete_checkpoint(folder: Path, clean: bool = True) -> tuple[Path | None, list[str]]:
    """The newest complete checkpoint under ``folder`` (None if none), and the names of the incomplete checkpoints
    newer than it (newest first, for :func:`restart_note`); with ``clean`` those are deleted, so that the Trainer's own
    rotation never counts them."""
    incomplete: list[str] = []
    for _, ckpt in _checkpoints(Path(folder)):
        if _complete(ckpt):
            return ckpt, incomplete
        incomplete.append(ckpt.name)
        if clean:
            shutil.rmtree(ckpt, ignore_errors=True)
    return None, incomplete


def restart_note(resume_from: Path | None, incomplete: list[str]) -> str | None:
    """What a training run says when the earlier run's only checkpoints (``incomplete``: from
    :func:`newest_complete_checkpoint`) were incomplete, so that it starts from step 0; None otherwise.

    Why: a GRPO stage (SFT too) whose one checkpoint had been cut short by a kill while it was saved started again from
    step 0 without a word, where a resume says "resuming from checkpoint-N" and discarded checkpoints say why."""
    if resume_from is not None or not incomplete:
        return None
    from conrec.errors import spoken_list

    were = "was" if len(incomplete) == 1 else "were"
    return (f"the earlier run's {spoken_list(incomplete)} {were} not completely written (the run was stopped during a save) and "
            "cannot be resumed: training starts from step 0")


def _owner_record(folder: Path) -> dict[str, Any]:
    """``folder``'s owner record ({} when missing or unreadable)."""
    owner = Path(folder) / OWNER_FILE
    try:
        record = json.loads(owner.read_text()) if owner.is_file() else {}
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return record if isinstance(record, dict) else {}


def _made_under(folder: Path, fingerprint: str) -> bool:
    """Whether ``folder``'s owner record names ``fingerprint``."""
    return _owner_record(folder).get("fingerprint") == fingerprint


def resumed_processes(folder: Path, fingerprint: str, resume: bool) -> int | None:
    """The number of processes that trained the checkpoints :func:`prepare_checkpoint_dir` would keep (None when it
    keeps none); 1 for a record written before the count was kept (most runs are single-process, and theirs stay
    resumable).

    Why: the count is a factor of the global batch, and the Trainer skips the data already seen in the new count's
    batches, so a resume in another world size trained on data neither run would, and its record named the new count."""
    if not resume or not _checkpoints(Path(folder)) or not _made_under(folder, fingerprint):
        return None
    return recorded_processes(folder)


def recorded_processes(folder: Path) -> int:
    """The number of processes that ``folder``'s owner record says trained its checkpoints; 1 where it says none (a
    record written before the count was kept, or no record)."""
    count = _owner_record(folder).get("num_processes", 1)
    return count if isinstance(count, int) else 1


def process_change(made_with: int | None, num_processes: int) -> str | None:
    """Why checkpoints made with ``made_with`` processes (:func:`resumed_processes`) cannot be resumed by a launch of
    ``num_processes`` (pure); None when they can, or there are none."""
    if made_with is None or made_with == num_processes:
        return None
    return (f"the interrupted run's checkpoints were trained with {made_with} process(es), this launch has {num_processes}: "
            f"launch it with {made_with} to resume them, or pass --no-resume to start over")


def discard_reason(folder: Path, fingerprint: str, resume: bool, place: str = "") -> str | None:
    """Why :func:`prepare_checkpoint_dir` is about to discard ``folder``'s checkpoints; None when there are none
    or they will be resumed. Call it first: that one deletes them. ``place``: the end of ``fingerprint`` that names
    where they are (SFT: the model's absolute path); a record that differs there only was made elsewhere.

    Why: the Ctrl-C line promises a resume, and a rerun with changed settings emptied the folder and started at
    step 0 without a word (GRPO says "starting from scratch"); and a copied run directory (`cp -a`) was told its
    checkpoints were "made with other settings or inputs", which were the same."""
    if not _checkpoints(Path(folder)):
        return None
    if not resume:
        return "resume is off (--no-resume or --force)"
    if _made_under(folder, fingerprint):
        return None
    made = _owner_record(folder).get("fingerprint")
    if place and fingerprint.endswith(place) and isinstance(made, str) and made.startswith(fingerprint[: -len(place)]):
        return "made in another directory: the run directory was copied or moved, and checkpoints are tied to their path"
    return "made with other settings or inputs"


def prepare_checkpoint_dir(folder: Path, fingerprint: str, resume: bool, is_main: bool = True, num_processes: int = 1) -> bool:
    """Keep ``folder``'s checkpoints only if ``resume`` and they were made under ``fingerprint``;
    otherwise empty it. Records the fingerprint and the number of processes training (see
    :func:`resumed_processes`). Returns whether earlier checkpoints were kept."""
    folder = Path(folder)
    owner = folder / OWNER_FILE
    keep = resume and _made_under(folder, fingerprint)
    if is_main:
        if not keep and folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
        write_json({"fingerprint": fingerprint, "num_processes": num_processes}, owner)
    return keep


def checkpoint_step(ckpt: Path) -> int:
    m = _CKPT.match(ckpt.name)
    if m is None:
        raise ValueError(f"{ckpt} is not a checkpoint-<step> directory")
    return int(m.group(1))


def trainer_save_args(save_steps: int, save_total_limit: int) -> dict[str, Any]:
    """Trainer arguments for resumable checkpoints: full state (optimizer, scheduler, RNG), and at
    least :data:`MIN_KEPT` kept so a kill during a save still leaves a complete one."""
    return {
        "save_strategy": "steps",
        "save_steps": save_steps,
        "save_total_limit": max(MIN_KEPT, save_total_limit),
        "save_only_model": False,
    }
