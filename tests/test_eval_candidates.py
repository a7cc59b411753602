"""Exposure-controlled evaluation: hand-computed Candidate Acc@1 / MRR / AUC, slates from exposures."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from conrec.data.samples import DAY
from conrec.eval.candidates import (
    SlateReport,
    bootstrap_ci,
    build_slates,
    candidate_acc_at_1,
    chance_levels,
    evaluate_scorer,
    pairwise_auc,
    reciprocal_rank,
    summarize,
    target_averages,
)
from conrec.stages import STAGE_REGISTRY

# --- metrics by hand


def test_candidate_acc_and_reciprocal_rank_by_hand():
    assert candidate_acc_at_1([0.9, 0.1, 0.5], 0) == 1.0
    assert candidate_acc_at_1([0.4, 0.1, 0.5], 0) == 0.0
    assert reciprocal_rank([0.9, 0.1, 0.5], 0) == 1.0
    assert reciprocal_rank([0.4, 0.1, 0.5], 0) == 0.5
    assert reciprocal_rank([0.0, 0.1, 0.5, 0.3], 0) == 0.25
    # ties are a random order: tied with 2 others at the top -> 1/3; ranks 1..3 -> mean(1, 1/2, 1/3)
    assert candidate_acc_at_1([0.5, 0.5, 0.5, 0.1], 0) == pytest.approx(1 / 3)
    assert reciprocal_rank([0.5, 0.5, 0.5, 0.1], 0) == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)
    # one strictly above, one tie: ranks 2 or 3
    assert candidate_acc_at_1([0.5, 0.9, 0.5], 0) == 0.0
    assert reciprocal_rank([0.5, 0.9, 0.5], 0) == pytest.approx((1 / 2 + 1 / 3) / 2)
    # the target need not be first
    assert candidate_acc_at_1([0.1, 0.9], 1) == 1.0
    with pytest.raises(ValueError, match="outside"):
        reciprocal_rank([0.1], 3)
    with pytest.raises(ValueError, match="finite"):
        candidate_acc_at_1([float("-inf"), 0.0], 0)


def test_auc_by_hand():
    # pos {3, 1}, neg {2, 1, 0}: pairs won 3>2,3>1,3>0,1>0 = 4, tie 1=1 -> 0.5; total 6
    assert pairwise_auc([3, 1], [2, 1, 0]) == pytest.approx(4.5 / 6)
    assert pairwise_auc([1], [0]) == 1.0 and pairwise_auc([0], [1]) == 0.0
    assert pairwise_auc([1, 1], [1]) == 0.5
    assert pairwise_auc([], [1]) is None and pairwise_auc([1], []) is None


def test_slate_intervals_resample_users_when_one_holds_several_slates():
    """Per user, one user's slates are resampled together (their outcomes are alike): wider than over points; a
    missing value (None) drops the point from its user's draws; one slate per user keeps the point draws."""
    users = [f"u{u}" for u in range(10) for _ in range(10)]
    acc = [float(u % 2) for u in range(10) for _ in range(10)]  # half the users: every slate right
    by_points = summarize({"CandAcc@1": acc}, n_boot=300, seed=0)
    by_users = summarize({"CandAcc@1": acc}, n_boot=300, seed=0, users=users)
    assert by_users["CandAcc@1_hi"] - by_users["CandAcc@1_lo"] > 2 * (by_points["CandAcc@1_hi"] - by_points["CandAcc@1_lo"])
    one_each = [f"u{k}" for k in range(100)]
    assert summarize({"CandAcc@1": acc}, n_boot=300, seed=0, users=one_each) == by_points
    auc: list[float | None] = [None, *acc[1:]]
    assert summarize({"AUC": auc}, n_boot=300, seed=0, users=users)["AUC_n"] == 99


def test_bootstrap_ci_is_seeded_and_brackets_the_mean():
    rng = np.random.default_rng(5)
    v = rng.random(200)
    lo, hi = bootstrap_ci(v, n_boot=500, seed=3)
    assert (lo, hi) == bootstrap_ci(v, n_boot=500, seed=3)
    assert lo < v.mean() < hi and hi - lo < 0.2
    assert bootstrap_ci(v, n_boot=500, seed=4) != (lo, hi)
    assert bootstrap_ci([0.7] * 10) == (pytest.approx(0.7), pytest.approx(0.7))
    with pytest.raises(ValueError):
        bootstrap_ci([])
    s = summarize({"AUC": [1.0, None, 0.0], "MRR": [None]}, n_boot=50, seed=0)
    assert s["AUC"] == 0.5 and s["AUC_n"] == 2 and "MRR" not in s


