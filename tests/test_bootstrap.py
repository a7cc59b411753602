"""Bootstrap CIs and paired differences on cases whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from conrec.eval.bootstrap import (
    UserResamples,
    mean_ci,
    paired_diff_ci,
    percentile_interval,
    resample,
    resample_indices,
    resample_users,
    resampled_means,
    resampled_unit,
)
from conrec.eval.compare import add_intervals, best_baseline


def test_constant_values_give_a_zero_width_interval() -> None:
    idx = resample_indices(50, 200, seed=1)
    assert mean_ci(np.full(50, 0.3), idx) == pytest.approx((0.3, 0.3))


def test_resampled_means_by_hand() -> None:
    values = np.array([1.0, 0.0, np.nan, 1.0])
    idx = np.array([[0, 1, 2, 3], [2, 2, 2, 2], [1, 1, 0, 2]])
    out = resampled_means(values, idx)
    assert out[0] == pytest.approx(2 / 3)  # NaN point outside the population
    assert np.isnan(out[1])  # drew only outside the population
    assert out[2] == pytest.approx(1 / 3)


def test_percentile_interval_by_hand() -> None:
    stats = np.arange(101, dtype=float)  # 0..100: the 2.5th / 97.5th percentiles are 2.5 and 97.5
    assert percentile_interval(stats, 0.95) == pytest.approx((2.5, 97.5))
    assert percentile_interval(np.array([np.nan, 1.0, 1.0]), 0.9) == (1.0, 1.0)
    with pytest.raises(ValueError):
        percentile_interval(stats, 1.0)


def test_seeded_and_paired() -> None:
    a, b = resample_indices(30, 100, seed=7), resample_indices(30, 100, seed=7)
    assert (a == b).all() and a.shape == (100, 30)
    rng = np.random.default_rng(0)
    base = rng.random(200)
    # model = reference + 0.1 on every point: the paired difference is exactly 0.1 in every resample
    idx = resample_indices(200, 300, seed=0)
    assert paired_diff_ci(base + 0.1, base, idx) == pytest.approx((0.1, 0.1))
    # while each model's own CI is wide
    lo, hi = mean_ci(base, idx)
    assert hi - lo > 0.05


def test_ci_coverage_of_a_bernoulli_mean_is_near_nominal() -> None:
    """Over many simulated data sets of 200 Bernoulli(0.3) points, ~95% of CIs contain 0.3."""
    rng = np.random.default_rng(123)
    idx = resample_indices(200, 400, seed=5)
    inside = 0
    trials = 200
    for _ in range(trials):
        lo, hi = mean_ci((rng.random(200) < 0.3).astype(float), idx)
        inside += lo <= 0.3 <= hi
    assert 0.88 <= inside / trials <= 0.99


def test_add_intervals_against_the_best_baseline() -> None:
    values = {
        "pop": {"FHR@20": np.r_[np.ones(40), np.zeros(60)]},  # 0.40
        "knn": {"FHR@20": np.r_[np.ones(30), np.zeros(70)]},  # 0.30
        "lm": {"FHR@20": np.r_[np.ones(50), np.zeros(50)]},  # 0.50, superset of pop's hits
    }
    metrics: dict[str, dict[str, object]] = {m: {} for m in values}
    assert best_baseline(values, ["pop", "knn"], "FHR@20") == "pop"
    add_intervals(metrics, values, ["pop", "knn"], ["FHR@20"], resamples=500, seed=0)
    assert "FHR@20_diff" not in metrics["pop"]  # the reference itself
    assert metrics["lm"]["FHR@20_vs"] == "pop" and metrics["lm"]["FHR@20_diff"] == pytest.approx(0.1)
    lo, hi = metrics["lm"]["FHR@20_diff_ci"]  # type: ignore[misc]
    assert 0.0 < lo <= 0.1 <= hi  # lm hits every point pop hits, plus 10: the paired CI excludes 0
    assert metrics["knn"]["FHR@20_diff"] == pytest.approx(-0.1)
    ci_lo, ci_hi = metrics["pop"]["FHR@20_ci"]  # type: ignore[misc]
    assert ci_lo < 0.4 < ci_hi
    with pytest.raises(ValueError, match="differ in length"):
        add_intervals({}, {"a": {"FHR@20": np.ones(3)}, "b": {"FHR@20": np.ones(4)}}, ["a"], ["FHR@20"])


def test_no_baseline_marks_no_row_as_the_reference_and_one_point_gets_no_interval() -> None:
    """With eval.baselines: [] every LM row read "ref"/"(best baseline)"; with one evaluation point a
    zero-width interval was printed as a difference whose CI "excludes 0"."""
    from conrec.eval.report import diff_cell
    from conrec.eval.summary import delta_cell

    values = {"sft": {"FHR@20": np.r_[np.ones(5), np.zeros(5)]}, "grpo": {"FHR@20": np.ones(10)}}
    metrics: dict[str, dict[str, object]] = {m: {"FHR@20": float(v["FHR@20"].mean())} for m, v in values.items()}
    add_intervals(metrics, values, [], ["FHR@20"], resamples=50)
    assert all("FHR@20_ci" in row for row in metrics.values())
    assert {delta_cell(row, "FHR@20") for row in metrics.values()} == {diff_cell(row, "FHR@20") for row in metrics.values()} == {"–"}
    add_intervals(metrics, values, ["sft"], ["FHR@20"], resamples=50)
    assert delta_cell(metrics["sft"], "FHR@20") == "ref" and diff_cell(metrics["sft"], "FHR@20") == "(best baseline)"
    assert delta_cell(metrics["grpo"], "FHR@20").startswith("+0.500")
    one: dict[str, dict[str, object]] = {"pop": {"FHR@20": 1.0}, "lm": {"FHR@20": 0.0}}
    add_intervals(one, {"pop": {"FHR@20": np.ones(1)}, "lm": {"FHR@20": np.zeros(1)}}, ["pop"], ["FHR@20"], resamples=50)
    assert one == {"pop": {"FHR@20": 1.0}, "lm": {"FHR@20": 0.0}} and delta_cell(one["lm"], "FHR@20") == "–"
    # rows written before ``_ref`` existed: the reference is the row with an interval and no difference, as then
    old = {"FHR@20": 0.4, "FHR@20_ci": [0.3, 0.5], "ci_level": 0.95}
    assert delta_cell(old, "FHR@20") == "ref" and diff_cell({**old, "FHR@20_diff": 0.1, "FHR@20_vs": "pop"}, "FHR@20").startswith("+0.100")


def test_a_metric_whose_own_population_is_one_point_gets_no_interval() -> None:
    """LUF and LIF are means over their own points (users with few dislikes): four evaluation points of which
    one is LUF's gave LUF "1.000 [1.000, 1.000]" and a difference "+1.000 [1.000, 1.000]" that "excludes 0"."""
    nan = np.nan
    values = {"pop": {"LUF@5": np.array([0.0, nan, nan, nan]), "FHR@5": np.array([0.0, 1, 0, 1])},
              "lm": {"LUF@5": np.array([1.0, nan, nan, nan]), "FHR@5": np.array([1.0, 1, 1, 0])}}
    metrics: dict[str, dict[str, object]] = {"pop": {}, "lm": {}}
    add_intervals(metrics, values, ["pop"], ["LUF@5", "FHR@5"], resamples=50)
    assert not any(key.startswith("LUF") for row in metrics.values() for key in row)
    assert "FHR@5_ci" in metrics["lm"] and "FHR@5_diff_ci" in metrics["lm"]
    values["pop"]["LUF@5"][1] = 1.0  # two points: intervals again
    values["lm"]["LUF@5"][1] = 0.0
    add_intervals(metrics, values, ["pop"], ["LUF@5"], resamples=50)
    assert "LUF@5_ci" in metrics["lm"] and "LUF@5_diff_ci" in metrics["lm"]


