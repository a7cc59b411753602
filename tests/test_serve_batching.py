"""Micro-batching and batch endpoints: every request gets exactly the answer it would get alone."""

from __future__ import annotations

import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conrec.serve.app import create_app
from conrec.serve.batching import MicroBatcher, group_indices, run_grouped
from conrec.serve.config import ServeConfig
from conrec.serve.limits import ClientGone

from builders import SERVE_N_ITEMS, SERVE_TEST_LIMITS, serve_tables

ITEMS = [f"i{j}" for j in range(SERVE_N_ITEMS)]
History = tuple[list[str], list[int]]


class BeamLikePredictor:
    """A top-k whose order depends on k, as a beam search's does: the top-5 is not the head of the top-8.

    So any server that decodes a request with another request's k gives a different answer.
    """

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.calls: list[tuple[int, int]] = []  # (histories, k) per call
        self.lock = threading.Lock()

    @staticmethod
    def alone(history: History, k: int, exclude: list[str] | tuple[str, ...] = ()) -> list[tuple[str, float]]:
        seen = set(history[0]) | set(exclude)
        key = ",".join(history[0]) + f"|{k}"
        ranked = sorted((i for i in ITEMS if i not in seen), key=lambda i: zlib.crc32(f"{key}|{i}".encode()))
        return [(i, -float(r)) for r, i in enumerate(ranked[:k])]

    def recommend(self, histories: list[History], k: int, exclude=None) -> list[list[tuple[str, float]]]:
        with self.lock:
            self.calls.append((len(histories), k))
        time.sleep(self.delay_s)
        return [self.alone(h, k, ex) for h, ex in zip(histories, exclude or [()] * len(histories))]

    def score(self, histories: list[History], candidates: list[list[str]]) -> list[list[float]]:
        with self.lock:
            self.calls.append((len(histories), 0))
        time.sleep(self.delay_s)
        return [[float(zlib.crc32(f"{','.join(h[0])}|{c}".encode()) % 1000) for c in sl] for h, sl in zip(histories, candidates)]


def _client(pred: BeamLikePredictor, **serve: object) -> TestClient:
    items, sid_map, events = serve_tables()
    cfg = ServeConfig(**{**SERVE_TEST_LIMITS, "max_batch": 8, **serve})
    return TestClient(create_app(pred, items, sid_map, events, cfg, model_name="fake"), base_url="http://localhost")


_histories = st.lists(st.sampled_from(ITEMS), min_size=1, max_size=3, unique=True)
_excludes = st.one_of(st.none(), st.lists(st.sampled_from(ITEMS), max_size=4))  # None: the field left out
_requests = st.lists(st.tuples(_histories, st.integers(1, SERVE_TEST_LIMITS["max_k"]), _excludes), min_size=1, max_size=8)


def _body(history: list[str], k: int, exclude: list[str] | None) -> dict[str, object]:
    return {"negative": history, "k": k, **({} if exclude is None else {"exclude": exclude})}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reqs=_requests)
def test_batch_endpoint_answers_equal_single_answers_for_mixed_k(reqs):
    # regression (issue 24.2): the batch was decoded with its largest k and trimmed, which changed answers;
    # requests with and without an exclude list share a batch and each keeps its own
    client = _client(BeamLikePredictor())
    bodies = [_body(*r) for r in reqs]
    batch = client.post("/v1/dislikes/batch", json={"requests": bodies})
    assert batch.status_code == 200, batch.text
    singles = [client.post("/v1/dislikes", json=b).json() for b in bodies]
    assert batch.json()["results"] == singles
    expected = [[i for i, _ in BeamLikePredictor.alone((h, [-1] * len(h)), k, ex or ())] for h, k, ex in reqs]
    assert [[it["item_id"] for it in r["items"]] for r in singles] == expected


@settings(max_examples=10, deadline=None)
@given(reqs=_requests)
def test_concurrent_single_requests_each_get_their_own_answer(reqs):
    pred = BeamLikePredictor(delay_s=0.01)
    client = _client(pred, batch_window_ms=20)
    bodies = [_body(*r) for r in reqs]
    with ThreadPoolExecutor(len(bodies)) as pool:
        answers = list(pool.map(lambda b: client.post("/v1/dislikes", json=b), bodies))
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    expected = [[i for i, _ in BeamLikePredictor.alone((h, [-1] * len(h)), k, ex or ())] for h, k, ex in reqs]
    assert [[it["item_id"] for it in a.json()["items"]] for a in answers] == expected
    assert sum(n for n, _ in pred.calls) == len(reqs)  # each request answered once (merging itself: batcher tests)


def _blocked_batcher(run):
    """A batcher whose first model call waits until released, so that the next jobs queue up deterministically."""
    release = threading.Event()
    first = threading.Event()

    def gated(key, payloads):
        if not first.is_set():
            first.set()
            release.wait(10)
        return run(key, payloads)

    return MicroBatcher(gated, max_size=16, window_s=0.0, waiting=lambda: 0), first, release


