"""The simulator reproduces sparse dislikes, taste-driven dislikes and exposure suppression."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError

from conrec.data.config import SIMULATOR_TONES_AND_SETTINGS, SimulatorConfig
from conrec.data.samples import DAY
from conrec.data.simulator import AXES, START_TS, simulate
from conrec.errors import DataValidationError


@pytest.fixture(scope="module")
def sim():
    # speed is measured by benchmarks/, not asserted here: a timed assert fails on a busy machine
    return simulate(SimulatorConfig(n_users=300, days=60, seed=3))


def test_deterministic_for_a_seed():
    a = simulate(SimulatorConfig(n_users=20, n_items=100, days=5, seed=7))
    b = simulate(SimulatorConfig(n_users=20, n_items=100, days=5, seed=7))
    c = simulate(SimulatorConfig(n_users=20, n_items=100, days=5, seed=8))
    assert a.events.equals(b.events) and a.user_facets.equals(b.user_facets)
    assert not a.events.equals(c.events)


def test_dislikes_are_a_few_percent_of_feedback(sim):
    share = (sim.events["feedback"] == -1).mean()
    assert 0.01 <= share <= 0.10
    per_user = sim.events.filter(pl.col("feedback") == -1).group_by("user_id").len()
    assert per_user.height >= 0.9 * sim.config.n_users  # nearly everybody has a few


def test_titles_are_generated_from_attributes(sim):
    row = sim.items.row(0, named=True)
    assert row["category"] in row["title"] and row["tone"] in row["title"] and row["setting"] in row["title"]
    assert row["tone"].lower() in row["text"]
    assert sim.items["item_id"].is_unique().all() and sim.items["title"].is_unique().all()


def test_true_facets_are_recoverable_from_dislikes(sim):
    on = sim.facet_items().with_columns(on_facet=pl.lit(True))
    ev = sim.events.join(on, on=["user_id", "item_id"], how="left").with_columns(pl.col("on_facet").fill_null(False))
    dis_on = ev.filter(pl.col("feedback") == -1)["on_facet"].mean()
    pos_on = ev.filter(pl.col("feedback") == 1)["on_facet"].mean()
    assert dis_on > 0.7 and pos_on == 0.0
    # The most disliked attribute value of a user is one of their facets for most users.
    long = (
        sim.events.filter(pl.col("feedback") == -1)
        .join(sim.items.select("item_id", *AXES), on="item_id")
        .unpivot(index=["user_id"], on=list(AXES), variable_name="axis", value_name="value")
    )
    top = long.group_by("user_id", "axis", "value").len().sort("len", descending=True).group_by("user_id").first()
    hit = top.join(sim.user_facets.with_columns(hit=pl.lit(True)), on=["user_id", "axis", "value"], how="left")
    assert hit["hit"].fill_null(False).mean() > 0.7


def test_dislike_probability_is_the_ground_truth(sim):
    pairs = sim.facet_items().head(5)
    off = sim.items.join(sim.facet_items().filter(pl.col("user_id") == "u0000"), on="item_id", how="anti").head(3)
    p_on = sim.dislike_probability(pairs["user_id"], pairs["item_id"])
    p_off = sim.dislike_probability(["u0000"] * off.height, off["item_id"])
    assert pairs.height == 5 and off.height == 3  # np.all of nothing is True
    assert np.all(p_on == sim.config.dislike_prob_on_facet) and np.all(p_off == sim.config.dislike_prob_background)


def _share_close_after_dislikes(exposures: pl.DataFrame, items: pl.DataFrame, window_s: int) -> tuple[float, float]:
    """Share of a user's exposures sharing an attribute with their latest dislike: within the
    window after it vs. later (the outside-window baseline)."""
    ex = exposures.join(items.select("item_id", *AXES), on="item_id").sort("user_id", "ts")
    dis = ex.filter(pl.col("outcome") == -1).select("user_id", d_ts=pl.col("ts"), **{f"d_{a}": pl.col(a) for a in AXES})
    # Latest dislike strictly before each exposure, per user.
    joined = ex.join_asof(
        dis.sort("user_id", "d_ts"), left_on="ts", right_on="d_ts", by="user_id", strategy="backward",
        allow_exact_matches=False, check_sortedness=False,
    )
    joined = joined.filter(pl.col("d_ts").is_not_null()).with_columns(
        close=pl.any_horizontal([pl.col(a) == pl.col(f"d_{a}") for a in AXES]), within=(pl.col("ts") - pl.col("d_ts")) < window_s
    )
    inside = joined.filter(pl.col("within"))["close"].mean()
    outside = joined.filter(~pl.col("within"))["close"].mean()
    return float(inside), float(outside)


def test_items_close_to_a_dislike_are_suppressed_for_the_period(sim):
    window = int(sim.config.suppression_days * DAY)
    inside, outside = _share_close_after_dislikes(sim.exposures, sim.items, window)
    assert inside < 0.5 * outside
    # Without suppression the effect disappears: the contrast is caused by the recommender.
    plain = simulate(SimulatorConfig(n_users=150, days=40, seed=3, suppression_penalty=0.0))
    inside0, outside0 = _share_close_after_dislikes(plain.exposures, plain.items, window)
    assert inside0 > 0.8 * outside0


def _next_negative_repeats_last_one(sim_result) -> float:
    """Share of dislikes sharing the category, tone or setting of the same user's previous dislike."""
    dis = (
        sim_result.events.filter(pl.col("feedback") == -1)
        .join(sim_result.items.select("item_id", *AXES), on="item_id")
        .sort("user_id", "ts")
    )
    prev = [pl.col(a).shift(1).over("user_id") for a in AXES]
    same = dis.with_columns(same=pl.any_horizontal([pl.col(a) == p for a, p in zip(AXES, prev)])).drop_nulls("same")
    return float(same["same"].mean())


