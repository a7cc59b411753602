"""Collaborative item vectors for the SID quantizer: co-interaction structure, zeros for unseen items."""

from __future__ import annotations

import numpy as np
import polars as pl

from conrec.sid.collab_vectors import collaborative_vectors, interaction_matrix


def _events() -> pl.DataFrame:
    # users 0-3 meet items a, b; users 4-7 meet items c, d; item e has only a dislike; item f nothing
    rows = [(f"u{u}", i, -1 if i == "b" else 1) for u in range(4) for i in ("a", "b")]
    rows += [(f"u{u}", i, 1) for u in range(4, 8) for i in ("c", "d")]
    rows += [("u0", "e", -1)]
    return pl.DataFrame(rows, schema={"user_id": pl.String, "item_id": pl.String, "feedback": pl.Int8}, orient="row")


def test_interaction_matrix_is_binary_items_by_users():
    m = interaction_matrix(_events(), ["a", "b", "c", "d", "e", "f"])
    assert m.shape == (6, 8) and set(np.unique(m.data)) == {1.0}
    assert m[0].sum() == 4 and m[5].sum() == 0
    dis = interaction_matrix(_events(), ["a", "b", "c", "d", "e", "f"], feedback="dislikes")
    assert dis[0].sum() == 0 and dis[1].sum() == 4 and dis[4].sum() == 1


def test_items_met_by_the_same_users_get_the_same_direction():
    ids = ["a", "b", "c", "d", "e", "f"]
    vec = collaborative_vectors(interaction_matrix(_events(), ids), dims=2)
    assert vec.shape == (6, 2)
    assert np.allclose(np.linalg.norm(vec[:5], axis=1), 1.0, atol=1e-5)
    assert np.allclose(vec[5], 0.0)  # nobody met f: no collaborative direction
    assert vec[0] @ vec[1] > 0.99 and vec[2] @ vec[3] > 0.99  # same users, same direction
    assert abs(vec[0] @ vec[2]) < 0.01  # disjoint users, orthogonal
    again = collaborative_vectors(interaction_matrix(_events(), ids), dims=2)
    assert np.array_equal(vec, again)  # deterministic (signs fixed)


def test_more_dims_than_the_rank_allows_are_zero_padded():
    ids = ["a", "b", "c"]
    vec = collaborative_vectors(interaction_matrix(_events(), ids), dims=16)
    assert vec.shape == (3, 16) and np.allclose(vec[:, 2:], 0.0)