def test_add_intervals_skips_a_metric_with_an_empty_population() -> None:
    values = {"a": {"LUF@5": np.full(4, np.nan)}, "b": {"LUF@5": np.full(4, np.nan)}}
    metrics: dict[str, dict[str, object]] = {"a": {}, "b": {}}
    add_intervals(metrics, values, ["a"], ["LUF@5"], resamples=10)
    assert metrics == {"a": {}, "b": {}}


def test_tables_label_the_intervals_with_the_level_they_were_computed_at() -> None:
    """eval.bootstrap.level: 0.5 gave 50% intervals under '[95% CI]' headers (and stars 'CI excludes 0')."""
    from rich.console import Console

    from conrec.eval.report import ci_table
    from conrec.eval.summary import summary_table

    rng = np.random.default_rng(0)
    values = {m: {"FHR@20": rng.integers(0, 2, 200).astype(float)} for m in ("pop", "lm")}
    metrics: dict[str, dict[str, object]] = {m: {"FHR@20": float(v["FHR@20"].mean())} for m, v in values.items()}
    add_intervals(metrics, values, ["pop"], ["FHR@20"], resamples=200, level=0.5)
    assert metrics["lm"]["ci_level"] == 0.5
    table = ci_table(metrics, [20])  # type: ignore[arg-type]
    assert table is not None and "FHR@20 [50% CI]" in table and "95%" not in table
    console = Console(record=True, width=120)
    console.print(summary_table(metrics, [20]))
    text = console.export_text()
    assert "50% CI" in text and "95% CI" not in text and "its 50% CI excludes" in " ".join(text.split())


