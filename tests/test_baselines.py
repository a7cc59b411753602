"""Baselines on tiny hand-made data where the right answer is known."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import polars as pl
import pytest

from conrec.data.config import SplitConfig
from conrec.errors import ConfigError, DataValidationError
from conrec.eval.baselines import BASELINES, make_baseline
from conrec.eval.baselines.base import Catalog, NotFittedError, Recommender, top_k
from conrec.eval.config import CategoryConfig, EvalConfig, SasrecConfig
from conrec.eval.metrics import evaluate

from builders import BASELINE_ITEMS, baseline_events, baseline_items, history_samples


def _fitted(name: str, cfg: EvalConfig | None = None) -> Recommender:
    model = make_baseline(name, cfg or EvalConfig(sasrec=SasrecConfig(epochs=2, hidden=16, layers=1)))
    model.fit(baseline_events(), baseline_items())
    return model


HISTORIES = [(["h1"], [-1]), (["d1", "c1"], [-1, 1]), ([], []), (["c1", "h1"], [-1, -1]), (["zz"], [-1])]


@pytest.mark.parametrize("name", BASELINES)
def test_outputs_are_distinct_real_items_outside_history(name: str) -> None:
    model = _fitted(name)
    assert isinstance(model, Recommender) and model.name == name
    samples = history_samples(HISTORIES)
    for k in (1, 3, 8):
        recs = model.recommend(samples, k)
        assert len(recs) == len(HISTORIES)
        for rec, (hist, _) in zip(recs, HISTORIES):
            assert len(rec) == len(set(rec)), rec
            assert set(rec) <= set(BASELINE_ITEMS)
            assert not set(rec) & set(hist)
            assert len(rec) == min(k, len(set(BASELINE_ITEMS) - set(hist)))  # full lists whenever the catalogue allows


@pytest.mark.parametrize("name", BASELINES)
def test_recommend_before_fit_is_an_error(name: str) -> None:
    with pytest.raises(NotFittedError, match="fit"):
        make_baseline(name).recommend(history_samples(HISTORIES), 3)


def test_popularity_ranks_by_dislike_count_minus_history() -> None:
    recs = _fitted("popularity").recommend(history_samples([(["h1"], [-1]), (["d1"], [1])]), 3)
    assert recs[0] == ["d1", "c2", "d2"]
    assert recs[1] == ["h1", "c2", "d2"]  # positives are excluded too: the user has seen d1


def test_itemknn_recommends_the_co_disliked_item() -> None:
    knn = _fitted("itemknn")
    recs = knn.recommend(history_samples([(["h1"], [-1]), (["d2"], [-1]), (["h1"], [1])]), 2)
    assert recs[0] == ["c2", "d1"]  # c2 co-disliked with h1, then popularity fill
    assert recs[1][0] == "d1"
    assert recs[2] == ["d1", "c2"]  # a *liked* h1 carries no dislike signal: popularity


def test_category_rule_recommends_same_category_by_frequency_and_recency() -> None:
    cat = _fitted("category", EvalConfig(category=CategoryConfig(recency_decay=0.8)))
    recs = cat.recommend(
        history_samples([(["h1"], [-1]), (["c1", "h1"], [-1, -1]), (["c1", "c3", "h1"], [-1, -1, -1])]), 3
    )
    assert recs[0] == ["h2", "h3", "d1"]  # same category first, then the most disliked item
    assert recs[1] == ["h2", "h3", "c2"]  # most recent dislike (horror) outweighs comedy
    assert recs[2] == ["c2", "h2", "h3"]  # two comedy dislikes (0.8 + 0.64) outweigh one recent horror


def test_category_handles_multi_valued_and_extra_columns() -> None:
    items = baseline_items().with_columns(
        category=pl.Series(["horror|comedy", "horror", "horror", "comedy", "comedy", "comedy", "drama", "drama"]),
        tone=pl.Series(["dark"] * 7 + ["light"]),
    )
    model = make_baseline("category", EvalConfig(category=CategoryConfig(columns=["category", "tone"])))
    model.fit(baseline_events(), items)
    rec = model.recommend(history_samples([(["h1"], [-1])]), 7)[0]
    # horror, comedy and tone dark: every h*/c* item shares 2 facets (ties: popularity, then catalogue)
    assert rec[:5] == ["c2", "h2", "h3", "c1", "c3"]
    assert rec[5:] == ["d1", "d2"]  # d1 shares the dark tone, d2 nothing
    with pytest.raises(DataValidationError, match="tone"):
        make_baseline("category", EvalConfig(category=CategoryConfig(columns=["tone"]))).fit(baseline_events(), baseline_items())


def test_make_baseline_rejects_unknown_names() -> None:
    with pytest.raises(ConfigError, match="unknown baseline 'bogus'.*popularity"):
        make_baseline("bogus", EvalConfig())


def test_top_k_orders_by_score_then_popularity_and_fills() -> None:
    cat = Catalog.build(baseline_events(), baseline_items())
    scores = np.zeros(len(BASELINE_ITEMS))
    scores[BASELINE_ITEMS.index("h3")] = 2.0
    scores[BASELINE_ITEMS.index("c3")] = 1.0
    scores[BASELINE_ITEMS.index("c1")] = 1.0
    assert top_k(scores, {BASELINE_ITEMS.index("c1")}, cat, 4) == ["h3", "c3", "d1", "h1"]
    with pytest.raises(ValueError):
        top_k(None, set(), cat, 0)


def _cycle_data(n_users: int, n_items: int, length: int, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Every user dislikes items in a fixed cyclic order i -> i+1, from a random starting point."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        start = int(rng.integers(n_items))
        rows += [(f"u{u}", f"i{(start + t) % n_items}", t, -1) for t in range(length)]
    u, i, t, f = zip(*rows)
    events = pl.DataFrame(
        {"user_id": u, "item_id": i, "ts": t, "feedback": f},
        schema={"user_id": pl.String, "item_id": pl.String, "ts": pl.Int64, "feedback": pl.Int8},
    )
    items = pl.DataFrame({"item_id": [f"i{j}" for j in range(n_items)], "title": "x", "text": "", "category": ""})
    return events, items


@pytest.mark.slow
def test_sasrec_learns_a_sequential_pattern_and_is_seeded() -> None:
    n_items = 30
    events, items = _cycle_data(n_users=80, n_items=n_items, length=10, seed=0)
    cfg = EvalConfig(sasrec=SasrecConfig(hidden=32, layers=1, heads=2, max_len=10, epochs=20, lr=1e-2, dropout=0.1))
    model = make_baseline("sasrec", cfg)
    model.fit(events, items)
    assert model.loss_history[-1] < 0.5 * model.loss_history[0]

    rng = np.random.default_rng(1)
    starts = rng.integers(n_items, size=60)
    hist = [[f"i{(s + t) % n_items}" for t in range(int(rng.integers(2, 8)))] for s in starts]
    samples = pl.DataFrame(
        {
            "sample_id": list(range(len(hist))),
            "hist_items": hist,
            "hist_feedback": [[-1] * len(h) for h in hist],
            "next_neg": [f"i{(int(s) + len(h)) % n_items}" for s, h in zip(starts, hist)],
            "future_negs": [[f"i{(int(s) + len(h)) % n_items}"] for s, h in zip(starts, hist)],
        },
        schema_overrides={"hist_feedback": pl.List(pl.Int8)},
    )
    recs = model.recommend(samples, 3)
    hr1 = evaluate(pl.DataFrame({"sample_id": samples["sample_id"], "items": recs}), samples, [1], n_items)["HR@1"]
    random_hr1 = 1 / (n_items - 4)  # about 1/26 for a random pick outside the history
    assert hr1 > 0.6 > 10 * random_hr1, hr1

    again = make_baseline("sasrec", cfg)
    again.fit(events, items)
    assert again.recommend(samples, 3) == recs  # same seed, same model


def test_sasrec_tells_each_epoch_and_trains_the_same_model_for_it() -> None:
    """Found by probing: SASRec's fits (30-60 epochs each, one per grid point) printed nothing for minutes; each
    epoch now reaches the eval bar through on_epoch, and watching it changes no weight."""
    from conrec.eval.baselines.base import watch_epochs

    events, items = _cycle_data(n_users=20, n_items=12, length=6, seed=0)
    cfg = EvalConfig(sasrec=SasrecConfig(hidden=16, layers=1, heads=2, max_len=6, epochs=3))
    seen: list[tuple[int, int, float]] = []
    watched, plain = make_baseline("sasrec", cfg), make_baseline("sasrec", cfg)
    watch_epochs(watched, lambda *told: seen.append(told))
    watched.fit(events, items)
    plain.fit(events, items)
    assert seen == [(e, 3, loss) for e, loss in enumerate(plain.loss_history, start=1)]
    samples = history_samples([(["i1", "i2"], [-1, -1]), (["i5"], [-1])])
    assert np.array_equal(watched.item_scores(samples), plain.item_scores(samples))
    ease = make_baseline("ease")
    watch_epochs(ease, lambda *told: None)  # fitted in one step: nothing to watch, nothing set
    assert not hasattr(ease, "on_epoch")


def test_fhr_rewards_true_taste_over_popularity_on_simulated_data() -> None:
    """On the simulator a ranker that knows each user's true dislike facets (ground truth, ranked by
    dislike popularity) beats global popularity on FHR: the metric measures negative taste, not just
    exposure. (History-based baselines do not reliably beat popularity there; see the eval notes.)"""
    from conrec.data.config import SimulatorConfig
    from conrec.data.simulator import simulate
    from conrec.data.splits import build_samples, time_cutoffs

    sim = simulate(SimulatorConfig(n_users=150, n_items=300, days=30, seed=0))
    split = SplitConfig(valid_frac=0.0, test_frac=0.3)
    samples = build_samples(sim.events, split)
    test = samples.filter(pl.col("split") == "test")
    fit_events = sim.events.filter(pl.col("ts") < time_cutoffs(sim.events, split).test)

    popularity = make_baseline("popularity")
    popularity.fit(fit_events, sim.items)
    catalog = Catalog.build(fit_events, sim.items)
    facets = sim.facet_items().group_by("user_id").agg("item_id")
    taste = dict(zip(facets["user_id"].to_list(), facets["item_id"].to_list()))
    aware = []
    for user, hist in zip(test["user_id"].to_list(), test["hist_items"].to_list()):
        scores = np.zeros(len(catalog.item_ids))
        scores[catalog.encode(taste.get(user, []))] = 1.0
        aware.append(top_k(scores, set(catalog.encode(hist)), catalog, 10))

    def fhr(recs: list[list[str]]) -> float:
        return evaluate(pl.DataFrame({"sample_id": test["sample_id"], "items": recs}), test, [10], sim.items.height)["FHR@10"]

    assert test.height >= 100
    assert fhr(aware) > 1.3 * fhr(popularity.recommend(test, 10))


# --- item_scores: the one source of every baseline's judgement (slates read it, recommend derives from it)


@pytest.mark.parametrize("name", BASELINES)
def test_item_scores_are_catalogue_shaped_and_recommend_is_their_top_k(name: str) -> None:
    from conrec.eval.baselines.base import recommend_from_scores

    model = _fitted(name)
    samples = history_samples(HISTORIES)
    scores = model.item_scores(samples)
    assert scores.shape == (len(HISTORIES), len(BASELINE_ITEMS)) and scores.dtype == np.float64
    assert np.isfinite(scores).all()
    cat = Catalog.build(baseline_events(), baseline_items())
    assert model.recommend(samples, 5) == recommend_from_scores(scores, samples, cat, 5)
    with pytest.raises(NotFittedError, match="fit"):
        make_baseline(name).item_scores(samples)


def test_item_scores_values_per_baseline() -> None:
    samples = history_samples([(["h1"], [-1]), (["h1"], [1])])
    pop = _fitted("popularity").item_scores(samples)
    np.testing.assert_array_equal(pop[0], [2, 0, 0, 0, 2, 0, 4, 2])  # dislike counts in BASELINE_ITEMS order
    knn = _fitted("itemknn").item_scores(samples)
    assert knn[0, BASELINE_ITEMS.index("c2")] == pytest.approx(1.0)  # h1 and c2: same dislikers -> cosine 1
    assert knn[0, BASELINE_ITEMS.index("d1")] == 0.0 and not knn[1].any()  # a liked h1 carries no dislike signal
    cat = _fitted("category").item_scores(samples)
    np.testing.assert_array_equal(cat[0], [1, 1, 1, 0, 0, 0, 0, 0])  # horror items share h1's category


def test_candidate_scores_read_the_slate_out_of_item_scores() -> None:
    from conrec.eval.baselines.base import candidate_scores

    scores = np.arange(16, dtype=np.float64).reshape(2, 8)
    got = candidate_scores(scores, BASELINE_ITEMS, [["d2", "h1"], ["c1"]])
    np.testing.assert_array_equal(got[0], [7.0, 0.0])
    np.testing.assert_array_equal(got[1], [11.0])
    with pytest.raises(DataValidationError, match="not in the catalogue"):
        candidate_scores(scores, BASELINE_ITEMS, [["nope"], ["c1"]])
    with pytest.raises(ValueError, match="shape"):
        candidate_scores(scores, BASELINE_ITEMS, [["h1"]])


@pytest.mark.parametrize(
    ("candidates", "match"),
    [
        (["ab", "ba"], r"^candidate slate #0 is a string; give a list of item ids per sample"),
        ([["h1"], []], r"^candidate slate #1 is empty"),
        ([["h1", "c1", "h1"], ["d2"]], r"^candidate slate #0 repeats item id\(s\) \['h1'\]"),
        ("ab", r"^the candidates are a string"),
    ],
)
def test_candidate_scores_checks_slates_as_the_predictor_does(candidates: Any, match: str) -> None:
    """Found by using the library: a slate given as a string (``["181", "258"]`` for two samples) was read character by
    character, items "1", "8", "1", and scored without a word; a repeated id passed too. The Predictor refused both."""
    from conrec.eval.baselines.base import candidate_scores

    scores = np.arange(16, dtype=np.float64).reshape(2, 8)
    items = [*BASELINE_ITEMS[:6], "a", "b"]  # one-character ids: a string's characters are then all "known" items
    with pytest.raises(DataValidationError, match=match):
        candidate_scores(scores, items, candidates)


@pytest.mark.parametrize("name", BASELINES)
def test_scoring_in_chunks_of_samples_changes_no_recommendation(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by probing: every baseline held one (samples x items) float64 array, 2.4 GB for 3,000 points and
    10^5 items (popularity alone; taste x exposure 9.8 GB). Scored a few rows at a time, the lists are the same."""
    import conrec.eval.baselines.base as base

    model = _fitted(name)
    samples = history_samples(HISTORIES * 3)
    whole = model.recommend(samples, 5)
    monkeypatch.setattr(base, "SCORE_CELLS", 2 * len(BASELINE_ITEMS))  # two samples per chunk
    assert len(base.score_chunks(samples, len(BASELINE_ITEMS))) == 8
    assert model.recommend(samples, 5) == whole


