"""Benchmark the semantic-ID stage on this CPU, and check SID semantics on MovieLens-100K.

Usage: ``python benchmarks/sid.py [--encode-items 3000] [--items 100000] [--skip-ml100k] [--quantizers rkmeans,rqvae] [--threads 2]``

Torch runs ``--threads`` threads (default 2, the figures of docs/benchmarks.md; printed with the results), the
RQ-VAE's training ``sid.quantizer.train_threads``.

1. Encode: the real all-MiniLM-L6-v2 on ``--encode-items`` synthetic movie-like titles (no cache):
   items/s.
2. Quantize ``--items`` vectors with residual k-means and with the RQ-VAE (default config, so the
   RQ-VAE runs ``max_steps`` optimiser steps): items/s; then collision resolution.
   Encoding 100,000 titles would take minutes on a shared 2-core CPU, so only the first
   ``--encode-items`` titles are really encoded; the other vectors are those real vectors resampled
   with small Gaussian noise (same cluster structure) and the encode time of the full catalogue is
   *extrapolated* from the measured rate (printed as such).
3. End to end: the real ``conrec.sid.stage.run`` on ``--items`` items (read items.parquet, encode via
   an injected lookup encoder, quantize, resolve, write all outputs) + the extrapolated encode time.
4. MovieLens-100K (1,682 real movies, from the installed recbole package): the stage with the real
   encoder, both quantizers; prints purity lift (P(same first genre | same level-0 code) /
   P(same first genre | random pair)), collision rates and codebook use.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

import _script
import numpy as np
import polars as pl
import torch
from rich.console import Console

from conrec.config import PipelineConfig
from conrec.runs import RunDir
from conrec.sid.collisions import resolve_collisions
from conrec.sid.config import QuantizerConfig
from conrec.sid.encoder import SentenceTransformerEncoder, encode_texts
from conrec.sid.metrics import collision_rate
from conrec.sid.quantize_result import effective_codebook_sizes
from conrec.sid.rkmeans import fit_rkmeans
from conrec.sid.rqvae import fit_rqvae
from conrec.sid.sid_map import SidMap
from conrec.stages import STAGE_REGISTRY

ADJ = "Dark Silent Last Lost Red Golden Broken Hidden Wild Little Final Secret Frozen Burning Eternal Savage " \
      "Quiet Crimson Iron Midnight Lonely Brave Wicked Sweet Cold Deadly Strange Haunted Distant Bright".split()
NOUN = "Night Heart River Empire Kingdom Road Dream Shadow Storm Garden City Island Mountain Star Ghost Game " \
       "Summer Winter Love War Machine Stranger Hunter Family Detective Planet Witness Prince Singer Journey".split()
PLACE = "Paris Texas Mars Tokyo Harlem Alaska Venice Berlin Cairo Dublin Brooklyn Memphis Sahara Siberia Rome".split()
GENRES = "Comedy Drama Horror Thriller Romance Sci-Fi Western Animation Documentary Musical War Crime".split()


def synthetic_items(n: int, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    combos = len(ADJ) * len(NOUN) * len(PLACE) * len(GENRES)
    pick = rng.choice(combos, size=n, replace=n > combos)
    a, rest = np.divmod(pick, len(NOUN) * len(PLACE) * len(GENRES))
    b, rest = np.divmod(rest, len(PLACE) * len(GENRES))
    c, g = np.divmod(rest, len(GENRES))
    titles = [f"The {ADJ[i]} {NOUN[j]} of {PLACE[k]}" for i, j, k in zip(a, b, c)]
    return pl.DataFrame(
        {
            "item_id": [f"s{i}" for i in range(n)],
            "title": titles,
            "text": [""] * n,
            "category": [GENRES[x] for x in g],
        }
    )


class LookupEncoder:
    """Serves precomputed vectors by text, so the stage's own pipeline is timed without re-encoding."""

    model_id = "benchmark-lookup"

    def __init__(self, texts: list[str], vectors: np.ndarray) -> None:
        self._row = {t: i for i, t in enumerate(texts)}
        self._vectors = vectors

    def encode(self, texts: list[str]) -> np.ndarray:
        return self._vectors[[self._row[t] for t in texts]]


