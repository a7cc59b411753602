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

A job whose client has gone (its ``gone()``, see :class:`conrec.serve.limits.Admission`) is dropped with
:class:`~conrec.serve.limits.ClientGone` while it waits in the queue (:meth:`MicroBatcher.wake` makes its thread look),
when a leader gathers it, and after the model slot is taken, just before the pass: it is never computed. A job
already inside a model pass is answered as usual (torch is not interrupted).
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

from conrec.serve.limits import ClientGone, Gone, never_gone

# (key, payloads) -> one result per payload, in order; raises for the whole group
GroupRunner = Callable[[Hashable, list[Any]], Sequence[Any]]


@dataclass(eq=False)  # a job is itself: found in the queue by identity, not by an equal payload
class _Job:
    key: Hashable
    payload: Any
    gone: Gone = never_gone
    future: Future[Any] = field(default_factory=Future)

    def dropped(self) -> bool:
        """Whether the job's client has gone: then its future gets :class:`ClientGone` (once) and it is not run."""
        if not self.gone():
            return False
        if not self.future.done():
            self.future.set_exception(ClientGone())
        return True


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

    ``slot(gone)`` is entered around each model call (the admission gate's worker slot, so the batch
    endpoints and the micro-batches share the ``inference_workers`` limit; it raises :class:`ClientGone` when
    ``gone()`` turns true while it waits); ``waiting`` returns how
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
        slot: Callable[[Gone], AbstractContextManager[Any]] = lambda gone: nullcontext(),
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

    def submit(self, key: Hashable, payload: Any, gone: Gone = never_gone) -> Any:
        """Run ``payload`` in a batch with others of the same ``key``; return its own result (or raise its error,
        :class:`ClientGone` when ``gone()`` turned true before its model pass)."""
        job = _Job(key, payload, gone)
        with self._arrived:
            self._queue.append(job)
            self._arrived.notify()
            while not job.future.done() and self._leaders >= self.workers:
                if job in self._queue and job.dropped():  # still queued, no leader holds it: leave now
                    self._queue.remove(job)
                    break
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

    def wake(self) -> None:
        """Make every waiting request look again (a client has gone: its job leaves the queue at once)."""
        with self._changed:
            self._changed.notify_all()

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
            self._queue = deque(j for j in self._queue if not j.dropped())
            return [self._queue.popleft() for _ in range(min(self.max_size, len(self._queue)))]

    def _lead_once(self) -> None:
        jobs = self._gather()
        for idx in group_indices([j.key for j in jobs]).values():
            self._answer([jobs[i] for i in idx])
        with self._changed:
            self._changed.notify_all()

    def _answer(self, group: list[_Job]) -> None:
        """Run one group, less the jobs whose client has gone by the time the slot is taken; on failure rerun
        each job alone so each gets its own result or error."""
        try:
            with self._slot(lambda: all(j.gone() for j in group)):
                group = [j for j in group if not j.dropped()]
                if not group:
                    return
                results = self._run(group[0].key, [j.payload for j in group])
            if len(results) != len(group):
                raise RuntimeError(f"group runner returned {len(results)} results for {len(group)} jobs")
        except ClientGone as exc:  # every client went while the slot was awaited
            for job in group:
                if not job.dropped():
                    job.future.set_exception(exc)
            return
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