def test_taste_exposure_through_the_facets_equals_the_item_item_matrix(monkeypatch: pytest.MonkeyPatch) -> None:
    """Beyond ITEM_ITEM_MAX_ITEMS the facet personal score skips the item x item matrix (n^2 / categories
    nonzeros: 5 GB at 10^5 items, a 13 GiB allocation at 3 x 10^5): the same scores."""
    import conrec.eval.baselines.taste_exposure as te

    samples = history_samples(HISTORIES)
    direct = _fitted("taste_exposure")
    assert direct._item_item is not None
    monkeypatch.setattr(te, "ITEM_ITEM_MAX_ITEMS", 0)
    through = _fitted("taste_exposure")
    assert through._item_item is None
    np.testing.assert_allclose(through.item_scores(samples), direct.item_scores(samples), rtol=1e-12, atol=1e-12)
    assert through.recommend(samples, 5) == direct.recommend(samples, 5)


def test_the_sasrec_estimate_grows_with_the_catalogue_and_counts_the_dislikes_it_trains_on() -> None:
    """It had no n_items term in training (a full softmax over every item at every position): '~4 min'
    announced for what took about 25 min at 10^5 items. Then it counted every event where SASRec trains on the
    dislikes only: '~9 min' announced for the MovieLens demo's 1.5 min (measured per epoch on 2 cores: 45 s on
    6 x 10^4 dislikes and 10^5 items, 0.35 s on 1.4 x 10^4 dislikes among 8.6 x 10^4 events and 1,682 items)."""
    from conrec.eval.cost import Workload, announcement, sasrec_cost

    per_epoch = sasrec_cost(1, 64).seconds(Workload(n_events=60_000, n_items=100_000, n_samples=0, n_dislikes=60_000))
    assert 30 < per_epoch < 90
    small = sasrec_cost(1, 64).seconds(Workload(n_events=86_400, n_items=1_682, n_samples=0, n_dislikes=14_400))
    assert 0.1 < small < 1
    demo = announcement("sasrec", sasrec_cost(30, 64), Workload(n_items=1_682, n_events=90_000, n_samples=130, n_dislikes=15_000), fits=7)
    assert demo is not None and "over the dislikes" in demo, demo
    assert re.search(r"expected ~(\d+ s|[1-3] min) ", demo), demo  # about 1.5 min measured; it said ~9 min


