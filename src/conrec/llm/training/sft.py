"""The SFT stage: SID vocabulary + history and alignment tasks, trained with TRL's SFTTrainer.

Inputs (run-dir contract): ``data/items.parquet``, ``data/samples.parquet``, ``sid/sid_map.parquet``.
Output: ``sft/model/`` — a plain Hugging Face model dir (LoRA, if used, is merged before saving, so
every later stage loads it with ``AutoModelForCausalLM``) with its tokenizer (SID + marker tokens),
``conrec_vocab.json`` and a copy of the SID map (see :mod:`conrec.llm.model.vocab`); written atomically.
Checkpoints (full trainer state, for resume after a crash; deleted once the model is written) go to
``sft/checkpoints/``, statistics to ``sft/stats.json``.

Loss on completions only (TRL prompt/completion dataset with ``completion_only_loss``): the model
must learn to *answer*, not to reproduce histories. Runs unchanged under ``accelerate launch`` /
``torchrun`` (the Trainer handles DDP; only the main process writes files)::

    accelerate launch --config_file configs/accelerate/ddp_multigpu.yaml -m conrec.llm.training.sft --config cfg.yaml
    torchrun --standalone --nproc_per_node 2 -m conrec.llm.training.sft --config cfg.yaml   # 2 CPU processes (gloo), as in CI
"""

from __future__ import annotations

import argparse
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from transformers import PrinterCallback, set_seed

from conrec.console_text import shown
from conrec.errors import ConfigError, StageInputError
from conrec.io import atomic_path, read_parquet, write_json
from conrec.llm.config import COPY_BIAS_NEEDS_DENSE_LOSS, early_stopping_refusal, history_loss_refusal
from conrec.llm.inference.item_text import control_pattern, items_with_control_text, neutralise_all, tokenizer_control_tokens
from conrec.llm.inference.prompts import DISLIKE_TAG, LIKE_TAG, NEG_CLOSE, NEG_OPEN
from conrec.llm.model import copy_bias
from conrec.llm.model.backbone import check_loadable, load_backbone
from conrec.llm.model.checkpoints import (
    CompleteCheckpointMarker,
    LogAtEachCheckpoint,
    NoCheckpointAtTheEnd,
    TiedHeadLoad,
    checkpoint_step,
    discard_reason,
    newest_complete_checkpoint,
    prepare_checkpoint_dir,
    process_change,
    restart_note,
    resumed_processes,
    trainer_save_args,
    whole_run_mean_loss,
)
from conrec.llm.model.precision import pin_launcher_precision, record_precision, resolve_compute, trainer_kwargs
from conrec.llm.model.vocab import SidVocab, add_sid_vocabulary, embedding_rows, item_token_flags, save_vocab_meta
from conrec.llm.training.dropout import add_training_dropout
from conrec.llm.training.losses import CodeBias, TargetWeights, level_softmax_loss
from conrec.llm.training.progress_bar import StepProgressCallback
from conrec.llm.training.tasks import build_examples
from conrec.runs import RunDir
from conrec.sid.sid_map import SidMap
from conrec.stages import SftSections, received_fingerprint


def planned_steps_line(max_steps: int, epochs: float, n_examples: int, per_step: int, capped: bool, done: int = 0) -> str:
    """``SFT: 5,504 steps planned (8 epochs x 10,998 examples / 16 per step)``: the trainer's own step count, said
    before the first step, with where it comes from. No time: the bar's "left" comes from the steps' measured pace.

    Why: on 10,000 users the default recipe ran 5,504 steps (hours on 2 cores) and nothing said so before the bar's
    first line (30 s in, off a terminal); SFT examples grow with users (a window per user at least), not events."""
    source = "sft.train.max_steps" if capped else f"{epochs:g} epochs x {n_examples:,} examples / {per_step:,} per step"
    resumed = f", resuming at step {done:,}" if done else ""
    return f"SFT: {max_steps:,} steps planned ({source}){resumed}"


class RichProgressCallback(StepProgressCallback):
    """The SFT bar: optimiser steps and the latest loss; first the plan (:func:`planned_steps_line`)."""

    def __init__(self, console: Console, description: str = "SFT") -> None:
        super().__init__(console, description)
        self.n_examples = 0  # the training examples, set once the trainer has tokenised them

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * max(1, args.world_size)
            self.console.print(planned_steps_line(state.max_steps, args.num_train_epochs, self.n_examples, per_step,
                                                  args.max_steps > 0, state.global_step), highlight=False)
        super().on_train_begin(args, state, control, **kwargs)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.show_status(f"last loss {float(logs['loss']):.3f}")  # the summary line gives the mean
        super().on_log(args, state, control, logs=logs, **kwargs)  # after the status: the final step's line carries it