def _submit_all(batcher: MicroBatcher, first: threading.Event, release: threading.Event, jobs: list[tuple[object, object]]):
    """Submit a warm-up job (blocks the worker), queue ``jobs`` behind it, then release; results in order."""
    with ThreadPoolExecutor(len(jobs) + 1) as pool:
        warm = pool.submit(batcher.submit, "warm", "w")
        assert first.wait(10)
        futures = [pool.submit(batcher.submit, key, payload) for key, payload in jobs]
        deadline = time.monotonic() + 10
        while batcher.queued() < len(jobs) and time.monotonic() < deadline:
            time.sleep(0.001)
        release.set()
        warm.result()
        return [f.exception() or f.result() for f in futures]


@settings(max_examples=25, deadline=None)
@given(jobs=st.lists(st.tuples(st.integers(1, 4), st.integers(-50, 50)), min_size=2, max_size=12))
def test_batcher_merges_only_same_key_jobs_and_returns_each_its_own_result(jobs):
    seen_groups: list[tuple[object, list[object]]] = []

    def run(key, payloads):
        seen_groups.append((key, list(payloads)))
        return [(key, p * 10) for p in payloads]

    batcher, first, release = _blocked_batcher(run)
    results = _submit_all(batcher, first, release, jobs)
    assert results == [(k, p * 10) for k, p in jobs]
    merged = [g for g in seen_groups if g[0] != "warm"]
    assert len(merged) == len(set(k for k, _ in jobs))  # all queued jobs answered in one pass, one call per key
    assert sum(len(p) for _, p in merged) == len(jobs)


def test_a_failing_job_fails_alone_and_its_neighbours_are_answered():
    def run(key, payloads):
        if "bad" in payloads:
            raise ValueError("bad payload")
        return [p.upper() for p in payloads]

    batcher, first, release = _blocked_batcher(run)
    results = _submit_all(batcher, first, release, [("k", "a"), ("k", "bad"), ("k", "c")])
    assert results[0] == "A" and results[2] == "C"
    assert isinstance(results[1], ValueError)


def test_a_queued_job_whose_client_went_is_dropped_not_run():
    # a job that leaves while its thread waits (woken) and one found gone when a leader gathers it: neither is run,
    # each gets ClientGone, and the job between them is answered
    ran: list[object] = []
    batcher, first, release = _blocked_batcher(lambda key, ps: ran.extend(ps) or [str(p).upper() for p in ps])
    left, found = threading.Event(), threading.Event()
    with ThreadPoolExecutor(4) as pool:
        warm = pool.submit(batcher.submit, "warm", "w")
        assert first.wait(10)
        jobs = [pool.submit(batcher.submit, "k", p, gone) for p, gone in [("a", left.is_set), ("b", lambda: False), ("c", found.is_set)]]
        deadline = time.monotonic() + 10
        while batcher.queued() < 3 and time.monotonic() < deadline:
            time.sleep(0.001)
        left.set()
        batcher.wake()  # what the admission gate calls when a client goes
        assert isinstance(jobs[0].exception(timeout=10), ClientGone)  # at once, while the model is still busy
        assert batcher.queued() == 2 and not warm.done()
        found.set()  # no wake-up: found when gathered
        release.set()
        assert warm.result(10) == "W" and jobs[1].result(10) == "B"
        assert isinstance(jobs[2].exception(timeout=10), ClientGone)
    assert ran == ["w", "b"]


def test_a_lone_request_is_not_held_for_the_window():
    # the adaptive wait: with one admitted request nothing else can arrive, so the window is not spent
    calls: list[float] = []
    batcher = MicroBatcher(lambda key, p: calls.append(time.monotonic()) or list(p), max_size=8, window_s=5.0, waiting=lambda: 1)
    t0 = time.monotonic()
    assert batcher.submit("k", 3) == 3
    assert calls[0] - t0 < 5.0  # not a timing assert on speed: 5 s is the window it must not wait for


def test_a_lone_request_runs_in_its_own_thread():
    # no hand-over to a worker thread: a lone request costs what it cost without micro-batching
    threads: list[threading.Thread] = []
    batcher = MicroBatcher(lambda key, p: threads.append(threading.current_thread()) or list(p), max_size=8, window_s=0.01)
    assert batcher.submit("k", 1) == 1
    assert threads == [threading.current_thread()]


def test_group_helpers_keep_order():
    assert group_indices(["a", "b", "a"]) == {"a": [0, 2], "b": [1]}
    assert run_grouped(lambda key, ps: [f"{key}{p}" for p in ps], ["a", "b", "a"], [1, 2, 3]) == ["a1", "b2", "a3"]


def test_batch_max_size_one_runs_every_job_alone():
    sizes = []
    batcher, first, release = _blocked_batcher(lambda key, ps: sizes.append(len(ps)) or list(ps))
    batcher.max_size = 1
    assert _submit_all(batcher, first, release, [("k", 1), ("k", 2), ("k", 3)]) == [1, 2, 3]
    assert set(sizes) == {1}


def test_concurrent_score_requests_are_answered_each_with_its_own_slate():
    pred = BeamLikePredictor(delay_s=0.01)
    client = _client(pred, batch_window_ms=20)
    bodies = [{"negative": [f"i{j}"], "candidates": [f"i{(j + 1) % SERVE_N_ITEMS}", f"i{(j + 2) % SERVE_N_ITEMS}"]} for j in range(8)]
    alone = [pred.score([(b["negative"], [-1])], [b["candidates"]])[0] for b in bodies]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda b: client.post("/v1/score", json=b), bodies))
    assert [[it["score"] for it in a.json()["items"]] for a in answers] == alone