def test_sasrec_without_a_training_window_scores_nothing_and_says_why() -> None:
    from conrec.eval.baselines.base import no_signal_reason

    trained = _fitted("sasrec")  # u1..u4 have 2 dislikes each
    assert no_signal_reason(trained) is None and trained.item_scores(history_samples(HISTORIES)).any()
    one_each = baseline_events().filter(pl.col("ts") == 1)  # every user's first event: one dislike each
    model = make_baseline("sasrec", EvalConfig(sasrec=SasrecConfig(epochs=2, hidden=16, layers=1)))
    model.fit(one_each, baseline_items())
    assert no_signal_reason(model) == "no user has 2 dislikes in the fit events (its shortest training sequence): not trained"
    assert not model.item_scores(history_samples(HISTORIES)).any()  # not its random initialisation's logits
    popularity = make_baseline("popularity", EvalConfig(popularity={"half_life_days": None}))
    popularity.fit(one_each, baseline_items())
    assert model.recommend(history_samples(HISTORIES), 5) == popularity.recommend(history_samples(HISTORIES), 5)


def test_facet_baselines_without_a_facet_value_say_they_are_popularity() -> None:
    from conrec.eval.baselines.base import no_signal_reason

    samples = history_samples(HISTORIES)
    popularity = _fitted("popularity", EvalConfig(popularity={"half_life_days": None}))
    bare = baseline_items().with_columns(pl.Series("category", ["", None] * 4, dtype=pl.String))  # empty cells: no facet
    why = "no item has a value in eval.category.columns ['category']: no facet to score"
    for name in ("category", "facet_rule", "taste_exposure"):
        assert no_signal_reason(_fitted(name)) is None
        model = make_baseline(name)
        model.fit(baseline_events(), bare)
        assert no_signal_reason(model) == why, name
        assert model.recommend(samples, 5) == popularity.recommend(samples, 5), name
    knn = make_baseline("taste_exposure", EvalConfig(taste_exposure={"personal": "itemknn"}))
    knn.fit(baseline_events(), bare)
    assert no_signal_reason(knn) is None  # its personal score reads co-dislikes, not facets


