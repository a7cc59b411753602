"""Per-process runtime setup: how many CPU threads torch uses, and no third-party chatter.

Why threads: torch sizes its thread pool from the machine's physical cores, not from the cores
this process may actually use (CPU affinity, a container's cgroup quota). Two processes that each
start more threads than their share of the cores spin against each other; on a shared 2-core
machine that made training many times slower than the cores alone explain. The count is chosen
from the cores actually available (:func:`available_cores`: affinity, cgroup quota), divided between
the processes of a ``torchrun`` / ``accelerate`` launch on this node, and capped by the cores other
processes leave idle when the stage starts (sampled from ``/proc/stat`` for 0.3 s); the top-level
``threads`` setting (or ``OMP_NUM_THREADS``) fixes it instead. ``benchmarks/threads.py`` measures
the effect.

Why quiet: a stage prints its own rich progress bar and summary; transformers' per-shard
"Loading weights" bars, advisory warnings and datasets' map bars would interleave with them.
Errors still surface (as exceptions, or logged at ERROR level).
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_quiet_done = False


def parse_cgroup_v2_cpu_max(text: str) -> float | None:
    """CPUs allowed by a cgroup v2 ``cpu.max`` line (``"200000 100000"`` -> 2.0; ``"max ..."`` -> None)."""
    parts = text.split()
    if len(parts) < 1 or parts[0] == "max":
        return None
    try:
        quota = float(parts[0])
        period = float(parts[1]) if len(parts) > 1 else 100_000.0
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def parse_cgroup_v1_quota(quota_text: str, period_text: str) -> float | None:
    """CPUs allowed by cgroup v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (quota -1 = no limit)."""
    try:
        quota, period = float(quota_text.strip()), float(period_text.strip())
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPU quota of this process's cgroup in CPUs, or None when there is none (or it is unreadable)."""
    try:
        v2 = root / "cpu.max"
        if v2.exists():
            return parse_cgroup_v2_cpu_max(v2.read_text())
        quota, period = root / "cpu" / "cpu.cfs_quota_us", root / "cpu" / "cpu.cfs_period_us"
        if quota.exists() and period.exists():
            return parse_cgroup_v1_quota(quota.read_text(), period.read_text())
    except OSError:
        return None
    return None


def available_cores(affinity: int | None = None, quota: float | None = None) -> int:
    """Cores this process may use: its CPU affinity, capped by the cgroup quota (rounded up), >= 1.

    Arguments default to what the running system reports; tests pass them explicitly.
    """
    if affinity is None:
        affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if quota is None:
        quota = cgroup_cpu_limit()
    cores = affinity if quota is None else min(affinity, math.ceil(quota))
    return max(1, cores)


def parse_proc_stat(text: str) -> dict[int, tuple[int, int]]:
    """Per-CPU (idle ticks, total ticks) from ``/proc/stat`` (idle includes iowait)."""
    out: dict[int, tuple[int, int]] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if not (name.startswith("cpu") and name[3:].isdigit()):
            continue
        ticks = [int(x) for x in rest.split()]
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
        total = sum(ticks[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
        out[int(name[3:])] = (idle, total)
    return out


def idle_cpus(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]], cpus: set[int]) -> float | None:
    """How many of ``cpus`` were idle between two :func:`parse_proc_stat` samples (0..len(cpus))."""
    idle = 0.0
    seen = 0
    for cpu in cpus:
        if cpu not in before or cpu not in after:
            continue
        d_idle, d_total = after[cpu][0] - before[cpu][0], after[cpu][1] - before[cpu][1]
        if d_total > 0:
            idle += min(1.0, max(0.0, d_idle / d_total))
            seen += 1
    return idle * len(cpus) / seen if seen else None


def measure_idle_cpus(sample_s: float = 0.3, proc_stat: Path = Path("/proc/stat")) -> float | None:
    """Idle CPUs among this process's affinity set over ``sample_s`` seconds (None if unknown).

    This process sleeps while sampling, so only *other* work counts as busy.
    """
    if not hasattr(os, "sched_getaffinity"):
        return None
    try:
        before = parse_proc_stat(proc_stat.read_text())
        time.sleep(sample_s)
        after = parse_proc_stat(proc_stat.read_text())
    except OSError:
        return None
    return idle_cpus(before, after, set(os.sched_getaffinity(0)))