def _with_lora(model: Any, lora: Any, new_ids: list[int]) -> Any:
    """LoRA adapters on ``lora.target_modules`` plus training of the *new* embedding rows only.

    The SID/marker rows were just initialised and must learn, but PEFT's ``trainable_token_indices``
    wrapper breaks TRL's fused LM head (it hides ``lm_head.bias``). So the (tied) embedding matrix
    is left trainable and a gradient hook zeroes the gradient of every pre-existing row: with Adam
    and no weight decay a zero gradient means a zero update, so the original vocabulary is unchanged.
    """
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        task_type="CAUSAL_LM",
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
    )
    peft_model = get_peft_model(model, config)
    if new_ids:
        weights = {id(m.weight): m.weight for m in (model.get_input_embeddings(), model.get_output_embeddings()) if m is not None}
        for w in weights.values():
            keep = torch.zeros(w.shape[0], 1, dtype=w.dtype)
            keep[new_ids] = 1.0
            w.requires_grad_(True)
            w.register_hook(lambda g, keep=keep: g * keep.to(g.device))
    return peft_model


def lora_adapter_params(model: Any) -> int:
    """The parameters of the LoRA adapters in ``model`` (0 without any): trained, then merged into the weights they
    adapt before the model is saved (``merge_and_unload`` in :func:`run`), so they are no parameters of the saved model.

    Why: ``n_params`` counted them, 135,008,064 for SmolLM2 with r 8 on q/v where the saved model holds 134,547,264."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return sum(
        p.numel()
        for module in model.modules() if isinstance(module, BaseTunerLayer)
        for name in module.adapter_layer_names
        for p in getattr(module, name).parameters()
    )


def left_align(batch: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor, int]:
    """Move each right-padded row's tokens to the right end (pure, vectorised).

    Returns the model inputs (``input_ids``, ``attention_mask``, ``position_ids`` counted from each
    row's first real token, as ``generate`` does for left padding), the aligned labels, and how many
    trailing positions hold every supervised label: only those need vocabulary logits.
    """
    ids, labels = batch["input_ids"], batch["labels"]
    mask = batch.get("attention_mask")
    if mask is None:
        mask = torch.ones_like(ids)
    t = ids.shape[1]
    pad = t - mask.long().sum(1, keepdim=True)
    src = (torch.arange(t, device=ids.device).unsqueeze(0) - pad) % t
    ids, mask, labels = (x.gather(1, src) for x in (ids, mask, labels))
    positions = (mask.long().cumsum(1) - 1).clamp(min=0)
    supervised = (labels != -100).any(0).nonzero()
    first = int(supervised[0]) if len(supervised) else t - 1
    keep = max(1, t - first + 1)  # +1: the logit that predicts the first supervised token
    return {"input_ids": ids, "attention_mask": mask, "position_ids": positions}, labels, keep


def history_code_mask(ids: torch.Tensor, labels: torch.Tensor, target: torch.Tensor, levels: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(B, T', V) bool: last-level codes to drop from each last-level SID target's softmax.

    ``ids``/``labels`` are the left-aligned batch, ``target`` its trailing ``T'`` targets. An item
    the prompt already shows (a run of one SID token per level, none of them supervised) is never
    the answer at evaluation, because decoding masks history items; without the same mask in
    training, a small model can only learn that items seen in contexts are rarely answers, which on
    a world where popular items fill the histories becomes "avoid popular items". The target's own
    code is never masked (a repeated dislike keeps a finite loss).
    """
    n_levels = int(levels.max()) + 1
    mask = torch.zeros(*target.shape, vocab_size, dtype=torch.bool)
    if n_levels < 1:
        return mask
    offset = ids.shape[1] - target.shape[1]  # target k is the token at position offset + k
    lv_all = levels[ids.clamp(min=0).cpu()]
    for r in range(ids.shape[0]):
        row, lv, sup = ids[r].tolist(), lv_all[r].tolist(), (labels[r] != -100).tolist()
        shown: dict[tuple[int, ...], list[int]] = {}
        for i in range(len(row) - n_levels + 1):
            if lv[i : i + n_levels] == list(range(n_levels)) and not any(sup[i : i + n_levels]):
                shown.setdefault(tuple(row[i : i + n_levels - 1]), []).append(row[i + n_levels - 1])
        if not shown:
            continue
        for k, t in enumerate(target[r].tolist()):
            a = offset + k
            if t < 0 or lv[a] != n_levels - 1 or a < n_levels - 1:
                continue
            codes = [c for c in shown.get(tuple(row[a - n_levels + 1 : a]), []) if c != t]
            if codes:
                mask[r, k, codes] = True
    return mask


def negative_segment_loss(
    hidden: torch.Tensor,
    ids: torch.Tensor,
    labels: torch.Tensor,
    head: torch.Tensor,
    token_level: torch.Tensor,
    neg_span: tuple[int, int],
    bias: CodeBias | None = None,
) -> torch.Tensor:
    """Mean per-level cross-entropy of every SID token inside the prompts' ``<neg>...</neg>`` segments.

    ``hidden`` is the final (normed) hidden state of the left-aligned batch ``ids``, ``head`` the output
    embedding matrix. Each negative-segment SID token is predicted from the position before it with a
    softmax over its level's codes, so one forward pass teaches every disliked item of the history
    from the ones before it (the sample efficiency of a sequence model such as SASRec) instead of only
    the completion. Only prompt positions count (``labels == -100``); the completion keeps its own loss.
    Returns 0 when the batch has no such token (alignment examples).
    """
    open_id, close_id = neg_span
    levels = token_level.to(ids.device)
    inside = ((ids == open_id).long().cumsum(1) - (ids == close_id).long().cumsum(1)) > 0
    tok_level = torch.where(ids >= 0, levels[ids.clamp(min=0)], torch.full_like(ids, -1))
    target = inside & (tok_level >= 0) & (labels == -100)
    target[:, 0] = False  # position 0 has no predecessor
    n = int(target.sum())
    if n == 0:
        return hidden.new_zeros(())
    targets = torch.where(target, ids, torch.full_like(ids, -100))
    return level_softmax_loss(hidden[:, :-1], targets[:, 1:], head, token_level, bias=bias) / n


def copy_bias_logits(model: Any, model_inputs: dict[str, torch.Tensor]) -> CodeBias | None:
    """The model's copy bias (:mod:`conrec.llm.model.copy_bias`) on the logits predicted at each
    position but the last (aligned with the shifted targets); None when the model has none."""
    copy = copy_bias.copy_bias_of(model)
    if copy is None:
        return None
    per_level = copy.sequence_bias(model_inputs["input_ids"], model_inputs["attention_mask"])
    return CodeBias([b[:, :-1] for b in per_level], copy.token_code)


def attach_copy_bias(model: Any, tokenizer: Any, vocab: SidVocab, sections: SftSections) -> None:
    """Give the model ``sft.copy_bias`` before training (its settings were checked by :func:`preflight`)."""
    cb = sections.sft.copy_bias
    copy_bias.attach(model, copy_bias.CopyBias(cb.beta, vocab, tokenizer, learn=cb.learn))


def output_matrix(model: Any) -> torch.Tensor:
    """The output embedding matrix of ``model``, through a DDP wrapper (``.module``) if there is one:
    the hidden-state losses project onto its rows and must see the same parameters the forward used."""
    return getattr(model, "module", model).get_output_embeddings().weight


def completion_loss(
    model: Any,
    batch: dict[str, torch.Tensor],
    num_items_in_batch: Any = None,
    token_level: torch.Tensor | None = None,
    mask_history: bool = False,
    history_loss: float = 0.0,
    neg_span: tuple[int, int] | None = None,
    weights: TargetWeights | None = None,
) -> tuple[torch.Tensor, Any]:
    """Summed cross-entropy of the supervised tokens / ``num_items_in_batch`` (or their count).

    Without ``token_level``: equal to the model's own causal-LM loss on the same batch, but only the
    trailing positions of the left-aligned batch get vocabulary logits. With ``token_level`` (the
    :class:`conrec.llm.model.vocab.SidVocab` lookup, -1 for text tokens), a target that is an SID token of
    level ``l`` is scored by a softmax over level ``l``'s codes only.

    Why the level softmax: constrained decoding only ever chooses among one level's codes, and ranks
    items by the sum of those per-level log-probabilities; a softmax over the whole vocabulary also
    spends every update pushing ~49k text tokens down at SID positions, which a small model trained
    for minutes pays for in accuracy. Text targets (the alignment tasks' titles) keep the full softmax.
    """
    model_inputs, labels, keep = left_align(batch)
    with_history = history_loss > 0 and token_level is not None and neg_span is not None
    denom = num_items_in_batch if num_items_in_batch is not None else (labels[:, 1:] != -100).sum().clamp(min=1)
    if token_level is not None and not mask_history:
        # dense path (conrec.llm.training.losses): no vocabulary logits at all, every target projected onto its rivals only
        outputs = model(**model_inputs, logits_to_keep=1, use_cache=False, output_hidden_states=True)
        hidden = outputs.hidden_states[-1]
        head = output_matrix(model)
        bias = copy_bias_logits(model, model_inputs)
        loss = level_softmax_loss(hidden[:, :-1], labels[:, 1:], head, token_level, weights, bias) / denom
        if with_history:
            assert neg_span is not None
            ids = model_inputs["input_ids"]
            loss = loss + history_loss * negative_segment_loss(hidden, ids, labels, head, token_level, neg_span, bias)
        return loss, outputs
    if copy_bias.copy_bias_of(model) is not None:
        raise ConfigError(COPY_BIAS_NEEDS_DENSE_LOSS)
    outputs = model(**model_inputs, logits_to_keep=keep, use_cache=False, output_hidden_states=with_history)
    logits = outputs.logits[:, :-1].float()
    target = labels[:, labels.shape[1] - keep + 1 :]
    if token_level is not None:
        levels = token_level.to(logits.device)
        target_level = torch.where(target >= 0, levels[target.clamp(min=0)], torch.full_like(target, -1))
        other_level = levels.view(1, 1, -1) != target_level.unsqueeze(-1)
        logits = logits.masked_fill(other_level & (target_level >= 0).unsqueeze(-1), float("-inf"))
        if mask_history:
            ids = model_inputs["input_ids"]
            seen = history_code_mask(ids, labels, target, token_level, logits.shape[-1]).to(logits.device)
            logits = logits.masked_fill(seen, float("-inf"))
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100, reduction="sum"
    )
    loss = loss / denom
    if with_history:
        assert token_level is not None and neg_span is not None
        head = output_matrix(model)
        loss = loss + history_loss * negative_segment_loss(
            outputs.hidden_states[-1], model_inputs["input_ids"], labels, head, token_level, neg_span
        )
    return loss, outputs