def test_a_facet_column_that_never_repeats_is_named_with_its_distinct_value_share() -> None:
    """Found by probing: the item id (or a title) given as eval.category.columns made category, facet_rule and
    taste_exposure popularity's rows with no word: a value held by one item carries no dislike to another."""
    from conrec.eval.baselines import facet_readers
    from conrec.eval.baselines.base import no_signal_reason
    from conrec.eval.baselines.category import unique_column_notes

    samples = history_samples(HISTORIES)
    popularity = _fitted("popularity", EvalConfig(popularity={"half_life_days": None}))
    by_id = baseline_items().with_columns(pl.col("item_id").alias("category"))
    for name in ("category", "facet_rule", "taste_exposure"):
        model = make_baseline(name)
        model.fit(baseline_events(), by_id)
        why = no_signal_reason(model)
        assert why is not None and "is shared by two items" in why and "['category']" in why, name
        assert model.recommend(samples, 5) == popularity.recommend(samples, 5), name
    titled = baseline_items().with_columns(pl.col("item_id").alias("title"))
    both = CategoryConfig(columns=["category", "title"])
    model = make_baseline("category", EvalConfig(category=both))
    model.fit(baseline_events(), titled)
    assert no_signal_reason(model) is None  # the category column still carries it
    (note,) = unique_column_notes(titled, both, readers=facet_readers(EvalConfig(baselines=["popularity", "category", "facet_rule"])))
    assert "`title` has 8 distinct values over the 8 items with a value (a distinct-value share of 1.00" in note
    assert "category, facet_rule" in note
    assert unique_column_notes(titled, both, readers=facet_readers(EvalConfig(baselines=["popularity", "itemknn"]))) == []  # nothing to say
    assert unique_column_notes(baseline_items(), CategoryConfig(), readers=["category"]) == []  # 3 categories over 8 items