def stage_texts(items: pl.DataFrame) -> list[str]:
    from conrec.sid.encoder import item_texts

    return item_texts(items, ["title", "category", "text"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encode-items", type=_script.positive, default=3000)
    ap.add_argument("--items", type=_script.positive, default=100_000)
    ap.add_argument("--skip-ml100k", action="store_true")
    ap.add_argument("--quantizers", default="rkmeans,rqvae", type=_script.names(("rkmeans", "rqvae")), help="comma-separated: rkmeans, rqvae")
    ap.add_argument("--threads", type=_script.positive, default=2, help="torch threads (default: 2)")
    args = ap.parse_args()
    kinds = args.quantizers
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", UserWarning)
    console = Console()
    quiet = Console(quiet=True)

    items = synthetic_items(args.items)
    texts = stage_texts(items)
    n_enc = min(args.encode_items, args.items)
    encoder = SentenceTransformerEncoder()
    encoder.encode(texts[:8])  # load the model outside the timing
    t = time.perf_counter()
    real, _ = encode_texts(texts[:n_enc], encoder, batch_size=128, cache_dir=None)
    enc_s = time.perf_counter() - t
    enc_rate = n_enc / enc_s
    console.print(f"torch threads: {args.threads}")
    console.print(f"[bold]encode[/bold] all-MiniLM-L6-v2: {n_enc} titles in {enc_s:.1f} s = {enc_rate:.0f} items/s")

    rng = np.random.default_rng(0)
    src = rng.integers(0, n_enc, size=args.items)
    src[:n_enc] = np.arange(n_enc)
    vectors = real[src] + rng.normal(0, 0.02, size=(args.items, real.shape[1])).astype(np.float32)
    vectors[:n_enc] = real
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    sizes = effective_codebook_sizes(args.items, [256, 256, 256])
    console.print(
        f"[bold]quantize[/bold] {args.items} vectors ({n_enc} real, rest resampled + noise), codebooks {sizes}"
    )

    for kind in kinds:
        cfg = QuantizerConfig(kind=kind)
        t = time.perf_counter()
        if kind == "rkmeans":
            res = fit_rkmeans(vectors, sizes, seed=0, niter=cfg.kmeans_iters)
        else:
            torch.set_num_threads(cfg.train_threads)
            _, res = fit_rqvae(vectors, sizes, cfg, seed=0)
            torch.set_num_threads(args.threads)
        q_s = time.perf_counter() - t
        t = time.perf_counter()
        resolved = resolve_collisions(res.codes, res.codebook_sizes, res.last_residual, res.last_codebook)
        SidMap(items["item_id"].to_list(), resolved.codes, resolved.codebook_sizes).trie()
        c_s = time.perf_counter() - t
        extra = f", {len(res.history)} epochs" if res.history else ""
        console.print(
            f"  {kind}: {q_s:.1f} s = {args.items / q_s:.0f} items/s{extra}; recon_rel {res.recon_rel:.3f}; "
            f"collisions {collision_rate(res.codes):.1%} -> {collision_rate(resolved.codes):.1%} "
            f"(resolve + SidMap + trie {c_s:.1f} s, extra level: {resolved.extra_level})"
        )

    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            cfg = PipelineConfig(run_dir=Path(tmp) / kind, sid={"quantizer": {"kind": kind}, "encoder": {"cache": False}})
            rd = RunDir(cfg.run_dir)
            rd.data.mkdir(parents=True)
            items.write_parquet(rd.items)
            t = time.perf_counter()
            STAGE_REGISTRY["sid"].call(cfg, console=quiet, encoder=LookupEncoder(texts, vectors))
            wall = time.perf_counter() - t
            enc_full = args.items / enc_rate
            console.print(
                f"[bold]end to end[/bold] {args.items} items, {kind}: stage {wall:.1f} s (without encoding) "
                f"+ encode {enc_full:.0f} s [italic](extrapolated from {enc_rate:.0f} items/s)[/italic] "
                f"= {wall + enc_full:.0f} s; peak RSS of this process so far {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB"
            )

        if not args.skip_ml100k:
            from conrec.data.movielens100k import load_movielens100k

            _, ml_items = load_movielens100k()
            for kind in ("rqvae", "rkmeans"):
                cfg = PipelineConfig(run_dir=Path(tmp) / f"ml_{kind}", sid={"quantizer": {"kind": kind}})
                rd = RunDir(cfg.run_dir)
                rd.data.mkdir(parents=True)
                ml_items.write_parquet(rd.items)
                t = time.perf_counter()
                s = STAGE_REGISTRY["sid"].call(cfg, console=quiet)
                use = ", ".join(f"{u['used']}/{u['size']} ppl {u['perplexity']:.1f}" for u in s["usage_before"])
                console.print(
                    f"[bold]MovieLens-100K[/bold] {s['n_items']} items, {kind}: purity lift "
                    f"{float('nan') if s['purity_lift_level0'] is None else s['purity_lift_level0']:.2f}, recon_rel {s['recon_rel']:.3f}, collisions "
                    f"{s['collision_rate_before']:.1%} -> {s['collision_rate_after']:.1%}, codes {use}; "
                    f"{time.perf_counter() - t:.1f} s"
                )


if __name__ == "__main__":
    sys.exit(_script.main(main))