# --- slates from exposures

D0 = 10 * DAY  # midnight UTC of day 10


def _samples() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "sample_id": [0, 1, 2],
            "user_id": ["u1", "u2", "u3"],
            "ts": [D0 + 3600, D0 + 7200, D0 + 100],
            "hist_items": [["a"], ["x"], []],
            "hist_feedback": [[1], [-1], []],
            "next_neg": ["n1", "n2", "n3"],
        },
        schema={"sample_id": pl.Int64, "user_id": pl.String, "ts": pl.Int64, "hist_items": pl.List(pl.String),
                "hist_feedback": pl.List(pl.Int8), "next_neg": pl.String},
    )


def _exposures() -> pl.DataFrame:
    rows = [
        ("u1", "a", D0 + 60, 1),  # in u1's history: its outcome is known -> not a candidate
        ("u1", "n1", D0 + 3600, -1),  # the target
        ("u1", "b", D0 + 4000, 0),  # shown, no feedback
        ("u1", "c", D0 + 5000, 1),
        ("u1", "d", D0 + 6000, -1),  # another same-day dislike: AUC positive, not a slate candidate
        ("u1", "b", D0 + 8000, 0),  # shown twice: once
        ("u1", "e", D0 - 10, 0),  # the day before: not exposed "that day"
        ("u1", "f", D0 + DAY, 0),  # the day after
        ("u2", "n2", D0 + 7200, -1),  # u2 saw nothing else that day: no slate
        ("u3", "n3", D0 + 100, -1),
    ] + [("u3", f"o{j:02d}", D0 + 200 + j, 0) for j in range(30)]
    u, i, t, o = zip(*rows)
    return pl.DataFrame({"user_id": u, "item_id": i, "ts": t, "outcome": o},
                        schema={"user_id": pl.String, "item_id": pl.String, "ts": pl.Int64, "outcome": pl.Int8})


def test_slates_hold_the_target_and_same_day_non_disliked_exposures_outside_history():
    slates = build_slates(_samples(), _exposures(), n_candidates=20, seed=0)
    assert slates["sample_id"].to_list() == [0, 2]  # u2 had no other exposure that day
    s0 = slates.row(0, named=True)
    assert s0["candidates"] == ["n1", "b", "c"]
    assert s0["day_dislikes"] == ["n1", "d"] and s0["day_others"] == ["b", "c"]
    s2 = slates.row(1, named=True)
    assert s2["candidates"][0] == "n3" and len(s2["candidates"]) == 20 and len(set(s2["candidates"])) == 20
    assert set(s2["candidates"][1:]) < set(s2["day_others"]) and len(s2["day_others"]) == 30
    again = build_slates(_samples(), _exposures(), n_candidates=20, seed=0)
    assert again.equals(slates)
    alone = build_slates(_samples().filter(pl.col("sample_id") == 2), _exposures(), n_candidates=20, seed=0)
    assert alone["candidates"].to_list() == [s2["candidates"]]  # the draw does not depend on other samples
    other_seed = build_slates(_samples(), _exposures(), n_candidates=20, seed=1)
    assert other_seed.row(1, named=True)["candidates"] != s2["candidates"]
    with pytest.raises(ValueError, match="n_candidates"):
        build_slates(_samples(), _exposures(), n_candidates=1)


def test_evaluate_scorer_by_hand_and_independent_of_candidate_order():
    slates = build_slates(_samples(), _exposures(), n_candidates=5, seed=0)
    fixed = {"n1": 0.5, "b": 0.9, "c": 0.1, "d": 1.0, "n3": 2.0}

    def scorer(samples, sets):
        assert samples["sample_id"].to_list() == [0, 2] and len(sets) == 2
        return [np.array([fixed.get(i, 0.0) for i in items]) for items in sets]

    got = evaluate_scorer(scorer, _samples(), slates)
    # point 0: two targets against the competitors b (0.9), c (0.1): the next dislike n1 (0.5) ranks 2nd, the later
    # same-day dislike d (1.0) 1st -> Acc@1 (0 + 1) / 2, MRR (1/2 + 1) / 2; AUC pos {0.5, 1.0} vs neg {0.9, 0.1}: 3 of 4
    # point 2: n3 (2.0) above every other (0.0) -> rank 1; AUC 1
    assert got["CandAcc@1"] == [0.5, 1.0]
    assert got["MRR"] == [0.75, 1.0]
    assert got["AUC"] == [0.75, 1.0]
    # the order of the other candidates and of the day's exposures changes nothing (target stays first)
    shuffled = slates.with_columns(
        pl.concat_list(pl.col("candidates").list.first(), pl.col("candidates").list.slice(1).list.reverse()).alias("candidates"),
        pl.col("day_others").list.reverse(),
        pl.col("day_dislikes").list.reverse(),
    )
    assert shuffled["candidates"].to_list() != slates["candidates"].to_list()
    assert evaluate_scorer(scorer, _samples(), shuffled) == got