def test_a_difference_on_fewer_than_small_n_points_is_not_marked_significant() -> None:
    """Found by probing: two points, popularity hit both and the LM neither: a zero-width interval [-1, -1] and
    ``-1.000*`` in the summary, a "significant" difference from two users."""
    from conrec.eval.compare import SMALL_N
    from conrec.eval.summary import delta_cell

    for n, star in ((2, False), (SMALL_N - 1, False), (SMALL_N, True)):
        metrics: dict[str, dict[str, object]] = {"pop": {"FHR@20": 1.0, "n_samples": float(n)}, "sft": {"FHR@20": 0.0, "n_samples": float(n)}}
        add_intervals(metrics, {"pop": {"FHR@20": np.ones(n)}, "sft": {"FHR@20": np.zeros(n)}}, ["pop"], ["FHR@20"], resamples=50)
        assert metrics["sft"]["FHR@20_diff_ci"] == [-1.0, -1.0]  # the interval is still given: it is what the bootstrap says
        assert delta_cell(metrics["sft"], "FHR@20") == "-1.000" + ("*" if star else ""), n


def test_user_resamples_take_all_of_a_drawn_users_points_as_a_ratio_of_sums() -> None:
    # points 0, 1 are user a's; 2 is b's (outside the population); 3 is c's
    values = np.array([1.0, 0.0, np.nan, 1.0])
    user_of = np.array([0, 0, 1, 2])
    draws = UserResamples(counts=np.array([[1, 1, 1], [0, 3, 0], [2, 0, 1], [0, 1, 2]]), user_of=user_of)
    out = resampled_means(values, draws)
    assert out[0] == pytest.approx(2 / 3)  # a's two points and c's one; b's is outside the population
    assert np.isnan(out[1])  # drew only b
    assert out[2] == pytest.approx(3 / 5)  # a twice (1 + 0 each), c once: (2 + 1) / (4 + 1)
    assert out[3] == pytest.approx(1.0)  # c twice, b once


def test_user_resamples_draw_every_user_as_often_as_there_are_users() -> None:
    users = ["a", "a", "b", "c", "c", "c"]
    r = resample_users(users, resamples=50, seed=3)
    assert r.counts.shape == (50, 3) and (r.counts.sum(axis=1) == 3).all()
    assert r.user_of.tolist() == [0, 0, 1, 2, 2, 2]
    assert (resample_users(users, 50, seed=3).counts == r.counts).all()  # seeded


def test_one_point_per_user_keeps_the_point_draws_of_before() -> None:
    """The global split (one point per user): exactly the draws and figures of the point bootstrap."""
    rng = np.random.default_rng(4)
    values = {m: {"FHR@20": (rng.random(80) < p).astype(float)} for m, p in (("pop", 0.4), ("lm", 0.5))}
    by_points: dict[str, dict[str, object]] = {m: {} for m in values}
    by_users: dict[str, dict[str, object]] = {m: {} for m in values}
    add_intervals(by_points, values, ["pop"], ["FHR@20"], resamples=300, seed=2)
    add_intervals(by_users, values, ["pop"], ["FHR@20"], resamples=300, seed=2, users=[f"u{k}" for k in range(80)])
    assert by_users == by_points
    assert resampled_unit([f"u{k}" for k in range(80)]) == "points" and resampled_unit(None) == "points"
    assert (resample(80, [f"u{k}" for k in range(80)], 300, 2) == resample_indices(80, 300, 2)).all()  # type: ignore[operator]


def test_several_points_per_user_resample_the_users_and_widen_the_interval() -> None:
    """20 users of 20 points each, every user's points alike (all hits or all misses): there are 20 outcomes, not
    400, and the point bootstrap's interval was about sqrt(20) times too narrow."""
    users = [f"u{u}" for u in range(20) for _ in range(20)]
    hits = np.repeat((np.arange(20) % 2).astype(float), 20)  # half the users hit on every point
    values = {"pop": {"FHR@20": hits}, "lm": {"FHR@20": np.clip(hits + np.repeat(np.arange(20) == 0, 20), 0, 1)}}
    by_points: dict[str, dict[str, object]] = {m: {} for m in values}
    by_users: dict[str, dict[str, object]] = {m: {} for m in values}
    add_intervals(by_points, values, ["pop"], ["FHR@20"], resamples=500, seed=0)
    add_intervals(by_users, values, ["pop"], ["FHR@20"], resamples=500, seed=0, users=users)
    assert resampled_unit(users) == "users"
    (plo, phi), (ulo, uhi) = by_points["pop"]["FHR@20_ci"], by_users["pop"]["FHR@20_ci"]  # type: ignore[misc]
    assert uhi - ulo > 3 * (phi - plo)
    # paired over users: lm = pop plus user u0's 20 points, a difference of 0.05 that one user carries
    dlo, dhi = by_users["lm"]["FHR@20_diff_ci"]  # type: ignore[misc]
    assert by_users["lm"]["FHR@20_diff"] == pytest.approx(0.05) and dlo == pytest.approx(0.0) and dhi > 0.05
    plo_d, _ = by_points["lm"]["FHR@20_diff_ci"]  # type: ignore[misc]
    assert plo_d > 0.0  # resampled as 400 independent points, one user's luck looked significant
