"""Measure the service's limits on a real uvicorn process: an oversized body and a burst of clients.

    python benchmarks/serve_limits.py --run-dir runs/tiny      # the run's LM (grpo, else sft)
    python benchmarks/serve_limits.py --fake                   # popularity predictor, synthetic run

Prints (1) the status, time and server RSS change for a 100 MB body (answered 413 from its
Content-Length, never read), and (2) for ``--clients`` simultaneous single requests: how many got
200 and how many 503 (queue full, with Retry-After), and the p50/p95 latency of each group.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import _script
import httpx
import numpy as np

from conrec.config import PipelineConfig, load_config
from conrec.io import read_parquet
from conrec.runs import RunDir
from conrec.serve.local import local_server
from conrec.serve.synthetic import write_synthetic_run


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", default="runs/tiny")
    p.add_argument("--fake", action="store_true")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--body-mb", type=int, default=100)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.fake:
            run = write_synthetic_run(Path(tmp) / "run", n_items=200, n_users=20, events_per_user=20)
            cfg = PipelineConfig.model_validate({"run_dir": str(run.root), "serve": {"model": "popular"}})
        else:
            run = RunDir(args.run_dir)
            cfg = load_config(run.root / "config.yaml", {"run_dir": str(run.root)})
        cfg = cfg.model_copy(update={"serve": cfg.serve.model_copy(update={"log_level": "warning", "access_log": False})})
        items = read_parquet(run.items)["item_id"].to_list()
        with local_server(cfg, startup_timeout=600) as server:
            pid = server.process.pid
            before = rss_mb(pid)
            body = b'{"negative": ["' + b"x" * (args.body_mb * 1_000_000) + b'"]}'
            t = time.perf_counter()
            r = httpx.post(f"{server.url}/v1/dislikes", content=body, headers={"content-type": "application/json"}, timeout=120)
            secs = time.perf_counter() - t
            # with serve.processes > 1 this pid is the supervisor, not the worker that would read the body
            whose = "server" if cfg.serve.processes == 1 else f"supervisor (of {cfg.serve.processes} workers)"
            print(f"{args.body_mb} MB body: HTTP {r.status_code} in {secs:.2f} s (client send included); "
                  f"{whose} RSS {before:.0f} -> {rss_mb(pid):.0f} MB")

            # one shared client, connections opened before the clock starts (a new httpx client per
            # request costs ~70 ms of client CPU, which would be measured as server latency)
            limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
            with httpx.Client(base_url=server.url, timeout=300, limits=limits) as client:
                with ThreadPoolExecutor(args.clients) as pool:
                    list(pool.map(lambda _: client.get("/healthz"), range(args.clients)))

                def one(j: int) -> tuple[int, float]:
                    payload = {"negative": [items[j % len(items)], items[(7 * j + 3) % len(items)]], "k": 20}
                    t0 = time.perf_counter()
                    resp = client.post("/v1/dislikes", json=payload)
                    return resp.status_code, (time.perf_counter() - t0) * 1000

                with ThreadPoolExecutor(args.clients) as pool:
                    results = list(pool.map(one, range(args.clients)))
            for status in sorted({s for s, _ in results}):
                lat = np.array([ms for s, ms in results if s == status])
                p50, p95 = np.percentile(lat, [50, 95])
                print(f"{args.clients} clients at once: {len(lat)} x HTTP {status}, p50 {p50:.0f} ms, p95 {p95:.0f} ms")
            print(f"(serve.inference_workers = {cfg.serve.inference_workers}, serve.max_queue = {getattr(cfg.serve, 'max_queue', None)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(_script.main(main))