def test_every_same_day_dislike_is_a_target_against_the_same_competitors():
    """The next dislike is the earliest item of its slate: a model of the rating order that puts it first but has no
    idea which items are disliked (the later dislike d below every competitor) scored Acc@1 1 with it as the only
    target; with every dislike of the day as a target it scores the mean over them."""
    assert target_averages([3.0, 0.0], [1.0, 2.0]) == (0.5, pytest.approx((1 + 1 / 3) / 2))
    assert target_averages([1.0], [1.0, 0.0]) == (0.5, pytest.approx((1 + 1 / 2) / 2))  # a tie counts as random order
    with pytest.raises(ValueError):
        target_averages([], [1.0])


def test_chance_levels_by_hand():
    c = chance_levels([2, 4])
    assert c["CandAcc@1"] == pytest.approx((1 / 2 + 1 / 4) / 2)
    assert c["MRR"] == pytest.approx(((1 + 1 / 2) / 2 + (1 + 1 / 2 + 1 / 3 + 1 / 4) / 4) / 2)
    assert c["AUC"] == 0.5
    # a constant scorer (every score tied) gets exactly the chance level on each slate
    assert candidate_acc_at_1([0.0] * 4, 0) == chance_levels([4])["CandAcc@1"]
    assert reciprocal_rank([0.0] * 4, 0) == pytest.approx(chance_levels([4])["MRR"])


def test_report_markdown_has_a_row_per_model_with_cis():
    per_point = {"CandAcc@1": [1.0, 0.0, 1.0], "MRR": [1.0, 0.5, 1.0], "AUC": [1.0, 0.5, None]}
    m = summarize(per_point, n_boot=100, seed=0)
    md = SlateReport({"lm": m, "pop": m}, n_points=3, n_without_slate=1, mean_slate=20.0, seconds={}).markdown()
    assert "| lm | 0.667 [" in md and "| pop |" in md and "1 points had no candidate: an item the user was shown" in md


def test_one_slate_gets_no_interval_and_the_report_says_one_point():
    """Found by probing: one slate gave "1.000 [1.000, 1.000]" for every metric, under "1 evaluation points"."""
    m = summarize({"CandAcc@1": [1.0], "MRR": [1.0], "AUC": [None]}, n_boot=100, seed=0)
    assert m == {"CandAcc@1": 1.0, "CandAcc@1_n": 1.0, "MRR": 1.0, "MRR_n": 1.0}
    md = SlateReport({"pop": m}, n_points=1, n_without_slate=6, mean_slate=3.0, seconds={}).markdown()
    assert "| pop | 1.000 (no CI: one point) | 1.000 (no CI: one point) | – |" in md
    assert "1 evaluation point with a slate" in md and "[1.000, 1.000]" not in md


# --- exposures written by the data stage, slates evaluated by the eval stage


def test_data_stage_writes_every_simulated_exposure_and_eval_scores_the_same_slates(tmp_path):
    from rich.console import Console

    from conrec.config import load_config
    from conrec.data import stage as data_stage
    from conrec.data.simulator import simulate
    from conrec.io import read_json
    from conrec.runs import RunDir

    sim = {"n_users": 40, "n_items": 120, "days": 20}
    cfg = load_config(None, {
        "run_dir": str(tmp_path / "run"),
        "data": {"source": "simulator", "simulator": sim},
        "eval": {"baselines": ["popularity", "itemknn", "category"], "models": [], "slates": {"n_bootstrap": 200}},
    })
    data_stage.run(cfg.data, cfg.run_dir, console=Console(quiet=True))
    rd = RunDir(cfg.run_dir)
    exposures = pl.read_parquet(rd.exposures)
    truth = simulate(cfg.data.simulator).exposures
    assert exposures.height == truth.height and (exposures["outcome"] == 0).sum() > 0  # shown without feedback kept
    events = pl.read_parquet(rd.events)
    assert exposures.filter(pl.col("outcome") != 0).height == events.height

    STAGE_REGISTRY["eval"].call(cfg, console=Console(quiet=True))
    out = read_json(rd.eval / "slate_metrics.json")
    slates = pl.read_parquet(rd.eval / "slates.parquet")
    assert out["n_points"] == slates.height > 0
    assert set(out["metrics"]) == {"popularity", "itemknn", "category"}
    for m in out["metrics"].values():
        for k in ("CandAcc@1", "MRR", "AUC"):
            assert m[f"{k}_lo"] <= m[k] <= m[f"{k}_hi"]
        assert 0.0 <= m["CandAcc@1"] <= 1.0
    # the category rule knows each user's disliked categories, popularity does not: it must rank slates better
    assert out["metrics"]["category"]["AUC"] > out["metrics"]["popularity"]["AUC"]
    assert "Exposure-controlled evaluation" in rd.report.read_text()


