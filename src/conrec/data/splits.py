"""Global time split and future-window labels: turn a canonical events table into samples.

Why a *global* time split (one valid and one test cut-off for everybody) rather than leave-last-out
per user: a model trained on events before the cut-off is then evaluated on what happened after it,
for every user at once, which is how a deployed model meets the future. No label of a valid or
test sample can be seen during training: train samples' label windows stop at the valid cut-off,
valid samples' at the test cut-off.

Why *periodic* train points (the default): an evaluation point is a user's first dislike after a
cut-off, so new users' first sessions are over-represented among them, and on logs where new users
are asked to rate popular items (MovieLens) that is most of the signal. Taking every user's most
recent dislikes instead (``train_points="recent"``) over-weights heavy users' late sessions: on
MovieLens-100K the dislike popularity implied by those points' future sets scores FHR@20 0.41 on
test, against 0.54 for the popularity of the same period's dislikes. Periodic points (a user's first
dislike of each week before the valid cut-off, i.e. the first dislike after a series of weekly
pseudo cut-offs) imply a popularity as good as the real one, so a model trained on them learns the
right prior as well as the personal signal.

Ordering rule used everywhere: a user's events are ordered by ``ts``, ties broken by the row order
of the input table. A sample at negative event *e* has as history the events strictly before *e* in
that order, and as labels the negatives from *e* on (including *e*) inside the time window. So an
event is either history or label, never both, even when timestamps tie.

**Per-user protocol** (``split.protocol: per_user``): a user's dislikes, in that order, are cut by
share: the last ``round(test_frac * n)`` are the user's test share, the ``round((test_frac +
valid_frac) * n) - n_test`` before them the valid share, the rest train. Every eligible dislike of
the valid/test shares is an evaluation point (not only the first; a valid one before the test start,
below). The user's *valid start* /
*test start* is the timestamp of the first dislike of that share. What training may see:

* train points are dislikes strictly before the user's valid start (``label_cut``; the test start
  with ``train_until="test"``) and their labels stop before it; valid points are the valid share's
  dislikes strictly before the user's test start, and their labels stop before it; test labels run
  the full window. A dislike at the very second of the next share's start (a same-second burst the
  shares cut by rank) is no point of its own share, only history of the next share's points: as
  one, its label window would be empty (the global split's shares are cut by time, so it never
  has such a dislike);
* models fitted on events (the baselines) for split s see, for every user, only the events
  strictly before that user's start of s (valid: the valid start, or the test start if the user
  has no valid share; users with neither give all their events): :func:`per_user_fit_events`.
  So no event a fitted model sees is a label of any evaluated point of s, nor an event of an
  evaluated user at or after its point. What remains, and is inherent to per-user splits: another
  user's *earlier-share* events may be later in calendar time than a point (the model sees "the
  world" after t, never the user's answer). A "fit on all events before user u's first test
  point" rule would instead leak other users' test labels and is not used.

The work is vectorised (polars for selection, numpy ``searchsorted`` and one flat ``gather`` for
the list columns), so 1M events take seconds, not minutes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa

from conrec.data.config import SplitConfig
from conrec.data.samples import DAY, SAMPLE_COLUMNS
from conrec.data.schema import DISLIKE, EVENT_COLUMNS
from conrec.data.windows import window_end
from conrec.errors import DataValidationError, require_columns

SPLITS = ("train", "valid", "test")

SAMPLE_SCHEMA: dict[str, pl.DataType] = {
    "sample_id": pl.Int64(),
    "user_id": pl.String(),
    "split": pl.String(),
    "ts": pl.Int64(),
    "hist_items": pl.List(pl.String()),
    "hist_feedback": pl.List(pl.Int8()),
    "hist_ts": pl.List(pl.Int64()),
    "next_neg": pl.String(),
    "future_negs": pl.List(pl.String()),
    "later_negs": pl.List(pl.String()),
    "later_neg_ts": pl.List(pl.Int64()),
    "future_pos": pl.List(pl.String()),
    "hist_negatives": pl.Int64(),
}
assert tuple(SAMPLE_SCHEMA) == SAMPLE_COLUMNS

NO_CUT = np.iinfo(np.int64).max // 4  # "no truncation" for test labels, far from overflow


@dataclass(frozen=True)
class Cutoffs:
    """Global cut-offs (epoch seconds): train is ts < valid, valid is [valid, test), test is ts >= test."""

    valid: int
    test: int


@dataclass(frozen=True)
class OrderedEvents:
    """Events in the canonical order plus the negatives' index, shared by selection and labelling.

    ``events`` has ``gidx`` (row in this order), ``pos`` (index within the user) and ``ucode``
    (dense user code, increasing in this order); ``negatives`` is the dislike subset with ``nidx``.
    """

    events: pl.DataFrame
    negatives: pl.DataFrame


def time_cutoffs(events: pl.DataFrame, cfg: SplitConfig) -> Cutoffs:
    """Cut-offs at event-time quantiles: about ``test_frac`` of events at/after ``test``,
    ``valid_frac`` in ``[valid, test)``."""
    if events.height == 0:
        raise DataValidationError("events: no events to split")
    valid, test = events.select(cutoff_exprs(cfg)).row(0)
    return cutoffs_from(valid, test)


def cutoff_exprs(cfg: SplitConfig) -> list[pl.Expr]:
    """The two quantiles of ``ts`` behind :func:`time_cutoffs` (valid, test), as expressions, so a
    lazy (streaming) query computes exactly the same values without holding the events."""
    return [
        pl.col("ts").quantile(1.0 - cfg.test_frac - cfg.valid_frac, interpolation="higher").alias("valid"),
        pl.col("ts").quantile(1.0 - cfg.test_frac, interpolation="higher").alias("test"),
    ]


def cutoffs_from(valid: float | None, test: float | None) -> Cutoffs:
    """:class:`Cutoffs` from the two quantiles (never None on non-empty events)."""
    t = int(test or 0)
    return Cutoffs(valid=min(int(valid or 0), t), test=t)


def order_events(events: pl.DataFrame) -> OrderedEvents:
    """Sort by (user, ts, input row) and index positions; the basis of every sample."""
    ev = (
        events.select("user_id", "item_id", "ts", "feedback")
        .with_row_index("_row")
        .sort(["user_id", "ts", "_row"])
        .drop("_row")
        .with_columns(
            gidx=pl.int_range(pl.len(), dtype=pl.Int64),
            ucode=pl.col("user_id").rle_id().cast(pl.Int64),
        )
        .with_columns(pos=pl.col("gidx") - pl.col("gidx").min().over("ucode"))
    )
    neg = ev.filter(pl.col("feedback") == DISLIKE).with_row_index("nidx").with_columns(pl.col("nidx").cast(pl.Int64))
    return OrderedEvents(events=ev, negatives=neg)


def select_points(ordered: OrderedEvents, cuts: Cutoffs, cfg: SplitConfig) -> pl.DataFrame:
    """Which negatives become samples, and where each sample's labels must stop (``label_cut``).

    ``cfg.protocol == "per_user"`` delegates to :func:`select_points_per_user` (``cuts`` unused).
    Global time split: train: negatives before the valid cut-off (the test cut-off with
    ``train_until="test"``, the refit for the final test run), the user's most recent
    ``max_train_samples_per_user`` of them; with ``train_points="periodic"`` only the user's first
    negative of each ``train_period_days`` window (windows aligned to end at the ``train_until`` cut-off) is a candidate,
    so train points are drawn the way evaluation points are (a user's first dislike after a cut-off; see below);
    valid/test: the user's first eligible negative in the window. Eligible = at least
    ``min_history`` prior events.
    """
    if cfg.protocol == "per_user":
        return select_points_per_user(ordered, cfg)
    neg = ordered.negatives.filter(pl.col("pos") >= cfg.min_history)
    train_cut = cuts.valid if cfg.train_until == "valid" else cuts.test
    train = _pick_train_points(
        neg.filter(pl.col("ts") < train_cut).with_columns(label_cut=pl.lit(train_cut, pl.Int64)), pl.lit(train_cut, pl.Int64), cfg
    )
    valid = (
        neg.filter((pl.col("ts") >= cuts.valid) & (pl.col("ts") < cuts.test))
        .group_by("ucode", maintain_order=True)
        .first()
        .with_columns(split=pl.lit("valid"), label_cut=pl.lit(cuts.test, pl.Int64))
    )
    test = (
        neg.filter(pl.col("ts") >= cuts.test)
        .group_by("ucode", maintain_order=True)
        .first()
        .with_columns(split=pl.lit("test"), label_cut=pl.lit(NO_CUT, pl.Int64))
    )
    cols = ["ucode", "user_id", "split", "ts", "item_id", "gidx", "pos", "nidx", "label_cut"]
    return pl.concat([train.select(cols), valid.select(cols), test.select(cols)])


def _pick_train_points(candidates: pl.DataFrame, window_end: pl.Expr, cfg: SplitConfig) -> pl.DataFrame:
    """The train points among a user's candidate negatives (both protocols): with
    ``train_points="periodic"`` the user's first negative of each ``train_period_days`` window, the
    windows aligned to end at ``window_end``; then the user's most recent ``max_train_samples_per_user``."""
    if cfg.train_points == "periodic":
        period = int(round(cfg.train_period_days * DAY))
        window = (window_end - 1 - pl.col("ts")) // period
        candidates = candidates.filter(pl.int_range(pl.len()).over(["ucode", window.alias("_window")]) == 0)
    recent = pl.len().over("ucode") - pl.int_range(pl.len()).over("ucode") <= cfg.max_train_samples_per_user
    return candidates.filter(recent).with_columns(split=pl.lit("train"))


def _round_half_up(x: pl.Expr) -> pl.Expr:
    return (x + 0.5).floor().cast(pl.Int64)


def per_user_shares(ordered: OrderedEvents, cfg: SplitConfig) -> pl.DataFrame:
    """The negatives with ``share`` (train/valid/test by position in the user's dislikes) and the
    user's ``valid_start`` / ``test_start`` (null when the user has no such share)."""
    neg = ordered.negatives
    n = pl.len().over("ucode")
    rank = pl.int_range(pl.len()).over("ucode")
    n_test = _round_half_up(n * cfg.test_frac)
    n_vt = _round_half_up(n * (cfg.test_frac + cfg.valid_frac))
    neg = neg.with_columns(
        share=pl.when(rank >= n - n_test).then(pl.lit("test")).when(rank >= n - n_vt).then(pl.lit("valid")).otherwise(pl.lit("train"))
    )
    return neg.with_columns(
        valid_start=pl.col("ts").filter(pl.col("share") == "valid").min().over("ucode"),
        test_start=pl.col("ts").filter(pl.col("share") == "test").min().over("ucode"),
    )


def share_sizes(n: int, cfg: SplitConfig) -> tuple[int, int]:
    """(valid, test) dislikes of a user with ``n`` dislikes under the per-user protocol, by the rule of
    :func:`per_user_shares` (the last ``round(test_frac * n)`` test, the ``round((test_frac + valid_frac) * n)``
    before them less those valid, each rounded half up), for the warning that names who gets which share."""
    n_test = math.floor(n * cfg.test_frac + 0.5)
    return math.floor(n * (cfg.test_frac + cfg.valid_frac) + 0.5) - n_test, n_test


MIN_SHARE_OVERLAP = 0.5
"""Under the per-user protocol the data stage warns when fewer than this share of the test points have a user who
also holds a valid point, or of the valid points a user who also holds a test point (:func:`share_overlap`).

Why: each user's shares are rounded half up, so on a log with few dislikes per user most users hold a valid or a test
point, not both (2 dislikes: a valid point only; 3 or 4: a test point only, at the default 10% / 20%), and what is
chosen on the valid split is chosen on other users, with shorter histories, than the ones it is tested on. Under half
is where valid and test are mostly different users; MovieLens-100K's per-user split has 90% and 96%."""


@dataclass(frozen=True)
class ShareOverlap:
    """How far the valid and the test points of a split come from the same users (:func:`share_overlap`)."""

    valid: int
    test: int
    valid_shared: int  # valid points whose user also holds a test point
    test_shared: int  # test points whose user also holds a valid point

    def low(self) -> bool:
        """Both splits hold points and either share is under :data:`MIN_SHARE_OVERLAP`."""
        return bool(self.valid and self.test) and min(self.valid_shared / self.valid, self.test_shared / self.test) < MIN_SHARE_OVERLAP


def share_overlap(samples: pl.LazyFrame) -> ShareOverlap:
    """The valid and test points of ``samples`` (a samples table, scanned: every engine's output) and how many of
    each have a user who also holds a point of the other split."""
    points = samples.filter(pl.col("split").is_in(["valid", "test"])).select("user_id", "split")
    both = points.group_by("user_id").agg(both=pl.col("split").n_unique() == 2)
    counts = dict.fromkeys(("valid", "test", "valid_shared", "test_shared"), 0)
    for split, n, shared in (
        points.join(both, on="user_id").group_by("split").agg(pl.len(), pl.col("both").sum()).collect().iter_rows()
    ):
        counts[split], counts[f"{split}_shared"] = int(n), int(shared)
    return ShareOverlap(**counts)


def share_overlap_warning(overlap: ShareOverlap, cfg: SplitConfig, median_dislikes: float) -> str | None:
    """The data stage's warning when the per-user split's valid and test points come from mostly different users
    (:data:`MIN_SHARE_OVERLAP`), else None: how far they overlap, why (the per-user rounding of too few dislikes,
    with the dislike counts that hold one share only) and what to do."""
    if cfg.protocol != "per_user" or not overlap.low():
        return None
    v, t = overlap.valid, overlap.test
    return (
        f"per-user split: the valid and the test points come from mostly different users: {overlap.test_shared:,} of the "
        f"{t:,} test points ({overlap.test_shared / t:.0%}) have a user who also holds a valid point, {overlap.valid_shared:,} "
        f"of the {v:,} valid points ({overlap.valid_shared / v:.0%}) one who also holds a test point, so what is chosen on "
        "the valid split (the baselines' settings, an early-stopped checkpoint) is chosen on other users than those it is "
        f"tested on. Too few dislikes per user for both shares: each user's shares are rounded half up (data.split."
        f"valid_frac {cfg.valid_frac:.0%}, test_frac {cfg.test_frac:.0%}; docs/data.md){_one_share_counts(cfg)}, and the "
        f"median user with a dislike has {median_dislikes:g}. Use data.split.protocol: global_time (one cut-off in time for everybody), "
        "or a larger valid_frac and test_frac, so that a user's few dislikes fill both shares"
    )


def _one_share_counts(cfg: SplitConfig, up_to: int = 1000) -> str:
    """", so a user with 1 dislike gets neither share, with 2 a valid point only, with 3 or 4 a test point only": the
    dislike counts below the first that holds both shares, grouped; empty when no count up to ``up_to`` holds both
    (or the first does)."""
    kinds = {(False, False): "neither share", (True, False): "a valid point only", (False, True): "a test point only"}
    first_both = next((n for n in range(1, up_to + 1) if min(share_sizes(n, cfg)) > 0), None)
    if first_both is None:
        return ""
    runs: list[tuple[int, int, str]] = []  # (first n, last n, what a user with that many dislikes gets)
    for n in range(1, first_both):
        valid, test = share_sizes(n, cfg)
        kind = kinds[(valid > 0, test > 0)]
        if runs and runs[-1][2] == kind:
            runs[-1] = (runs[-1][0], n, kind)
        else:
            runs.append((n, n, kind))
    parts = []
    for i, (a, b, kind) in enumerate(runs):
        counts = str(a) if a == b else f"{a} or {b}" if b == a + 1 else f"{a} to {b}"
        parts.append(f"with {counts} {kind}" if i else f"a user with {counts} dislike{'' if b == 1 else 's'} gets {kind}")
    return ", so " + ", ".join(parts) if parts else ""


def select_points_per_user(ordered: OrderedEvents, cfg: SplitConfig) -> pl.DataFrame:
    """Per-user protocol (module docstring): every eligible dislike of a user's test share is a point, and
    of the valid share every one strictly before the user's test start (its label cut-off). Train points come from the train share (train + valid shares with ``train_until="test"``),
    strictly before the user's valid start (test start), where their labels are cut, chosen like the global split's
    (``train_points``: periodic windows ending at that boundary, or the most recent), at most
    ``max_train_samples_per_user``."""
    shares = per_user_shares(ordered, cfg).filter(pl.col("pos") >= cfg.min_history)
    no_cut = pl.lit(NO_CUT, pl.Int64)
    if cfg.train_until == "test":
        train = shares.filter(pl.col("share") != "test").with_columns(label_cut=pl.coalesce("test_start", no_cut))
    else:
        train = shares.filter(pl.col("share") == "train").with_columns(label_cut=pl.coalesce("valid_start", "test_start", no_cut))
    # candidates strictly before the cut-off, as in the global split: shares are cut by rank, so in a same-second burst
    # the last candidates can share the second of the user's start; as a point such a dislike had a window of its own
    # (index -1) and an empty label window, and lay outside the baselines' fit events; it stays history of that point
    train = train.filter(pl.col("ts") < pl.col("label_cut"))
    last = pl.col("ts").max().over("ucode") + 1  # users with no boundary: windows end after their last train point
    train = _pick_train_points(train, pl.when(pl.col("label_cut") == NO_CUT).then(last).otherwise(pl.col("label_cut")), cfg)
    # valid points likewise stop before the user's test start, their label cut-off: a valid-share dislike at that very
    # second (a burst across the valid/test boundary) had itself alone as label; it stays history of the test point
    valid = (
        shares.filter(pl.col("share") == "valid")
        .with_columns(split=pl.lit("valid"), label_cut=pl.coalesce("test_start", no_cut))
        .filter(pl.col("ts") < pl.col("label_cut"))
    )
    test = shares.filter(pl.col("share") == "test").with_columns(split=pl.lit("test"), label_cut=no_cut)
    cols = ["ucode", "user_id", "split", "ts", "item_id", "gidx", "pos", "nidx", "label_cut"]
    return pl.concat([train.select(cols), valid.select(cols), test.select(cols)])


def per_user_fit_events(events: pl.DataFrame, cfg: SplitConfig, split: str) -> pl.DataFrame:
    """Events a model evaluated on ``split`` may be fitted on under the per-user protocol: each
    user's events strictly before that user's start of ``split`` (see the module docstring)."""
    if split not in ("valid", "test"):
        raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
    starts = (
        per_user_shares(order_events(events), cfg)
        .group_by("user_id")
        .agg(pl.col("valid_start").first(), pl.col("test_start").first())
        .select("user_id", start=pl.coalesce("valid_start", "test_start") if split == "valid" else pl.col("test_start"))
    )
    joined = events.join(starts, on="user_id", how="left", maintain_order="left")
    return joined.filter(pl.col("start").is_null() | (pl.col("ts") < pl.col("start"))).drop("start")


def attach_history_and_labels(ordered: OrderedEvents, points: pl.DataFrame, cfg: SplitConfig) -> pl.DataFrame:
    """Build the samples table (see :mod:`conrec.data.samples`) for the selected points."""
    if points.height == 0:
        return pl.DataFrame(schema=SAMPLE_SCHEMA)
    ev, neg = ordered.events, ordered.negatives
    gidx = points["gidx"].to_numpy()
    pos = points["pos"].to_numpy()
    hist_start = gidx - np.minimum(pos, cfg.max_history)
    hist_items = _ranges_to_lists(ev["item_id"], hist_start, gidx)
    hist_fb = _ranges_to_lists(ev["feedback"], hist_start, gidx)
    hist_ts = _ranges_to_lists(ev["ts"], hist_start, gidx)

    n_u, n_ts = neg["ucode"].to_numpy(), neg["ts"].to_numpy()
    ucode = points["ucode"].to_numpy()
    t = points["ts"].to_numpy()
    cut = points["label_cut"].to_numpy()
    start = points["nidx"].to_numpy()

    def end_index(days: float) -> np.ndarray:
        # at least start + 1: the point's own negative is always its first label
        return np.maximum(_rows_before(n_u, n_ts, ucode, np.minimum(window_end(t, days), cut)), start + 1)

    later_end = end_index(cfg.max_horizon_days)
    future_end = end_index(cfg.horizon_days)
    later = _ranges_to_lists(neg["item_id"], start, later_end)
    later_ts = _ranges_to_lists(neg["ts"], start, later_end)
    future = _ranges_to_lists(neg["item_id"], start, future_end)
    future_pos = _future_positives(ev, ucode, gidx, t, cut, cfg.horizon_days)
    hist_negatives = start - np.searchsorted(n_u, ucode, side="left")  # negatives are sorted by user: the user's earlier ones

    order = {s: i for i, s in enumerate(SPLITS)}
    out = (
        pl.DataFrame(
            {
                "user_id": points["user_id"],
                "split": points["split"],
                "ts": points["ts"],
                "hist_items": hist_items,
                "hist_feedback": hist_fb,
                "next_neg": points["item_id"],
                "future_negs": future,
                "later_negs": later,
                "later_neg_ts": later_ts,
                "hist_ts": hist_ts,
                "future_pos": future_pos,
                "hist_negatives": hist_negatives,
            }
        )
        .with_columns(pl.col("future_negs").list.unique(maintain_order=True), pl.col("future_pos").list.unique(maintain_order=True))
        .sort([pl.col("split").replace_strict(order, return_dtype=pl.Int8), "user_id", "ts"], maintain_order=True)
        .with_row_index("sample_id")
    )
    return out.cast(SAMPLE_SCHEMA).select(SAMPLE_COLUMNS)  # type: ignore[arg-type]


def _future_positives(
    ev: pl.DataFrame, ucode: np.ndarray, gidx: np.ndarray, t: np.ndarray, cut: np.ndarray, days: float
) -> pl.Series:
    """Each point's positives after its negative event (in the canonical order) and before
    ``min(t + days, label_cut)``: the user's future positives, cut like the future negatives so no
    valid/test event reaches a train sample's reward."""
    pos = ev.filter(pl.col("feedback") > 0)
    p_gidx = pos["gidx"].to_numpy()
    p_u = pos["ucode"].to_numpy()
    p_ts = pos["ts"].to_numpy()
    start = np.searchsorted(p_gidx, gidx, side="right")  # gidx order = (user, ts, row) order
    end = np.maximum(_rows_before(p_u, p_ts, ucode, np.minimum(window_end(t, days), cut)), start)
    return _ranges_to_lists(pos["item_id"], start, end)


def _rows_before(row_ucode: np.ndarray, row_ts: np.ndarray, ucode: np.ndarray, limit: np.ndarray) -> np.ndarray:
    """For each query ``(ucode, limit)``: how many rows (sorted by (user code, ts)) come before user
    ``ucode``'s first row with ``ts >= limit``, i.e. the exclusive end of the user's rows before ``limit``.

    Why one composite key: ``ucode * span + (ts - t0)`` is sorted exactly like (user, ts), so every
    window end is one vectorised ``searchsorted``. ``limit`` is clipped into the key's range, so a
    limit before the user's first row or after the last still lands inside the user's block.
    """
    if row_ts.size == 0:
        return np.zeros(len(ucode), dtype=np.int64)
    t0 = int(row_ts.min())
    span = int(row_ts.max()) - t0 + 2
    key = row_ucode * span + (row_ts - t0)
    rel = np.clip(limit - t0, 0, span - 1)
    return np.searchsorted(key, ucode * span + rel, side="left").astype(np.int64)


def build_samples(events: pl.DataFrame, split_cfg: SplitConfig) -> pl.DataFrame:
    """Samples for train/valid/test from validated canonical events (see module docstring)."""
    require_columns(events, EVENT_COLUMNS, "events for build_samples")  # a public API: one line, not a polars error
    ordered = order_events(events)
    cuts = time_cutoffs(events, split_cfg)
    points = select_points(ordered, cuts, split_cfg)
    return attach_history_and_labels(ordered, points, split_cfg)


def _ranges_to_lists(values: pl.Series, starts: np.ndarray, ends: np.ndarray) -> pl.Series:
    """``[values[s:e] for s, e in zip(starts, ends)]`` as a list Series, via one flat gather."""
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.maximum(np.asarray(ends, dtype=np.int64) - starts, 0)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat_idx = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1], dtype=np.int64)
    flat = values.gather(flat_idx)
    if flat.dtype == pl.String:
        flat_arrow = flat.to_arrow().cast(pa.large_string())
    else:
        flat_arrow = flat.to_arrow()
    arr = pa.LargeListArray.from_arrays(pa.array(offsets, type=pa.int64()), flat_arrow)
    return pl.Series(values.name, arr)