def busy_cores(sample_s: float = 0.3) -> tuple[float, int] | None:
    """(cores other processes keep busy now, cores in this process's affinity set), sampled for ``sample_s``
    seconds (:func:`measure_idle_cpus`); None when unknown. For announcements only: nothing here changes threads."""
    idle = measure_idle_cpus(sample_s)
    if idle is None:
        return None
    cores = len(os.sched_getaffinity(0))
    return max(0.0, cores - idle), cores


def parse_mem_available(meminfo: str) -> int | None:
    """Bytes of ``MemAvailable`` in a ``/proc/meminfo`` text (``"MemAvailable:  8123456 kB"``), None when absent."""
    for line in meminfo.splitlines():
        if line.startswith("MemAvailable:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1]) * 1024
    return None


def parse_cgroup_memory_left(max_text: str, current_text: str) -> int | None:
    """Bytes a cgroup v2 still grants (``memory.max`` less ``memory.current``), None without a limit ("max")."""
    limit, used = max_text.strip(), current_text.strip()
    if not limit.isdigit() or not used.isdigit():
        return None
    return max(0, int(limit) - int(used))


def available_memory(proc: Path = Path("/proc/meminfo"), cgroup: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Bytes this process could still allocate without swapping: the kernel's ``MemAvailable``, capped by what
    the process's cgroup v2 memory limit leaves; None where neither can be read (not Linux).

    Why: eval skips a baseline whose dense matrices would not fit (:func:`conrec.eval.cost.skip_reason`) rather
    than let it swap or be killed: EASE at 20,000 items on a 16 GB laptop met an OOM with no word on memory."""
    try:
        free = parse_mem_available(proc.read_text())
    except OSError:
        free = None
    try:
        left = parse_cgroup_memory_left((cgroup / "memory.max").read_text(), (cgroup / "memory.current").read_text())
    except OSError:
        left = None
    known = [b for b in (free, left) if b is not None]
    return min(known) if known else None


def choose_threads(
    configured: int | None,
    cores: int,
    local_processes: int = 1,
    omp_env: str | None = None,
    idle: float | None = None,
) -> int:
    """The torch intra-op thread count for one process.

    ``configured`` (the ``threads`` setting) wins; else ``OMP_NUM_THREADS`` if it is a positive
    integer; else this process's share of the ``cores`` it may use, among the ``local_processes``
    of a distributed launch on this node, and no more than the cores other processes leave
    ``idle`` right now (rounded; at least 1). Why the last cap: threads beyond the idle cores
    time-slice against the other processes' threads, and torch's threads wait on each other, so
    one slow thread stalls every step (measured in ``benchmarks/threads.py``).
    """
    if configured is not None:
        if configured < 1:
            raise ValueError(f"threads must be >= 1, got {configured}")
        return configured
    if omp_env is not None and omp_env.strip().isdigit() and int(omp_env) > 0:
        return int(omp_env)
    share = max(1, cores // max(1, local_processes))
    if idle is not None:
        share = min(share, max(1, int(idle / max(1, local_processes) + 0.5)))
    return share


def process_threads(configured: int | None = None) -> int:
    """:func:`choose_threads` for this process, from its environment and the system (the idle
    CPUs are sampled only when neither the setting nor ``OMP_NUM_THREADS`` decides)."""
    local = os.environ.get("LOCAL_WORLD_SIZE") or os.environ.get("WORLD_SIZE") or "1"
    omp = os.environ.get("OMP_NUM_THREADS")
    decided = configured is not None or (omp is not None and omp.strip().isdigit() and int(omp) > 0)
    return choose_threads(
        configured,
        available_cores(),
        int(local) if local.isdigit() else 1,
        omp,
        None if decided else measure_idle_cpus(),
    )


def apply_threads(configured: int | None = None) -> int:
    """Set torch's thread count for this process (at every stage start; cheap when unchanged)."""
    import torch

    global _torch_default_threads
    if _torch_default_threads is None:
        _torch_default_threads = torch.get_num_threads()
    n = process_threads(configured)
    if torch.get_num_threads() != n:  # a stage may have changed it for one step (e.g. the RQ-VAE)
        torch.set_num_threads(n)
    return n


_QUIET_LOGGERS = ("transformers", "datasets", "accelerate", "trl", "peft", "sentence_transformers", "huggingface_hub")
_QUIET_WARNING_MODULES = ("transformers", "trl", "accelerate", "peft", "torch", "datasets", "sentence_transformers")


def _ignore_advisory_warnings() -> None:
    for module in _QUIET_WARNING_MODULES:
        for category in (FutureWarning, DeprecationWarning, UserWarning):
            warnings.filterwarnings("ignore", category=category, module=module)


def quiet_third_party() -> None:
    """Silence third-party progress bars and advisory warnings in this process, for good (idempotent).

    For a process conrec owns (the CLI, a server worker, a launched stage): a library caller gets
    :func:`quieted` instead, which undoes itself. Environment variables cover libraries not imported yet
    (without importing them: ``conrec data`` must not pay for transformers); libraries already imported are
    told directly.
    """
    global _quiet_done
    for var, value in (
        ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),  # transformers' "Loading weights" bar follows it too
        ("HF_DATASETS_DISABLE_PROGRESS_BARS", "1"),
        ("TRANSFORMERS_VERBOSITY", "error"),
        ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1"),
        ("DATASETS_VERBOSITY", "error"),
    ):
        os.environ.setdefault(var, value)
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    if "datasets" in sys.modules:
        import datasets

        datasets.disable_progress_bars()
    if _quiet_done:
        return
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    _ignore_advisory_warnings()
    _quiet_done = True


@contextmanager
def quieted() -> Iterator[None]:
    """:func:`quiet_third_party` for one library call (:func:`conrec.pipeline.run_stage`, loading a Predictor), undone
    when it returns or raises: the warning filters, the third-party loggers' levels, and the verbosity and progress
    bars of transformers and datasets where they were imported already. No environment variable is set.

    Why: a notebook that ran a stage or loaded a model kept 30 ``ignore`` warning filters and transformers at ERROR
    for the rest of its session, and every later process it started inherited the switches."""
    levels = {name: logging.getLogger(name).level for name in _QUIET_LOGGERS}
    hf_state: tuple[int, bool] | None = None
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_state = (hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled())
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    datasets_bars: bool | None = None
    if "datasets" in sys.modules:
        import datasets

        datasets_bars = bool(datasets.is_progress_bar_enabled())
        datasets.disable_progress_bars()
    with warnings.catch_warnings():
        _ignore_advisory_warnings()
        for name in _QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        try:
            yield
        finally:
            for name, level in levels.items():
                if logging.getLogger(name).level == logging.ERROR:  # still ours (an import may have set its own)
                    logging.getLogger(name).setLevel(level)
            if hf_state is not None:
                hf_logging.set_verbosity(hf_state[0])
                if hf_state[1]:
                    hf_logging.enable_progress_bar()
            if datasets_bars:
                datasets.enable_progress_bars()


def _torch_threads() -> int | None:
    """torch's thread count now, or None when torch is not imported (asking must not import it)."""
    if "torch" not in sys.modules:
        return None
    import torch

    return int(torch.get_num_threads())


_torch_default_threads: int | None = None  # torch's own count, seen when conrec first set one (see torch_threads_kept)


@contextmanager
def torch_threads_kept() -> Iterator[None]:
    """Run a library call that may set torch's thread count (:func:`apply_threads`, at every stage start), and set
    it back when the call returns or raises; where torch was imported during the call, back to torch's own count.

    Why: the count a stage picks follows the cores idle when it starts; after ``run_pipeline`` in a notebook it
    stayed (2 -> 1 on a busy machine) for every later torch call of the session, a Predictor's included."""
    before = _torch_threads()
    try:
        yield
    finally:
        want = before if before is not None else _torch_default_threads
        if want is not None and _torch_threads() not in (None, want):
            import torch

            torch.set_num_threads(want)


def prepare_process(threads: int | None = None) -> int:
    """For a process conrec owns (the CLI, a server worker, a launched stage): quiet third parties, set torch
    threads; returns them. A library call sets the threads alone (:func:`apply_threads`) inside :func:`quieted`."""
    quiet_third_party()
    return apply_threads(threads)


@contextmanager
def signal_handlers(handlers: dict[int, Any]) -> Iterator[None]:
    """Within the block, each signal of ``handlers`` has that handler (a function, ``SIG_DFL`` or ``SIG_IGN``); after
    it, the handlers found are back. Outside the main thread, where Python cannot set a handler, nothing changes.

    Why one helper: the CLI's SIGTERM-as-interrupt, a serve worker's load and the server's SIGHUP each swap handlers for
    a block, and each needs the same two details: only the main thread may, and a handler found as None (set outside
    Python, by an embedding host) cannot be put back by ``signal.signal``, so the default action is."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