def test_movielens100k_exposures_keep_the_lukewarm_ratings():
    pytest.importorskip("recbole", reason="MovieLens-100K ships inside recbole")
    from conrec.data.exposures import movielens100k_exposures

    e = movielens100k_exposures()
    assert e.height == 100_000
    assert e.group_by("outcome").len().sort("outcome")["len"].to_list() == [17_480, 27_145, 55_375]


def test_few_slates_get_a_note_for_the_summary_column_without_an_n(tmp_path):
    """Found by probing: one slate printed ``facet_rule ... 1.000`` and ``popularity ... 0.000`` in the summary's
    Cand. Acc@1 column, with nothing saying it was one point (the report's section did say so)."""
    from conrec.eval.baselines import make_baseline
    from conrec.eval.candidates import run_slate_eval
    from conrec.eval.config import EvalConfig
    from conrec.io import write_parquet
    from conrec.runs import RunDir

    rd = RunDir(tmp_path / "run")
    exposures = _exposures()
    write_parquet(exposures, rd.exposures)
    items = sorted(set(exposures["item_id"]) | {"x"})
    model = make_baseline("popularity")
    model.fit(exposures.rename({"outcome": "feedback"}), pl.DataFrame({"item_id": items}))
    notes: list[str] = []
    ecfg = EvalConfig(slates={"n_bootstrap": 50})
    report = run_slate_eval(ecfg, rd, _samples(), {"popularity": model}, [], lambda _n: None, items, None, notes)
    assert report is not None and report.n_points == 2
    assert notes == ["Exposure-controlled evaluation on 2 points with a slate (fewer than 30): Candidate Acc@1, MRR and AUC "
                     "(the summary's Cand. Acc@1) are 2 slates' outcomes, not an estimate."]


def test_slates_leave_out_every_item_rated_before_t_not_only_the_window():
    """A same-day dislike and a non-dislike rated before t but outside the history window (max_history shorter than
    the day's earlier events) are in the eval stage's seen set: neither is a target nor a competitor (a review of
    7 December 2026). Without the seen column the window alone is left out, as before."""
    from conrec.eval.seen import SEEN_COLUMN

    early = [("u1", "w1", D0 + 10, -1), ("u1", "w2", D0 + 20, 0)]  # rated before t, outside the 1-item window
    exp = pl.concat([_exposures(), pl.DataFrame(dict(zip(("user_id", "item_id", "ts", "outcome"), zip(*early))),
                                                schema=_exposures().schema)])
    samples = _samples().with_columns(pl.Series(SEEN_COLUMN, [["a", "w1", "w2"], ["x"], []], dtype=pl.List(pl.String)))
    row = build_slates(samples, exp, n_candidates=20, seed=0).filter(pl.col("sample_id") == 0).row(0, named=True)
    assert row["day_dislikes"] == ["n1", "d"]
    assert sorted(row["candidates"][1:]) == ["b", "c"]
    windowed = build_slates(samples.drop(SEEN_COLUMN), exp, n_candidates=20, seed=0).filter(pl.col("sample_id") == 0)
    assert windowed["day_dislikes"].to_list() == [["n1", "d", "w1"]]


def test_a_skipped_slate_eval_is_noted_once(tmp_path):
    """Found by probing: `conrec eval` printed "exposure-controlled evaluation skipped: ..." twice, once as it happened
    and once among the notes it prints under the results table. A caller that keeps the notes gets the note there only;
    one without a notes list still sees it on the console."""
    import io

    from rich.console import Console

    from conrec.eval.candidates import run_slate_eval
    from conrec.eval.config import EvalConfig
    from conrec.runs import RunDir

    rd = RunDir(tmp_path / "run")  # no exposures table
    for notes in ([], None):
        out = io.StringIO()
        assert run_slate_eval(EvalConfig(), rd, _samples(), {}, [], lambda _n: None, [], Console(file=out, width=300), notes) is None
        printed = out.getvalue().count("exposure-controlled evaluation skipped")
        if notes is None:
            assert printed == 1
        else:
            assert printed == 0 and len(notes) == 1 and "exposure-controlled evaluation skipped" in notes[0]
