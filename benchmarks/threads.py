"""Stage times against torch's thread count, alone and beside one concurrent training process.

Why: on a shared CPU, a training process that starts as many torch threads as the machine has
cores competes with every other such process; the docs' timings only hold on a quiet machine.
This script measures two stages of ``preset:tiny`` — SFT steps (the tiny Llama) and the SASRec
baseline's fit — with threads = every available core (torch's own default), threads = 1, and
conrec's automatic choice (:mod:`conrec.runtime`: the available cores other processes leave idle),
each alone and while one other process trains a torch MLP with torch's default thread count
(what an unconfigured training job does).

    python benchmarks/threads.py                       # 5-10 min on 2 cores
    python benchmarks/threads.py --sft-steps 20 --sasrec-epochs 10 --json out.json

Each measurement runs in a fresh subprocess (threads are set once per process). Figures are wall
seconds; on a machine that is already busy with other work every figure includes that load.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _script

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# One other training job: a torch MLP step loop at torch's default thread count, until killed.
_CONCURRENT = """
import torch
net = torch.nn.Sequential(torch.nn.Linear(512, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 512))
opt = torch.optim.SGD(net.parameters(), lr=1e-3)
x = torch.randn(256, 512)
while True:
    opt.zero_grad()
    net(x).pow(2).mean().backward()
    opt.step()
"""


def settings(cores: int) -> list[tuple[str, int | None]]:
    """(label, threads setting): torch's default (all cores), one thread, conrec's automatic choice."""
    return [("all", cores), ("1", 1), ("auto", None)]


def _tiny_cfg(run_dir: Path, sft_steps: int, sasrec_epochs: int, threads: int | None):
    from conrec.config import load_config, preset_path

    return load_config(
        preset_path("tiny"),
        {
            "run_dir": str(run_dir),
            "threads": threads,
            "sft": {"train": {"max_steps": sft_steps, "logging_steps": sft_steps, "save_steps": 100_000}},
            "eval": {"sasrec": {"epochs": sasrec_epochs}},
        },
    )


def prepare(run_dir: Path) -> None:
    """The data and SID stages of preset:tiny (once; reused by every measurement)."""
    from rich.console import Console

    from conrec.pipeline import run_pipeline

    run_pipeline(_tiny_cfg(run_dir, 1, 1, None), stages=("data", "sid"), console=Console(quiet=True))


def measure(stage: str, run_dir: Path, threads: int | None, sft_steps: int, sasrec_epochs: int) -> dict:
    """One stage in this process with the given thread setting; returns seconds and the threads used."""
    from rich.console import Console

    from conrec.runtime import prepare_process

    cfg = _tiny_cfg(run_dir, sft_steps, sasrec_epochs, threads)
    used = prepare_process(cfg.threads)
    if stage == "sft":
        from conrec.experiments import link_unchanged
        from conrec.stages import STAGE_REGISTRY

        with tempfile.TemporaryDirectory() as tmp:  # a child run: the shared run's data and SIDs linked, SFT here
            child = cfg.model_copy(update={"run_dir": Path(tmp) / "child"})
            link_unchanged(run_dir, child, stages=("data", "sid"))
            stats = STAGE_REGISTRY["sft"].call(child, console=Console(quiet=True))
        seconds = float(stats["train_seconds"])
        return {"stage": "sft", "threads": used, "seconds": seconds, "per_unit": seconds / sft_steps, "unit": "step"}
    if stage == "sasrec":
        from conrec.eval.baselines import make_baseline
        from conrec.io import read_parquet
        from conrec.runs import RunDir

        rd = RunDir(run_dir)
        events, items = read_parquet(rd.events), read_parquet(rd.items)
        model = make_baseline("sasrec", cfg.eval)
        started = time.perf_counter()
        model.fit(events, items)
        seconds = time.perf_counter() - started
        return {"stage": "sasrec", "threads": used, "seconds": seconds, "per_unit": seconds / sasrec_epochs, "unit": "epoch"}
    raise SystemExit(f"unknown stage {stage!r}")


def _ours(run_dir: Path) -> bool:
    """Whether ``run_dir``'s config is the one :func:`prepare` writes (preparing another run would rewrite its stages)."""
    from conrec.config import load_config

    return load_config(run_dir / "config.yaml").model_dump() == _tiny_cfg(run_dir, 1, 1, None).model_dump()