def test_suppression_makes_the_next_negative_follow_exposure_not_taste():
    """Same users, same tastes: with suppression, consecutive dislikes rarely share an attribute, so
    a next-negative objective would learn the recommender's "show something else" rule."""
    kw = dict(n_users=150, days=40, seed=5)
    with_supp = _next_negative_repeats_last_one(simulate(SimulatorConfig(**kw)))
    without = _next_negative_repeats_last_one(simulate(SimulatorConfig(**kw, suppression_penalty=0.0)))
    assert with_supp < without - 0.15


def test_a_small_catalogue_is_never_shown_again_after_a_reaction_and_times_stay_in_their_days():
    """When a user's sessions held more items than they had not yet reacted to, the top-k took reacted ones
    (one user disliked the same item nine times), and a slate longer than its session ran into the next day."""
    res = simulate(SimulatorConfig(n_users=4, n_items=10, days=5, dislike_prob_background=0.3, dislike_prob_on_facet=0.4))
    pairs = res.events.group_by("user_id", "item_id").len()
    assert res.events.height > 0 and pairs["len"].max() == 1
    long = simulate(SimulatorConfig(n_users=3, n_items=1500, days=2, events_per_user_per_day=1200))
    assert long.exposures["ts"].max() < START_TS + 2 * DAY


def test_impossible_simulator_settings_are_one_line_errors():
    from conrec.data.simulator import SETTINGS, TONES

    assert SIMULATOR_TONES_AND_SETTINGS == len(TONES) + len(SETTINGS)
    with pytest.raises(ValidationError, match="only 30 facets exist"):  # drawing 31 distinct facets never ended
        SimulatorConfig(dislike_facets_per_user=31)
    with pytest.raises(ValidationError, match="dislike_prob_background \\+ positive_prob_max must be <= 1"):
        SimulatorConfig(dislike_prob_background=0.9, positive_prob_max=0.6)  # P(positive) was cut to 0.1 silently
    with pytest.raises(DataValidationError, match="showed no item in 2 days"):  # a numpy traceback
        simulate(SimulatorConfig(n_users=2, n_items=10, days=2, events_per_user_per_day=0.0001))


@pytest.mark.parametrize("setting", [{"suppression_penalty": 120}, {"popularity_weight": 100}, {"interest_weight": 100}])
def test_reacted_items_are_never_shown_again_when_weights_underflow(setting):
    """Found by probing: with a penalty past ~104 or extreme weights, float32 weights underflowed to 0 and tied
    with the reacted items' 0, and the top-k took reacted ones (one user gave feedback on one item 14 times)."""
    res = simulate(SimulatorConfig(n_users=40, n_items=100, days=20, **setting))
    assert res.events.group_by("user_id", "item_id").len()["len"].max() == 1


def test_out_of_range_simulator_settings_and_worlds_without_feedback_are_one_line_errors():
    """They were an OverflowError, a numpy ValueError or MemoryError traceback, or a world of NaN weights."""
    from conrec.data.stage import check_learnable

    for bad, field in [({"suppression_days": float("inf")}, "suppression_days"), ({"suppression_days": 1e300}, "suppression_days"),
                       ({"events_per_user_per_day": float("inf")}, "events_per_user_per_day"), ({"seed": -1}, "seed"),
                       ({"popularity_weight": float("inf")}, "popularity_weight"), ({"interest_weight": 1e308}, "interest_weight")]:
        with pytest.raises(ValidationError, match=field):
            SimulatorConfig(**bad)
    with pytest.raises(ValidationError, match=r"n_users x n_items = 1e\+11: .*at most 2e\+08 pairs"):
        SimulatorConfig(n_users=1_000_000, n_items=100_000)
    no_feedback = {"dislike_prob_on_facet": 0, "dislike_prob_background": 0, "positive_prob_min": 0, "positive_prob_max": 0}
    with pytest.raises(DataValidationError, match="reacted to none of the .* raise data.simulator's dislike_prob_on_facet"):
        simulate(SimulatorConfig(n_users=5, n_items=20, days=3, **no_feedback))
    stats = {"dislikes": 0, "events": 10, "samples": {"train": 0}}
    with pytest.raises(DataValidationError, match="raise data.simulator.dislike_prob_on_facet"):  # it named data.columns
        check_learnable(stats, "simulator")