def test_the_facet_column_note_refuses_the_listed_baselines_passed_as_its_readers() -> None:
    """Found in review (7 December 2026): unique_column_notes' third parameter was every listed baseline (filtered to
    the facet ones inside) and became the facet readers themselves, so a call written for the old one
    (``unique_column_notes(items, cfg, ecfg.baselines)``) named popularity and itemknn as fed by the column, without an
    error. ``readers`` is keyword-only now: that call is a TypeError."""
    from conrec.eval.baselines.category import unique_column_notes

    titled = baseline_items().with_columns(pl.col("item_id").alias("title"))
    both = CategoryConfig(columns=["category", "title"])
    with pytest.raises(TypeError):
        unique_column_notes(titled, both, ["popularity", "itemknn", "category"])


def test_co_dislike_baselines_without_a_co_dislike_say_they_are_popularity() -> None:
    """Found by probing: with one dislike per user in the fit events, itemknn, EASE and swing learn a zero
    similarity and returned popularity's lists as rows of their own, with no word."""
    from conrec.eval.baselines.base import no_signal_reason
    from conrec.eval.baselines.scored import NO_CO_DISLIKE, NO_SWING_PAIR

    samples = history_samples(HISTORIES)
    one_each = baseline_events().filter(pl.col("ts") == 1)  # every user's first event: one dislike each
    popularity = make_baseline("popularity", EvalConfig(popularity={"half_life_days": None}))
    popularity.fit(one_each, baseline_items())
    knn_taste = EvalConfig(taste_exposure={"personal": "itemknn"})  # found by review: its row was popularity's, no note
    for name, why, cfg in (("itemknn", NO_CO_DISLIKE, None), ("ease", NO_CO_DISLIKE, None), ("swing", NO_SWING_PAIR, None),
                           ("taste_exposure", NO_CO_DISLIKE, knn_taste)):
        assert no_signal_reason(_fitted(name, cfg)) is None, name  # the shared fixture has co-dislikes
        model = make_baseline(name, cfg)
        model.fit(one_each, baseline_items())
        assert no_signal_reason(model) == why, name
        assert model.recommend(samples, 5) == popularity.recommend(samples, 5), name


