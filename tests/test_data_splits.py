"""Time split and future-window labels on hand-made logs where the right answer is known."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from conrec.data.config import SplitConfig
from conrec.data.samples import DAY, SAMPLE_COLUMNS, future_set
from conrec.data.splits import (
    Cutoffs,
    attach_history_and_labels,
    build_samples,
    order_events,
    select_points,
    time_cutoffs,
)

from builders import day_events


def _samples(rows, cuts: Cutoffs, **cfg) -> pl.DataFrame:
    ev = day_events(rows)
    cfg.setdefault("train_points", "recent")  # these tests pin the per-event rules; periodic ones below
    split = SplitConfig(**cfg)
    ordered = order_events(ev)
    return attach_history_and_labels(ordered, select_points(ordered, cuts, split), split)


def test_schema_and_dtypes_follow_the_contract():
    s = _samples([("u", "a", 0, 1), ("u", "b", 1, -1)], Cutoffs(valid=100 * DAY, test=200 * DAY))
    assert tuple(s.columns) == SAMPLE_COLUMNS
    assert s.schema["hist_feedback"] == pl.List(pl.Int8) and s.schema["later_neg_ts"] == pl.List(pl.Int64)
    assert s["sample_id"].to_list() == list(range(s.height))


def test_train_sample_history_next_and_future_sets():
    rows = [
        ("u", "p1", 0, 1),
        ("u", "n1", 1, -1),
        ("u", "p2", 2, 1),
        ("u", "n2", 3, -1),
        ("u", "n3", 9, -1),  # 8 days after n1: outside n1's 7-day window
        ("u", "n4", 40, -1),  # beyond max_horizon 30 days of n1
    ]
    s = _samples(rows, Cutoffs(valid=100 * DAY, test=200 * DAY), horizon_days=7, max_horizon_days=30)
    first = s.row(0, named=True)
    assert first["split"] == "train" and first["ts"] == 1 * DAY
    assert first["hist_items"] == ["p1"] and first["hist_feedback"] == [1]
    assert first["next_neg"] == "n1"
    assert first["future_negs"] == ["n1", "n2"]
    assert first["later_negs"] == ["n1", "n2", "n3"]
    assert first["later_neg_ts"] == [1 * DAY, 3 * DAY, 9 * DAY]
    assert first["hist_ts"] == [0]
    # positives after n1 inside its 7-day window: p2 (day 2); p1 (day 0) is history, not future
    assert first["future_pos"] == ["p2"]
    # any horizon <= max_horizon is derivable from later_negs, and agrees with future_negs at N
    assert future_set(first["later_negs"], first["later_neg_ts"], first["ts"], 7) == set(first["future_negs"])
    assert future_set(first["later_negs"], first["later_neg_ts"], first["ts"], 2) == {"n1"}
    second = s.row(1, named=True)
    assert second["hist_items"] == ["p1", "n1", "p2"] and second["hist_feedback"] == [1, -1, 1]
    assert second["future_negs"] == ["n2", "n3"]


def test_no_label_crosses_a_cutoff_and_no_history_event_is_a_label():
    rows = [("u", "p0", 0, 1), ("u", "n1", 1, -1), ("u", "n2", 5, -1), ("u", "n3", 6, -1), ("u", "n4", 12, -1), ("u", "n5", 13, -1)]
    cuts = Cutoffs(valid=5 * DAY, test=12 * DAY)
    s = _samples(rows, cuts, horizon_days=7, max_horizon_days=30)
    by_split = {r["split"]: r for r in s.iter_rows(named=True) if r["split"] != "train"}
    train = s.filter(pl.col("split") == "train").row(0, named=True)
    assert train["next_neg"] == "n1"
    assert train["future_negs"] == ["n1"]  # n2 is on the valid cut-off: not visible to training
    assert all(t < cuts.valid for t in train["later_neg_ts"])
    assert by_split["valid"]["next_neg"] == "n2"
    assert by_split["valid"]["later_negs"] == ["n2", "n3"]  # n4 is on the test cut-off
    assert by_split["test"]["next_neg"] == "n4" and by_split["test"]["later_negs"] == ["n4", "n5"]
    assert by_split["test"]["hist_items"] == ["p0", "n1", "n2", "n3"]  # history may use earlier periods
    for r in s.iter_rows(named=True):
        assert not set(r["hist_items"]) & set(r["later_negs"])


def test_one_valid_and_one_test_sample_per_user_the_first_in_the_window():
    rows = [("u", "p", 0, 1)] + [("u", f"v{i}", 5 + i * 0.1, -1) for i in range(3)] + [("u", f"t{i}", 12 + i * 0.1, -1) for i in range(3)]
    s = _samples(rows, Cutoffs(valid=5 * DAY, test=12 * DAY))
    assert s.filter(pl.col("split") == "valid")["next_neg"].to_list() == ["v0"]
    assert s.filter(pl.col("split") == "test")["next_neg"].to_list() == ["t0"]
    assert s.filter(pl.col("split") == "test").row(0, named=True)["future_negs"] == ["t0", "t1", "t2"]


def test_train_keeps_the_most_recent_samples_per_user():
    rows = [("u", "p", 0, 1)] + [("u", f"n{i}", 1 + i, -1) for i in range(6)]
    s = _samples(rows, Cutoffs(valid=100 * DAY, test=200 * DAY), max_train_samples_per_user=2)
    assert s["next_neg"].to_list() == ["n4", "n5"]


def test_periodic_train_points_are_each_users_first_dislike_of_each_window():
    # valid cut-off at day 21, windows of 7 days: [14, 21), [7, 14), [0, 7)
    rows = [("u", "p", 0, 1), ("u", "a", 1, -1), ("u", "b", 2, -1), ("u", "c", 8, -1), ("u", "d", 15, -1), ("u", "e", 20.5, -1)]
    rows += [("v", "p", 0, 1), ("v", "x", 20, -1)]
    s = _samples(rows, Cutoffs(valid=21 * DAY, test=200 * DAY), train_points="periodic", train_period_days=7)
    assert s.filter(pl.col("user_id") == "u")["next_neg"].to_list() == ["a", "c", "d"]
    assert s.filter(pl.col("user_id") == "v")["next_neg"].to_list() == ["x"]
    # labels are still every dislike of the next 7 days (b is a's future, not a point of its own)
    assert s.row(0, named=True)["future_negs"] == ["a", "b"]


def test_min_history_and_max_history():
    rows = [("u", "n0", 0, -1), ("u", "p1", 1, 1), ("u", "p2", 2, 1), ("u", "n3", 3, -1), ("v", "n0", 0, -1)]
    s = _samples(rows, Cutoffs(valid=100 * DAY, test=200 * DAY), min_history=1, max_history=2)
    assert s["next_neg"].to_list() == ["n3"]  # both first events have no history and are skipped
    assert s.row(0, named=True)["hist_items"] == ["p1", "p2"]  # the most recent 2, oldest first
    s0 = _samples(rows, Cutoffs(valid=100 * DAY, test=200 * DAY), min_history=0)
    assert s0.height == 3 and s0.filter(pl.col("user_id") == "v").row(0, named=True)["hist_items"] == []


def test_ties_are_broken_by_row_order():
    # Same timestamp for three events: row order decides what is history and what is label.
    rows = [("u", "p", 0, 1), ("u", "n1", 1, -1), ("u", "q", 1, 1), ("u", "n2", 1, -1)]
    s = _samples(rows, Cutoffs(valid=100 * DAY, test=200 * DAY))
    a, b = s.iter_rows(named=True)
    assert a["hist_items"] == ["p"] and a["later_negs"] == ["n1", "n2"]
    assert b["hist_items"] == ["p", "n1", "q"] and b["later_negs"] == ["n2"]
    # future positives too (the samples contract): q, at n1's very second but later in the input, is n1's future positive
    assert a["future_pos"] == ["q"] and b["future_pos"] == []


def test_repeated_dislikes_of_one_item_are_one_future_item():
    rows = [("u", "p", 0, 1), ("u", "n", 1, -1), ("u", "n", 2, -1), ("u", "m", 3, -1)]
    s = _samples(rows, Cutoffs(valid=100 * DAY, test=200 * DAY), max_train_samples_per_user=1)
    r = s.row(0, named=True)
    assert r["future_negs"] == ["m"]
    first = _samples(rows, Cutoffs(valid=100 * DAY, test=200 * DAY)).row(0, named=True)
    assert first["future_negs"] == ["n", "m"] and first["later_negs"] == ["n", "n", "m"]


def test_users_do_not_leak_into_each_other():
    rows = [("a", "p", 0, 1), ("a", "x", 1, -1), ("b", "p", 0, 1), ("b", "y", 1.5, -1), ("b", "z", 2, -1)]
    s = _samples(rows, Cutoffs(valid=100 * DAY, test=200 * DAY))
    a = s.filter(pl.col("user_id") == "a").row(0, named=True)
    assert a["later_negs"] == ["x"] and a["hist_items"] == ["p"]
    b = s.filter(pl.col("user_id") == "b").row(0, named=True)
    assert b["later_negs"] == ["y", "z"]


def test_time_cutoffs_follow_quantiles():
    ev = day_events([("u", f"i{k}", k, 1) for k in range(100)])
    cuts = time_cutoffs(ev, SplitConfig(valid_frac=0.1, test_frac=0.2))
    share_test = (ev["ts"] >= cuts.test).mean()
    share_valid = ((ev["ts"] >= cuts.valid) & (ev["ts"] < cuts.test)).mean()
    assert share_test == pytest.approx(0.2, abs=0.02) and share_valid == pytest.approx(0.1, abs=0.02)


def test_empty_result_keeps_schema():
    s = build_samples(day_events([("u", "a", 0, 1), ("u", "b", 1, 1)]), SplitConfig())
    assert s.height == 0 and tuple(s.columns) == SAMPLE_COLUMNS


def _oracle(events: pl.DataFrame, cfg: SplitConfig) -> dict[tuple[str, str, int], tuple[list[str], list[str]]]:
    """Straightforward per-user Python reimplementation: (user, split, ts) -> (history, future)."""
    cuts = time_cutoffs(events, cfg)
    out = {}
    for (user,), g in events.with_row_index("row").sort(["user_id", "ts", "row"]).group_by(["user_id"], maintain_order=True):
        recs = list(g.iter_rows(named=True))
        picked = {"train": [], "valid": [], "test": []}
        windows_seen = set()
        for p, r in enumerate(recs):
            if r["feedback"] != -1 or p < cfg.min_history:
                continue
            split = "train" if r["ts"] < cuts.valid else "valid" if r["ts"] < cuts.test else "test"
            if split == "train" and cfg.train_points == "periodic":
                # the first dislike of each train_period_days window counted back from the valid cut-off
                window = int((cuts.valid - 1 - r["ts"]) // int(round(cfg.train_period_days * DAY)))
                if window in windows_seen:
                    continue
                windows_seen.add(window)
            picked[split].append(p)
        chosen = [("train", p) for p in picked["train"][-cfg.max_train_samples_per_user :]]
        chosen += [(s, picked[s][0]) for s in ("valid", "test") if picked[s]]
        for split, p in chosen:
            t = recs[p]["ts"]
            cut = {"train": cuts.valid, "valid": cuts.test, "test": 2**62}[split]
            end = min(t + cfg.horizon_days * DAY, cut)
            fut = []
            for r in recs[p:]:
                if r["feedback"] == -1 and r["ts"] < end and r["item_id"] not in fut:
                    fut.append(r["item_id"])
            hist = [r["item_id"] for r in recs[max(0, p - cfg.max_history) : p]]
            out[(user, split, t, recs[p]["item_id"])] = (hist, fut)
    return out


@pytest.mark.parametrize("train_points", ["periodic", "recent"])
def test_matches_a_plain_python_oracle_on_random_logs(train_points):
    rng = np.random.default_rng(0)
    n = 3000
    ev = day_events(
        [
            (f"u{rng.integers(30)}", f"i{rng.integers(50)}", float(rng.integers(0, 60 * 24)) / 24, int(rng.choice([-1, 1], p=[0.2, 0.8])))
            for _ in range(n)
        ]
    )
    cfg = SplitConfig(
        horizon_days=3, max_history=15, max_train_samples_per_user=4, min_history=2, train_points=train_points, train_period_days=2.5
    )
    s = build_samples(ev, cfg)
    want = _oracle(ev, cfg)
    got = {(r["user_id"], r["split"], r["ts"], r["next_neg"]): (r["hist_items"], r["future_negs"]) for r in s.iter_rows(named=True)}
    assert got == want and len(got) > 50


def test_train_until_test_refits_on_the_valid_period_with_labels_cut_at_the_test_cutoff():
    rows = [("u", "p", 0, 1), ("u", "a", 1, -1), ("u", "b", 6, -1), ("u", "c", 9.5, -1), ("u", "t", 12, -1)]
    cuts = Cutoffs(valid=5 * DAY, test=10 * DAY)
    base = _samples(rows, cuts, train_points="recent", horizon_days=7)
    refit = _samples(rows, cuts, train_points="recent", horizon_days=7, train_until="test")
    assert base.filter(pl.col("split") == "train")["next_neg"].to_list() == ["a"]
    assert base.filter(pl.col("split") == "train").row(0, named=True)["future_negs"] == ["a"]  # cut at valid
    train = refit.filter(pl.col("split") == "train")
    assert train["next_neg"].to_list() == ["a", "b", "c"]
    assert train.row(0, named=True)["future_negs"] == ["a", "b"] and train.row(2, named=True)["future_negs"] == ["c"]
    # valid and test points are the same either way
    assert refit.filter(pl.col("split") != "train").equals(base.filter(pl.col("split") != "train").with_columns(
        sample_id=pl.col("sample_id") + 2))


def test_future_positives_stop_at_the_window_and_the_label_cut():
    rows = [
        ("u", "n1", 1, -1),
        ("u", "p1", 1, 1),  # same ts, later row: after n1 in the canonical order -> future
        ("u", "p2", 7, 1),  # day 7 < 1 + 7 = 8: inside
        ("u", "p3", 8, 1),  # day 8: outside [1, 8)
        ("v", "n2", 1, -1),
        ("v", "q1", 5, 1),  # after the valid cut-off (day 4): a train label must not see it
    ]
    s = _samples(rows, Cutoffs(valid=4 * DAY, test=200 * DAY), horizon_days=7, max_horizon_days=30, min_history=0)
    by_user = {r["user_id"]: r for r in s.iter_rows(named=True) if r["split"] == "train"}
    assert by_user["u"]["future_pos"] == ["p1"]  # p2 (day 7) is after u's train cut at day 4 too
    assert by_user["v"]["future_pos"] == []
    s2 = _samples(rows, Cutoffs(valid=100 * DAY, test=200 * DAY), horizon_days=7, max_horizon_days=30, min_history=0)
    u = [r for r in s2.iter_rows(named=True) if r["user_id"] == "u"][0]
    assert u["future_pos"] == ["p1", "p2"] and u["hist_ts"] == []


def test_dislikes_before_a_point_are_all_counted_beyond_the_history_window():
    """LUF's long-tail test reads hist_negatives: a user with 4 old dislikes behind recent likes
    is not long-tail, although the max_history window shows none of them."""
    rows = [("u", f"n{i}", i, -1) for i in range(4)] + [("u", f"p{i}", 10 + i, 1) for i in range(5)] + [("u", "x", 20, -1)]
    rows += [("v", "q", 0, 1), ("v", "y", 1, -1), ("v", "z", 2, -1)]
    s = _samples(rows, Cutoffs(valid=100 * DAY, test=200 * DAY), max_history=3, min_history=0)
    got = {(r["user_id"], r["next_neg"]): (r["hist_negatives"], r["hist_feedback"]) for r in s.iter_rows(named=True)}
    assert got[("u", "x")] == (4, [1, 1, 1])  # the window holds only likes
    assert got[("u", "n0")][0] == 0 and got[("u", "n3")][0] == 3
    assert got[("v", "y")][0] == 0 and got[("v", "z")][0] == 1  # counted per user, not across users


def test_build_samples_names_a_missing_event_column():
    """A public API: it was a polars ColumnNotFoundError."""
    from conrec.data.splits import build_samples
    from conrec.errors import DataValidationError

    events = pl.DataFrame({"user_id": ["u"], "item_id": ["a"], "ts": [0]})
    with pytest.raises(DataValidationError, match=r"events for build_samples: missing column\(s\) \['feedback'\]"):
        build_samples(events, SplitConfig())
