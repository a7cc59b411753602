"""How much room is there above popularity, and does the LM add anything to it? FHR@20 on one split.

Why: the issue's target (the LM at 1.2x the best baseline) only makes sense if the data allow it.
This prints, for a finished run (``conrec eval`` done on ``--split``, normally valid):

* dislike popularity, global and with recency half-lives (exposure drifts over time);
* two **clairvoyant non-personal lists** that use the labels: items ranked by how often the
  evaluated points' own future windows contain them, and a list built greedily for coverage (FHR is a
  hit ratio, a coverage objective). A list that ignores the user and cannot see the labels
  (popularity by any recency, a trending list) has little hope of beating them; the greedy one is
  at least 1 - 1/e of the best possible non-personal list (the exact optimum is a max-coverage problem);
* for each LM of the run (``sft``, ``grpo``): its exact top-20 (exhaustive search over the
  catalogue, :mod:`conrec.llm.inference.exhaustive`) and blends ``log p(item | prompt) + w x log(1 + dislike
  count)`` over a grid of ``w``: if the best blend does not beat popularity, the LM's personal signal
  adds nothing to the prior. Choose ``w`` here (valid) before any test run; a blend is its own row;
* the best baseline of the run's ``eval/metrics.json`` and 1.2x of it.

    python benchmarks/headroom.py --run runs/valid_run [--split valid] [--models sft,grpo]

Prints a table and writes ``headroom.json`` under the run's ``eval/`` (``headroom-<split>.json`` for a
``--split`` other than the run's ``eval.split``, whose ``eval/metrics.json`` is then not compared).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import _script  # noqa: E402

from conrec.config import load_config  # noqa: E402
from conrec.eval.baselines.base import Catalog  # noqa: E402
from conrec.eval.baselines.popularity import decayed_dislike_counts  # noqa: E402
from conrec.eval.metrics import fhr_at_k  # noqa: E402
from conrec.eval.stage import fit_events_for, select_samples  # noqa: E402
from conrec.io import read_json, read_parquet, write_json  # noqa: E402
from conrec.runs import RunDir  # noqa: E402
from conrec.sid.sid_map import SidMap  # noqa: E402

K = 20
HALF_LIVES = (None, 60.0, 30.0, 14.0, 7.0)
BLEND_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)


def ranked_fhr(scores: np.ndarray, items: list[str], history: list[set[str]], futures: list[set[str]], k: int = K) -> float:
    """Mean FHR@k of per-point rankings by ``scores`` ((P, n) or (n,) shared), history items excluded, ties by catalogue order."""
    rows = np.broadcast_to(scores, (len(futures), len(items)))
    hits = []
    for p, (h, f) in enumerate(zip(history, futures)):
        order = np.argsort(-rows[p], kind="stable")
        top = [items[j] for j in order[: k + len(h)] if items[j] not in h][:k]
        hits.append(fhr_at_k(top, f, k))
    return float(np.mean(hits))


def greedy_cover(items: list[str], history: list[set[str]], futures: list[set[str]], length: int = 3 * K) -> np.ndarray:
    """Scores of a label-using list built greedily: each next item covers the most points not yet hit
    (a point counts only if the item is in its future and not in its history). FHR is a coverage
    objective, so this beats ranking by label frequency; greedy is within 1 - 1/e of the best list."""
    index = {it: j for j, it in enumerate(items)}
    covers: list[set[int]] = [set() for _ in items]
    for p, (h, f) in enumerate(zip(history, futures)):
        for i in f - h:
            if i in index:
                covers[index[i]].add(p)
    scores = np.zeros(len(items))
    hit: set[int] = set()
    for rank in range(min(length, len(items))):
        j = max(range(len(items)), key=lambda c: (len(covers[c] - hit), len(covers[c]), -c))
        scores[j] = length - rank
        hit |= covers[j]
        covers[j] = set()
    return scores


def _models(text: str) -> list[str]:
    names = [m for m in text.split(",") if m]
    if unknown := [m for m in names if m not in ("sft", "grpo")]:
        raise argparse.ArgumentTypeError(f"unknown model {', '.join(unknown)} (sft, grpo)")
    return names


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="a run directory with data/, sid/ and the LM(s) trained")
    ap.add_argument("--split", default=None, choices=("train", "valid", "test"), help="split to measure (default: the run's eval.split)")
    ap.add_argument("--models", default="sft,grpo", type=_models, help="LMs to score when the run has them (sft, grpo)")
    args = ap.parse_args(argv)

    cfg = load_config(args.run / "config.yaml")
    rd = RunDir(args.run)
    split = args.split or cfg.eval.split
    samples = select_samples(read_parquet(rd.samples, what="samples"), split, cfg.eval.max_samples, cfg.eval.seed)
    stats = read_json(rd.data / "stats.json") if (rd.data / "stats.json").exists() else None
    events = read_parquet(rd.events, what="events")
    fit, how = fit_events_for(events, cfg.data.split, stats, split, samples)
    sid_map = SidMap.from_parquet(rd.sid_map)
    items = list(sid_map.items)
    history = [set(map(str, h or [])) for h in samples["hist_items"].to_list()]
    futures = [set(map(str, f or [])) for f in samples["future_negs"].to_list()]
    out: dict[str, Any] = {"split": split, "points": samples.height, "fit_events": how, "rows": {}}
    rows: dict[str, float] = out["rows"]

    # the popularity baseline's own counts (plain, and decayed from the newest fit event)
    catalog = Catalog.build(fit, pl.DataFrame({"item_id": items}))
    for hl in HALF_LIVES:
        counts = catalog.dislike_counts if hl is None else decayed_dislike_counts(fit, catalog, hl)
        rows[f"popularity (half-life {hl or 'none'} d)"] = ranked_fhr(counts, items, history, futures)
    clairvoyant = np.zeros(len(items))
    for f in futures:
        for i in f:
            if i in catalog.index:
                clairvoyant[catalog.index[i]] += 1
    rows["clairvoyant non-personal list: label frequency"] = ranked_fhr(clairvoyant, items, history, futures)
    rows["clairvoyant non-personal list: greedy max coverage"] = ranked_fhr(greedy_cover(items, history, futures), items, history, futures)

    log_pop = np.log1p(catalog.dislike_counts)
    hist_rows = [
        (list(map(str, h or [])), [int(x) for x in fb or []])
        for h, fb in zip(samples["hist_items"].to_list(), samples["hist_feedback"].to_list())
    ]
    for name in args.models:
        if not rd.has_model(name):
            continue
        from conrec.llm.inference.predict import Predictor

        # the LM alone: the blends below add w x log(1 + dislike count) themselves (and decode.popularity_prior > 0
        # would need the item prior)
        decode = cfg.decode.model_copy(update={"search": "exhaustive", "popularity_prior": 0.0})
        pred = Predictor.from_dir(rd.model_dir(name), sid_map, cfg.sft.prompt, decode)
        t0 = time.perf_counter()
        lm = np.array(pred.score(hist_rows, [pred.items] * len(hist_rows)))  # (P, n) in SID-map order
        out[f"{name}_scoring_s"] = round(time.perf_counter() - t0, 1)
        for w in BLEND_WEIGHTS:
            label = f"{name} (exhaustive)" if w == 0 else f"{name} + {w:g} x log(1 + dislike count)"
            rows[label] = ranked_fhr(lm + w * log_pop, items, history, futures)

    metrics_path = rd.eval / "metrics.json"
    if split == cfg.eval.split and metrics_path.exists():  # the run's eval is on eval.split only
        metrics = read_json(metrics_path, what="eval metrics")
        base = {m: v[f"FHR@{K}"] for m, v in metrics.items() if isinstance(v, dict) and f"FHR@{K}" in v and m not in ("sft", "grpo")}
        if base:
            best = max(base, key=base.__getitem__)
            out["best_baseline"] = {"name": best, f"FHR@{K}": base[best], "target_1.2x": 1.2 * base[best]}
    width = max(len(r) for r in rows)
    print(f"FHR@{K} on {split} ({samples.height} points; fitted on {how})")
    for r, v in rows.items():
        print(f"  {r:<{width}}  {v:.3f}")
    if "best_baseline" in out:
        b = out["best_baseline"]
        print(f"  best baseline of eval/metrics.json: {b['name']} {b[f'FHR@{K}']:.3f}; 1.2x = {b['target_1.2x']:.3f}")
    elif split != cfg.eval.split:
        print(f"  (eval/metrics.json is on the run's eval.split, {cfg.eval.split}: not compared)")
    path = rd.eval / ("headroom.json" if split == cfg.eval.split else f"headroom-{split}.json")
    write_json(out, path)
    print(f"wrote {path}")
    return out


if __name__ == "__main__":
    sys.exit(_script.main(main))
