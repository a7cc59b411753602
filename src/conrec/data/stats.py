"""``stats.json``: the data stage's summary numbers, defined once for every engine.

Why from *parts*: an engine that never holds all events at once (polars streaming, one user
partition at a time; Spark, on executors) can still count, sum and collect one number per user.
Every statistic is a function of such additive parts (sums, min/max, the per-user dislike counts),
and means are integer sums divided once at the end, so the in-memory, streaming and Spark paths
produce the same floats, not merely close ones.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, cast

import polars as pl

from conrec.data.schema import DISLIKE
from conrec.data.splits import SPLITS
from conrec.data.windows import DAY


@dataclass(frozen=True)
class EventParts:
    """Additive summaries of (a disjoint user partition of) the events."""

    events: int
    dislikes: int
    users: int
    first_ts: int
    last_ts: int
    neg_per_user: pl.Series  # one dislike count per user (UInt32)

    def merge(self, other: EventParts) -> EventParts:
        """Both partitions together (their users must be disjoint)."""
        return EventParts(
            events=self.events + other.events,
            dislikes=self.dislikes + other.dislikes,
            users=self.users + other.users,
            first_ts=min(self.first_ts, other.first_ts),
            last_ts=max(self.last_ts, other.last_ts),
            neg_per_user=pl.concat([self.neg_per_user, other.neg_per_user]),
        )


@dataclass(frozen=True)
class SampleParts:
    """Additive summaries of samples: count, summed history length and summed future-set size per split."""

    count: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    hist_len: int = 0
    future_len: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))

    def merge(self, other: SampleParts) -> SampleParts:
        return SampleParts(
            count={s: self.count[s] + other.count[s] for s in SPLITS},
            hist_len=self.hist_len + other.hist_len,
            future_len={s: self.future_len[s] + other.future_len[s] for s in SPLITS},
        )


def event_parts(events: pl.DataFrame) -> EventParts:
    """The parts of an in-memory (partition of the) events table."""
    per_user = (
        events.group_by("user_id").agg(neg=(pl.col("feedback") == DISLIKE).sum().cast(pl.UInt32)).get_column("neg")
        if events.height
        else pl.Series("neg", [], pl.UInt32)
    )
    return EventParts(
        events=events.height,
        dislikes=int((events["feedback"] == DISLIKE).sum()),
        users=per_user.len(),
        first_ts=int(cast(int, events["ts"].min())),
        last_ts=int(cast(int, events["ts"].max())),
        neg_per_user=per_user,
    )


def sample_parts(samples: pl.DataFrame) -> SampleParts:
    """The parts of an in-memory (partition of the) samples table."""
    rows = samples.group_by("split").agg(
        n=pl.len(), hist=pl.col("hist_items").list.len().sum(), future=pl.col("future_negs").list.len().sum()
    )
    count, future = dict.fromkeys(SPLITS, 0), dict.fromkeys(SPLITS, 0)
    hist = 0
    for split, n, h, f in rows.iter_rows():
        count[split], future[split] = int(n), int(f)
        hist += int(h)
    return SampleParts(count=count, hist_len=hist, future_len=future)


def _iso(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def data_stats(
    ev: EventParts, smp: SampleParts, *, n_items: int, items_with_events: int, valid_cut: int, test_cut: int, source: str
) -> dict[str, Any]:
    """Summary numbers written to stats.json (and quoted in the report)."""
    per_user = ev.neg_per_user
    n_samples = sum(smp.count.values())
    return {
        "source": source,
        "users": ev.users,
        "items": n_items,
        "items_with_events": items_with_events,
        "events": ev.events,
        "dislikes": ev.dislikes,
        "positives": ev.events - ev.dislikes,
        "dislike_share": ev.dislikes / ev.events if ev.events else 0.0,
        "users_with_dislikes": int((per_user > 0).sum()),
        "median_negatives_per_user": float(cast(float, per_user.median()) or 0.0),
        "median_negatives_per_user_with_any": float(cast(float, per_user.filter(per_user > 0).median()) or 0.0),
        "first_event": _iso(ev.first_ts),
        "last_event": _iso(ev.last_ts),
        "valid_cutoff": _iso(valid_cut),
        "test_cutoff": _iso(test_cut),
        "valid_cutoff_ts": valid_cut,
        "test_cutoff_ts": test_cut,
        "days_covered": round((ev.last_ts - ev.first_ts) / DAY, 2),
        "samples": dict(smp.count),
        "mean_history_length": smp.hist_len / n_samples if n_samples else 0.0,
        "mean_future_negs": {s: smp.future_len[s] / smp.count[s] for s in SPLITS if smp.count[s]},
    }
