"""In-process decoding cost of 1 vs 8 histories: the ceiling any request batching can reach.

    python benchmarks/decode_batch.py --config RUN_CONFIG.yaml [--model sft] [--threads 2]

Times ``Predictor.recommend`` (top-``--k``, beam search with the run's ``decode`` settings) and
``Predictor.score`` (a ``--slate``-item slate) on real users' histories, one call per batch size,
median of ``--repeats``; no HTTP. ``gain`` = (batch size x the 1-history time) / the batch's time:
how many times more histories per second one batched call answers. It bounds what the server's
micro-batching (``serve.batch_max_size``) can add at any concurrency.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from conrec.config import load_config
from conrec.io import read_parquet
from conrec.llm.inference.predict import Predictor, run_item_prior
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--model", default="sft")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--slate", type=int, default=20)
    ap.add_argument("--sizes", default="1,8")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    cfg = load_config(args.config)
    torch.set_num_threads(args.threads)
    # the model dir directly: speed does not depend on whether the model is current for this config;
    # the item prior as the run computes it, so a config with decode.popularity_prior > 0 loads too
    run_dir = Path(cfg.run_dir)
    run = RunDir(run_dir)
    sid_map = SidMap.from_parquet(run.sid_map)
    prior = run_item_prior(run_dir, cfg.data.split, sid_map, cfg.decode)
    predictor = Predictor.from_dir(run_dir / args.model / "model", sid_map, cfg.sft.prompt, cfg.decode, prior)
    histories = list(user_histories(read_parquet(run.events), cfg.serve.max_history).values())
    slate = predictor.items[: args.slate]
    print(f"load {os.getloadavg()[0]:.2f}, {args.threads} torch threads, model {args.model}, num_beams {cfg.decode.num_beams}, k {args.k}")
    base: dict[str, float] = {}
    for n in (int(s) for s in args.sizes.split(",")):
        batch = histories[:n]
        rec = _median_ms(lambda b=batch: predictor.recommend(b, args.k), args.repeats)
        sco = _median_ms(lambda b=batch, n=n: predictor.score(b, [slate] * n), args.repeats)
        base.setdefault("rec", rec / n)
        base.setdefault("score", sco / n)
        print(
            f"{n:>3} histories: recommend {rec:8.1f} ms (gain {n * base['rec'] / rec:4.2f}x)   "
            f"score {sco:8.1f} ms (gain {n * base['score'] / sco:4.2f}x)",
            flush=True,
        )


if __name__ == "__main__":
    main()
