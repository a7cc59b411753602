"""LM benchmark: SFT training throughput, top-K prediction throughput/latency, peak memory (CPU).

Runs on small synthetic data (:mod:`conrec.llm.model.toy`) so it needs no data/SID stage. Each
(backbone, phase) runs in its own subprocess so peak memory (max RSS) is per phase.

    python benchmarks/llm.py                      # tiny + SmolLM2, SFT (full and LoRA) + predict
    python benchmarks/llm.py --backbones tiny --sft-steps 5 --users 16
    python benchmarks/llm.py --json out.json

Numbers: SFT tokens/s = (steps x batch x mean tokens per example) / train time; predict users/s =
users / wall time of a batched ``predict_samples``; latency p50/p95 = one ``recommend`` call for one
user (batch of 1), top-K with ``num_beams = K``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _script

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# the ``sft.model`` section of each backbone name (tiny: a small random Llama; the others: pretrained, see docs/backbones.md)
BACKBONES: dict[str, dict] = {
    "tiny": {"tiny": {"hidden_size": 64, "num_layers": 2}},
    "smollm2": {"backbone": "smollm2"},
    "gemma3": {"backbone": "gemma3"},
}
PHASES = ("sft_full", "sft_lora", "predict")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _cfg(root: Path, backbone: str, lora: bool, steps: int, batch: int, k: int):
    from conrec.config import load_config

    model = BACKBONES[backbone]
    train = {"max_steps": steps, "batch_size": batch, "logging_steps": max(1, steps), "save_steps": 10_000, "learning_rate": 5e-4}
    if lora:
        train["lora"] = {"r": 8, "alpha": 16}
    return load_config(
        None,
        {"run_dir": str(root), "sft": {"model": model, "train": train},
         "decode": {"top_k": k, "num_beams": k, "batch_size": 8, "exclude_history": True}},
    )


def one(backbone: str, phase: str, steps: int, batch: int, users: int, k: int, threads: int, root: Path) -> dict:
    """One measurement in this process (called in a subprocess by :func:`main`); its toy run and model go in ``root``."""
    import numpy as np
    import polars as pl
    import torch
    from rich.console import Console

    torch.set_num_threads(threads)
    from conrec.llm.inference.predict import Predictor
    from conrec.llm.model.toy import write_toy_run
    from conrec.pipeline import record_finished
    from conrec.stages import STAGE_REGISTRY

    run = write_toy_run(root, n_items=400, n_users=max(64, users), samples_per_user=8, codebook_sizes=(8, 8, 8))
    quiet = Console(quiet=True)
    lora = phase == "sft_lora"
    cfg = _cfg(root, backbone, lora, steps if phase.startswith("sft") else 1, batch, k)
    stats = STAGE_REGISTRY["sft"].call(cfg, console=quiet)
    for stage in ("data", "sid", "sft"):  # a model is only loaded while its stage, and those it is built on, are current
        record_finished(cfg, stage)
    out: dict = {"backbone": backbone, "phase": phase, "threads": threads}
    if phase.startswith("sft"):
        out.update(
            steps=stats["steps"], batch=batch, lora=lora, train_seconds=stats["train_seconds"],
            tokens_per_s=round(stats["tokens_per_second"], 1), mean_tokens_per_example=round(stats["mean_tokens_per_example"], 1),
            seconds_per_step=round(stats["train_seconds"] / max(stats["steps"], 1), 3),
        )
    else:
        predictor = Predictor.from_run(cfg, model="sft")
        samples = pl.read_parquet(run.samples).filter(pl.col("split") == "train").head(users)
        hist = list(zip(samples["hist_items"].to_list(), samples["hist_feedback"].to_list()))
        predictor.recommend([hist[0]], k)  # warm-up
        lat = []
        for h in hist[: min(users, 20)]:
            t = time.perf_counter()
            predictor.recommend([h], k)
            lat.append(time.perf_counter() - t)
        t = time.perf_counter()
        preds = predictor.predict_samples(samples, k)
        wall = time.perf_counter() - t
        out.update(
            users=samples.height, k=k, num_beams=k, batch_size=cfg.decode.batch_size,
            users_per_s=round(samples.height / wall, 2),
            latency_p50_ms=round(1000 * float(np.percentile(lat, 50)), 1),
            latency_p95_ms=round(1000 * float(np.percentile(lat, 95)), 1),
            invalid=int(preds["n_invalid"].sum()),
            mean_prompt_tokens=round(float(np.mean([len(predictor.tokenizer(predictor.prompt(*h))["input_ids"]) for h in hist])), 1),
        )
    out["peak_rss_mb"] = round(_peak_mb(), 0)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="conrec LM benchmark (CPU)")
    ap.add_argument("--backbones", default="tiny,smollm2", type=_script.names(tuple(BACKBONES)), help=f"comma-separated: {', '.join(BACKBONES)}")
    ap.add_argument("--phases", default="sft_full,sft_lora,predict", type=_script.names(PHASES), help=f"comma-separated: {', '.join(PHASES)}")
    ap.add_argument("--sft-steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--users", type=int, default=32)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--one", nargs=3, metavar=("BACKBONE", "PHASE", "ROOT"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.one:
        backbone, phase, root = a.one
        print("RESULT " + json.dumps(one(backbone, phase, a.sft_steps, a.batch, a.users, a.k, a.threads, Path(root))))
        return
    from rich.console import Console
    from rich.table import Table

    results = []
    for backbone in a.backbones:
        for phase in a.phases:
            # the child's toy run and model: removed however the measurement ends (a pretrained checkpoint is ~0.5 GB)
            with tempfile.TemporaryDirectory(prefix="conrec_bench_") as root:
                cmd = [sys.executable, __file__, "--one", backbone, phase, root, "--sft-steps", str(a.sft_steps), "--batch", str(a.batch),
                       "--users", str(a.users), "--k", str(a.k), "--threads", str(a.threads)]
                proc = _script.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode or not line:
                print(proc.stderr[-2000:], file=sys.stderr)
                raise SystemExit(f"benchmark {backbone}/{phase} failed")
            results.append(json.loads(line[0][7:]))
            print(results[-1], flush=True)
    table = Table(title="conrec LM benchmark (CPU)")
    for col in ("backbone", "phase", "tokens/s", "s/step", "users/s", "p50 ms", "p95 ms", "invalid", "peak MB"):
        table.add_column(col)
    for r in results:
        table.add_row(r["backbone"], r["phase"], str(r.get("tokens_per_s", "")), str(r.get("seconds_per_step", "")),
                      str(r.get("users_per_s", "")), str(r.get("latency_p50_ms", "")), str(r.get("latency_p95_ms", "")),
                      str(r.get("invalid", "")), str(r["peak_rss_mb"]))
    Console().print(table)
    if a.json:
        a.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    sys.exit(_script.main(main))
