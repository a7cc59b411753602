"""Benchmark GRPO on CPU: optimiser steps/s and the share of step time spent in the rollout.

Runs the real ``conrec.llm.training.grpo.run`` with the default GRPO config (G = 8 generations, batch 8,
constrained beam rollout, KL to the reference, full fine-tuning) on the default backbone
(SmolLM2-135M-Instruct, with the SID vocabulary added: weights are not SFT-trained, which does not
change the cost) and a small synthetic run dir whose late samples carry ~30-item histories, so
prompts are about as long as MovieLens prompts under the default budgets. Each of the default
three stages is shortened to ``--steps`` steps; the first step of each stage is reported apart
(warm-up: trainer construction, first forward passes).

    python benchmarks/grpo.py                 # default: 3 stages x 3 steps
    python benchmarks/grpo.py --steps 5 --tiny   # tiny random backbone (mechanics only)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="steps per stage (3 stages)")
    parser.add_argument("--tiny", action="store_true", help="tiny random backbone instead of SmolLM2")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="write the result JSON here")
    ns = parser.parse_args()
    torch.set_num_threads(ns.threads)

    from rich.console import Console

    from conrec.config import load_config
    from conrec.io import atomic_path, read_json, read_parquet
    from conrec.llm.inference.prompt_ids import prompt_token_ids
    from conrec.llm.model.backbone import load_backbone
    from conrec.llm.model.toy import write_toy_events, write_toy_run
    from conrec.llm.model.vocab import add_sid_vocabulary, save_vocab_meta
    from conrec.sid.sid_map import SidMap
    from conrec.stages import STAGE_REGISTRY

    console = Console()
    with tempfile.TemporaryDirectory(prefix="conrec_grpo_bench_") as tmp:
        root = Path(tmp) / "run"
        run = write_toy_run(root, n_items=64, n_users=16, samples_per_user=12)
        write_toy_events(run, seconds_before=900)
        overrides: dict[str, Any] = {"run_dir": str(root)}
        if ns.tiny:
            overrides["sft"] = {"model": {"tiny": {}}}
        cfg = load_config(None, overrides)
        cfg.grpo.stages = [s.model_copy(update={"steps": ns.steps}) for s in cfg.grpo.stages]
        cfg.grpo.save_steps = 10_000  # checkpoint I/O is not what is measured here
        sid_map = SidMap.from_parquet(run.sid_map)
        t0 = time.perf_counter()
        model, tok = load_backbone(cfg.sft.model)
        items = read_parquet(run.items)
        add_sid_vocabulary(model, tok, sid_map, dict(zip(items["item_id"].to_list(), items["title"].to_list())))
        with atomic_path(run.sft_model) as d:
            model.save_pretrained(d)
            tok.save_pretrained(d)
            save_vocab_meta(d, sid_map)
        del model
        setup_s = time.perf_counter() - t0

        # time every optimiser step from the trainer callback
        import conrec.llm.training.grpo as grpo_mod

        step_times: list[list[float]] = []
        real_end = grpo_mod.GrpoLogCallback.on_train_end

        def on_train_end(self: Any, args: Any, state: Any, control: Any, **kw: Any) -> Any:
            step_times.append(list(self.step_seconds))
            return real_end(self, args, state, control, **kw)

        grpo_mod.GrpoLogCallback.on_train_end = on_train_end  # type: ignore[method-assign]
        t1 = time.perf_counter()
        result = STAGE_REGISTRY["grpo"].call(cfg, console=console, resume=False)
        wall = time.perf_counter() - t1
        log = read_json(run.grpo / "reward_log.json")
        prompt_lens = [len(ids) for ids in prompt_token_ids(tok, _stage_prompts(cfg, run, sid_map))]  # as the rollouts encode them

    warm = [t for stage in step_times for t in stage[1:]]
    rollout_s = sum(s["rollout_seconds"] for s in result["stages"])
    train_s = sum(s["train_seconds"] for s in result["stages"])
    out = {
        "backbone": "tiny" if ns.tiny else "SmolLM2-135M-Instruct",
        "num_generations": cfg.grpo.num_generations,
        "batch_size": cfg.grpo.batch_size,
        "rollout": cfg.grpo.rollout,
        "steps": result["steps"],
        "threads": ns.threads,
        "setup_seconds": round(setup_s, 1),
        "grpo_wall_seconds": round(wall, 1),
        "first_step_seconds": [round(s[0], 2) for s in step_times if s],
        "steady_step_seconds_mean": round(float(np.mean(warm)), 2) if warm else None,
        "steady_steps_per_second": round(1.0 / float(np.mean(warm)), 3) if warm else None,
        "rollout_share_of_train_time": round(rollout_s / train_s, 3) if train_s else None,
        "rollout_seconds_per_step": round(rollout_s / max(result["steps"], 1), 2),
        "invalid_rate": max(s["invalid_rate"] for s in result["stages"]),
        "zero_adv_share_mean": result["mean_zero_adv_share"],
        "prompt_tokens_mean": round(float(np.mean(prompt_lens)), 1),
        "log_entries": len(log),
    }
    console.print_json(json.dumps(out))
    if ns.out is not None:
        ns.out.write_text(json.dumps(out, indent=2) + "\n")


def _stage_prompts(cfg: Any, run: Any, sid_map: Any) -> list[str]:
    from conrec.io import read_parquet
    from conrec.llm.training.grpo import select_train_samples, stage_records

    train = select_train_samples(read_parquet(run.samples), None, 0)
    last = cfg.grpo.stages[-1]
    return [r["prompt"] for r in stage_records(train, last, 0, sid_map.sid_lookup(), cfg.sft.prompt)]


if __name__ == "__main__":
    main()
