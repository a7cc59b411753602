"""Slate-scoring latency: one user, one slate of N candidates, ``Predictor.score`` in-process (CPU).

    python benchmarks/score.py --run-dir runs/demo            # the run's SFT model if trained, else
                                                               # a demo-shaped model on its SID map
    python benchmarks/score.py --threads 2 --slate 20 --repeats 200

Why in-process: it isolates the model cost of ``/v1/score`` (``benchmarks/serve.py`` adds HTTP).
The demo-shaped fallback (``sft.model.tiny`` of ``presets/demo.yaml``: hidden 128, 2 layers, random
weights) costs exactly what the trained demo model costs: latency does not depend on the weights.
Histories are real samples' (test split), so prompt lengths are the dataset's; slates are drawn
per repeat from the catalogue (seeded). Reports p50/p95/p99 in ms, and the same for a naive
baseline (one full forward of prompt + SID per candidate) to show what sharing the prompt's KV cache buys.
The naive baseline is a cost reference, not the same scorer: it takes a log-softmax over the whole
vocabulary at each SID position, where ``Predictor.score`` normalises over each level's code rows and
adds ``decode``'s prior and copy bias, so its scores (and their order) differ; its time also includes
the full-vocabulary head.

On a shared, overloaded machine wall-clock latency measures the queue for the CPU, not the work:
the script also reports the process CPU time per call. With ``--threads 1`` that CPU time is what
one call costs on one idle core, an upper bound of its latency on two idle cores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import _script  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def load_predictor(run_dir: Path):
    from conrec.config import load_config, preset_path
    from conrec.io import read_parquet
    from conrec.llm.inference.predict import Predictor, run_item_prior
    from conrec.llm.model.backbone import load_backbone
    from conrec.llm.model.vocab import add_sid_vocabulary
    from conrec.runs import RunDir
    from conrec.sid.sid_map import SidMap

    run = RunDir(run_dir)
    cfg_path = run_dir / "config.yaml"
    cfg = load_config(cfg_path if cfg_path.exists() else None, {"run_dir": str(run_dir)})
    samples = read_parquet(run.samples, what="samples")
    if (run.sft_model / "config.json").exists():
        return Predictor.from_run(cfg, "sft"), samples, "trained SFT model"
    demo = load_config(preset_path("demo"))
    sid_map = SidMap.from_parquet(run.sid_map)
    model, tok = load_backbone(demo.sft.model)
    add_sid_vocabulary(model, tok, sid_map)
    prior = run_item_prior(run_dir, cfg.data.split, sid_map, cfg.decode)  # decode.popularity_prior > 0 (the demo preset's)
    return Predictor(model, tok, sid_map, cfg.sft.prompt, cfg.decode, prior), samples, "demo-shaped model, random weights"


def percentiles(ms: list[float]) -> dict[str, float]:
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {"p50_ms": round(float(p50), 2), "p95_ms": round(float(p95), 2), "p99_ms": round(float(p99), 2), "n": len(ms)}


def naive_scores(pred, history, slate) -> list[float]:
    """The oracle way: one full forward of prompt + SID per candidate."""
    from conrec.llm.inference.prompt_ids import prompt_token_ids

    prompt_ids = torch.tensor(prompt_token_ids(pred.tokenizer, [pred.prompt(*history)])[0])  # as inference encodes it
    out = []
    for item in slate:
        sid_ids = torch.tensor(pred.tokenizer(pred.sid_map.sid_of(item), add_special_tokens=False)["input_ids"])
        ids = torch.cat([prompt_ids, sid_ids]).unsqueeze(0)
        logp = torch.log_softmax(pred.model(input_ids=ids).logits[0].float(), -1)
        n = len(prompt_ids)
        out.append(float(sum(logp[n - 1 + j, t] for j, t in enumerate(sid_ids.tolist()))))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", type=Path, default=Path("runs/demo"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--slate", type=int, default=20)
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--naive-repeats", type=int, default=20)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    pred, samples, what = load_predictor(args.run_dir)
    test = samples.filter(samples["split"] == "test") if "split" in samples.columns else samples
    hists = [(list(h), [int(f) for f in fb]) for h, fb in zip(test["hist_items"].to_list(), test["hist_feedback"].to_list())]
    rng = np.random.default_rng(0)
    items = pred.sid_map.items
    from conrec.llm.inference.prompt_ids import prompt_token_ids

    prompt_tokens = [len(ids) for ids in prompt_token_ids(pred.tokenizer, [pred.prompt(*h) for h in hists[:200]])]

    def case(j: int):
        return hists[j % len(hists)], [items[i] for i in rng.choice(len(items), args.slate, replace=False)]

    with torch.inference_mode():
        for j in range(5):  # warm-up
            pred.score([case(j)[0]], [case(j)[1]])
        fast: list[float] = []
        fast_cpu: list[float] = []
        for j in range(args.repeats):
            h, s = case(j)
            t0, c0 = time.perf_counter(), time.process_time()
            pred.score([h], [s])
            fast.append((time.perf_counter() - t0) * 1000)
            fast_cpu.append((time.process_time() - c0) * 1000)
        naive: list[float] = []
        naive_cpu: list[float] = []
        for j in range(args.naive_repeats):
            h, s = case(j)
            t0, c0 = time.perf_counter(), time.process_time()
            naive_scores(pred, h, s)
            naive.append((time.perf_counter() - t0) * 1000)
            naive_cpu.append((time.process_time() - c0) * 1000)
    result = {
        "model": what,
        "threads": args.threads,
        "slate": args.slate,
        "n_items": len(items),
        "prompt_tokens_mean": round(float(np.mean(prompt_tokens)), 1),
        "shared_kv_one_pass": percentiles(fast),
        "shared_kv_one_pass_cpu_time": percentiles(fast_cpu),
        "naive_forward_per_candidate": percentiles(naive),
        "naive_forward_per_candidate_cpu_time": percentiles(naive_cpu),
        "load_avg_1min": os.getloadavg()[0],
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(_script.main(main))
