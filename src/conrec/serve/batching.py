"""Dynamic micro-batching: concurrent single requests answered by one batched model pass.

Why: a forward pass over 8 prompts can cost less than 8 passes over one (the weights are read
once, the matrix products are wider, the per-call overhead is paid once), but ``/v1/dislikes`` and
``/v1/score`` receive one history per request. Without batching, 8 concurrent clients only queue
behind one another. Here each request thread queues its job; one of them (the leader, see
:class:`MicroBatcher`) gathers the jobs that arrive within ``window_s`` (at most ``max_size``) and runs
them grouped by key: jobs are only merged when they ask the same question (same endpoint, same
``k``), so each request gets exactly the answer it would get alone (a top-5 beam search is not the
first 5 of a top-50 one).

The wait is adaptive, so a lone client pays nothing: the leader stops gathering as soon as it holds
as many jobs as there are admitted requests (``waiting()``, the admission gate's count), since no
other job can arrive before one of those is answered. The queue bound and the 503 + Retry-After
refusal stay where they were (:class:`conrec.serve.limits.Admission`): every job here was admitted.

When a merged group fails, each of its jobs is rerun alone, so an error belongs to the request that
caused it and never to its neighbours.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

# (key, payloads) -> one result per payload, in order; raises for the whole group
GroupRunner = Callable[[Hashable, list[Any]], Sequence[Any]]


@dataclass
class _Job:
    key: Hashable
    payload: Any
    future: Future[Any] = field(default_factory=Future)


def group_indices(keys: Sequence[Hashable]) -> dict[Hashable, list[int]]:
    """Positions of equal keys, groups in first-seen order (each group is one model call)."""
    groups: dict[Hashable, list[int]] = {}
    for j, key in enumerate(keys):
        groups.setdefault(key, []).append(j)
    return groups


def run_grouped(run: GroupRunner, keys: Sequence[Hashable], payloads: Sequence[Any]) -> list[Any]:
    """``run`` once per distinct key over that key's payloads; results back in the payloads' order."""
    out: list[Any] = [None] * len(payloads)
    for key, idx in group_indices(keys).items():
        results = run(key, [payloads[j] for j in idx])
        if len(results) != len(idx):
            raise RuntimeError(f"group runner returned {len(results)} results for {len(idx)} payloads")
        for j, r in zip(idx, results):
            out[j] = r
    return out


class MicroBatcher:
    """Gathers concurrent :meth:`submit` calls into grouped batches, run by the callers' own threads.

    Leader/follower: a caller whose job is queued becomes the *leader* when fewer than ``workers``
    leaders are active; it gathers the queued jobs (its own among them), runs them, hands every
    follower its result, and leads again until its own job is answered. Why no worker thread: a lone
    request then runs in its own thread exactly as without batching (no hand-over to another thread,
    which costs a scheduler wake-up on a loaded machine), and nothing outlives the app.

    ``slot`` is entered around each model call (the admission gate's worker slot, so the batch
    endpoints and the micro-batches share the ``inference_workers`` limit); ``waiting`` returns how
    many requests are admitted right now (the adaptive wait above). ``max_size = 1`` disables
    merging: every job runs alone, as before micro-batching.
    """

    def __init__(
        self,
        run: GroupRunner,
        *,
        max_size: int,
        window_s: float,
        workers: int = 1,
        waiting: Callable[[], int] = lambda: 0,
        slot: Callable[[], AbstractContextManager[Any]] = nullcontext,
    ) -> None:
        if max_size < 1 or window_s < 0 or workers < 1:
            raise ValueError(f"max_size >= 1, window_s >= 0 and workers >= 1 required, got {max_size}, {window_s}, {workers}")
        self._run = run
        self.max_size = max_size
        self.window_s = window_s
        self.workers = workers
        self._waiting = waiting
        self._slot = slot
        lock = threading.Lock()
        self._arrived = threading.Condition(lock)  # a gathering leader waits here for more jobs
        self._changed = threading.Condition(lock)  # followers wait here: their job answered, or a leader's place free
        self._queue: deque[_Job] = deque()
        self._leaders = 0
        self.batch_sizes: Counter[int] = Counter()  # model calls per group size (observable: tests, logs; bounded)

    def submit(self, key: Hashable, payload: Any) -> Any:
        """Run ``payload`` in a batch with others of the same ``key``; return its own result (or raise its error)."""
        job = _Job(key, payload)
        with self._arrived:
            self._queue.append(job)
            self._arrived.notify()
            while not job.future.done() and self._leaders >= self.workers:
                self._changed.wait()
            lead = not job.future.done()
            if lead:
                self._leaders += 1
        if lead:
            try:
                while not job.future.done():
                    self._lead_once()
            finally:
                with self._changed:
                    self._leaders -= 1
                    self._changed.notify_all()
        return job.future.result()

    def queued(self) -> int:
        """Jobs waiting for a leader (observable: tests)."""
        with self._arrived:
            return len(self._queue)

    # --- leader side
    def _gather(self) -> list[_Job]:
        """The queued jobs (oldest first, at most ``max_size``), after waiting up to the window for the
        admitted requests that are not queued yet."""
        with self._arrived:
            deadline = time.monotonic() + self.window_s
            while len(self._queue) < min(self.max_size, self._waiting()):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._arrived.wait(left)
            return [self._queue.popleft() for _ in range(min(self.max_size, len(self._queue)))]

    def _lead_once(self) -> None:
        jobs = self._gather()
        for idx in group_indices([j.key for j in jobs]).values():
            self._answer([jobs[i] for i in idx])
        with self._changed:
            self._changed.notify_all()

    def _answer(self, group: list[_Job]) -> None:
        """Run one group; on failure rerun each job alone so each gets its own result or error."""
        try:
            with self._slot():
                results = self._run(group[0].key, [j.payload for j in group])
            if len(results) != len(group):
                raise RuntimeError(f"group runner returned {len(results)} results for {len(group)} jobs")
        except Exception as exc:
            if len(group) == 1:
                group[0].future.set_exception(exc)
                return
            for job in group:
                self._answer([job])
            return
        self.batch_sizes[len(group)] += 1
        for job, result in zip(group, results):
            job.future.set_result(result)
