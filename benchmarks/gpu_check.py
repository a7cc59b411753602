"""The prepared GPU check: SmolLM2 vs the small model on the same points, a GRPO smoke run, one table.

Three subcommands, so that a borrowed GPU is never spent on setup (docs/backbones-gpu.md):

``prepare`` (here, on CPU, with the network): runs the data and SID stages of the check's config
(MovieLens-100K, per-user protocol) into ``<payload>/run``, downloads the wheels the GPU machine
lacks (Python 3.12, manylinux x86-64), copies the SmolLM2 GGUF, and packs all of it into chunks of
at most ``--chunk-mib`` MiB under ``<payload>/<n>/`` with a SHA-256 manifest. Each chunk travels in
one call of the device tool (its limit is 64 MiB per call); ``unpack`` joins them there.

``unpack`` (on the GPU machine, once per chunk call): copies a chunk into the staging dir
(``/tmp/conrec_gpu_payload``); the last call verifies every file against the manifest.

``run`` (on the GPU machine): installs nothing itself (``gpu_check.sh`` installs the wheels), then
in one process: SmolLM2 SFT, eval on a seeded subset of the per-user test points, the small model's
SFT and eval on the same points, a 2-stage GRPO smoke run of SmolLM2; one row per stage with
steps, steps/s, tokens/s, peak GPU memory and wall time, and FHR@20 of each model. ``--dry-run``
does the same on CPU with tiny models and the simulator (seconds to minutes): the code path a GPU
run takes, minus the GPU.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STAGING = Path("/tmp/conrec_gpu_payload")
MANIFEST = "manifest.json"
# What the GPU machine's image lacks, or has at a version our pins' requirements exclude (its package list:
# /work/.library/device/KINDS.md; it has torch 2.11, accelerate 1.15.0, tokenizers 0.23.2, huggingface-hub 1.33.0,
# which satisfy transformers 5.23 and TRL 1.16). pyarrow, fsspec and regex are carried because datasets and transformers
# bound them and the image's versions are not recorded. Pinned as in pyproject / as tested here.
WHEELS = (
    "transformers==5.23.0", "trl==1.16.0", "peft==0.21.2", "datasets==5.2.0", "polars==2.1.0", "polars-runtime-32==2.1.0",
    "pydantic==2.13.4", "pydantic-core==2.46.4", "annotated-types==0.7.0", "typing-inspection==0.4.2", "gguf==0.19.0",
    "dill==0.4.1", "multiprocess==0.70.19", "pyarrow==26.0.1", "fsspec==2026.9.0", "regex==2026.5.9",
)
N_POINTS = 500  # the seeded subset of per-user test points both models are scored on


@dataclass(frozen=True)
class CheckPlan:
    """Step counts and sizes of one check (the GPU plan fits 9 minutes on an H100/H200 by estimate, not yet by measurement)."""

    sft_steps: int
    small_sft_steps: int
    grpo_steps: int
    eval_points: int
    dry_run: bool


GPU_PLAN = CheckPlan(sft_steps=2000, small_sft_steps=1500, grpo_steps=10, eval_points=N_POINTS, dry_run=False)
DRY_PLAN = CheckPlan(sft_steps=4, small_sft_steps=4, grpo_steps=1, eval_points=20, dry_run=True)


# --------------------------------------------------------------------------- configs
def shared_overrides(plan: CheckPlan) -> dict[str, Any]:
    """Data, SID and eval settings both models share: same run inputs, same points (prepare and run use this)."""
    if plan.dry_run:
        data: dict[str, Any] = {
            "source": "simulator", "simulator": {"n_users": 60, "n_items": 120, "days": 30},
            "split": {"protocol": "per_user", "train_until": "test"},
        }
        sid: dict[str, Any] = {"quantizer": {"kind": "rkmeans"}}
    else:
        data = {"split": {"protocol": "per_user", "train_until": "test"}}
        sid = {}
    return {
        "seed": 0,
        "data": data,
        "sid": sid,
        "eval": {"split": "test", "max_samples": plan.eval_points, "baselines": ["popularity"], "bootstrap": {"resamples": 200}},
    }


def check_configs(work: Path, plan: CheckPlan) -> dict[str, Any]:
    """The two pipeline configs of the check: the pretrained backbone and the small model, on one run's inputs."""
    from conrec.config import _deep_merge, load_config, preset_path

    base = shared_overrides(plan)
    if plan.dry_run:  # a tiny Llama stands in for SmolLM2 (same architecture, same tokenizer)
        lm = {"sft": {"model": {"tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64}}}}
        small = {"sft": {"model": {"tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "seed": 1}}}}
        train = {"batch_size": 4, "logging_steps": 1, "save_steps": 1000}
        grpo: dict[str, Any] = {"num_generations": 4, "batch_size": 4, "max_samples": 16}
        decode = {"num_beams": 4, "top_k": 4, "batch_size": 8}
        extra_eval: dict[str, Any] = {"ks": [4]}
    else:
        lm, small, train = {}, {}, {"logging_steps": 50, "save_steps": 100000}
        grpo = {"max_samples": 512}
        decode = {"batch_size": 64}
        extra_eval = {}
    stages = [
        {"name": "neg_only", "steps": plan.grpo_steps, "max_pos_items": 0, "positive_share": 0.0},
        {"name": "full", "steps": plan.grpo_steps, "max_pos_items": 30, "positive_share": 1.0},
    ]
    lm_over = _deep_merge(base, {
        **lm, "run_dir": str(work / "smollm2"), "decode": decode, "eval": {**extra_eval, "models": ["sft", "grpo"]},
        "grpo": {**grpo, "stages": stages},
    })
    lm_over = _deep_merge(lm_over, {"sft": {"train": {**train, "max_steps": plan.sft_steps}}})
    small_over = _deep_merge(base, {
        **small, "run_dir": str(work / "small"), "decode": decode, "eval": {**extra_eval, "models": ["sft"]},
        "sft": {"train": {**train, "max_steps": plan.small_sft_steps}},
    })
    lm_cfg = load_config(preset_path("smollm2"), lm_over)
    small_cfg = load_config(preset_path("demo"), small_over)
    # the same inputs and the same points: the small model's run takes the data/sid/eval-split settings of the LM run
    small_cfg = small_cfg.model_copy(update={"data": lm_cfg.data, "sid": lm_cfg.sid, "seed": lm_cfg.seed})
    return {"smollm2": lm_cfg, "small": small_cfg}


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


def run_tree_files(run_root: Path) -> dict[str, Path]:
    """The prepared data/ and sid/ outputs (and their fingerprints) as payload files under ``run/``."""
    return {f"run/{p.relative_to(run_root)}": p for p in sorted(run_root.rglob("*")) if p.is_file() and p.parts[len(run_root.parts)] in ("data", "sid")}


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
    """Run data + sid here, gather run inputs, wheels and the GGUF, pack them into chunks."""
    from rich.console import Console

    from conrec.llm.model.backbones import smollm2_gguf
    from conrec.pipeline import run_pipeline

    work = payload / "work"
    cfgs = check_configs(work, plan)
    run_pipeline(cfgs["smollm2"], stages=("data", "sid"), console=Console(stderr=True))
    files = run_tree_files(work / "smollm2")
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
    train_seconds: float | None  # the trainer's own time: what steps/s is computed from
    tokens_per_s: float | None
    peak_gib: float | None
    metric: float | None

    def cells(self) -> list[str]:
        def f(x: float | None, fmt: str) -> str:
            return "-" if x is None else format(x, fmt)

        sps = self.steps / self.train_seconds if self.steps and self.train_seconds else None
        return [self.stage, self.model, f(self.steps, "d"), f(sps, ".2f"), f(self.tokens_per_s, ".0f"),
                f(self.peak_gib, ".2f"), f"{self.seconds:.1f}", f(self.metric, ".4f")]


def header(k: int) -> list[str]:
    return ["stage", "model", "steps", "steps/s (trainer)", "tokens/s", "peak GPU GiB", "wall s", f"FHR@{k} (test subset)"]


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


def _fhr(run_dir: Path, model: str, k: int) -> float | None:
    path = run_dir / "eval" / "metrics.json"
    if not path.exists():
        return None
    value = json.loads(path.read_text()).get(model, {}).get(f"FHR@{k}")
    return float(value) if value is not None else None


def _link_inputs(src: Path, dst: Path) -> None:
    """The small model's run reads the same data/ and sid/ outputs (copied: fingerprints match, so they are reused)."""
    for name in ("data", "sid"):
        if not (dst / name).exists():
            shutil.copytree(src / name, dst / name)


def run_check(work: Path, plan: CheckPlan, out: Path | None) -> list[Row]:
    """The stages in order, one row each; the table is rewritten after every stage (a timeout keeps what finished)."""
    from rich.console import Console

    from conrec.pipeline import run_pipeline

    console = Console(stderr=True)
    cfgs = check_configs(work, plan)
    k = plan_k(plan)
    rows: list[Row] = []

    def stage(name: str, model: str, cfg: Any, stage_name: str, metric_of: str | None = None) -> None:
        _, seconds, peak = _timed(lambda: run_pipeline(cfg, stages=(stage_name,), console=console))
        steps = tokens = train_s = None
        stats_file = Path(cfg.run_dir) / stage_name / "stats.json"
        if stage_name in ("sft", "grpo") and stats_file.exists():
            stats = json.loads(stats_file.read_text())
            steps = int(stats.get("steps") or 0)
            tokens = stats.get("tokens_per_second")
            train_s = stats.get("train_seconds", stats.get("train_seconds_this_run"))
        metric = _fhr(Path(cfg.run_dir), metric_of, k) if metric_of else None
        rows.append(Row(name, model, steps, seconds, train_s, tokens, peak, metric))
        write_table(rows, plan, out)

    lm, small = cfgs["smollm2"], cfgs["small"]
    lm_name = "tiny llama (dry run)" if plan.dry_run else "SmolLM2-135M"
    small_name = "tiny llama (dry run)" if plan.dry_run else "small model (demo)"
    run_pipeline(lm, stages=("data", "sid"), console=console)  # reused from the payload: fingerprints match
    stage("SFT", lm_name, lm, "sft")
    _link_inputs(Path(lm.run_dir), Path(small.run_dir))
    stage("SFT", small_name, small, "sft")
    stage("GRPO 2-stage smoke", lm_name, lm, "grpo")
    stage("eval SFT + GRPO", lm_name, lm, "eval")
    rows[-1].metric = _fhr(Path(lm.run_dir), "sft", k)
    rows.append(Row("  same eval, GRPO model", lm_name, None, 0.0, None, None, None, _fhr(Path(lm.run_dir), "grpo", k)))
    stage("eval SFT", small_name, small, "eval", metric_of="sft")
    write_table(rows, plan, out)
    return rows


def render(rows: list[Row], plan: CheckPlan, k: int) -> str:
    import platform

    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    lines = [
        f"conrec GPU check ({'DRY RUN, tiny models' if plan.dry_run else 'full'}) on {gpu}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, python {platform.python_version()}, torch {torch.__version__}",
        f"{'simulator' if plan.dry_run else 'MovieLens-100K'}, per-user protocol, test split, seeded subset of "
        f"{plan.eval_points} points (eval.max_samples, seed 0), both models on the same points",
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
        run_root = ns.work / "run"
        target = ns.work / "smollm2"
        if run_root.exists() and not target.exists():
            shutil.copytree(run_root, target)
        rows = run_check(ns.work, plan, ns.out)
        print(render(rows, plan, plan_k(plan)))


if __name__ == "__main__":
    main()