@pytest.mark.parametrize("name", BASELINES)
def test_pandas_frames_are_refused_in_one_line_naming_polars(name: str) -> None:
    """Found by running the docs: a Python user reading a run's Parquet files with pandas got
    ``AttributeError: 'DataFrame' object has no attribute 'height'`` from deep inside every baseline. Now
    fit, item_scores and recommend say which type they take and how to convert."""
    pytest.importorskip("pandas")
    events, items, samples = baseline_events(), baseline_items(), history_samples(HISTORIES)
    for args in ((events.to_pandas(), items), (events, items.to_pandas())):
        with pytest.raises(TypeError, match=r"polars DataFrame.*pandas.*pl\.from_pandas"):
            make_baseline(name).fit(*args)
    model = _fitted(name)
    with pytest.raises(TypeError, match=r"samples: .*polars DataFrame.*pandas"):
        model.item_scores(samples.to_pandas())
    with pytest.raises(TypeError, match=r"samples: .*polars DataFrame.*pandas"):
        model.recommend(samples.to_pandas(), 3)


def test_every_baseline_shows_its_name_settings_and_whether_it_is_fitted() -> None:
    """Found in review: a notebook showed ``<conrec.eval.baselines....Recommender object at 0x...>``; now the name, the
    settings it scores with (not the tuning grid) and whether ``fit`` ran."""
    for name in BASELINES:
        shown = repr(make_baseline(name))
        assert shown.startswith(f"{type(make_baseline(name)).__name__}(name={name!r}") and shown.endswith("; not fitted)")
        assert "grid" not in shown and " object at 0x" not in shown
    cfg = EvalConfig(popularity={"half_life_days": 7.0}, ease={"l2": 50.0})
    n = baseline_items().height
    assert repr(_fitted("popularity", cfg)) == f"PopularityRecommender(name='popularity', half_life_days=7.0; fitted on {n} items)"
    assert repr(_fitted("ease", cfg)) == f"EaseRecommender(name='ease', l2=50.0; fitted on {n} items)"  # a ScoredRecommender


