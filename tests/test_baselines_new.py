"""EASE, taste x exposure and time-decayed popularity on hand-made data (answers computed by hand)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from conrec.data.samples import DAY
from conrec.eval.baselines import make_baseline
from conrec.eval.baselines.base import Catalog
from conrec.eval.baselines.ease import ease_weights
from conrec.eval.baselines.popularity import decayed_dislike_counts
from conrec.eval.baselines.scored import dislike_history_matrix, scale_rows
from conrec.eval.config import EvalConfig

from builders import baseline_events, baseline_items, history_samples


def test_ease_closed_form_by_hand() -> None:
    # X = [[1, 1], [1, 0]] -> G = [[2, 1], [1, 1]]; + lambda=1 -> [[3, 1], [1, 2]]; P = [[2, -1], [-1, 3]] / 5
    # B_01 = -P_01 / P_11 = (1/5) / (3/5) = 1/3; B_10 = -P_10 / P_00 = (1/5) / (2/5) = 1/2
    b = ease_weights(sp.csr_matrix(np.array([[1.0, 1.0], [1.0, 0.0]])), 1.0)
    assert b == pytest.approx(np.array([[0.0, 1 / 3], [1 / 2, 0.0]]))
    with pytest.raises(ValueError):
        ease_weights(sp.csr_matrix(np.eye(2)), 0.0)


def _ease_by_formula(x: sp.csr_matrix, l2: float) -> np.ndarray:
    g = np.asarray((x.T @ x).todense(), dtype=np.float64) + l2 * np.eye(x.shape[1])
    p = np.linalg.inv(g)
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b


def test_ease_in_place_inverse_equals_the_closed_form_across_blocks() -> None:
    # 700 items: many blocks of the triangle mirroring (43 rows each), and a remainder
    x = sp.random(400, 700, density=0.03, random_state=3, format="csr")
    x.data[:] = 1.0
    b = ease_weights(x, 7.0)
    assert b.dtype == np.float64 and b.flags["C_CONTIGUOUS"]
    assert np.abs(b - _ease_by_formula(x, 7.0)).max() < 1e-12
    assert not np.diag(b).any()


def test_ease_inverts_on_one_blas_thread_whatever_the_pool_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    """scipy's OpenBLAS crashed the eval stage with a segmentation fault in its threaded ``potrf`` from about 16,000
    items on 2 threads (below the default eval.max_dense_items); both LAPACK calls now run on one thread, and the
    caller's pool is restored after."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from conrec.eval.baselines import ease

    def blas_threads() -> set[int]:
        return {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}

    seen: list[set[int]] = []
    real = ease._in_place_lapack

    def watched(step: str):
        call = real(step)
        return lambda g: (seen.append(blas_threads()), call(g))[1]

    monkeypatch.setattr(ease, "_in_place_lapack", watched)
    x = sp.random(50, 40, density=0.2, random_state=5, format="csr")
    x.data[:] = 1.0
    with threadpool_limits(limits=2, user_api="blas"):
        b = ease_weights(x, 3.0)
        assert blas_threads() == {2}
    assert seen == [{1}, {1}]
    assert np.abs(b - _ease_by_formula(x, 3.0)).max() < 1e-12


def _spd(n: int, seed: int) -> np.ndarray:
    """A symmetric positive definite n x n matrix, cheaply: off-diagonal rows sum below the diagonal (Gershgorin)."""
    a = np.random.default_rng(seed).random((n, n))
    g = a + a.T
    g[np.diag_indices_from(g)] += 2 * n
    return g


