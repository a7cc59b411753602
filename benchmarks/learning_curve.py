"""FHR@20 learning curves of the SFT model: training steps x model sizes, on the valid split.

Why: whether the LM loses to popularity because it is too small, trained too briefly, or for a
reason more data and steps do not fix, is a question of curves, not of one point. Each point of the
grid is a child run of one base run (:mod:`conrec.experiments`): it links the base run's finished
``data/`` and ``sid/`` stages (same data, same SIDs for every point), trains its own SFT model with ``sft.train.max_steps``
and ``sft.model.tiny`` replaced, and is evaluated by the normal ``conrec eval`` on the valid split
(hyperparameters are chosen there; the test split is left alone). Points run as independent
``conrec`` subprocesses, ``--jobs`` at a time.

    python benchmarks/learning_curve.py -c preset:demo --out runs/curve            # ~2 h on 2 cores
    python benchmarks/learning_curve.py -c preset:demo --steps 750,1500,3000 \\
        --sizes 128x2,256x4 --jobs 8 --out runs/curve                          # a GPU box

The base config's ``data.split.train_until`` is set to ``valid`` (a model refitted up to the test
cut-off must not be scored on valid). Baselines are evaluated once, on the base run, with the same
split and tuning as ``conrec eval``; they are the horizontal lines of the plot. Writes
``curve.json``, ``curve.md`` and ``curve.png`` under ``--out``. A point that fails is named (with its log) and
left out of the table and plot; the script then exits 1. A SIGTERM or Ctrl-C stops every running ``conrec`` child.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import _script

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from conrec.config import load_config, resolve_config_path  # noqa: E402
from conrec.config_yaml import dump_yaml  # noqa: E402
from conrec.experiments import link_unchanged  # noqa: E402
from conrec.pipeline import is_current  # noqa: E402
from conrec.runs import RunDir  # noqa: E402

METRIC = "FHR@20"


class Failed(Exception):
    """A ``conrec`` child exited with an error (its message names the log)."""


def parse_size(text: str) -> dict[str, int]:
    """``256x4`` -> a tiny-model section: hidden 256, 4 layers, hidden/32 heads, MLP 2x hidden."""
    try:
        hidden, layers = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"not a model size HIDDENxLAYERS (e.g. 128x2): {text!r}") from None
    if hidden < 1 or layers < 1:
        raise ValueError(f"a model size needs a positive hidden size and layer count: {text!r}")
    return {"hidden_size": hidden, "num_layers": layers, "num_heads": max(hidden // 32, 1), "intermediate_size": 2 * hidden, "seed": 0}


def conrec(args: list[str], log: Path, threads: int | None) -> float:
    """Run one ``conrec`` command in a subprocess (its own torch threads); wall seconds."""
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    started = time.perf_counter()
    with log.open("a") as fh:
        rc = _script.run([sys.executable, "-m", "conrec.cli", *args], stdout=fh, stderr=subprocess.STDOUT, env=env).returncode
    if rc:
        raise Failed(f"conrec {' '.join(args)} failed (exit {rc}); see {log}")
    return time.perf_counter() - started


def _sizes(text: str) -> list[str]:
    """An argparse type: comma-separated model sizes, each checked by :func:`parse_size`."""
    given = [s for s in text.split(",") if s]
    try:
        for size in given:
            parse_size(size)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if not given:
        raise argparse.ArgumentTypeError("no model size given")
    return given


def _steps(text: str) -> list[int]:
    """An argparse type: comma-separated positive step counts."""
    try:
        steps = [int(s) for s in text.split(",") if s]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of step counts: {text!r}") from None
    if not steps or min(steps) < 1:
        raise argparse.ArgumentTypeError(f"step counts must be at least 1: {text!r}")
    return steps


def base_config(path: str, out: Path) -> dict[str, Any]:
    # every setting as given, None included (exclude_none turned `separator: null` into the default "|")
    cfg = load_config(resolve_config_path(path, None)).model_dump(mode="json")
    cfg["run_dir"] = str(out / "base")
    cfg["data"]["split"]["train_until"] = "valid"
    cfg["eval"]["split"] = "valid"
    return cfg


def write_yaml(cfg: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump_yaml(cfg, sort_keys=False))  # conrec's quoting: '5e10' stays a string
    return path


def point_config(base: dict[str, Any], out: Path, size: str, steps: int) -> tuple[str, dict[str, Any]]:
    name = f"{size}_{steps}"
    cfg = json.loads(json.dumps(base))
    cfg["run_dir"] = str(out / name)
    cfg["sft"]["model"]["tiny"] = parse_size(size)
    cfg["sft"]["train"]["max_steps"] = steps
    cfg["sft"]["train"]["save_steps"] = max(steps, cfg["sft"]["train"].get("save_steps", steps))
    cfg["eval"]["models"] = ["sft"]
    cfg["eval"]["baselines"] = []
    return name, cfg


def metric(run: Path) -> dict[str, Any]:
    m = json.loads((run / "eval" / "metrics.json").read_text())
    return {name: {"value": v[METRIC], "ci": v.get(f"{METRIC}_ci")} for name, v in m.items()}


def plot(points: list[dict[str, Any]], baselines: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for size in sorted({p["size"] for p in points}, key=lambda s: [int(x) for x in s.split("x")]):
        rows = sorted((p for p in points if p["size"] == size), key=lambda p: p["steps"])
        xs = [p["steps"] for p in rows]
        ax.plot(xs, [p["value"] for p in rows], marker="o", label=f"conrec SFT {size} ({rows[0]['params_m']:.2f}M non-embedding)")
        if all(p["ci"] for p in rows):
            ax.fill_between(xs, [p["ci"][0] for p in rows], [p["ci"][1] for p in rows], alpha=0.15)
    for i, (name, b) in enumerate(sorted(baselines.items(), key=lambda kv: -kv[1]["value"])[:3]):
        ax.axhline(b["value"], ls="--", lw=1, color=f"C{7 + i}", label=f"{name} {b['value']:.3f}")
    ax.set_xscale("log")
    steps = sorted({p["steps"] for p in points})
    ax.set_xticks(steps, [str(s) for s in steps])
    ax.minorticks_off()
    ax.set_xlabel("SFT steps")
    ax.set_ylabel(f"{METRIC} (valid split)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-c", "--config", default="preset:demo", help="the base config (default: preset:demo)")
    ap.add_argument("--out", type=Path, default=Path("runs/curve"), help="where the runs and results go (default: runs/curve, in the current directory)")
    ap.add_argument("--steps", default="375,750,1500,3000", type=_steps, help="comma-separated SFT step counts (default: 375,750,1500,3000)")
    ap.add_argument("--sizes", default="128x2,256x4", type=_sizes, help="comma-separated HIDDENxLAYERS model sizes (default: 128x2,256x4)")
    ap.add_argument("--jobs", type=int, default=1, help="points trained at once (default: 1)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per job (default: conrec's choice)")
    args = ap.parse_args(argv)
    out = args.out.absolute()
    base = base_config(args.config, out)
    base_yaml = write_yaml(base, out / "base.yaml")
    base_run = out / "base"
    t0 = time.perf_counter()
    base_cfg = load_config(base_yaml)
    for stage, command in (("data", "data"), ("sid", "tokenize")):
        if not is_current(RunDir(base_run), base_cfg, stage):  # a prepared base run is reused as is
            try:
                conrec([command, "-c", str(base_yaml)], out / "base.log", args.threads)
            except Failed as e:
                raise SystemExit(str(e)) from None
    bcfg = json.loads(json.dumps(base))
    bcfg["eval"]["models"] = []
    base_eval_yaml = write_yaml(bcfg, out / "base_eval.yaml")

    grid = [(size, steps) for size in args.sizes for steps in args.steps]
    points: list[dict[str, Any]] = []
    baselines: dict[str, Any] = {}

    lock = threading.Lock()  # points finish in worker threads: one writer of curve.json at a time

    def save() -> None:  # after every point: a run cut short still leaves its finished points
        result = {"config": args.config, "metric": METRIC, "split": "valid", "points": points,
                  "baselines": baselines, "wall_s": time.perf_counter() - t0}
        tmp = out / "curve.json.tmp"
        tmp.write_text(json.dumps(result, indent=2))
        tmp.replace(out / "curve.json")

    def one(size_steps: tuple[str, int] | None) -> str | None:
        """One point (None: the baselines); the failure's message, or None."""
        try:
            point(size_steps)
        except Failed as e:
            return str(e)
        return None

    def point(size_steps: tuple[str, int] | None) -> None:
        if size_steps is None:  # the baselines, beside the grid
            conrec(["eval", "-c", str(base_eval_yaml)], out / "base.log", args.threads)
            with lock:
                baselines.update(metric(base_run))
                save()
            return
        size, steps = size_steps
        name, cfg = point_config(base, out, size, steps)
        y = write_yaml(cfg, out / f"{name}.yaml")
        # a child run of the base (conrec.experiments): its data/ and sid/ are links to the base's
        link_unchanged(base_run, load_config(y), stages=("data", "sid"))
        log = out / f"{name}.log"
        sft_s = conrec(["sft", "-c", str(y)], log, args.threads)
        eval_s = conrec(["eval", "-c", str(y)], log, args.threads)
        stats = json.loads((out / name / "sft" / "stats.json").read_text()) if (out / name / "sft" / "stats.json").exists() else {}
        m = metric(out / name)["sft"]
        params = stats.get("n_params_non_embedding")
        with lock:
            points.append({"size": size, "steps": steps, "value": m["value"], "ci": m["ci"], "sft_s": sft_s, "eval_s": eval_s,
                           "params_m": (params / 1e6) if params else float("nan")})
            save()

    pool = ThreadPoolExecutor(max_workers=args.jobs)
    try:
        failures = [f for f in pool.map(one, [None, *grid]) if f]
    finally:  # interrupted: the running children were stopped (_script); the points not started are dropped
        pool.shutdown(wait=True, cancel_futures=True)
    if not points and not baselines:
        raise SystemExit("no point finished:\n" + "\n".join(failures))
    save()
    result = json.loads((out / "curve.json").read_text())
    lines = [f"| model | steps | {METRIC} (valid) | 95% CI | SFT s | eval s |", "|---|---:|---:|---|---:|---:|"]
    for p in sorted(points, key=lambda p: (p["size"], p["steps"])):
        ci = f"[{p['ci'][0]:.3f}, {p['ci'][1]:.3f}]" if p["ci"] else ""
        lines.append(f"| conrec SFT {p['size']} | {p['steps']} | {p['value']:.3f} | {ci} | {p['sft_s']:.0f} | {p['eval_s']:.0f} |")
    for name, b in sorted(baselines.items(), key=lambda kv: -kv[1]["value"]):
        ci = f"[{b['ci'][0]:.3f}, {b['ci'][1]:.3f}]" if b["ci"] else ""
        lines.append(f"| {name} | – | {b['value']:.3f} | {ci} | | |")
    (out / "curve.md").write_text("\n".join(lines) + "\n")
    plot(points, baselines, out / "curve.png")
    print("\n".join(lines))
    print(f"wrote {out / 'curve.png'} ({result['wall_s']:.0f} s)")
    for f in failures:
        print(f, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(_script.main(main))