@pytest.mark.parametrize("name", BASELINES)
def test_the_points_a_baseline_scores_flat_are_the_ones_it_ranks_by_dislike_popularity(name: str) -> None:
    """popularity_points marks the points whose item scores are one value over every item the baseline may recommend
    (the eval's note counts them): there its top-K is plain-count dislike popularity, as the note says. Found by
    probing: swing's top-20 was popularity's at 196 of 205 test points, and only a whole-fit check could say so."""
    from conrec.eval.baselines.base import NO_POINT_SIGNAL, no_point_signal, popularity_points
    from conrec.eval.baselines.scored import NO_CO_DISLIKE_AT_POINT

    samples = history_samples(HISTORIES)
    model = _fitted(name)
    flat = popularity_points(model, samples)
    assert flat is not None and flat.dtype == bool and flat.shape == (len(HISTORIES),)
    popularity = make_baseline("popularity", EvalConfig(popularity={"half_life_days": None}))
    popularity.fit(baseline_events(), baseline_items())
    plain, recs = popularity.recommend(samples, 8), model.recommend(samples, 8)
    assert all(recs[i] == plain[i] for i in np.flatnonzero(flat)), name
    if name in ("itemknn", "category", "sasrec", "ease", "swing"):  # they read the history's dislikes only
        assert flat[2] and flat[4], name  # no history; an unknown item's dislike
    assert not flat.all(), name  # each has a signal somewhere in this fixture
    assert no_point_signal(model) == (NO_CO_DISLIKE_AT_POINT if name in ("itemknn", "ease", "swing") else NO_POINT_SIGNAL)
    assert popularity_points(make_baseline(name), samples) is None  # not fitted: nothing to say


