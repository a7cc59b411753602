"""In-process decoding cost of 1 vs 8 histories: the ceiling any request batching can reach.

    python benchmarks/decode_batch.py --config RUN_CONFIG.yaml [--model sft] [--threads 2]

Times ``Predictor.recommend`` (top-``--k``, beam search with the run's ``decode`` settings) and
``Predictor.score`` (a ``--slate``-item slate) on real users' histories, one call per batch size,
median of ``--repeats``; no HTTP. ``gain`` = (batch size x the 1-history time) / the batch's time:
how many times more histories per second one batched call answers. It bounds what the server's
micro-batching (``serve.batch_max_size``) can add at any concurrency.

The histories are fixed, not sampled: the batch of n is the first n users (in user-id order) and the
1-history time is the first user's, so a gain also reflects how long that user's prompt is beside the
batch's (the mean prompt length is printed). Repeats time the same batch. Torch threads: ``--threads``,
else the config's ``threads``, else 2.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import _script
import torch

from conrec.config import load_config
from conrec.io import read_parquet
from conrec.llm.inference.predict import Predictor, run_item_prior
from conrec.llm.inference.prompt_ids import prompt_token_ids
from conrec.runs import RunDir
from conrec.serve.catalog import user_histories
from conrec.sid.sid_map import SidMap


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def _sizes(text: str) -> list[int]:
    """An argparse type: comma-separated batch sizes, each at least 1."""
    return [_script.positive(s) for s in text.split(",") if s] or [_script.positive("")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--model", default="sft", choices=("sft", "grpo"))
    ap.add_argument("--threads", type=_script.positive, default=None, help="torch threads (default: the config's threads, else 2)")
    ap.add_argument("--k", type=_script.positive, default=10)
    ap.add_argument("--slate", type=_script.positive, default=20)
    ap.add_argument("--sizes", default="1,8", type=_sizes, help="comma-separated batch sizes (the first is the baseline of gain)")
    ap.add_argument("--repeats", type=_script.positive, default=5)
    args = ap.parse_args()
    cfg = load_config(args.config)
    threads = args.threads or cfg.threads or 2
    torch.set_num_threads(threads)
    # the model dir directly: speed does not depend on whether the model is current for this config;
    # the item prior as the run computes it, so a config with decode.popularity_prior > 0 loads too
    run_dir = Path(cfg.run_dir)
    run = RunDir(run_dir)
    sid_map = SidMap.from_parquet(run.sid_map)
    prior = run_item_prior(run_dir, cfg.data.split, sid_map, cfg.decode)
    predictor = Predictor.from_dir(run_dir / args.model / "model", sid_map, cfg.sft.prompt, cfg.decode, prior)
    histories = list(user_histories(read_parquet(run.events), cfg.serve.max_history).values())
    slate = predictor.items[: args.slate]
    print(f"load {os.getloadavg()[0]:.2f}, {threads} torch threads, model {args.model}, num_beams {cfg.decode.num_beams}, k {args.k}")
    base: dict[str, float] = {}
    for n in args.sizes:
        batch = histories[:n]
        tokens = statistics.mean(len(ids) for ids in prompt_token_ids(predictor.tokenizer, [predictor.prompt(*h) for h in batch]))
        rec = _median_ms(lambda b=batch: predictor.recommend(b, args.k), args.repeats)
        sco = _median_ms(lambda b=batch, n=n: predictor.score(b, [slate] * n), args.repeats)
        base.setdefault("rec", rec / n)
        base.setdefault("score", sco / n)
        print(
            f"{n:>3} histories ({tokens:.0f} prompt tokens on average): recommend {rec:8.1f} ms (gain {n * base['rec'] / rec:4.2f}x)   "
            f"score {sco:8.1f} ms (gain {n * base['score'] / sco:4.2f}x)",
            flush=True,
        )


if __name__ == "__main__":
    sys.exit(_script.main(main))
