"""The SFT stage runs unchanged as 2 CPU processes (gloo DDP), as it would on 2 GPUs.

Launched with ``torchrun --standalone`` (a free rendezvous port, so parallel test runs do not
collide). ``accelerate launch --multi_gpu --num_processes 2`` works the same way on a CPU-only
machine; note that ``accelerate launch --cpu`` starts a single process for a one-machine MULTI_CPU
config in accelerate 1.x (it expects mpirun), which is why it is not used here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml

from conrec.llm.model.toy import write_toy_run
from conrec.runs import RunDir

from builders import grpo_run_dir


def test_sft_two_cpu_processes(tmp_path):
    run = write_toy_run(tmp_path / "run", n_items=16, n_users=8)
    cfg = {
        "run_dir": str(run.root),
        "sft": {"model": {"tiny": {"seed": 0}}, "train": {"max_steps": 2, "batch_size": 2, "logging_steps": 1}, "max_samples": 16},
    }
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "conrec.llm.training.sft", "--config", str(cfg_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = json.loads((RunDir(run.root).sft / "stats.json").read_text())
    assert stats["num_processes"] == 2 and stats["steps"] == 2
    assert RunDir(run.root).is_done("sft")
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(RunDir(run.root).sft_model)


def test_grpo_two_cpu_processes(tmp_path):
    """Progressive GRPO (2 stages, constrained rollouts) as 2 gloo processes via the module entry point."""
    from conrec.config import dump_config

    cfg, run = grpo_run_dir(tmp_path / "run")
    cfg = cfg.model_copy(update={"grpo": cfg.grpo.model_copy(update={"stages": cfg.grpo.stages[:1] + [cfg.grpo.stages[1].model_copy(update={"steps": 1})]})})
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(dump_config(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "conrec.llm.training.grpo", "--config", str(cfg_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = json.loads((run.grpo / "stats.json").read_text())
    assert stats["steps"] == 2 and [s["invalid_rate"] for s in stats["stages"]] == [0.0, 0.0]
    log = json.loads((run.grpo / "reward_log.json").read_text())
    assert [e["stage"] for e in log] == ["neg", "pos"]
    assert run.is_done("grpo")
