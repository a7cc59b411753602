"""The SFT stage: SID vocabulary + history and alignment tasks, trained with TRL's SFTTrainer.

Inputs (run-dir contract): ``data/items.parquet``, ``data/samples.parquet``, ``sid/sid_map.parquet``.
Output: ``sft/model/`` — a plain Hugging Face model dir (LoRA, if used, is merged before saving, so
every later stage loads it with ``AutoModelForCausalLM``) with its tokenizer (SID + marker tokens),
``conrec_vocab.json`` and a copy of the SID map (see :mod:`conrec.llm.vocab`); written atomically.
Checkpoints (weights only) go to ``sft/checkpoints/``, statistics to ``sft/stats.json``.

Loss on completions only (TRL prompt/completion dataset with ``completion_only_loss``): the model
must learn to *answer*, not to reproduce histories. Runs unchanged under ``accelerate launch`` /
``torchrun`` (the Trainer handles DDP; only the main process writes files)::

    accelerate launch --config_file configs/accelerate/cpu_2proc.yaml -m conrec.llm.sft --config cfg.yaml
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from transformers import PrinterCallback, TrainerCallback, set_seed

from conrec.config import PipelineConfig
from conrec.io import atomic_path, read_parquet, write_json
from conrec.llm.backbone import load_backbone
from conrec.llm.tasks import build_examples
from conrec.llm.vocab import add_sid_vocabulary, save_vocab_meta
from conrec.runs import RunDir
from conrec.sid.sid_map import SidMap


class RichProgressCallback(TrainerCallback):
    """A rich progress bar over optimiser steps, showing the latest loss (main process only)."""

    def __init__(self, console: Console, description: str = "SFT") -> None:
        self.console = console
        self.description = description
        self.progress: Progress | None = None
        self.task: Any = None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[loss]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self.progress.start()
            self.task = self.progress.add_task(self.description, total=state.max_steps, loss="")

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.progress is not None and logs and "loss" in logs:
            self.progress.update(self.task, loss=f"loss {float(logs['loss']):.3f}")

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


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


def sft_trainer_class() -> type:
    """TRL's ``SFTTrainer``, with the plain causal-LM loss on machines without Triton (CPU).

    Why: TRL 1.16's fused LM head scores only the completion positions when Triton is available,
    but on other devices it scores *every* position through a tiled pure-torch kernel (to keep tile
    shapes static). With completion-only loss on short SID completions that is ~20x more vocabulary
    projections than needed and it dominated CPU steps (1.2 of 1.7 s per step on the tiny model).
    The model's own loss (``transformers.Trainer.compute_loss``: one logits matmul + cross-entropy
    over the ``-100``-masked labels, token-averaged across devices the Trainer's way) is the same
    objective, ~5x faster here. Overriding ``compute_loss`` is the extension point TRL documents.
    TRL's extra training metrics (token accuracy, entropy) are not logged on this path.
    """
    from transformers import Trainer
    from trl import SFTTrainer
    from trl.trainer.utils import _use_triton

    if _use_triton(torch.device("cuda" if torch.cuda.is_available() else "cpu")):
        return SFTTrainer

    class PlainLossSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            return Trainer.compute_loss(self, model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

    return PlainLossSFTTrainer


def load_inputs(run: RunDir) -> tuple[Any, Any, SidMap]:
    """(items, samples, sid_map) of a run; clear StageInputError naming the missing file."""
    items = read_parquet(run.items, what="items table (run `conrec data` first)")
    samples = read_parquet(run.samples, what="samples table (run `conrec data` first)")
    sid_map = SidMap.from_parquet(run.sid_map)
    return items, samples, sid_map


def run(cfg: PipelineConfig, console: Console | None = None, out_dir: Path | None = None) -> dict[str, Any]:
    """Fine-tune the backbone on the SFT tasks; write the model dir; mark the stage done.

    ``out_dir`` (default ``RunDir.sft_model``) lets ablations train variants side by side; the stage
    is marked done only when writing the default location. Returns the training statistics.
    """
    from datasets import Dataset
    from trl import SFTConfig

    console = console or Console()
    run_dir = RunDir(cfg.run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir.sft_model
    sft = cfg.sft
    tr = sft.train
    seed = cfg.seed * 1_000_003 + tr.seed
    set_seed(seed)
    started = time.perf_counter()

    items, samples, sid_map = load_inputs(run_dir)
    model, tokenizer = load_backbone(sft.model)
    n_base = len(tokenizer)
    add_sid_vocabulary(model, tokenizer, sid_map, dict(zip(items["item_id"].to_list(), items["title"].to_list())))
    new_ids = list(range(n_base, len(tokenizer)))
    examples = build_examples(samples, items, sid_map, sft, seed=seed)
    per_task: dict[str, int] = {}
    for ex in examples:
        per_task[ex["task"]] = per_task.get(ex["task"], 0) + 1
    dataset = Dataset.from_list([{"prompt": e["prompt"], "completion": e["completion"]} for e in examples])

    if tr.lora is not None:
        model = _with_lora(model, tr.lora, new_ids)

    args = SFTConfig(
        output_dir=str(run_dir.sft / "checkpoints"),
        per_device_train_batch_size=tr.batch_size,
        gradient_accumulation_steps=tr.grad_accum,
        learning_rate=tr.learning_rate,
        num_train_epochs=tr.epochs,
        max_steps=tr.max_steps,
        warmup_steps=tr.warmup_ratio,
        lr_scheduler_type="linear",
        logging_steps=tr.logging_steps,
        save_strategy="steps",
        save_steps=tr.save_steps,
        save_total_limit=tr.save_total_limit,
        save_only_model=True,
        seed=seed,
        data_seed=seed,
        use_cpu=not torch.cuda.is_available(),
        report_to="none",
        disable_tqdm=True,
        completion_only_loss=True,
        max_length=tr.max_length,
        packing=False,
        dataloader_num_workers=0,
        bf16=False,
        fp16=False,
        weight_decay=0.0,  # required by the frozen-rows trick of _with_lora
    )
    trainer = sft_trainer_class()(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[RichProgressCallback(console)],
    )
    trainer.remove_callback(PrinterCallback)  # the rich bar replaces the raw dict printing
    result = trainer.train()
    acc = trainer.accelerator
    acc.wait_for_everyone()
    lengths = np.array([len(x) for x in trainer.train_dataset["input_ids"]])
    state = trainer.state
    seen = state.global_step * tr.batch_size * tr.grad_accum * acc.num_processes
    train_seconds = float(result.metrics.get("train_runtime", 0.0))
    stats: dict[str, Any] = {
        "model_dir": str(out),
        "n_examples": len(examples),
        "examples_per_task": per_task,
        "steps": int(state.global_step),
        "train_loss": float(result.training_loss),
        "mean_tokens_per_example": float(lengths.mean()),
        "train_seconds": train_seconds,
        "tokens_per_second": float(seen * lengths.mean() / train_seconds) if train_seconds > 0 else None,
        "num_processes": int(acc.num_processes),
        "lora": tr.lora is not None,
        "new_tokens": len(new_ids),
    }
    if acc.is_main_process:
        final = acc.unwrap_model(trainer.model)
        if tr.lora is not None:
            final = final.merge_and_unload()
        with atomic_path(out) as tmp:
            final.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            save_vocab_meta(tmp, sid_map)
        stats["seconds"] = round(time.perf_counter() - started, 1)
        write_json(stats, (out.parent if out_dir is not None else run_dir.sft) / "stats.json")
        if out_dir is None:
            run_dir.mark_done("sft", {"steps": stats["steps"], "train_loss": stats["train_loss"]})
        console.print(
            f"SFT: {stats['steps']} steps on {len(examples)} examples, loss {stats['train_loss']:.3f}, "
            f"{stats['tokens_per_second'] or 0:.0f} tokens/s -> {out}"
        )
    acc.wait_for_everyone()
    return stats


def main(argv: list[str] | None = None) -> None:
    """``python -m conrec.llm.sft --config cfg.yaml`` (the entry point for ``accelerate launch -m``)."""
    from conrec.config import load_config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", "-c", type=Path, default=None)
    parser.add_argument("--run-dir", "-r", type=Path, default=None)
    ns = parser.parse_args(argv)
    cfg = load_config(ns.config, {"run_dir": str(ns.run_dir)} if ns.run_dir else None)
    run(cfg, console=Console())


if __name__ == "__main__":  # pragma: no cover
    main()
