"""Benchmark the HTTP service: requests/s and p50/p95 latency at concurrency 1 and 8, for
``/v1/dislikes`` (top-K), its batch form, and ``/v1/score`` (a slate of --slate candidates).

Starts ``conrec serve`` as a uvicorn subprocess on 127.0.0.1 (free port), sends a bounded number of
requests per level (and stops a level early after --max-seconds), then stops the server.

    python benchmarks/serve.py --run-dir runs/demo          # the trained model (grpo, else sft)
    python benchmarks/serve.py --fake                       # popularity predictor: HTTP overhead only

One invocation is one round. To average rounds (and alternate configurations), run it in a loop with
``--json FILE``: each invocation appends one JSON line (its run, config and per-level figures), e.g.

    for r in 1 2 3 4 5 6; do for c in one.yaml two.yaml; do
      python benchmarks/serve.py --run-dir RUN --config $c --requests 96 --json rounds.jsonl; done; done
    python benchmarks/serve.py --summarize rounds.jsonl     # mean req/s, p50, p95 per configuration and level

With --fake the run dir's tables are used if present, otherwise a synthetic run in a temp dir.
Request histories are real users' (``user_id`` requests) and, for every other request, the same
history sent explicitly as ``negative``/``positive`` lists, so both lookup paths are measured.

Besides requests/s and latency, each level reports ``client ms``, the benchmark client's own CPU time
per request (client and server share the machine's cores), and ``busy``, the share of all cores busy
over the level (Linux ``/proc/stat``): at ``busy`` near 1, more requests per second can only come from
less work per request, not from more concurrency.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _script
import httpx
import numpy as np

from conrec.config import PipelineConfig, load_config
from conrec.io import read_parquet
from conrec.runs import RunDir
from conrec.runtime import idle_cpus, parse_proc_stat
from conrec.serve.catalog import user_histories
from conrec.serve.local import local_server
from conrec.serve.synthetic import write_synthetic_run


@dataclass
class LevelResult:
    name: str
    concurrency: int
    sent: int
    errors: int
    seconds: float
    latencies_ms: list[float]  # of the answered requests (HTTP 200) only
    histories: int
    client_cpu_s: float = 0.0  # this process's CPU time over the level (the client's threads)
    machine_busy: float = float("nan")  # share of all cores busy over the level (Linux; nan elsewhere)
    statuses: Counter[str] = field(default_factory=Counter)  # HTTP status (or the client error) -> requests
    first_error: str = ""  # the first failed request's status and body

    def figures(self) -> dict[str, Any]:
        """req/s and latencies count the answered requests only: a failed request is an error, not throughput."""
        lat = self.latencies_ms or [float("nan")]
        p50, p95 = np.percentile(lat, [50, 95])
        rps = (self.sent - self.errors) / self.seconds if self.seconds > 0 else float("nan")
        return {"endpoint": self.name, "concurrency": self.concurrency, "requests": self.sent, "errors": self.errors,
                "req_s": rps, "p50_ms": float(p50), "p95_ms": float(p95)}

    def row(self) -> str:
        f = self.figures()
        return (
            f"{self.name:<10}{self.concurrency:>6}{self.sent:>9}{self.errors:>8}{f['req_s']:>10.1f}"
            f"{f['req_s'] * self.histories:>12.1f}{f['p50_ms']:>10.1f}{f['p95_ms']:>10.1f}"
            f"{1000 * self.client_cpu_s / max(1, self.sent):>12.2f}{self.machine_busy:>7.2f}"
        )


def summarize(rounds: list[dict[str, Any]]) -> str:
    """Mean req/s, p50 and p95 per (configuration, endpoint, concurrency) over the rounds of a ``--json`` file."""
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for r in rounds:
        for lv in r["levels"]:
            groups.setdefault((r["label"], lv["endpoint"], lv["concurrency"]), []).append(lv)
    lines = [f"{'endpoint':<10}{'conc':>6}{'rounds':>8}{'req/s':>10}{'p50 ms':>10}{'p95 ms':>10}  config (or run dir)"]
    for (label, endpoint, conc), levels in sorted(groups.items()):
        mean = {k: float(np.mean([lv[k] for lv in levels])) for k in ("req_s", "p50_ms", "p95_ms")}
        lines.append(f"{endpoint:<10}{conc:>6}{len(levels):>8}{mean['req_s']:>10.1f}{mean['p50_ms']:>10.1f}{mean['p95_ms']:>10.1f}  {label}")
    return "\n".join(lines)


HEADER = f"{'endpoint':<10}{'conc':>6}{'requests':>9}{'errors':>8}{'req/s':>10}{'histories/s':>12}{'p50 ms':>10}{'p95 ms':>10}{'client ms':>12}{'busy':>7}"


def build_payloads(run: RunDir, k: int, max_history: int, n: int) -> list[dict[str, Any]]:
    """``n`` request bodies over real users, alternating user_id and explicit-list requests.

    Without an events table (e.g. a toy run) the samples' histories are sent as explicit lists.
    """
    if run.events.exists():
        hist = user_histories(read_parquet(run.events, what="events"), max_history)
        by_user = True
    else:
        samples = read_parquet(run.samples, what="samples")
        hist = {
            str(j): (items[-max_history:], fb[-max_history:])
            for j, (items, fb) in enumerate(zip(samples["hist_items"].to_list(), samples["hist_feedback"].to_list()))
        }
        by_user = False
    keys = sorted(hist)[: max(1, n)]
    payloads: list[dict[str, Any]] = []
    for j, key in zip(range(n), itertools.cycle(keys)):
        if by_user and j % 2 == 0:
            payloads.append({"user_id": key, "k": k})
        else:
            items, fb = hist[key]
            neg = [i for i, f in zip(items, fb) if f < 0]
            pos = [i for i, f in zip(items, fb) if f > 0]
            payloads.append({"negative": neg, "positive": pos, "k": k})
    return payloads


def score_payloads(bodies: list[dict[str, Any]], item_ids: list[str], slate: int, seed: int = 0) -> list[dict[str, Any]]:
    """The same histories as ``bodies``, each with a seeded slate of ``slate`` distinct candidates (no k)."""
    rng = np.random.default_rng(seed)
    out = []
    for b in bodies:
        body = {key: v for key, v in b.items() if key != "k"}
        body["candidates"] = [item_ids[j] for j in rng.choice(len(item_ids), size=min(slate, len(item_ids)), replace=False)]
        out.append(body)
    return out


def _cpu_sample() -> dict[int, tuple[int, int]] | None:
    """Per-CPU (idle, total) ticks from /proc/stat (:func:`conrec.runtime.parse_proc_stat`); None where it does not exist."""
    try:
        return parse_proc_stat(Path("/proc/stat").read_text())
    except OSError:
        return None


def _busy_share(before: dict[int, tuple[int, int]] | None, after: dict[int, tuple[int, int]] | None) -> float:
    """The share of all CPUs busy between two samples (nan when unknown)."""
    if not before or not after:
        return float("nan")
    idle = idle_cpus(before, after, set(before))
    return float("nan") if idle is None else 1.0 - idle / len(before)


def run_level(
    url: str, path: str, bodies: list[dict[str, Any]], concurrency: int, max_seconds: float, histories_per_body: int = 1
) -> LevelResult:
    """Send ``bodies`` with ``concurrency`` threads (one keep-alive client); stop early at the deadline."""
    next_index = itertools.count()
    lock = threading.Lock()
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    first_error: list[str] = []
    deadline = time.perf_counter() + max_seconds

    def worker(client: httpx.Client) -> None:
        while time.perf_counter() < deadline:
            j = next(next_index)
            if j >= len(bodies):
                return
            t0 = time.perf_counter()
            try:
                resp = client.post(path, json=bodies[j])
                status, error = str(resp.status_code), (f"HTTP {resp.status_code}: {resp.text[:300]}" if resp.status_code != 200 else "")
            except httpx.HTTPError as e:
                status, error = type(e).__name__, f"{type(e).__name__}: {e}"
            dt = (time.perf_counter() - t0) * 1000
            with lock:
                statuses[status] += 1
                if not error:
                    latencies.append(dt)
                elif not first_error:
                    first_error.append(error)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with httpx.Client(base_url=url, timeout=max(60.0, max_seconds), limits=limits) as client:
        start, cpu0, ticks0 = time.perf_counter(), time.process_time(), _cpu_sample()
        with ThreadPoolExecutor(concurrency) as pool:
            for f in [pool.submit(worker, client) for _ in range(concurrency)]:
                f.result()
        seconds, cpu, ticks1 = time.perf_counter() - start, time.process_time() - cpu0, _cpu_sample()
    busy = _busy_share(ticks0, ticks1)
    name = path.rsplit("/", 1)[-1]
    sent = sum(statuses.values())
    return LevelResult(
        name, concurrency, sent, sent - len(latencies), seconds, latencies, histories_per_body, cpu, busy, statuses, "".join(first_error)
    )


def merge_levels(parts: list[LevelResult]) -> LevelResult:
    """One level from its blocks (:func:`run_levels`): counts, seconds, CPU and latencies added up; ``busy`` the
    seconds-weighted mean."""
    first = parts[0]
    seconds = sum(p.seconds for p in parts)
    busy = [(p.machine_busy, p.seconds) for p in parts if p.machine_busy == p.machine_busy]  # nan where unknown
    statuses: Counter[str] = Counter()
    for p in parts:
        statuses.update(p.statuses)
    return LevelResult(
        first.name, first.concurrency, sum(p.sent for p in parts), sum(p.errors for p in parts), seconds,
        [ms for p in parts for ms in p.latencies_ms], first.histories, sum(p.client_cpu_s for p in parts),
        sum(b * t for b, t in busy) / sum(t for _, t in busy) if busy and seconds > 0 else float("nan"),
        statuses, next((p.first_error for p in parts if p.first_error), ""),
    )


def run_levels(
    url: str, path: str, bodies: list[dict[str, Any]], levels: list[int], max_seconds: float, blocks: int = 1
) -> list[LevelResult]:
    """Every concurrency level over ``bodies``; with ``blocks`` > 1 the bodies are cut into that many blocks and the
    levels alternate block by block (c=1, c=8, c=1, c=8, ...), each block with its share of ``max_seconds``.

    Why: on a shared machine the speed drifts over minutes (the same configuration measured 1.6x apart in
    consecutive rounds on 7 December 2026), and a ratio of two levels measured minutes apart carries that drift;
    alternating blocks puts both levels under the same drift. A block's last requests run at less than its
    concurrency, so short blocks understate the higher level a little. No bodies: nothing to cut, as one block."""
    if blocks <= 1 or not bodies:
        return [run_level(url, path, bodies, c, max_seconds) for c in levels]
    size = -(-len(bodies) // blocks)
    chunks = [bodies[i : i + size] for i in range(0, len(bodies), size)]
    parts: dict[int, list[LevelResult]] = {c: [] for c in levels}
    for chunk in chunks:
        for c in levels:
            parts[c].append(run_level(url, path, chunk, c, max_seconds / len(chunks)))
    return [merge_levels(parts[c]) for c in levels]


def resolve_config(args: argparse.Namespace, tmp: Path) -> PipelineConfig:
    """``--config`` serves its own ``run_dir`` unless ``--run-dir`` is given too; else ``--run-dir`` (default
    runs/demo) with its config.yaml if present."""
    if args.config:
        cfg = load_config(args.config, {"run_dir": args.run_dir} if args.run_dir else None)
    else:
        run_dir = Path(args.run_dir or "runs/demo")
        cfg = load_config(run_dir / "config.yaml" if (run_dir / "config.yaml").exists() else None, {"run_dir": str(run_dir)})
    run_dir = Path(cfg.run_dir)
    if args.fake:
        run = RunDir(run_dir)
        if not (run.events.exists() and run.sid_map.exists() and run.items.exists()):
            print(f"[bench] no tables in {run_dir}; using a synthetic run", file=sys.stderr)
            synthetic = cfg.model_copy(update={"run_dir": tmp / "synthetic"})  # recorded as made with this config
            run = write_synthetic_run(synthetic.run_dir, synthetic, n_items=2000, n_users=300, events_per_user=60)
        cfg = cfg.model_copy(update={"run_dir": run.root, "serve": cfg.serve.model_copy(update={"model": "popular"})})
    # Access logs would measure disk I/O of the log, not the service.
    return cfg.model_copy(update={"serve": cfg.serve.model_copy(update={"access_log": False, "log_level": "warning"})})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", default=None, help="the run to serve (default: --config's run_dir, else runs/demo)")
    p.add_argument("--config", type=Path, default=None, help="pipeline YAML (default: <run-dir>/config.yaml if present)")
    p.add_argument("--fake", action="store_true", help="serve the popularity predictor instead of the LM")
    p.add_argument("--requests", type=int, default=None, help="requests per level (default 200 fake, 24 model)")
    p.add_argument("--concurrency", default="1,8", help="comma-separated levels")
    p.add_argument("--batch", type=int, default=8, help="also send batches of this many histories at concurrency 1 (0: skip)")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--slate", type=int, default=20, help="candidates per /v1/score request (0: skip /v1/score)")
    p.add_argument("--max-seconds", type=float, default=120.0, help="time budget per level")
    p.add_argument("--blocks", type=_script.positive, default=1,
                   help="cut each level's requests into this many blocks and alternate the levels block by block "
                        "(steadier ratios on a machine whose speed drifts; see run_levels)")
    p.add_argument("--startup-timeout", type=float, default=600.0, help="model load budget")
    p.add_argument("--json", type=Path, default=None, help="append this round's figures to this file as one JSON line")
    p.add_argument("--summarize", type=Path, default=None, help="print the mean of the rounds in this --json file and exit")
    args = p.parse_args(argv)
    if args.summarize:
        print(summarize([json.loads(line) for line in args.summarize.read_text().splitlines() if line.strip()]))
        return 0
    n = args.requests or (200 if args.fake else 24)
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]

    with tempfile.TemporaryDirectory(prefix="conrec-bench-") as tmp:
        cfg = resolve_config(args, Path(tmp))
        bodies = build_payloads(RunDir(cfg.run_dir), args.k, cfg.serve.max_history, n)
        t0 = time.perf_counter()
        with local_server(cfg, startup_timeout=args.startup_timeout) as server:
            health = httpx.get(f"{server.url}/healthz").json()
            print(f"[bench] {server.url}  run={cfg.run_dir}  model={health['model']}  n_items={health['n_items']}  "
                  f"startup {time.perf_counter() - t0:.1f} s  requests/level={n}  k={args.k}")
            run_level(server.url, "/v1/dislikes", bodies[:2], 1, args.max_seconds)  # warm-up
            results = run_levels(server.url, "/v1/dislikes", bodies, levels, args.max_seconds, args.blocks)
            if args.batch > 0:
                b = min(args.batch, cfg.serve.max_batch)
                batches = [{"requests": bodies[i : i + b]} for i in range(0, len(bodies) - b + 1, b)]
                if batches:
                    results.append(run_level(server.url, "/v1/dislikes/batch", batches, 1, args.max_seconds, b))
            if args.slate > 0:
                item_ids = read_parquet(RunDir(cfg.run_dir).sid_map, what="SID map")["item_id"].cast(str).to_list()
                slates = score_payloads(bodies, item_ids, args.slate)
                run_level(server.url, "/v1/score", slates[:2], 1, args.max_seconds)  # warm-up
                results += run_levels(server.url, "/v1/score", slates, levels, args.max_seconds, args.blocks)
    print(HEADER)
    for r in results:
        print(r.row())
    if args.json:
        # rounds are grouped by what was asked for (--config, else --run-dir), not by a --fake run's temp dir
        record = {"label": str(args.config or args.run_dir or "runs/demo"), "run": str(cfg.run_dir), "model": health["model"],
                  "levels": [r.figures() for r in results]}
        with args.json.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
    failed = [r for r in results if r.errors]
    for r in failed:
        counts = ", ".join(f"{n} x {s}" for s, n in sorted(r.statuses.items()))
        print(f"[bench] {r.name} at concurrency {r.concurrency}: {counts}; first failure: {r.first_error}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(_script.main(main))
