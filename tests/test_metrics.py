"""Metrics checked by hand on tiny examples."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from conrec.data.samples import DAY
from conrec.errors import DataValidationError
from conrec.eval.metrics import (
    POINT_METRICS,
    catalog_coverage,
    evaluate,
    fhr_at_k,
    fprec_at_k,
    future_recall_at_k,
    higher_is_better,
    horizon_key,
    hr_at_k,
    invalid_rate,
    long_tail_items,
    ndcg_at_k,
    parse_horizon_key,
    point_inputs,
    point_values,
)


def test_fhr_is_a_hit_ratio_and_fprec_a_slot_share() -> None:
    ranked = ["a", "b", "c", "d"]
    assert fhr_at_k(ranked, {"b", "d", "z"}, 2) == 1.0  # b is in the top 2: a hit
    assert fhr_at_k(ranked, ["d"], 3) == 0.0  # d is outside the top 3
    assert fhr_at_k(ranked, ["d"], 4) == 1.0
    assert fprec_at_k(ranked, {"b", "d", "z"}, 2) == 0.5  # b hit, a miss
    assert fprec_at_k(ranked, {"b", "d", "z"}, 4) == 0.5  # b, d of 4
    assert fprec_at_k(ranked, ["d"], 3) == 0.0


def test_fhr_short_list_and_empty_future() -> None:
    assert fprec_at_k(["a", "b"], {"a", "b"}, 5) == pytest.approx(2 / 5)  # missing slots are misses
    assert fhr_at_k(["a", "b"], {"b"}, 5) == 1.0
    assert fhr_at_k(["a", "b"], set(), 2) == 0.0 and fprec_at_k(["a", "b"], set(), 2) == 0.0
    assert fhr_at_k([], {"a"}, 3) == 0.0


def test_duplicates_earn_credit_once() -> None:
    assert fprec_at_k(["a", "a", "a"], {"a"}, 3) == pytest.approx(1 / 3)
    assert future_recall_at_k(["a", "a"], {"a", "b"}, 2) == 0.5
    assert catalog_coverage([["a", "a"], ["a", "b"]], n_items=4, k=2) == 0.5


def test_future_recall() -> None:
    assert future_recall_at_k(["a", "b", "c"], {"a", "c", "x", "y"}, 3) == 0.5
    assert future_recall_at_k(["a", "b", "c"], {"a", "c", "x", "y"}, 1) == 0.25
    assert future_recall_at_k(["a"], [], 1) == 0.0
    assert future_recall_at_k(["a"], ["a", "a"], 1) == 1.0  # the future is a set


def test_hr_and_ndcg_single_target() -> None:
    ranked = ["a", "b", "c"]
    assert hr_at_k(ranked, "c", 3) == 1.0
    assert hr_at_k(ranked, "c", 2) == 0.0
    assert hr_at_k(ranked, "c", 10) == 1.0
    assert ndcg_at_k(ranked, "a", 3) == 1.0
    assert ndcg_at_k(ranked, "b", 3) == pytest.approx(1 / math.log2(3))
    assert ndcg_at_k(ranked, "c", 3) == pytest.approx(0.5)
    assert ndcg_at_k(ranked, "c", 2) == 0.0
    assert ndcg_at_k(["a", "b", "b"], "b", 3) == pytest.approx(1 / math.log2(3))  # first occurrence counts


def test_coverage_and_invalid_rate() -> None:
    assert catalog_coverage([["a", "b", "c"], ["c", "d"]], n_items=10, k=2) == pytest.approx(0.4)  # a b c d
    assert catalog_coverage([], n_items=10, k=2) == 0.0
    assert invalid_rate(1, 4) == 0.25
    assert invalid_rate(0, 0) == 0.0
    with pytest.raises(ValueError):
        invalid_rate(5, 4)


def test_bad_k_is_an_error() -> None:
    for fn in (lambda: fhr_at_k(["a"], {"a"}, 0), lambda: hr_at_k(["a"], "a", 0), lambda: ndcg_at_k(["a"], "a", -1)):
        with pytest.raises(ValueError, match="k must be"):
            fn()


def test_horizon_keys_round_trip() -> None:
    assert horizon_key("FHR", 20, 7.0) == "FHR@20|N=7d"
    assert parse_horizon_key(horizon_key("FHR", 20, 0.5)) == ("FHR", 20, 0.5)
    assert parse_horizon_key("FHR@20") is None


def _samples() -> pl.DataFrame:
    t = 1_000 * DAY
    return pl.DataFrame(
        {
            "sample_id": [0, 1, 2],
            "ts": [t, t, t],
            "next_neg": ["a", "x", "p"],
            "future_negs": [["a", "b"], ["x"], ["p", "q"]],
            "later_negs": [["a", "b", "c"], ["x"], ["p", "q", "r"]],
            "later_neg_ts": [[t, t + DAY, t + 10 * DAY], [t], [t, t + 2 * DAY, t + 3 * DAY]],
        },
        schema_overrides={"sample_id": pl.Int64, "ts": pl.Int64, "later_neg_ts": pl.List(pl.Int64)},
    )


def test_evaluate_three_samples_by_hand() -> None:
    preds = pl.DataFrame(
        {"sample_id": [0, 1], "items": [["b", "a"], ["y", "x"]], "n_invalid": [1, 0]},
        schema={"sample_id": pl.Int64, "items": pl.List(pl.String), "n_invalid": pl.Int64},
    )  # sample 2 has no prediction: all misses
    m = evaluate(preds, _samples(), ks=[1, 2], n_items=10)
    assert m["n_samples"] == 3
    # k=1: sample0 "b" in future (hit), sample1 "y" not, sample2 nothing
    assert m["FHR@1"] == pytest.approx(1 / 3)
    assert m["FPrec@1"] == pytest.approx(1 / 3)
    assert m["HR@1"] == pytest.approx(0.0)  # next_negs a, x are at rank 2
    assert m["NDCG@1"] == 0.0
    # k=2: hits 1, 1, 0 -> FHR 2/3; FPrec 2/2, 1/2, 0 -> 0.5; recall 2/2, 1/1, 0/2 -> 2/3; HR 1, 1, 0
    assert m["FHR@2"] == pytest.approx(2 / 3)
    assert m["FPrec@2"] == pytest.approx(0.5)
    assert m["FRecall@2"] == pytest.approx(2 / 3)
    assert m["HR@2"] == pytest.approx(2 / 3)
    assert m["NDCG@2"] == pytest.approx(2 / math.log2(3) / 3)
    assert m["Coverage@1"] == pytest.approx(0.2)  # b, y
    assert m["Coverage@2"] == pytest.approx(0.4)  # b, a, y, x
    assert m["invalid_rate"] == pytest.approx(1 / 5)  # 1 invalid among 4 returned + 1 invalid
    assert "LUF@1" not in m and "LIF@1" not in m  # no histories, no training counts: not computable


def test_evaluate_recomputes_future_at_a_horizon() -> None:
    preds = pl.DataFrame({"sample_id": [0, 1, 2], "items": [["c"], ["x"], ["r"]]})
    default = evaluate(preds, _samples(), ks=[1], n_items=10)
    assert default["FHR@1"] == pytest.approx(1 / 3)  # only x; c and r are outside future_negs / N
    one_day = evaluate(preds, _samples(), ks=[1], n_items=10, horizon_days=1)
    assert one_day["FHR@1"] == pytest.approx(1 / 3)  # x (same time)
    four_days = evaluate(preds, _samples(), ks=[1], n_items=10, horizon_days=4)
    assert four_days["FHR@1"] == pytest.approx(2 / 3)  # x and r (3 days later)
    eleven = evaluate(preds, _samples(), ks=[1], n_items=10, horizon_days=11)
    assert eleven["FHR@1"] == pytest.approx(1.0)
    assert "invalid_rate" in eleven and eleven["invalid_rate"] == 0.0


def test_evaluate_rejects_unknown_or_duplicate_sample_ids() -> None:
    with pytest.raises(DataValidationError, match="not among the evaluated samples"):
        evaluate(pl.DataFrame({"sample_id": [7], "items": [["a"]]}), _samples(), ks=[1], n_items=5)
    with pytest.raises(DataValidationError, match="duplicate sample_id"):
        evaluate(pl.DataFrame({"sample_id": [0, 0], "items": [["a"], ["b"]]}), _samples(), ks=[1], n_items=5)
    with pytest.raises(DataValidationError, match=r"missing column\(s\) \['items'\]"):
        evaluate(pl.DataFrame({"sample_id": [0]}), _samples(), ks=[1], n_items=5)


def test_evaluate_with_no_predictions_scores_zero() -> None:
    empty = pl.DataFrame(schema={"sample_id": pl.Int64, "items": pl.List(pl.String)})
    m = evaluate(empty, _samples(), ks=[3], n_items=5)
    assert m["FHR@3"] == 0.0 and m["HR@3"] == 0.0 and m["n_samples"] == 3


def _tail_samples() -> pl.DataFrame:
    """4 points: hist dislikes 0, 2, 3, 5 (users 0 and 1 long-tail: < 3)."""
    t = 1_000 * DAY
    return pl.DataFrame(
        {
            "sample_id": [0, 1, 2, 3],
            "ts": [t] * 4,
            "hist_items": [["h"], ["h", "i", "j"], ["h", "i", "j"], ["h", "i", "j", "k", "l"]],
            "hist_feedback": [[1], [-1, 1, -1], [-1, -1, -1], [-1, -1, -1, -1, -1]],
            "next_neg": ["a", "b", "c", "d"],
            "future_negs": [["a", "rare1"], ["b"], ["c", "rare2"], ["d"]],
        },
        schema_overrides={"sample_id": pl.Int64, "ts": pl.Int64, "hist_feedback": pl.List(pl.Int8)},
    )


def test_luf_and_lif_by_hand() -> None:
    preds = pl.DataFrame({"sample_id": [0, 1, 2, 3], "items": [["a", "x"], ["x", "y"], ["rare2", "c"], ["d", "x"]]})
    counts = {"a": 9, "b": 5, "c": 7, "d": 6, "rare1": 4, "x": 100}  # rare2 absent: 0 training dislikes
    m = evaluate(preds, _tail_samples(), ks=[1, 2], n_items=10, train_dislike_counts=counts)
    # FHR@1: hits a (0), x (1: miss), rare2 (2), d (3) -> 3/4
    assert m["FHR@1"] == pytest.approx(3 / 4)
    # LUF: long-tail users are points 0 (0 dislikes) and 1 (2 dislikes): hit, miss -> 1/2
    assert m["LUF@1"] == pytest.approx(1 / 2) and m["LUF@2"] == pytest.approx(1 / 2)
    # LIF: long-tail future items: rare1 (4 < 5) at point 0, rare2 (0) at point 2; b has 5 (not tail).
    # point 0 recommends a, x: no tail hit; point 2 recommends rare2 first: hit -> 1/2 over 2 points
    assert m["LIF@1"] == pytest.approx(1 / 2) and m["LIF@2"] == pytest.approx(1 / 2)


def test_point_values_mark_points_outside_the_population_with_nan() -> None:
    preds = pl.DataFrame({"sample_id": [0, 1, 2, 3], "items": [["a"], ["b"], ["x"], ["x"]]})
    inputs, _ = point_inputs(preds, _tail_samples(), train_dislike_counts={"rare1": 9})
    assert inputs.hist_negatives is not None and inputs.hist_negatives.tolist() == [0, 2, 3, 5]
    assert inputs.long_tail is not None and "rare2" in inputs.long_tail and "rare1" not in inputs.long_tail
    v = point_values(inputs, [1])
    assert v["FHR@1"].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert np.isnan(v["LUF@1"][2:]).all() and v["LUF@1"][:2].tolist() == [1.0, 1.0]
    # rare1 has 9 training dislikes (head); a, b, c, d, rare2 are absent from the counts -> long-tail,
    # so every point has a long-tail future item and LIF equals FHR here
    assert v["LIF@1"].tolist() == [1.0, 1.0, 0.0, 0.0]


def test_long_tail_items_threshold_is_strict() -> None:
    assert long_tail_items({"a": 4, "b": 5}, ["a", "b", "c"]) == {"a", "c"}
    assert long_tail_items({"a": 4, "b": 5}, ["a", "b"], threshold=6) == {"a", "b"}


def test_registry_carries_direction_and_every_headline_metric() -> None:
    assert {"FHR", "FPrec", "FRecall", "HR", "NDCG", "LUF", "LIF"} <= set(POINT_METRICS)
    assert all(m.higher_is_better for m in POINT_METRICS.values())
    assert higher_is_better("FHR@20") and higher_is_better("FHR@20|N=7d")
    assert not higher_is_better("invalid_rate")


def test_metrics_with_an_empty_population_are_left_out() -> None:
    preds = pl.DataFrame({"sample_id": [3], "items": [["d"]]})
    only_heavy = _tail_samples().filter(pl.col("sample_id") == 3)  # 5 dislikes before t: no long-tail user
    m = evaluate(preds, only_heavy, ks=[1], n_items=10, train_dislike_counts={"d": 50})  # d is a head item
    assert m["FHR@1"] == 1.0 and "LUF@1" not in m and "LIF@1" not in m


def test_luf_reads_every_dislike_before_t_not_the_history_window() -> None:
    """A point whose window shows 0 dislikes but whose user gave 4 before t is not long-tail."""
    samples = _tail_samples().with_columns(hist_negatives=pl.Series([0, 2, 3, 4], dtype=pl.Int64))
    samples = samples.with_columns(pl.Series("hist_feedback", [[1], [-1, 1, -1], [-1, -1, -1], [1]], dtype=pl.List(pl.Int8)))
    inputs, _ = point_inputs(pl.DataFrame({"sample_id": [0, 1, 2, 3], "items": [["a"], ["x"], ["x"], ["d"]]}), samples)
    assert inputs.hist_negatives is not None and inputs.hist_negatives.tolist() == [0, 2, 3, 4]
    v = point_values(inputs, [1], ["LUF"])["LUF@1"]
    assert v[:2].tolist() == [1.0, 0.0] and np.isnan(v[2:]).all()  # by the window, point 3 (d: a hit) would count


def test_evaluate_refuses_a_k_no_prediction_list_reaches() -> None:
    """evaluate(top-5 lists, ks=[50]) reported FHR@50 = FHR@5 without a word."""
    preds = pl.DataFrame({"sample_id": [0, 1, 2], "items": [["b", "a"], ["y", "x"], ["p"]]})
    with pytest.raises(DataValidationError, match=r"K=3 is longer than every prediction list \(at most 2 items\)"):
        evaluate(preds, _samples(), ks=[1, 3], n_items=10)
    # lists short only because the catalogue minus the history has no more items: K is fine
    samples = _samples().with_columns(hist_items=pl.Series([["c"], ["c"], ["c"]]))
    small = pl.DataFrame({"sample_id": [0, 1, 2], "items": [["a", "b"], ["x", "a"], ["p", "q"]]})
    assert evaluate(small, samples, ks=[1, 5], n_items=3)["FHR@5"] == pytest.approx(1.0)
    with pytest.raises(DataValidationError, match="K=5"):
        evaluate(small, samples, ks=[5], n_items=4)  # one more item was there to rank