def test_ease_inverse_lets_the_progress_display_run_and_computes_the_same_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found in review (2026-12): scipy.linalg.lapack's wrappers hold the GIL through the whole call, so EASE's
    inverse (up to 3 minutes at 30,000 items) froze the eval stage's progress line: no Python thread ran, neither
    rich's refresh nor the timed lines off a terminal. The same LAPACK routines, called through ctypes, release it.
    Checked: the display's own timer thread writes at least 2 lines in the middle halves of the LAPACK calls (about
    0.2 s and 0.4 s of a 3000 x 3000 matrix on one thread; its interval is 5 ms). With the GIL held no Python line
    can be written inside a call, only at its edges (a switch just before or after it), so this holds on a loaded
    machine and fails on the wrappers; no gap or duration is asserted. And the result is bit for bit the f2py
    wrappers' (factor and inverse)."""
    import time

    from rich.console import Console

    from conrec.eval.baselines import ease
    from conrec.progress import StageProgress

    class Lines:
        """A console file that notes when each line is written."""

        def __init__(self) -> None:
            self.at: list[float] = []

        def write(self, text: str) -> int:
            self.at += [time.perf_counter()] * text.count("\n")
            return len(text)

        def flush(self) -> None:
            pass

    lines = Lines()
    progress = StageProgress(console=Console(file=lines, width=200), interval=0.005)  # not a terminal: timed lines
    assert progress.plain
    calls: list[tuple[float, float]] = []
    real = ease._in_place_lapack

    def watched(step: str):  # the moments just before and just after each LAPACK call
        call = real(step)

        def timed(g: np.ndarray) -> int:
            before = time.perf_counter()
            info = call(g)
            calls.append((before, time.perf_counter()))
            return info

        return timed

    monkeypatch.setattr(ease, "_in_place_lapack", watched)
    g = _spd(3000, 0)
    with progress:
        progress.add_task("baseline ease: fit", total=1)
        ease.symmetric_inverse_inplace(g)
    assert len(calls) == 2
    middles = [(a + (b - a) / 4, b - (b - a) / 4) for a, b in calls]
    inside = [t for t in lines.at if any(lo < t < hi for lo, hi in middles)]
    took = ", ".join(f"{b - a:.3f} s" for a, b in calls)
    assert len(inside) >= 2, f"{len(inside)} lines in the middle halves of the LAPACK calls ({took}), {len(lines.at)} in all"
    monkeypatch.setattr(ease, "_in_place_lapack", real)
    assert ease._nogil_lapack("dpotrf") is not None and ease._nogil_lapack("dpotri") is not None  # not the fallback
    mine, theirs = _spd(300, 1), _spd(300, 1)
    for step in ("potrf", "potri"):  # the factor, then the inverse from it
        assert ease._in_place_lapack(step)(mine) == 0 and ease._f2py_in_place(step, theirs) == 0
        assert np.array_equal(mine, theirs), step
    assert ease._in_place_lapack("potrf")(-_spd(50, 2)) > 0  # not positive definite: LAPACK's info, as before


