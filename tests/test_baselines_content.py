"""The content baseline: nearest item texts to the user's dislikes, blended with log-popularity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from conrec.errors import DataValidationError
from conrec.eval.baselines.content import ContentRecommender, min_max_rows, top_m_mean, with_text_vectors
from conrec.eval.config import ContentConfig

from builders import BASELINE_ITEMS, baseline_events, baseline_items, history_samples


def _fitted(**cfg: object) -> ContentRecommender:
    model = ContentRecommender(ContentConfig.model_validate(cfg))
    model.fit(baseline_events(), baseline_items())
    return model


def test_top_m_mean_and_min_max_rows() -> None:
    sim = np.array([[0.1, 0.9, 0.5], [0.3, 0.2, 0.4]])
    np.testing.assert_allclose(top_m_mean(sim, 1), [0.9, 0.4])
    np.testing.assert_allclose(top_m_mean(sim, 2), [0.7, 0.35])
    np.testing.assert_allclose(top_m_mean(sim, 10), sim.mean(axis=1))  # m beyond the dislikes: all of them
    np.testing.assert_allclose(min_max_rows(np.array([[1.0, 3.0, 2.0], [5.0, 5.0, 5.0]])), [[0, 1, 0.5], [0, 0, 0]])


def test_the_nearest_texts_to_the_dislikes_come_first() -> None:
    recs = _fitted(top_m=1, pop_weight=0.0).recommend(history_samples([(["h1"], [-1]), (["d1"], [-1]), (["d1", "c1"], [-1, -1])]), 3)
    assert recs[0] == ["h2", "h3", "c3"]  # horror by closeness to h1, then the comedy with a horror component
    assert recs[1][0] == "d2"  # the only other item with a drama component
    # two dislikes (drama d1, comedy c1): with top_m 1 an item is judged by its closest dislike, so the
    # comedies near c1 lead; with top_m 2 by its mean closeness to both, so d2 (half drama, half comedy) does
    assert recs[2][:2] == ["c2", "c3"]
    assert _fitted(top_m=2, pop_weight=0.0).recommend(history_samples([(["d1", "c1"], [-1, -1])]), 1) == [["d2"]]


def test_popularity_weight_and_users_without_dislikes() -> None:
    samples = history_samples([(["h1"], [-1]), (["h1"], [1])])
    scores = _fitted(top_m=1, pop_weight=1.0).item_scores(samples)
    np.testing.assert_allclose(scores[0], scores[1])  # w = 1: popularity alone, whatever the history
    assert scores[0].argmax() == BASELINE_ITEMS.index("d1")  # the most disliked item
    personal = _fitted(top_m=1, pop_weight=0.0).item_scores(samples)
    assert not personal[1].any()  # a liked item carries no dislike signal
    assert personal[0, BASELINE_ITEMS.index("h1")] == pytest.approx(1.0)


def test_max_dislikes_keeps_the_most_recent() -> None:
    # oldest first: a horror dislike, then a drama one; with one kept only the drama one counts
    samples = history_samples([(["h1", "d1"], [-1, -1])])
    recs = _fitted(top_m=1, pop_weight=0.0, max_dislikes=1).recommend(samples, 1)
    assert recs == [["d2"]]


def test_missing_or_bad_vectors_are_one_line_errors() -> None:
    items = baseline_items().drop("text_vector")
    with pytest.raises(DataValidationError, match="no 'text_vector' column.*conrec sid"):
        ContentRecommender().fit(baseline_events(), items)
    with pytest.raises(DataValidationError, match="shape"):
        with_text_vectors(items, np.zeros((3, 4)))
    bad = with_text_vectors(items, np.full((items.height, 3), np.nan))
    with pytest.raises(DataValidationError, match="finite"):
        ContentRecommender().fit(baseline_events(), bad)
    assert isinstance(baseline_items()["text_vector"].dtype, pl.Array)


def test_large_catalogues_score_the_same_without_the_precomputed_cosines(monkeypatch: pytest.MonkeyPatch) -> None:
    import conrec.eval.baselines.content as content

    samples = history_samples([(["h1", "d1"], [-1, -1]), (["c1"], [-1]), ([], [])])
    small = _fitted(top_m=2).item_scores(samples)
    monkeypatch.setattr(content, "_GRAM_MAX_ITEMS", 0)
    np.testing.assert_allclose(_fitted(top_m=2).item_scores(samples), small, atol=1e-6)


def test_no_message_sends_users_to_the_hidden_tokenize_alias() -> None:
    """Errors said "rerun `conrec tokenize`", a hidden alias `conrec --help` does not list: the command is `conrec sid`."""
    src = Path(__file__).resolve().parent.parent / "src" / "conrec"
    named = [str(p.relative_to(src)) for p in src.rglob("*.py") if "conrec tokenize" in p.read_text(encoding="utf-8")]
    assert named == []
