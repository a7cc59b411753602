"""Swing similarity, its co-negative expansion and the Swing baseline, checked by hand."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from conrec.errors import DataValidationError
from conrec.eval.baselines import make_baseline
from conrec.eval.config import EvalConfig
from conrec.swing import Swing, SwingConfig, swing_matrix

# items a, b, c, d (columns 0..3); dislikes: u1 {a, b, c}, u2 {a, b}, u3 {a, b, c}, u4 {c, d}
X = sp.csr_matrix(np.array([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 1, 1]], dtype=float))


def test_swing_by_hand() -> None:
    # user pairs and their overlaps |I_u & I_v|: (u1,u2) {a,b} 2, (u1,u3) {a,b,c} 3, (u2,u3) {a,b} 2,
    # (u1,u4) {c} 1, (u3,u4) {c} 1, (u2,u4) {} 0 -> only the first three can relate two items.
    # alpha = 1: (u1,u2) adds 1/3 to (a,b); (u1,u3) adds 1/4 to (a,b), (a,c), (b,c); (u2,u3) adds 1/3 to (a,b)
    # s(a,b) = 1/3 + 1/4 + 1/3 = 11/12; s(a,c) = s(b,c) = 1/4; d relates to nothing (one user only)
    s = swing_matrix(X, SwingConfig(alpha=1.0)).toarray()
    expected = np.zeros((4, 4))
    expected[0, 1] = expected[1, 0] = 11 / 12
    expected[0, 2] = expected[2, 0] = expected[1, 2] = expected[2, 1] = 1 / 4
    assert s == pytest.approx(expected)
    # alpha = 2: (a,b) = 1/4 + 1/5 + 1/4 = 0.7; (a,c) = 1/5
    s2 = swing_matrix(X, SwingConfig(alpha=2.0)).toarray()
    assert s2[0, 1] == pytest.approx(0.7) and s2[0, 2] == pytest.approx(0.2)


def test_swing_user_weights_and_chunks_by_hand() -> None:
    # user_power 1: w = 1/|I_u| = 1/3, 1/2, 1/3, 1/2; (u1,u2): (1/3)(1/2)/3 = 1/18, (u1,u3): (1/9)/4 = 1/36,
    # (u2,u3): (1/6)/3 = 1/18 -> s(a,b) = 1/18 + 1/36 + 1/18 = 5/36; s(a,c) = 1/36
    s = swing_matrix(X, SwingConfig(alpha=1.0, user_power=1.0)).toarray()
    assert s[0, 1] == pytest.approx(5 / 36) and s[0, 2] == pytest.approx(1 / 36)
    # chunking the user pairs changes nothing; top_n=1 keeps each row's strongest neighbour only
    assert swing_matrix(X, SwingConfig(pair_chunk=1)).toarray() == pytest.approx(swing_matrix(X).toarray())
    top1 = swing_matrix(X, SwingConfig(top_n=1)).toarray()
    assert top1[2, 0] == pytest.approx(1 / 4) and top1[2, 1] == 0.0  # c: a and b tie at 1/4, lower column wins


def _events() -> pl.DataFrame:
    rows = [("u1", "a"), ("u1", "b"), ("u1", "c"), ("u2", "a"), ("u2", "b"), ("u3", "a"), ("u3", "b"), ("u3", "c"),
            ("u4", "c"), ("u4", "d")]  # fmt: skip
    return pl.DataFrame(
        {"user_id": [u for u, _ in rows] + ["u5"], "item_id": [i for _, i in rows] + ["d"],
         "ts": [1] * len(rows) + [100], "feedback": [-1] * len(rows) + [-1]},
        schema={"user_id": pl.String, "item_id": pl.String, "ts": pl.Int64, "feedback": pl.Int8},
    )  # fmt: skip


def test_swing_fit_and_co_negatives() -> None:
    sw = Swing.fit(_events(), ["a", "b", "c", "d", "e"], SwingConfig(), before_ts=50)  # u5's late dislike unused
    assert sw.sim[sw.index["a"], sw.index["b"]] == pytest.approx(11 / 12)
    # top-1 of a is b; of c: a and b tie (1/4), a (lower column) first; members themselves left out
    assert sw.co_negatives(["a"], 1) == ["b"]
    assert sw.co_negatives(["c"], 2) == ["a", "b"]
    assert sw.co_negatives(["a", "c"], 1) == ["b"]  # c's top-1 is a, already in the set
    with pytest.raises(DataValidationError, match=r"miss column\(s\) \['ts'\]"):
        Swing.fit(_events().drop("ts"), ["a", "b"], SwingConfig(), before_ts=50)  # was polars' ColumnNotFoundError
    assert sw.co_negatives(["d", "e", "zz"], 3) == [] and sw.co_negatives(["a"], 0) == []


def test_swing_baseline_scores_by_hand() -> None:
    items = pl.DataFrame({"item_id": list("abcd"), "title": list("abcd")})
    model = make_baseline("swing", EvalConfig(swing={"alpha": 1.0, "recency_decay": 0.5}))
    model.fit(_events().filter(pl.col("ts") < 50), items)
    samples = pl.DataFrame(
        {"sample_id": [0], "hist_items": [["a", "c"]], "hist_feedback": [[-1, -1]]},
        schema={"sample_id": pl.Int64, "hist_items": pl.List(pl.String), "hist_feedback": pl.List(pl.Int8)},
    )
    # most recent dislike c (weight 1), then a (0.5): score(b) = 1 * 1/4 + 0.5 * 11/12 = 17/24
    scores = model.item_scores(samples)  # type: ignore[attr-defined]
    assert scores[0, 1] == pytest.approx(17 / 24)
    assert model.recommend(samples, 1) == [["b"]]  # history items a, c never come back