def test_ease_says_once_when_its_inverse_falls_back_to_the_gil_holding_wrappers(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Found in review (7 December 2026): a scipy that exports dpotrf/dpotri with another signature switched EASE to
    scipy.linalg.lapack's wrappers without a word, so the frozen progress line could come back unnoticed. Now one
    warning per process names the fallback, and the fallback still inverts."""
    import logging

    from conrec.eval.baselines import ease

    monkeypatch.setattr(ease, "_nogil_lapack", lambda name: None)
    ease._note_gil_fallback.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="conrec.eval"):
            for _ in range(2):  # two fits, two routines each: one line
                g = _spd(30, 3)
                assert np.abs(ease.symmetric_inverse_inplace(g.copy()) - np.linalg.inv(g)).max() < 1e-12
    finally:
        ease._note_gil_fallback.cache_clear()
    notes = [r.getMessage() for r in caplog.records if r.name == "conrec.eval"]
    assert len(notes) == 1 and "holds the GIL" in notes[0], notes


def test_ease_inverse_refuses_what_ctypes_would_write_into_and_names_its_own_errors() -> None:
    """Found in review (7 December 2026): LAPACK called through ctypes gets only an address, so a read-only array was
    written over and a misaligned one read as is (scipy's wrappers refused both); no items passed lda = 0, which
    OpenBLAS reported on stderr before a ValueError; and the fallback's "worked on a copy" came back as info=-1, which
    is LAPACK's code for an illegal first argument."""
    from conrec.eval.baselines import ease

    locked = _spd(4, 5)
    locked.setflags(write=False)
    with pytest.raises(ValueError, match="writeable"):
        ease.symmetric_inverse_inplace(locked)
    misaligned = np.zeros(8 * 16 + 1, dtype=np.uint8)[1:].view(np.float64).reshape(4, 4)
    misaligned[...] = _spd(4, 5)
    assert misaligned.flags.c_contiguous and not misaligned.flags.aligned
    with pytest.raises(ValueError, match="aligned"):
        ease.symmetric_inverse_inplace(misaligned)
    assert ease.symmetric_inverse_inplace(np.empty((0, 0))).shape == (0, 0)  # no items: the empty inverse
    assert ease_weights(sp.csr_matrix((3, 0)), 1.0).shape == (0, 0)
    with pytest.raises(ValueError, match="copy"):
        ease._f2py_in_place("potrf", np.asfortranarray(_spd(4, 5)))  # its .T is C-ordered: f2py copies it


def test_ease_holds_one_dense_matrix_at_its_peak() -> None:
    """Why: np.linalg.inv (a copy and an identity) and ``-P / diag(P)`` while the Gram matrix was alive held 4 to 5
    n^2 arrays: 12.7 GB of RSS on 20,000 items where the docs said 3.2 GB; and the sparse ``X'X`` of users with
    many dislikes each (here 18 of 600 items) holds more than the dense matrix, alive while it was made. numpy reports its allocations to
    tracemalloc, so the peak is counted, not timed."""
    import tracemalloc

    from conrec.eval.baselines.ease import DENSE_COPIES

    n = 600
    x = sp.random(300, n, density=0.03, random_state=4, format="csr")
    x.data[:] = 1.0
    ease_weights(x[:, :20], 5.0)  # its first call imports scipy.linalg: not part of the peak
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        ease_weights(x, 5.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    matrix = 8 * n * n
    assert DENSE_COPIES == 1.0
    assert peak < 1.5 * matrix, f"peak {peak / matrix:.2f} dense matrices"


def test_ease_recommends_the_co_disliked_item() -> None:
    model = make_baseline("ease", EvalConfig(ease={"l2": 1.0}))
    model.fit(baseline_events(), baseline_items())
    scores = model.item_scores(history_samples([(["h1"], [-1]), ([], [])]))  # type: ignore[attr-defined]
    assert scores.shape == (2, 8) and (scores[1] == 0).all()
    recs = model.recommend(history_samples([(["h1"], [-1]), ([], [])]), 2)
    assert recs[0][0] == "c2"  # always disliked with h1
    assert recs[1] == ["d1", "h1"]  # no dislikes: popularity order (d1 x4, then h1 first in catalogue order)


def test_history_matrix_and_row_scaling_by_hand() -> None:
    cat = Catalog.build(baseline_events(), baseline_items())
    m = dislike_history_matrix(history_samples([(["h1", "c1", "h1"], [-1, 1, -1])]), cat, decay=0.5).toarray()
    assert m[0, cat.index["h1"]] == pytest.approx(1.0 + 0.5)  # most recent 1, the earlier one 0.5
    assert m[0, cat.index["c1"]] == 0.0  # a positive carries no dislike weight
    assert dislike_history_matrix(history_samples([(["h1", "h1"], [-1, -1])]), cat, binary=True).toarray()[0, cat.index["h1"]] == 1.0
    assert scale_rows(np.array([[2.0, 1.0], [0.0, 0.0]])).tolist() == [[1.0, 0.5], [0.0, 0.0]]


def test_taste_exposure_blend_by_hand() -> None:
    samples = history_samples([(["c1"], [-1])])  # one comedy dislike
    cat = Catalog.build(baseline_events(), baseline_items())
    only_pop = make_baseline("taste_exposure", EvalConfig(taste_exposure={"pop_weight": 1.0}))
    only_pop.fit(baseline_events(), baseline_items())
    pop = make_baseline("popularity")
    pop.fit(baseline_events(), baseline_items())
    assert only_pop.recommend(samples, 4) == pop.recommend(samples, 4)
    taste = make_baseline("taste_exposure", EvalConfig(taste_exposure={"pop_weight": 0.0}))
    taste.fit(baseline_events(), baseline_items())
    assert taste.recommend(samples, 2) == [["c2", "c3"]]  # the other comedies; c2 (more disliked) first
    half = make_baseline("taste_exposure", EvalConfig(taste_exposure={"pop_weight": 0.5}))
    half.fit(baseline_events(), baseline_items())
    s = half.item_scores(samples)[0]  # type: ignore[attr-defined]
    # counts: d1 4, h1 2, c2 2, d2 2 -> log1p scaled by log(5); comedies share the category (personal 1)
    lp = np.log1p(cat.dislike_counts) / np.log(5.0)
    assert s[cat.index["c2"]] == pytest.approx(0.5 * 1.0 + 0.5 * lp[cat.index["c2"]])
    assert s[cat.index["d1"]] == pytest.approx(0.5 * 1.0)  # popular, no taste match
    assert s[cat.index["c3"]] == pytest.approx(0.5)  # taste match, never disliked


def test_taste_exposure_itemknn_personal_score() -> None:
    model = make_baseline("taste_exposure", EvalConfig(taste_exposure={"personal": "itemknn", "pop_weight": 0.0}))
    model.fit(baseline_events(), baseline_items())
    assert model.recommend(history_samples([(["h1"], [-1])]), 1) == [["c2"]]


def test_time_decayed_popularity_by_hand() -> None:
    ev = pl.DataFrame(
        {
            "user_id": ["a", "b", "c", "d"],
            "item_id": ["h1", "h1", "h1", "c1"],
            "ts": [0, 0, 0, 10 * DAY],  # h1: 3 dislikes 10 days before the newest event; c1: 1 now
            "feedback": [-1, -1, -1, -1],
        },
        schema={"user_id": pl.String, "item_id": pl.String, "ts": pl.Int64, "feedback": pl.Int8},
    )
    cat = Catalog.build(ev, baseline_items())
    w = decayed_dislike_counts(ev, cat, half_life_days=5.0)
    assert w[cat.index["h1"]] == pytest.approx(3 * 0.25) and w[cat.index["c1"]] == pytest.approx(1.0)
    plain, decayed = make_baseline("popularity"), make_baseline("popularity", EvalConfig(popularity={"half_life_days": 5.0}))
    plain.fit(ev, baseline_items())
    decayed.fit(ev, baseline_items())
    empty = history_samples([([], [])])
    assert plain.recommend(empty, 2) == [["h1", "c1"]]
    assert decayed.recommend(empty, 2) == [["c1", "h1"]]  # recent dislikes weigh more
    slow = make_baseline("popularity", EvalConfig(popularity={"half_life_days": 100.0}))
    slow.fit(ev, baseline_items())
    assert slow.recommend(empty, 2) == [["h1", "c1"]]  # 3 * 0.93 > 1