@pytest.mark.parametrize("name", BASELINES)
@pytest.mark.parametrize("chunk_rows", [None, 2])
def test_the_flat_points_are_read_off_the_top_k_pass_exactly_as_popularity_points_finds_them(
    name: str, chunk_rows: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by review: the eval counted the points a baseline ranks by popularity with a second scoring pass (itemknn at
    30,000 items and 5,000 points: 1.8 s to rank, 2.7 s more to count). recommend_noting_flat reads the flags off the
    top-K's own pass: the same top-K, the same flags as popularity_points, each point scored once (also in chunks)."""
    from conrec.eval.baselines import base
    from conrec.eval.baselines.base import popularity_points, recommend_noting_flat

    samples = history_samples(HISTORIES + [(["c1"], [-1]), (["c1", "c2"], [-1, -1])])
    model = _fitted(name)
    if chunk_rows is not None:  # several score chunks: the flags stay in sample order
        monkeypatch.setattr(base, "SCORE_CELLS", chunk_rows * len(model._catalog.item_ids))  # type: ignore[attr-defined]
    expected, plain = popularity_points(model, samples), model.recommend(samples, 4)
    scored: list[int] = []
    real_scores = model.item_scores

    def counted(part: pl.DataFrame) -> np.ndarray:
        scored.append(part.height)
        return real_scores(part)

    model.item_scores = counted  # type: ignore[method-assign]
    recs, flat = recommend_noting_flat(model, samples, 4)
    assert recs == plain and flat is not None and expected is not None
    assert flat.dtype == bool and flat.tolist() == expected.tolist(), name
    assert sum(scored) == samples.height, name  # once per point: no second pass
    if chunk_rows is not None:
        assert len(scored) > 1


def test_a_baseline_written_from_the_contract_gets_the_per_point_popularity_note() -> None:
    """Found by a contributor probe (7 December 2026): the per-point note read the private ``_catalog`` attribute,
    which the contract did not mention, so a baseline written from it that kept its catalogue as ``self.cat`` and
    ranked every point by popularity got no note. The note is read off the rows ``recommend`` shows ``on_row``;
    ``_catalog`` is in the contract, for popularity_points and the repr (fitted_catalog)."""
    from conrec.eval.baselines.base import DescribedBaseline, fitted_catalog, popularity_points, recommend_in_chunks, recommend_noting_flat

    class Zeros(DescribedBaseline):
        name = "zeros"

        def fit(self, events: pl.DataFrame, items: pl.DataFrame) -> None:
            self.cat = Catalog.build(events, items)

        def item_scores(self, samples: pl.DataFrame) -> np.ndarray:
            return np.zeros((samples.height, len(self.cat.item_ids)))

        def recommend(self, samples: pl.DataFrame, k: int, on_row: Any = None) -> list[list[str]]:
            return recommend_in_chunks(self.item_scores, samples, self.cat, k, on_row)

    samples = history_samples(HISTORIES)
    model = Zeros()
    model.fit(baseline_events(), baseline_items())
    assert isinstance(model, Recommender)
    recs, flat = recommend_noting_flat(model, samples, 5)
    assert flat is not None and flat.all() and len(recs) == len(HISTORIES)
    assert fitted_catalog(model) is None and popularity_points(model, samples) is None  # not at the contract's name
    assert repr(model).endswith("; not fitted)")
    model._catalog = model.cat  # type: ignore[attr-defined]
    assert fitted_catalog(model) is model.cat and popularity_points(model, samples) is not None
    assert repr(model) == f"Zeros(name='zeros'; fitted on {len(model.cat.item_ids)} items)"


def test_swing_with_a_pair_somewhere_is_flat_where_the_history_has_no_neighbour() -> None:
    """The whole-fit note (no Swing pair at all) misses a fit with one pair: a point whose disliked items are not in it
    is popularity's, and popularity_points says so, point by point."""
    from conrec.eval.baselines.base import no_signal_reason, popularity_points

    rows = [("a", "c1", 1, -1), ("a", "c2", 2, -1), ("b", "c1", 3, -1), ("b", "c2", 4, -1), ("c", "h1", 5, -1), ("d", "d1", 6, -1)]
    u, i, t, f = zip(*rows)
    events = pl.DataFrame({"user_id": u, "item_id": i, "ts": t, "feedback": f},
                          schema={"user_id": pl.String, "item_id": pl.String, "ts": pl.Int64, "feedback": pl.Int8})
    swing = make_baseline("swing")
    swing.fit(events, baseline_items())
    assert no_signal_reason(swing) is None  # c1 and c2: one pair, so the whole fit has a signal
    samples = history_samples([(["c1"], [-1]), (["h1"], [-1]), (["d1", "c1"], [-1, 1]), (["c1", "c2"], [-1, -1])])
    # c1's neighbour c2; h1 and d1 have none; a liked c1 is no dislike; with c2 in the history too, c1 and c2 score
    # each other but both are excluded there: every item left scores 0
    assert popularity_points(swing, samples).tolist() == [False, True, True, True]


def test_a_baseline_without_the_row_hook_is_evaluated_without_the_popularity_note() -> None:
    """A baseline written before ``recommend`` took ``on_row`` (a contributor's own) must still be evaluated: the
    per-point popularity count is a note, and its absence must not fail the eval."""
    from conrec.eval.baselines.base import recommend_noting_flat

    class Old:
        name = "old"

        def recommend(self, samples: pl.DataFrame, k: int) -> list[list[str]]:
            return [["a"][:k] for _ in range(samples.height)]

    samples = pl.DataFrame({"sample_id": [1, 2]})
    recs, flags = recommend_noting_flat(Old(), samples, 1)  # type: ignore[arg-type]
    assert recs == [["a"], ["a"]] and flags is None