def sft_trainer_class(
    token_level: torch.Tensor | None = None,
    mask_history: bool = False,
    history_loss: float = 0.0,
    neg_span: tuple[int, int] | None = None,
    weights: TargetWeights | None = None,
    never_targets: torch.Tensor | None = None,
) -> type:
    """TRL's ``SFTTrainer``, with a completion-only loss that skips prompt logits off Triton (CPU).

    Why: TRL 1.16's fused LM head projects only the supervised positions when Triton is available,
    but elsewhere it projects *every* position through a tiled pure-torch kernel (to keep tile
    shapes static). Our completions are a few SID tokens after prompts of ~100, so that is ~20x the
    needed vocabulary work; it dominated CPU steps. Here each batch is left-aligned
    (:func:`left_align`) and the model is asked for logits of the trailing positions only
    (``logits_to_keep``), then cross-entropy over the ``-100``-masked labels, normalised like
    ``transformers.Trainer.compute_loss`` (``num_items_in_batch``, x processes when tokens are
    averaged across devices). Same objective; the call goes through ``model(...)``, so DDP/FSDP
    wrappers see it. Overriding ``compute_loss`` is the extension point TRL documents; TRL's extra
    training metrics (token accuracy, entropy) are not logged on this path. With ``token_level``
    (``sft.train.sid_softmax = "level"``) this loss is used on every device, GPUs included.

    ``never_targets`` (a bool per token id) drops those tokens' labels before the loss: the item
    tokens of hybrid prompts, which follow their SID and are context only. The normaliser
    (``num_items_in_batch``) still counts them, a near-constant scale that Adam's update ignores.
    """
    from trl import SFTTrainer
    from trl.trainer.utils import _use_triton

    class TiedHeadSFTTrainer(TiedHeadLoad, SFTTrainer):  # a resume names no tied head as missing
        pass

    if token_level is None and _use_triton(torch.device("cuda" if torch.cuda.is_available() else "cpu")):
        return TiedHeadSFTTrainer

    class CompactLossSFTTrainer(TiedHeadSFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if never_targets is not None:
                inputs = {**inputs, "labels": drop_labels(inputs["labels"], never_targets)}
            loss, outputs = completion_loss(
                model, inputs, num_items_in_batch, token_level=token_level, mask_history=mask_history,
                history_loss=history_loss, neg_span=neg_span, weights=weights,
            )
            if num_items_in_batch is not None and self.args.average_tokens_across_devices:
                loss = loss * self.accelerator.num_processes
            return (loss, outputs) if return_outputs else loss

    return CompactLossSFTTrainer


def drop_labels(labels: torch.Tensor, never: torch.Tensor) -> torch.Tensor:
    """``labels`` with every token id flagged in ``never`` set to -100 (pure)."""
    flagged = never.to(labels.device)[labels.clamp(min=0, max=never.numel() - 1)] & (labels >= 0)
    return labels.masked_fill(flagged, -100)


def marker_id(tokenizer: Any, token: str) -> int:
    """The id of one prompt marker token (added to the vocabulary by :mod:`conrec.llm.model.vocab`)."""
    tid = tokenizer.convert_tokens_to_ids(token)
    if not isinstance(tid, int) or tokenizer.convert_ids_to_tokens(tid) != token:  # unknown tokens map to unk
        raise ValueError(f"{token!r} is not a single token of this tokenizer")
    return tid


def load_inputs(run: RunDir) -> tuple[Any, Any, SidMap]:
    """(items, samples, sid_map) of a run; clear StageInputError naming the missing file."""
    items = read_parquet(run.items, what="items table (run `conrec data` first)")
    samples = read_parquet(run.samples, what="samples table (run `conrec data` first)")
    sid_map = SidMap.from_parquet(run.sid_map)
    return items, samples, sid_map


def sid_item_vectors(run: RunDir, items: Any, sid_map: SidMap) -> np.ndarray:
    """The sid stage's item-text vectors (rows in items order) reordered to the SID map's items."""
    vectors = np.load(run.embeddings, allow_pickle=False)
    ids = [str(i) for i in items["item_id"].to_list()]
    if vectors.ndim != 2 or vectors.shape[0] != len(ids):
        raise StageInputError(
            f"{run.embeddings} has shape {tuple(vectors.shape)} but items.parquet has {len(ids)} items; rerun `conrec sid`"
        )
    row = {item: i for i, item in enumerate(ids)}
    missing = [i for i in sid_map.items if i not in row]
    if missing:
        raise StageInputError(f"{len(missing)} SID-map items have no vector in {run.embeddings} (e.g. {missing[0]}); rerun `conrec sid`")
    return vectors[[row[i] for i in sid_map.items]]


def timeline_training_windows(rd: RunDir, sections: SftSections, samples: Any, sid_map: SidMap) -> list[dict[str, str]]:
    """The timeline task's windows over the events the run trains up to (``data.split.train_until``),
    chosen by the baselines' fit rule (:func:`conrec.data.fit_events.fit_events_for`)."""
    import polars as pl

    from conrec.data.fit_events import training_events
    from conrec.llm.training.timeline import timeline_examples, user_timelines

    fit = training_events(rd.root, sections.split, samples)
    known = set(sid_map.items)
    fit = fit.filter(pl.col("item_id").cast(pl.String).is_in(sorted(known)))
    prompt = sections.sft.prompt
    stride = sections.sft.timeline.stride or prompt.max_timeline_events  # at most the window (check_settings)
    return timeline_examples(user_timelines(fit), sid_map.sid_lookup(), prompt, stride, sections.split.max_history)


def check_settings(sections: SftSections, loadable: bool = True) -> None:
    """Refuse, in one line, the SFT settings that contradict each other or the split (:meth:`SftConfig.refusal`,
    :func:`history_loss_refusal`, :func:`early_stopping_refusal`): the config's validators refuse all but
    ``history_loss_refusal`` when it is loaded; this sees a config built with ``model_copy`` too (the ablation rows),
    which no validator checks. Then a backbone this machine cannot load (:func:`check_loadable`: a preset whose
    package is not installed and not converted in the cache, a ``sft.model.path`` that is no model dir), here
    because every caller runs before anything is trained or touched: the preflight, `conrec demo` before its
    data and sid stages run (which unmark sft, grpo and eval too), `conrec ablate` before its first row.
    ``loadable`` False: the settings only (an ablation row whose SFT is current trains nothing, so needs no backbone)."""
    sft = sections.sft
    why = sft.refusal() or history_loss_refusal(sft) or early_stopping_refusal(sft.train, sections.split.train_until)
    if why is not None:
        raise ConfigError(why)
    if loadable:
        check_loadable(sft.model)


def preflight(sections: SftSections, run_dir: Path) -> tuple[Any, Any, SidMap]:
    """Every refusal SFT can make from its settings and the run's existing inputs, before anything is written:
    :meth:`conrec.stages.Stage.precheck` calls it before the pipeline rewrites config.yaml and unmarks sft, grpo
    and eval, and :func:`run` at its start. (A refused `conrec sft` or `conrec demo`, e.g. the timeline task with
    a segmented layout, or ``backbone: gemma3`` without its packages, left a finished run without its SFT, GRPO
    and eval markers and with the refused config.)
    Returns the run's (items, samples, sid_map), read once for the runner."""
    from conrec.llm.training.early_stopping import valid_points

    check_settings(sections)
    sft = sections.sft
    items, samples, sid_map = load_inputs(RunDir(run_dir))
    if sft.copy_bias.enabled and len(sft.copy_bias.beta) > sid_map.levels:
        raise ConfigError(f"sft.copy_bias.beta has {len(sft.copy_bias.beta)} values but the SIDs have {sid_map.levels} levels")
    if sft.train.early_stopping is not None and valid_points(samples, sft.train.early_stopping.max_points, sections.seed).height == 0:
        # the draw the stopper scores (run's): every score would be 0, training stopped after `patience` evaluations, silently
        raise ConfigError(
            "sft.train.early_stopping has no valid point to score (the data stage wrote none: data.split.valid_frac "
            "is 0, or no dislike falls in the valid period); raise valid_frac or remove early_stopping"
        )
    return items, samples, sid_map


ANNOUNCE_TOKENIZING = 50_000
"""From this many examples the stage says it is tokenizing them before TRL's trainer starts. Why: TRL tokenizes every
example before the first step, one at a time, with nothing on screen: 82 s for 155,930 examples (20,000 users, a
tiny model's 20 steps), and about 14 minutes at 10x those users, before the planned steps line."""


def run(sections: SftSections, run_dir: Path, console: Console | None = None, resume: bool = True) -> dict[str, Any]:
    """Fine-tune the backbone on the SFT tasks; write the model dir; mark the stage done.

    Takes the stage's declared sections (``sft``, ``seed``; ``decode`` places the discernment
    scoring) and the run directory (the stage protocol of :mod:`conrec.stages`). ``resume``:
    continue from the last complete checkpoint of an interrupted run with the same configuration
    (optimizer, scheduler, RNG and data position restored by the Trainer; see
    :mod:`conrec.llm.model.checkpoints`); the checkpoints are deleted once the model is written. Returns
    the training statistics.
    """
    import datasets
    from datasets import Dataset
    from transformers.utils import logging as hf_logging
    from trl import SFTConfig

    # the stage's own rich bar is the progress display: no per-map / per-shard tqdm bars
    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=r".*(gradient|activation)_checkpointing.*", category=FutureWarning)

    console = console or Console()
    rd = RunDir(run_dir)
    out = rd.sft_model
    sft = sections.sft
    tr = sft.train
    seed = sections.seed * 1_000_003 + tr.seed
    set_seed(seed)
    started = time.perf_counter()
    compute = resolve_compute(sections.compute)  # before any loading: a CPU asked for bf16 fails at once
    pin_launcher_precision(compute, console)  # compute.precision decides, not a launcher's setting

    items, samples, sid_map = preflight(sections, run_dir)  # every refusal from settings and inputs, before loading
    from accelerate import PartialState

    ckpt_dir = rd.sft / "checkpoints"
    # the inputs' identities too: checkpoints trained on samples a data rerun replaced must not be resumed
    place = str(out.resolve())
    owner = f"{received_fingerprint('sft', sections, rd.root)}:{sorted(rd.input_identities('sft').items())}:{place}"
    state = PartialState(cpu=compute.use_cpu)  # accelerate's shared state: the launch's processes and this one's rank
    n_processes = state.num_processes
    # read by every process before any writes the record: each refuses, so every one exits
    if (changed := process_change(resumed_processes(ckpt_dir, owner, resume), n_processes)) is not None:
        raise ConfigError(f"SFT: {changed}")
    model, tokenizer = load_backbone(sft.model)
    n_base = len(tokenizer)
    # item text that reads as a control token (a SID, a marker, the backbone's <|endoftext|>) is broken before it
    # enters any model input: the title-initialised SID rows here, the alignment tasks in build_examples
    control = control_pattern(tokenizer_control_tokens(tokenizer))
    n_control = len(items_with_control_text(items, control))
    titles = dict(zip(items["item_id"].to_list(), neutralise_all(items["title"].to_list(), control)))
    vectors = sid_item_vectors(rd, items, sid_map) if sft.model.sid_init == "encoder" else None
    vocab = add_sid_vocabulary(model, tokenizer, sid_map, titles, item_vectors=vectors, item_tokens=sft.prompt.item_id_tokens)
    new_ids = list(range(n_base, len(tokenizer)))
    if sft.copy_bias.enabled:
        attach_copy_bias(model, tokenizer, vocab, sections)
    windows = timeline_training_windows(rd, sections, samples, sid_map) if sft.tasks.timeline > 0 else None
    examples = build_examples(samples, items, sid_map, sft, seed=seed, cfg_seed=sections.seed, timeline_windows=windows, control=control)
    if not examples:  # TRL would stop with a StopIteration traceback on the empty dataset
        weighted = [name for name, w in sft.tasks.model_dump().items() if w > 0]
        raise StageInputError(f"SFT has no training example: the tasks with a weight ({', '.join(weighted)}) found nothing to ask in the training samples")
    per_task: dict[str, int] = {}
    for ex in examples:
        per_task[ex["task"]] = per_task.get(ex["task"], 0) + 1
    dataset = Dataset.from_list([{"prompt": e["prompt"], "completion": e["completion"]} for e in examples])

    if tr.lora is not None:
        model = _with_lora(model, tr.lora, new_ids)
    add_training_dropout(model, tr.dropout)

    is_main = state.is_main_process
    if is_main and (why := discard_reason(ckpt_dir, owner, resume, place)) is not None:
        console.print(f"[yellow]SFT: the earlier run's checkpoints are discarded ({why}): training starts from step 0[/]",
                      soft_wrap=True)  # one line, also in an 80-column log
    kept = prepare_checkpoint_dir(ckpt_dir, owner, resume, is_main, n_processes)
    state.wait_for_everyone()
    resume_from, incomplete = newest_complete_checkpoint(ckpt_dir, clean=is_main) if kept else (None, [])
    state.wait_for_everyone()
    if is_main and (note := restart_note(resume_from, incomplete)) is not None:
        console.print(f"[yellow]SFT: {note}[/]", soft_wrap=True)

    args = SFTConfig(
        output_dir=str(ckpt_dir),
        per_device_train_batch_size=tr.batch_size,
        gradient_accumulation_steps=tr.grad_accum,
        learning_rate=tr.learning_rate,
        num_train_epochs=tr.epochs,
        max_steps=tr.max_steps,
        warmup_steps=tr.warmup_ratio,
        lr_scheduler_type="linear",
        logging_steps=tr.logging_steps,
        **trainer_save_args(tr.save_steps, tr.save_total_limit),
        seed=seed,
        data_seed=seed,
        report_to="none",
        disable_tqdm=True,
        completion_only_loss=True,
        max_length=tr.max_length,
        packing=False,
        weight_decay=0.0,  # required by the frozen-rows trick of _with_lora
        **trainer_kwargs(compute),  # device, mixed precision, checkpointing, compile, loader workers
    )
    progress_cb = RichProgressCallback(console)
    marker = CompleteCheckpointMarker()
    callbacks: list[Any] = [progress_cb, marker]
    stopper = None
    ema = None
    if tr.ema_decay is not None:
        from conrec.llm.training.ema import EMA_FILE, EmaWeights

        ema = EmaWeights(model, tr.ema_decay)
        if resume_from is not None and (resume_from / EMA_FILE).is_file():
            ema.load(resume_from / EMA_FILE)
        # first: its update precedes the stopper's scoring, its file precedes the checkpoint's completion marker
        callbacks.insert(0, ema)
    if tr.early_stopping is not None:
        from conrec.llm.training.early_stopping import STOPPER_FILE, ValidFhrCallback, scored_points

        # never empty (preflight); with the eval's seen set, so the curve is the eval's valid FHR@K
        points = scored_points(rd, samples, tr.early_stopping.max_points, sections.seed)
        stopper = ValidFhrCallback(tr.early_stopping, points, tokenizer, sid_map, sft.prompt, sections.decode, console, ema=ema)
        if resume_from is not None and (resume_from / STOPPER_FILE).is_file():
            stopper.load(resume_from / STOPPER_FILE)
        callbacks.insert(callbacks.index(marker), stopper)  # its file precedes the checkpoint's completion marker
    callbacks.append(NoCheckpointAtTheEnd())  # after the stopper: it reads its decision
    callbacks.append(LogAtEachCheckpoint())  # after NoCheckpointAtTheEnd: it reads which steps still save
    neg_span = (marker_id(tokenizer, NEG_OPEN), marker_id(tokenizer, NEG_CLOSE)) if tr.history_loss > 0 else None
    tl = sft.timeline
    weights = TargetWeights(
        marker_id(tokenizer, DISLIKE_TAG), marker_id(tokenizer, LIKE_TAG), tl.dislike_weight, tl.positive_weight, tl.feedback_weight,
        eos_id=tokenizer.eos_token_id,
    )
    if is_main and len(examples) >= ANNOUNCE_TOKENIZING:
        console.print(f"tokenizing {len(examples):,} SFT examples before the first step (grows with the users; "
                      "sft.max_samples caps them for a quick run)", soft_wrap=True)
    trainer = sft_trainer_class(
        vocab.token_level if tr.sid_softmax == "level" else None, mask_history=tr.mask_history,
        history_loss=tr.history_loss, neg_span=neg_span, weights=weights,
        never_targets=item_token_flags(tokenizer, sid_map, embedding_rows(model)) if sft.prompt.item_id_tokens else None,
    )(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)  # the rich bar replaces the raw dict printing
    lengths = np.array([len(x) for x in trainer.train_dataset["input_ids"]])
    progress_cb.n_examples = len(lengths)
    # TRL keeps an example's start, so what max_length cuts is its end, the answer tokens; an example left with
    # none is dropped from the dataset
    n_cut, n_dropped = int((lengths >= tr.max_length).sum()), len(dataset) - len(lengths)
    if len(lengths) == 0:  # torch's sampler would stop with a "num_samples=0" traceback
        raise ConfigError(
            f"sft.train.max_length ({tr.max_length} tokens) leaves no answer token in any of the {len(dataset)} SFT examples: "
            "raise it, or shorten the prompts (sft.prompt.max_timeline_events, max_neg_items, max_pos_items)"
        )
    if n_cut or n_dropped:
        console.print(
            f"[yellow]warning:[/] {n_cut + n_dropped} of {len(dataset)} SFT examples reach sft.train.max_length "
            f"({tr.max_length} tokens): {n_dropped} dropped (no answer token left), {n_cut} cut at the end, where the "
            "answer tokens are; raise max_length, or shorten the prompts (sft.prompt.max_timeline_events, max_neg_items, "
            "max_pos_items)"
        )
    if resume_from is not None and is_main:  # once, not once per process
        console.print(f"SFT: resuming from {resume_from.name} (an earlier run was interrupted)")
    try:
        result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from is not None else None)
    finally:
        progress_cb.close()
    acc = trainer.accelerator
    if ema is not None and stopper is None:
        ema.copy_to(acc.unwrap_model(trainer.model))  # with a stopper the best averaged weights are already in place
    acc.wait_for_everyone()
    state = trainer.state
    resumed_at = checkpoint_step(resume_from) if resume_from is not None else 0
    # this call's steps only: train_runtime is this call's time
    seen = (state.global_step - resumed_at) * tr.batch_size * tr.grad_accum * acc.num_processes
    train_loss, loss_steps = whole_run_mean_loss(state.log_history, resumed_at, result.training_loss, state.global_step)
    train_seconds = float(result.metrics.get("train_runtime", 0.0))
    scoring_seconds = stopper.seconds_in_loop if stopper is not None else 0.0  # valid scoring inside train_runtime
    step_seconds = train_seconds - scoring_seconds
    adapters = lora_adapter_params(trainer.model) if tr.lora is not None else 0
    n_params = int(sum(p.numel() for p in trainer.model.parameters())) - adapters  # the saved model's: adapters merged
    stats: dict[str, Any] = {
        "model_dir": str(out),
        "n_examples": len(examples),
        "examples_per_task": per_task,
        "steps": int(state.global_step),
        "train_loss": float(train_loss),
        "train_loss_steps": loss_steps,  # the steps train_loss averages: all of them, unless resumed from an old checkpoint
        "mean_tokens_per_example": float(lengths.mean()),
        "examples_cut_at_max_length": n_cut,  # trained on with their end cut off
        "examples_dropped_at_max_length": n_dropped,  # not trained on: no answer token within max_length
        "train_seconds": train_seconds,
        "valid_scoring_seconds": round(scoring_seconds, 2),  # of train_seconds: the learning curve's scoring, not training
        "tokens_per_second": float(seen * lengths.mean() / step_seconds) if step_seconds > 0 else None,
        "num_processes": int(acc.num_processes),
        "lora": tr.lora is not None,
        "device": compute.device,
        "precision": compute.precision,
        "new_tokens": len(new_ids),
        "items_control_text": n_control,  # items whose title or category read as a control token: broken in prompts
        # the saved model's parameters (parameters() counts a tied head once) and those outside the embedding table:
        # a tiny model's size is mostly vocabulary
        "n_params": n_params,
        "n_params_non_embedding": n_params - int(trainer.model.get_input_embeddings().weight.numel()),
        "n_params_lora_adapters": adapters if tr.lora is not None else None,  # trained, merged before saving
        "resumed_from": resume_from.name if resume_from is not None else None,
    }
    if stopper is not None:
        stats["early_stopping"] = stopper.summary()
    if acc.is_main_process:
        final = acc.unwrap_model(trainer.model)
        if tr.lora is not None:
            final = final.merge_and_unload()
        copy = copy_bias.detach(final)  # its betas go to their own file: the weights stay a plain HF model
        with atomic_path(out) as tmp:
            final.save_pretrained(tmp)
            if copy is not None:
                copy_bias.save(tmp, copy)
                stats["copy_bias"] = copy.betas()
            tokenizer.save_pretrained(tmp)
            save_vocab_meta(tmp, sid_map)
            record_precision(tmp, compute)  # GPU decoding of this model runs in the precision it was trained in
        from conrec.llm.training.discernment import measure

        # the alignment accuracy the GRPO stages are compared with (forgetting), on held-out users
        stats["discernment"] = measure(out, sid_map, sft, sections.decode, sections.seed, samples, console=console, who="SFT")
        stats["seconds"] = round(time.perf_counter() - started, 1)
        write_json(stats, rd.sft / "stats.json")
        rd.mark_done("sft", {"steps": stats["steps"], "train_loss": stats["train_loss"]})
        shutil.rmtree(ckpt_dir, ignore_errors=True)  # the model is written: checkpoints are no longer needed
        console.print(
            f"SFT: {stats['steps']} steps on {len(examples)} examples, mean loss {stats['train_loss']:.3f}, "
            f"{stats['tokens_per_second'] or 0:.0f} tokens/s -> {shown(out)}",
            soft_wrap=True,  # a path broken at the console width is no path (copy-paste, grep)
        )
    acc.wait_for_everyone()
    return stats


def main(argv: list[str] | None = None) -> None:
    """``python -m conrec.llm.training.sft --config cfg.yaml`` (the entry point for ``accelerate launch -m``): the
    stage as ``conrec sft`` runs it, inputs checked and the run's record updated (a direct runner call left no
    configuration record, so no later command would use the model)."""
    from conrec.config import load_config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", "-c", type=Path, default=None)
    parser.add_argument("--run-dir", "-r", type=Path, default=None)
    parser.add_argument("--no-resume", action="store_true", help="discard the checkpoints of an interrupted run")
    ns = parser.parse_args(argv)
    from conrec.pipeline import run_stage_or_exit

    run_stage_or_exit(lambda: load_config(ns.config, {"run_dir": str(ns.run_dir)} if ns.run_dir else None), "sft", resume=not ns.no_resume)


if __name__ == "__main__":  # pragma: no cover
    main()
