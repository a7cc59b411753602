"""The facet rule baseline on hand-made data: likes clear a dislike's innocent facets, the user's own
facet mix ranks what they will meet (answers computed by hand)."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from conrec.config import load_config
from conrec.eval.baselines import make_baseline
from conrec.eval.baselines.base import Recommender
from conrec.eval.baselines.facet_rule import facet_rule_scores
from conrec.eval.config import DEFAULT_BASELINES, EvalConfig, FacetRuleConfig

from builders import history_samples

ITEMS = pl.DataFrame(
    {
        "item_id": ["a1", "a2", "a3", "b1", "b2", "c1"],
        "category": ["A", "A", "A", "B", "B", "C"],
        "tone": ["X", "Y", "Z", "X", "Y", "X"],
    }
)
# nobody else disliked anything: the popularity part is 0 for every item
EVENTS = pl.DataFrame(
    {"user_id": ["u"], "item_id": ["a1"], "ts": [0], "feedback": [1]},
    schema={"user_id": pl.String, "item_id": pl.String, "ts": pl.Int64, "feedback": pl.Int8},
)


def _rule(**settings: float) -> Recommender:
    model = make_baseline("facet_rule", EvalConfig(category={"columns": ["category", "tone"]}, facet_rule=settings))
    model.fit(EVENTS, ITEMS)
    return model


def test_a_like_clears_the_facet_it_shares_with_a_dislike() -> None:
    history = history_samples([(["a1", "b1"], [-1, 1])])  # disliked (A, X); liked (B, X): X is innocent, A is the suspect
    cleared = _rule(like_penalty=2.0, exposure_weight=0.0)
    assert cleared.recommend(history, 2) == [["a2", "a3"]]  # only the A items lie on a suspect facet
    scores = cleared.item_scores(history)[0]
    p_a, p_x = 0.5, 0.5 * math.exp(-2.0)  # k / (k + 1) with k = 1; X also liked once
    assert scores.min() == 1.0  # shifted per sample: every score positive, as top_k reads them
    # b2 = (B, Y) lies on no suspect facet; a2 = (A, Y) on A; c1 = (C, X) on the cleared X
    assert scores[1] - scores[4] == pytest.approx(math.log(p_a + 1e-3) - math.log(1e-3))
    assert scores[5] - scores[4] == pytest.approx(math.log(p_x + 1e-3) - math.log(1e-3))
    kept = _rule(like_penalty=0.0, exposure_weight=0.0).item_scores(history)[0]
    assert kept[5] == pytest.approx(kept[1])  # without the like penalty, X is as suspect as A


def test_the_users_own_facet_mix_ranks_the_suspects() -> None:
    # disliked a1 (A, X), liked b2 (B, Y) three times: among A's items the user meets Y more than Z
    history = history_samples([(["a1", "b2", "b2", "b2"], [-1, 1, 1, 1])])
    model = _rule(like_penalty=2.0, exposure_weight=1.0)
    assert model.recommend(history, 3)[0][2] == "a3"  # a2 and b1 (on the suspect X, in the user's B) before it
    scores = model.item_scores(history)[0]
    # tone shares, add-one over X, Y, Z: X (1 + 1) / 7, Y (3 + 1) / 7, Z 1 / 7; both are category A
    assert scores[1] - scores[2] == pytest.approx(math.log(4.0) - math.log(1.0))
    taste_only = _rule(like_penalty=2.0, exposure_weight=0.0).item_scores(history)[0]
    assert taste_only[2] == pytest.approx(taste_only[1])  # the same suspect A: only exposure told them apart


def test_scores_by_hand_with_popularity() -> None:
    members = np.array([[1.0, 0.0], [0.0, 1.0]])  # facet 0 on item 0, facet 1 on item 1 (one column)
    cfg = FacetRuleConfig(prior=1.0, like_penalty=0.0, exposure_weight=1.0)
    out = facet_rule_scores(
        np.array([3.0, 0.0]), np.zeros(2), np.array([3.0, 0.0]), np.array([0, 0]), np.log1p(np.array([0.0, 4.0])), members, cfg
    )
    share0, share1 = 4.0 / 5.0, 1.0 / 5.0
    assert out[0] == pytest.approx(math.log(0.75 + 1e-3) + math.log(share0))
    assert out[1] == pytest.approx(math.log(1e-3) + math.log1p(4.0) + math.log(share1))


def test_on_by_default_for_simulated_data_only() -> None:
    assert "facet_rule" not in DEFAULT_BASELINES
    assert load_config(None, {}).eval.baselines == list(DEFAULT_BASELINES)
    assert load_config(None, {"data": {"source": "simulator"}}).eval.baselines[-1] == "facet_rule"
    chosen = load_config(None, {"data": {"source": "simulator"}, "eval": {"baselines": ["popularity"]}})
    assert chosen.eval.baselines == ["popularity"]  # a config that names its baselines keeps them
