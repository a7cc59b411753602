"""Context-swap control: the derangement never keeps a user's own history; overlap by hand."""

from __future__ import annotations

import polars as pl
import pytest

from conrec.errors import DataValidationError
from conrec.eval.context_swap import (
    cross_user_derangement,
    mean_overlap,
    swap_histories,
)


@pytest.mark.parametrize("seed", range(5))
def test_derangement_moves_every_point_to_another_user(seed: int) -> None:
    users = ["a"] * 5 + ["b"] * 3 + ["c"] * 2 + [f"u{i}" for i in range(6)]
    perm = cross_user_derangement(users, seed)
    assert sorted(perm.tolist()) == list(range(len(users)))  # a permutation
    assert all(users[p] != users[i] for i, p in enumerate(perm))


def test_derangement_is_seeded_and_rejects_impossible_cases() -> None:
    users = [f"u{i}" for i in range(20)]
    assert (cross_user_derangement(users, 3) == cross_user_derangement(users, 3)).all()
    assert (cross_user_derangement(users, 3) != cross_user_derangement(users, 4)).any()
    with pytest.raises(DataValidationError, match="more than half"):
        cross_user_derangement(["a", "a", "a", "b"], 0)
    with pytest.raises(DataValidationError, match="at least 2"):
        cross_user_derangement(["a"], 0)


def test_swap_histories_keeps_labels_and_moves_histories() -> None:
    s = pl.DataFrame(
        {
            "sample_id": [0, 1, 2],
            "user_id": ["a", "b", "c"],
            "hist_items": [["x"], ["y"], ["z"]],
            "hist_feedback": [[-1], [1], [-1]],
            "future_negs": [["f0"], ["f1"], ["f2"]],
        }
    )
    w = swap_histories(s, seed=0)
    assert w["future_negs"].to_list() == s["future_negs"].to_list() and w["user_id"].to_list() == ["a", "b", "c"]
    assert sorted(map(tuple, w["hist_items"].to_list())) == [("x",), ("y",), ("z",)]
    assert all(h != o for h, o in zip(w["hist_items"].to_list(), s["hist_items"].to_list()))
    # items and feedback move together
    pairs = {tuple(i): tuple(f) for i, f in zip(w["hist_items"].to_list(), w["hist_feedback"].to_list())}
    assert pairs == {("x",): (-1,), ("y",): (1,), ("z",): (-1,)}


def test_mean_overlap_by_hand() -> None:
    assert mean_overlap([["a", "b"], ["c", "d"]], [["b", "a"], ["c", "z"]], 2) == pytest.approx((1.0 + 0.5) / 2)
    assert mean_overlap([["a", "b", "c"]], [["c", "b", "a"]], 1) == 0.0
    # found by probing: lists shorter than k (a small catalogue) that the swap left unchanged gave 3 / 20
    assert mean_overlap([["a", "b", "c"]], [["a", "b", "c"]], 20) == 1.0
    assert mean_overlap([["a", "b", "c"], []], [["a", "b"], []], 20) == pytest.approx(2 / 3)
