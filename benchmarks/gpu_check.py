"""The prepared GPU check: SmolLM2-135M vs the small model on the demo's timeline recipe, chosen on valid, one table.

Three subcommands, so that a borrowed GPU is never spent on setup (docs/backbones-gpu.md):

``prepare`` (here, on CPU, with the network): runs the data and SID stages of both splits' runs
(MovieLens-100K, per-user protocol; trained up to the valid and up to the test cut-off) into
``<payload>/work/run_<split>``, downloads the wheels the GPU machine lacks (Python 3.12, manylinux
x86-64), copies the SmolLM2 GGUF, and packs all of it into chunks of at most ``--chunk-mib`` MiB
under ``<payload>/<n>/`` with a SHA-256 manifest. Each chunk travels in one call of the device tool
(its limit is 64 MiB per call); ``unpack`` joins them there.

``unpack`` (on the GPU machine, once per chunk call): copies a chunk into the staging dir
(``/tmp/conrec_gpu_payload``); the last call verifies every file against the manifest.

``run`` (on the GPU machine): installs nothing itself (``gpu_check.sh`` installs the wheels), then
in one process, as the project evaluates (choose on valid, score test once): SmolLM2 trains on the
valid run with the learning curve and early stopping and is scored on every valid point; only if it
beats the small model's valid score (the plan's ``beat``) is it trained up to the test cut-off, for
the epochs its curve chose, and scored on every test point. The small model's valid run comes last,
on the same machine and points. One row per stage with steps, steps/s,
tokens/s, peak GPU memory, wall time and FHR@20 with its CI; the metrics, SFT stats and LM
predictions are copied to ``--out`` so that paired differences against the tuned baselines can be
computed where those are fitted. ``--dry-run`` does the same on CPU with tiny models and the
simulator (minutes): the code path a GPU run takes, minus the GPU.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

STAGING = Path("/tmp/conrec_gpu_payload")
MANIFEST = "manifest.json"
# What the GPU machine's image lacks, or has at a version our pins' requirements exclude (its package list:
# /work/.library/device/KINDS.md; it has torch 2.11, accelerate 1.15.0, tokenizers 0.23.2, huggingface-hub 1.33.0,
# which satisfy transformers 5.23 and TRL 1.16). fsspec and regex are carried because datasets and transformers bound
# them. pyarrow is NOT carried: the image's 25.0.1 works, while 26.0.1 there broke datasets' fingerprinting under
# Python 3.12 (dill cannot pickle pyarrow's MonthDayNano; seen on the H200 on 2026-12-04). Pinned as tested here.
WHEELS = (
    "transformers==5.23.0", "trl==1.16.0", "peft==0.21.2", "datasets==5.2.0", "polars==2.1.0", "polars-runtime-32==2.1.0",
    "pydantic==2.13.4", "pydantic-core==2.46.4", "annotated-types==0.7.0", "typing-inspection==0.4.2", "gguf==0.19.0",
    "dill==0.4.1", "multiprocess==0.70.19", "fsspec==2026.9.0", "regex==2026.5.9",
)


@dataclass(frozen=True)
class CheckPlan:
    """The schedule of one check. Both models train the demo's timeline recipe for ``epochs`` on the valid run,
    with valid FHR@20 on ``curve_points`` points every ``eval_steps`` steps (the learning curve, early stopping after
    ``patience`` evaluations without a new best, the best checkpoint kept). ``eval_points`` caps the final evals
    (None = every point); ``beat`` is the valid FHR@20 SmolLM2 must exceed for its test run to be trained."""

    epochs: float
    eval_steps: int
    patience: int
    curve_points: int
    eval_points: int | None
    beat: float
    dry_run: bool
    lm_train: dict[str, Any] = field(default_factory=dict)  # sft.train settings for SmolLM2 only (``run --lm-train``)


# the demo preset's 8 epochs; every 2 epochs: 106 optimiser steps are one epoch of the per-user valid run's 1,687
# timeline windows at batch 16 (every rating an event since like_min_rating: 3). ``beat`` is the small model's FHR@20
# on all 1,794 valid points with this recipe (docs/results.md, measured on CPU on 5 December 2026), the bar SmolLM2
# must pass on the same points before its test run is trained; the check scores the small model last too.
GPU_PLAN = CheckPlan(epochs=8, eval_steps=212, patience=2, curve_points=400, eval_points=None, beat=0.459, dry_run=False)
DRY_PLAN = CheckPlan(epochs=2, eval_steps=3, patience=2, curve_points=10, eval_points=20, beat=1.0, dry_run=True)
SPLITS = ("valid", "test")
SMOLLM2_LR = 5e-4  # presets/smollm2.yaml's rate: the demo's 2e-3 is for a model trained from scratch


# --------------------------------------------------------------------------- configs
def shared_overrides(plan: CheckPlan, split: str) -> dict[str, Any]:
    """Data, SID and eval settings of one split's runs: both models of a split read the same inputs and points.

    ``valid``: trained up to the valid cut-off and scored on valid (where the choice is made); ``test``: trained up to
    the test cut-off (as the baselines are fitted) and scored on test once.
    """
    if plan.dry_run:
        data: dict[str, Any] = {
            "source": "simulator", "simulator": {"n_users": 60, "n_items": 120, "days": 30},
            "split": {"protocol": "per_user", "train_until": split},
        }
        sid: dict[str, Any] = {"quantizer": {"kind": "rkmeans"}, "collab": None}
    else:
        data = {"split": {"protocol": "per_user", "train_until": split}}
        sid = {}  # the demo's: collaborative SIDs
    return {
        "seed": 0,
        "data": data,
        "sid": sid,
        "eval": {"split": split, "max_samples": plan.eval_points, "baselines": ["popularity"], "tune": False},
    }


def check_configs(work: Path, plan: CheckPlan, split: str) -> dict[str, Any]:
    """The check's configs for one split: SmolLM2-135M and the small model, both on the demo's timeline recipe.

    The only differences are the backbone (pretrained, SID rows initialised from its title embeddings, as the
    paper does), SmolLM2's learning rate and any ``plan.lm_train`` overrides (SmolLM2 only); data, SIDs, prompt
    layout, tasks, epochs, dropout and decoding are otherwise the demo's. On ``valid`` both train with the learning curve and early stopping; on ``test`` only SmolLM2 runs, for
    the number of epochs its valid curve chose (:func:`test_config`).
    """
    from conrec.config import _deep_merge, load_config, preset_path

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    base = shared_overrides(plan, split)
    if plan.dry_run:  # a tiny Llama stands in for SmolLM2 (same architecture, same tokenizer)
        lm_model: dict[str, Any] = {"tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64}}
        small_model: dict[str, Any] = {"tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "seed": 1}}
        train: dict[str, Any] = {"batch_size": 4, "logging_steps": 1, "save_steps": 1000}
        decode: dict[str, Any] = {"num_beams": 4, "top_k": 4, "batch_size": 8}
        base["eval"]["ks"] = [4]
        stop_k = 4
    else:
        lm_model = {"path": None, "backbone": "smollm2", "tiny": None, "sid_init": "title"}
        small_model = {}
        train, decode, stop_k = {"logging_steps": 50, "save_steps": 100000}, {"batch_size": 64}, 20
    train = {**train, "epochs": plan.epochs}
    if split == "valid":
        train["early_stopping"] = {
            "eval_steps": plan.eval_steps, "patience": plan.patience, "max_points": plan.curve_points, "k": stop_k,
        }
    lm_over = _deep_merge(base, {
        "run_dir": str(work / f"{split}_smollm2"), "decode": decode, "eval": {"models": ["sft"]},
        "sft": {"model": lm_model, "train": {**train, "learning_rate": SMOLLM2_LR, **plan.lm_train}},
    })
    small_over = _deep_merge(base, {
        "run_dir": str(work / f"{split}_small"), "decode": decode, "eval": {"models": ["sft"]},
        "sft": {"model": small_model, "train": train},
    })
    lm_cfg = load_config(preset_path("demo"), lm_over)
    small_cfg = load_config(preset_path("demo"), small_over)
    # the same inputs and the same points: the small model's run takes the data/sid/eval-split settings of the LM run
    small_cfg = small_cfg.model_copy(update={"data": lm_cfg.data, "sid": lm_cfg.sid, "seed": lm_cfg.seed})
    return {"smollm2": lm_cfg, "small": small_cfg}


def chosen_epochs(stats: dict[str, Any], batch_size: int) -> float:
    """The epochs at the valid run's best checkpoint (its SFT ``stats.json``): what the test run trains for."""
    steps_per_epoch = max(1, -(-int(stats["n_examples"]) // batch_size))
    best = int(stats["early_stopping"]["best_step"]) or int(stats["steps"])
    return round(best / steps_per_epoch, 2)


def test_config(work: Path, plan: CheckPlan, epochs: float) -> Any:
    """SmolLM2's test run: the valid run's recipe, trained up to the test cut-off for ``epochs``."""
    lm = check_configs(work, plan, "test")["smollm2"]
    sft = lm.sft.model_copy(update={"train": lm.sft.train.model_copy(update={"epochs": epochs})})
    return lm.model_copy(update={"sft": sft})


# --------------------------------------------------------------------------- payload: pack, unpack, verify
def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def pack(files: dict[str, Path], out: Path, chunk_bytes: int) -> dict[str, Any]:
    """Split ``files`` (name -> path) into numbered chunk dirs of at most ``chunk_bytes``; write the manifest into the last.

    A file larger than a chunk is cut into ``<name>.partNN`` pieces; the manifest lists each file's
    pieces in order and its SHA-256, so :func:`assemble` can rebuild and verify it.
    """
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {"files": {}}
    chunk, used = 0, 0
    (out / "0").mkdir(exist_ok=True)
    for name, src in sorted(files.items()):
        size = src.stat().st_size
        pieces = []
        with src.open("rb") as f:
            offset = 0
            while offset < size or (size == 0 and not pieces):
                if used >= chunk_bytes:
                    chunk, used = chunk + 1, 0
                    (out / str(chunk)).mkdir(exist_ok=True)
                take = min(chunk_bytes - used, size - offset)
                piece = f"{name.replace('/', '__')}.part{len(pieces):02d}"  # flat: a chunk dir is one level
                (out / str(chunk) / piece).write_bytes(f.read(take))
                pieces.append(piece)
                used += take
                offset += take
                if size == 0:
                    break
        manifest["files"][name] = {"sha256": sha256_of(src), "size": size, "pieces": pieces}
    manifest["chunks"] = chunk + 1
    (out / str(chunk) / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def assemble(staging: Path, dest: Path) -> dict[str, Path]:
    """Rebuild every file of the manifest found in ``staging`` into ``dest``; SystemExit naming the first bad or missing piece."""
    mpath = staging / MANIFEST
    if not mpath.exists():
        raise SystemExit(f"gpu_check: {mpath} not found: unpack every chunk first (the manifest travels with the last one)")
    manifest = json.loads(mpath.read_text())
    dest.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    for name, meta in manifest["files"].items():
        missing = [p for p in meta["pieces"] if not (staging / p).exists()]
        if missing:
            raise SystemExit(f"gpu_check: {name}: piece {missing[0]} was never unpacked (chunks travel one call each)")
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as f:
            for p in meta["pieces"]:
                f.write((staging / p).read_bytes())
        if sha256_of(target) != meta["sha256"]:
            raise SystemExit(f"gpu_check: {name} does not match its SHA-256 after joining: a chunk was damaged in transfer")
        out[name] = target
    return out


def unpack(chunk_dir: Path, staging: Path = STAGING) -> None:
    staging.mkdir(parents=True, exist_ok=True)
    for f in chunk_dir.iterdir():
        shutil.copy2(f, staging / f.name)
    print(f"gpu_check: unpacked {chunk_dir} -> {staging} ({sum(1 for _ in staging.iterdir())} files staged)")


def run_tree_files(run_root: Path, prefix: str) -> dict[str, Path]:
    """The prepared data/ and sid/ outputs (and their fingerprints) as payload files under ``<prefix>/``."""
    return {
        f"{prefix}/{p.relative_to(run_root)}": p
        for p in sorted(run_root.rglob("*"))
        if p.is_file() and p.parts[len(run_root.parts)] in ("data", "sid")
    }


def download_wheels(dest: Path) -> list[Path]:
    """cp312 manylinux x86-64 wheels of :data:`WHEELS`, for the GPU machine's Python (no dependencies pulled)."""
    shutil.rmtree(dest, ignore_errors=True)  # only this list travels: no wheel left from an earlier prepare
    dest.mkdir(parents=True)
    platforms = [a for p in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64") for a in ("--platform", p)]
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
           "--implementation", "cp", *platforms, "-d", str(dest), *WHEELS]
    subprocess.run(cmd, check=True)
    return sorted(dest.glob("*.whl"))


def prepare(payload: Path, chunk_mib: int, plan: CheckPlan, with_wheels: bool) -> dict[str, Any]:
    """Run data + sid of both splits here, gather run inputs, wheels and the GGUF, pack them into chunks."""
    from rich.console import Console

    from conrec.llm.model.backbones import smollm2_gguf
    from conrec.pipeline import run_pipeline

    work = payload / "work"
    files: dict[str, Path] = {}
    for split in SPLITS:
        lm = check_configs(work, plan, split)["smollm2"]
        run_pipeline(lm, stages=("data", "sid"), console=Console(stderr=True))
        files.update(run_tree_files(Path(lm.run_dir), f"run_{split}"))
    if not plan.dry_run:
        files["gguf/" + smollm2_gguf().path.name] = smollm2_gguf().path
    if with_wheels:
        for w in download_wheels(payload / "wheels"):
            files[f"wheels/{w.name}"] = w
    for old in payload.iterdir():
        if old.name.isdigit():
            shutil.rmtree(old)
    manifest = pack(files, payload, chunk_mib << 20)
    total = sum(m["size"] for m in manifest["files"].values())
    print(f"gpu_check: {len(files)} files, {total / 2**20:.1f} MiB in {manifest['chunks']} chunk(s) under {payload}/<n>")
    return manifest


# --------------------------------------------------------------------------- the check
@dataclass
class Row:
    stage: str
    model: str
    steps: int | None
    seconds: float  # wall time of the whole stage (loading, saving, discernment check included)
    train_seconds: float | None  # the trainer's own time less its learning curve's scoring: what steps/s is computed from
    tokens_per_s: float | None
    peak_gib: float | None
    metric: float | None
    ci: tuple[float, float] | None = None
    note: str = ""

    def cells(self) -> list[str]:
        def f(x: float | None, fmt: str) -> str:
            return "-" if x is None else format(x, fmt)

        sps = self.steps / self.train_seconds if self.steps and self.train_seconds else None
        metric = f(self.metric, ".4f") + (f" [{self.ci[0]:.3f}, {self.ci[1]:.3f}]" if self.ci else "")
        return [self.stage, self.model, f(self.steps, "d"), f(sps, ".2f"), f(self.tokens_per_s, ".0f"),
                f(self.peak_gib, ".2f"), f"{self.seconds:.1f}", metric, self.note or "-"]


def header(k: int) -> list[str]:
    return ["stage", "model", "steps", "steps/s (trainer)", "tokens/s", "peak GPU GiB", "wall s", f"FHR@{k} [95% CI]", "note"]


def plan_k(plan: CheckPlan) -> int:
    """The cut-off the table reports (the dry run's tiny decode returns 4 items)."""
    return 4 if plan.dry_run else 20


def _timed(fn: Any) -> tuple[Any, float, float | None]:
    import torch

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    result = fn()
    if cuda:
        torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    return result, time.perf_counter() - t0, peak


def _copy_inputs(src: Path, dst: Path) -> None:
    """A run reads the prepared data/ and sid/ outputs (copied: fingerprints match, so they are reused)."""
    for name in ("data", "sid"):
        if not (dst / name).exists():
            shutil.copytree(src / name, dst / name)


def _keep(run_dir: Path, out: Path | None, names: tuple[str, ...]) -> None:
    """Copy a run's small result files to OUT/<run name>/ (they come back from the GPU machine)."""
    if out is None:
        return
    dest = out / run_dir.name
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        src = run_dir / name
        if src.exists():
            shutil.copy2(src, dest / src.name)


def run_check(work: Path, plan: CheckPlan, out: Path | None) -> list[Row]:
    """Valid runs of both models, then SmolLM2's test run if it won on valid; the table is rewritten after
    every stage (a timeout keeps what finished)."""
    from rich.console import Console

    from conrec.pipeline import run_pipeline

    console = Console(stderr=True)
    k = plan_k(plan)
    rows: list[Row] = []
    names = {"smollm2": "tiny llama (dry run)" if plan.dry_run else "SmolLM2-135M",
             "small": "tiny llama (dry run)" if plan.dry_run else "small model (demo)"}

    def prepared(cfg: Any, split: str) -> Any:
        _copy_inputs(work / f"run_{split}", Path(cfg.run_dir))
        run_pipeline(cfg, stages=("data", "sid"), console=console)  # reused: fingerprints match
        return cfg

    def sft(label: str, who: str, cfg: Any) -> dict[str, Any]:
        _, seconds, peak = _timed(lambda: run_pipeline(cfg, stages=("sft",), console=console))
        stats = json.loads((Path(cfg.run_dir) / "sft" / "stats.json").read_text())
        curve = stats.get("early_stopping")
        if curve:
            best = curve[f"best_valid_FHR@{curve['k']}"]
            note = (f"{len(curve['learning_curve'])} curve points on {plan.curve_points} valid points; best FHR@{curve['k']} "
                    f"{best:.3f} at step {curve['best_step']} = {chosen_epochs(stats, cfg.sft.train.batch_size)} epochs (kept)")
        else:
            note = f"{cfg.sft.train.epochs} epochs"
        training = stats["train_seconds"] - stats.get("valid_scoring_seconds", 0.0) if stats.get("train_seconds") else None
        rows.append(Row(label, names[who], int(stats["steps"]), seconds, training, stats.get("tokens_per_second"), peak, None, None, note))
        _keep(Path(cfg.run_dir), out, ("sft/stats.json",))
        write_table(rows, plan, out)
        return stats

    def evaluate(label: str, who: str, cfg: Any) -> float:
        _, seconds, peak = _timed(lambda: run_pipeline(cfg, stages=("eval",), console=console))
        metrics = json.loads((Path(cfg.run_dir) / "eval" / "metrics.json").read_text())
        lm, pop = metrics["sft"], metrics["popularity"]
        ci = lm.get(f"FHR@{k}_ci")
        note = f"{cfg.eval.split}, popularity {pop[f'FHR@{k}']:.3f} on the same points"
        rows.append(Row(label, names[who], None, seconds, None, None, peak, float(lm[f"FHR@{k}"]), tuple(ci) if ci else None, note))
        _keep(Path(cfg.run_dir), out, ("eval/metrics.json", "eval/predictions/sft.parquet"))
        write_table(rows, plan, out)
        return float(lm[f"FHR@{k}"])

    valid = check_configs(work, plan, "valid")
    lm_v = prepared(valid["smollm2"], "valid")
    lm_stats = sft("SFT, valid run", "smollm2", lm_v)
    lm_fhr = evaluate("eval, valid", "smollm2", lm_v)
    # chosen on valid: only a SmolLM2 that beats the small model there is trained for test and scored once
    # (the dry run rehearses that path always)
    if lm_fhr > plan.beat or plan.dry_run:
        lm_t = prepared(test_config(work, plan, chosen_epochs(lm_stats, lm_v.sft.train.batch_size)), "test")
        sft("SFT, test run", "smollm2", lm_t)
        evaluate("eval, test", "smollm2", lm_t)
    else:
        rows.append(Row("test run", names["smollm2"], None, 0.0, None, None, None, None, None,
                        f"not run: valid FHR@{k} {lm_fhr:.3f} does not beat the small model's {plan.beat:.3f}"))
        write_table(rows, plan, out)
    # last, so that a timeout costs only this: the small model on the same machine and valid points
    small_v = prepared(valid["small"], "valid")
    sft("SFT, valid run", "small", small_v)
    evaluate("eval, valid", "small", small_v)
    return rows


def render(rows: list[Row], plan: CheckPlan, k: int) -> str:
    import platform

    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    points = "all points" if plan.eval_points is None else f"a seeded subset of {plan.eval_points} points (eval.max_samples, seed 0)"
    lines = [
        f"conrec GPU check ({'DRY RUN, tiny models' if plan.dry_run else 'full'}) on {gpu}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, python {platform.python_version()}, torch {torch.__version__}",
        f"{'simulator' if plan.dry_run else 'MovieLens-100K'}, per-user protocol, the demo's timeline recipe; valid runs "
        f"train up to the valid cut-off and are scored on {points} of valid, the test run up to the test cut-off and on {points} of test"
        + (f"; SmolLM2's sft.train overrides: {json.dumps(plan.lm_train)}" if plan.lm_train else ""),
        "| " + " | ".join(header(k)) + " |",
        "|" + "|".join("---" for _ in header(k)) + "|",
    ]
    lines += ["| " + " | ".join(r.cells()) + " |" for r in rows]
    lines.append(f"total wall {sum(r.seconds for r in rows):.1f} s")
    return "\n".join(lines)


def write_table(rows: list[Row], plan: CheckPlan, out: Path | None) -> None:
    text = render(rows, plan, plan_k(plan))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / ".gpu_check.md.tmp"
        tmp.write_text(text + "\n")
        tmp.replace(out / "gpu_check.md")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="here, on CPU: data + sid stages, wheels, GGUF -> chunks under --payload")
    p.add_argument("--payload", type=Path, default=Path(".gpu_payload"))
    p.add_argument("--chunk-mib", type=int, default=58, help="at most 64 MiB travel per device call, the tree included")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--no-wheels", action="store_true", help="skip the wheel download (dry runs, offline tests)")
    u = sub.add_parser("unpack", help="on the GPU machine: stage one chunk dir")
    u.add_argument("chunk", type=Path)
    u.add_argument("--staging", type=Path, default=STAGING)
    a = sub.add_parser("assemble", help="join and verify the staged payload into --dest")
    a.add_argument("--staging", type=Path, default=STAGING)
    a.add_argument("--dest", type=Path, required=True)
    r = sub.add_parser("run", help="the check itself (one table)")
    r.add_argument("--work", type=Path, required=True, help="the assembled payload's work dir (holds run/ with data and sid)")
    r.add_argument("--out", type=Path, default=None, help="also write the table to OUT/gpu_check.md")
    r.add_argument("--dry-run", action="store_true")
    r.add_argument("--lm-train", type=json.loads, default={}, metavar="JSON",
                   help='SmolLM2\'s sft.train settings over the recipe\'s, e.g. \'{"dropout": 0, "learning_rate": 1e-4}\'')
    ns = parser.parse_args(argv)
    if ns.cmd == "prepare":
        prepare(ns.payload, ns.chunk_mib, DRY_PLAN if ns.dry_run else GPU_PLAN, with_wheels=not (ns.no_wheels or ns.dry_run))
    elif ns.cmd == "unpack":
        unpack(ns.chunk, ns.staging)
    elif ns.cmd == "assemble":
        files = assemble(ns.staging, ns.dest)
        print(f"gpu_check: {len(files)} files verified into {ns.dest}")
    else:
        plan = DRY_PLAN if ns.dry_run else GPU_PLAN
        if not plan.dry_run:
            import torch

            if not torch.cuda.is_available():
                raise SystemExit("gpu_check run: torch sees no GPU (use --dry-run for the CPU rehearsal)")
        plan = replace(plan, lm_train=ns.lm_train)  # the printed table (what the device log keeps) names the overrides too
        rows = run_check(ns.work, plan, ns.out)
        print(render(rows, plan, plan_k(plan)))


if __name__ == "__main__":
    main()
