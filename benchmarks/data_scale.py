"""The data stage at 10^7..10^8 events: events/s and peak memory (PSS) per size and engine.

Usage::

    python benchmarks/data_scale.py [--sizes 1e7,3e7,1e8] [--engines memory,streaming,spark]
                                    [--workdir /tmp/conrec-scale] [--max-rss-gib 12]

For each size a synthetic ``table`` source is generated on disk in chunks of 5M events (Parquet,
row groups of 1M; long-tailed user activity and item popularity, ~5% dislikes over 90 days, one
user per 500 events), so generation is never the bottleneck and is not timed. Then the whole
``data`` stage (:func:`conrec.data.stage.run`: read, validate, split, label, write events,
samples, exposures and stats) runs once per engine, each in a fresh child process:

* ``memory``: polars, ``streaming: off`` (the loader reads the whole file);
* ``streaming``: polars, ``streaming: on`` (out of core, ``partition_events`` per partition);
* ``spark``: ``engine: spark`` on ``local[2]`` (needs ``pip install -e '.[spark]'`` and Java 17).

Peak memory is the peak PSS of the child's whole process tree (the Spark JVM and its Python
workers included; PSS so that pages shared by forked workers count once), sampled every 0.25 s
from /proc; a run whose tree passes ``--max-rss-gib`` is killed and reported as such (the machine
is shared), and ``memory`` is skipped where its ~0.32 GB per million events (measured: `MEMORY_GB_PER_MILLION`) would not fit.
Events/s = events in the file / wall-clock seconds of the stage. Note the machine's load
(``uptime``) beside any figure: the rates scale with free cores.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import _script
import numpy as np
import polars as pl
import pyarrow.parquet as pq

CHUNK = 5_000_000
MEMORY_GB_PER_MILLION = 0.32  # measured here: 2.99 GiB peak for 10^7 events, streaming off
ENGINES = ("memory", "streaming", "spark")


def sizes(text: str) -> list[int]:
    """An argparse type: comma-separated event counts (``1e7,3e7``), each at least 1."""
    try:
        out = [int(float(s)) for s in text.split(",") if s]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of event counts: {text!r}") from None
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"event counts must be at least 1: {text!r}")
    return out


def generate(path: Path, n_events: int, seed: int = 0) -> None:
    """``n_events`` synthetic events in ``path`` (skipped when a complete file is already there)."""
    if path.exists() and pq.ParquetFile(path).metadata.num_rows == n_events:
        return
    rng = np.random.default_rng(seed)
    n_users, n_items = max(n_events // 500, 10), max(n_events // 1000, 100)
    user_p = rng.pareto(1.5, n_users) + 1.0
    item_p = rng.pareto(1.2, n_items) + 1.0
    user_p, item_p = user_p / user_p.sum(), item_p / item_p.sum()
    tmp = path.with_suffix(".tmp")
    writer: pq.ParquetWriter | None = None
    for start in range(0, n_events, CHUNK):
        n = min(CHUNK, n_events - start)
        chunk = pl.DataFrame(
            {
                "user_id": rng.choice(n_users, size=n, p=user_p),
                "item_id": rng.choice(n_items, size=n, p=item_p),
                "ts": 1_700_000_000 + rng.integers(0, 90 * 86_400, size=n),
                "feedback": np.where(rng.random(n) < 0.05, -1, 1).astype(np.int8),
            }
        ).with_columns(
            user_id=pl.lit("u") + pl.col("user_id").cast(pl.String), item_id=pl.lit("i") + pl.col("item_id").cast(pl.String)
        )
        table = chunk.to_arrow()
        writer = writer or pq.ParquetWriter(tmp, table.schema, compression="zstd")
        writer.write_table(table, row_group_size=1_000_000)
    assert writer is not None
    writer.close()
    os.replace(tmp, path)


def run_one(events: Path, engine: str, run_dir: Path) -> None:
    """The child: one data stage run; prints a JSON line with its wall time."""
    from rich.console import Console

    from conrec.config import load_config
    from conrec.data import stage

    data: dict[str, object] = {"source": "table", "events_path": str(events)}
    if engine == "spark":
        data |= {"engine": "spark", "spark": {"master": "local[2]", "conf": {"spark.driver.memory": "6g"}}}
    else:
        data |= {"streaming": {"memory": "off", "streaming": "on"}[engine]}
    cfg = load_config(None, {"run_dir": str(run_dir), "data": data})
    t = time.perf_counter()
    stats = stage.run(cfg.data, cfg.run_dir, console=Console(quiet=True))
    print(json.dumps({"seconds": time.perf_counter() - t, "events": stats["events"], "samples": sum(stats["samples"].values())}))


def _tree_pids(pid: int) -> list[int]:
    """``pid`` and all its descendants (from /proc; every thread's children, since e.g. the JVM
    starts Spark's Python workers from a non-main thread)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
    return out


def _tree_memory_bytes(pids: list[int]) -> int:
    """Proportional set size (PSS) of ``pids`` summed: forked workers (Spark's Python daemon forks
    one per task) share most of their pages, and summing their RSS would count those pages once per
    worker. PSS splits each shared page among its sharers, so the sum is the tree's real footprint.
    Falls back to RSS where smaps_rollup is unavailable."""
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                total += next(int(line.split()[1]) * 1024 for line in f if line.startswith("Pss:"))
        except (FileNotFoundError, ProcessLookupError, StopIteration, PermissionError):
            try:
                with open(f"/proc/{p}/statm") as f:
                    total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            except (FileNotFoundError, ProcessLookupError):
                continue
    return total


def measure(events: Path, engine: str, run_dir: Path, max_rss: int) -> dict[str, object]:
    """Run :func:`run_one` in a child; sample its tree's RSS; kill it past ``max_rss``."""
    # in a process group of its own (the Spark JVM included), stopped with it if this script is interrupted
    with _script.popen([sys.executable, __file__, "--child", str(events), engine, str(run_dir)], stdout=subprocess.PIPE, text=True) as child:
        peak, killed, pids, refreshed = 0, False, [child.pid], 0.0
        while child.poll() is None:
            if time.monotonic() - refreshed > 2.0:  # the tree changes rarely; walking it is the costly part
                pids, refreshed = _tree_pids(child.pid), time.monotonic()
            peak = max(peak, _tree_memory_bytes(pids))
            if peak > max_rss and not killed:
                os.killpg(child.pid, signal.SIGKILL)
                killed = True
            time.sleep(0.25)
        out = child.stdout.read() if child.stdout else ""
    if killed:
        return {"status": f"killed above {max_rss / 2**30:.0f} GiB", "peak_rss_gib": peak / 2**30}
    if child.returncode != 0:
        return {"status": f"failed (exit {child.returncode})", "peak_rss_gib": peak / 2**30}
    res = json.loads(out.strip().splitlines()[-1])
    return {"status": "ok", "peak_rss_gib": peak / 2**30, "events_per_s": res["events"] / res["seconds"], **res}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        run_one(Path(argv[1]), argv[2], Path(argv[3]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1e7,3e7,1e8", type=sizes, help="comma-separated event counts")
    ap.add_argument("--engines", default=",".join(ENGINES), type=_script.names(ENGINES), help=f"comma-separated: {', '.join(ENGINES)}")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/conrec-scale"))
    ap.add_argument("--max-rss-gib", type=float, default=12.0)
    args = ap.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    max_rss = int(args.max_rss_gib * 2**30)
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} (1/5/15 min), cores: {os.cpu_count()}")
    print(f"{'events':>12} {'engine':>10} {'events/s':>12} {'seconds':>9} {'peak PSS GiB':>13}  status")
    for size in args.sizes:
        events = args.workdir / f"events-{size}.parquet"
        t = time.perf_counter()
        generate(events, size)
        print(f"# {size:,} events on disk ({events.stat().st_size / 2**30:.2f} GiB, {time.perf_counter() - t:.0f} s to generate)", flush=True)
        for engine in args.engines:
            if engine == "memory" and size / 1e6 * MEMORY_GB_PER_MILLION * 2**30 > max_rss:
                print(f"{size:>12,} {engine:>10} {'-':>12} {'-':>9} {'-':>13}  skipped: ~{size / 1e6 * MEMORY_GB_PER_MILLION:.0f} GB needed", flush=True)
                continue
            r = measure(events, engine, args.workdir / f"run-{engine}-{size}", max_rss)
            rate = f"{r['events_per_s']:>12,.0f}" if "events_per_s" in r else f"{'-':>12}"
            secs = f"{r['seconds']:>9.1f}" if "seconds" in r else f"{'-':>9}"
            print(f"{size:>12,} {engine:>10} {rate} {secs} {r['peak_rss_gib']:>13.2f}  {r['status']}", flush=True)
            print(f"  load now: {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    sys.exit(_script.main(main))