def _env() -> dict[str, str]:
    """The environment of the children, ``OMP_NUM_THREADS`` removed: each sets its threads itself (the
    concurrent trainer: torch's default)."""
    return {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}


def _child(stage: str, run_dir: Path, threads: int | None, args: argparse.Namespace) -> dict:
    cmd = [
        sys.executable, __file__, "--measure", stage, "--run-dir", str(run_dir),
        "--sft-steps", str(args.sft_steps), "--sasrec-epochs", str(args.sasrec_epochs),
    ]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    out = _script.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    if out.returncode != 0:
        raise SystemExit(f"measurement {stage} threads={threads} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sft-steps", type=int, default=8)
    parser.add_argument("--sasrec-epochs", type=int, default=3)
    parser.add_argument(
        "--run-dir", type=Path, default=None, help="a directory of its own for the tiny data/SID stages, reused by later runs (default: a temp dir)"
    )
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--measure", choices=("sft", "sasrec"), help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.measure:
        print(json.dumps(measure(args.measure, args.run_dir, args.threads, args.sft_steps, args.sasrec_epochs)))
        return 0

    from conrec.runtime import available_cores

    if args.run_dir and (args.run_dir / "config.yaml").exists() and not _ours(args.run_dir):
        raise SystemExit(f"{args.run_dir} holds another run (its config.yaml is not threads.py's): give --run-dir a directory of its own")
    cores = available_cores()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.run_dir or Path(tmp) / "tiny"
        prepare(run_dir)
        rows: list[dict] = []
        for concurrent in (False, True):
            # the trainer is stopped (with its process group) when this block is left, SIGTERM included
            with _script.popen([sys.executable, "-c", _CONCURRENT], env=_env()) if concurrent else contextlib.nullcontext():
                if concurrent:
                    time.sleep(2.0)  # let it reach its steady step loop
                for stage in ("sft", "sasrec"):
                    for setting, threads in settings(cores):
                        row = _child(stage, run_dir, threads, args)
                        row["setting"] = setting
                        row["concurrent"] = concurrent
                        rows.append(row)
                        print(
                            f"{stage:6s} threads={row['threads']} ({row['setting']:5s}) "
                            f"{'with 1 concurrent trainer' if concurrent else 'alone                   '} "
                            f"{row['per_unit']:.3f} s/{row['unit']}",
                            flush=True,
                        )
    load_after = os.getloadavg()[0]

    print(f"\ncores available: {cores}; 1-min load average before / after: {load_before:.1f} / {load_after:.1f}")
    print("| stage | threads (alone / beside) | alone | with 1 concurrent trainer | slowdown |")
    print("|---|---:|---:|---:|---:|")
    for stage in ("sft", "sasrec"):
        for setting, _ in settings(cores):
            alone = next(r for r in rows if r["stage"] == stage and r["setting"] == setting and not r["concurrent"])
            busy = next(r for r in rows if r["stage"] == stage and r["setting"] == setting and r["concurrent"])
            # "auto" may choose other thread counts alone and beside a trainer: show both
            used = str(alone["threads"]) if alone["threads"] == busy["threads"] else f"{alone['threads']} / {busy['threads']}"
            print(
                f"| {stage} (s/{alone['unit']}) | {used} ({setting}) | {alone['per_unit']:.3f} | "
                f"{busy['per_unit']:.3f} | {busy['per_unit'] / alone['per_unit']:.1f}x |"
            )
    if args.json:
        args.json.write_text(json.dumps({"cores": cores, "load": [load_before, load_after], "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(_script.main(main))
