"""The future window ``[t, t + h days)``: one definition for labels, metrics and analysis.

Why one module: the data stage writes ``future_negs`` for the configured horizon, the metrics
recompute future sets for other horizons from ``later_negs``/``later_neg_ts``, and ``conrec
analyze`` measures coverage per horizon. If these rounded the window end differently (or treated
a horizon past ``max_horizon_days`` differently) the same sample would get different labels in
different places. Everything here is pure; it works on ints, numpy arrays and polars expressions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

DAY = 86_400  # seconds; timestamps are whole seconds


def horizon_seconds(horizon_days: float) -> int:
    """A horizon in whole seconds (rounded once, here, so that every window ends on the same second)."""
    return int(round(horizon_days * DAY))


def window_end(t: Any, horizon_days: float) -> Any:
    """The exclusive end of ``[t, t + horizon_days)``; ``t`` may be an int, array or polars
    expression (and the result is of the same kind)."""
    return t + horizon_seconds(horizon_days)


def future_set(later_negs: Sequence[str], later_neg_ts: Sequence[int], t: int, horizon_days: float) -> set[str]:
    """Items disliked in ``[t, t + horizon_days)``: the future-negative set for any horizon up to
    the data stage's ``max_horizon_days`` (the lists hold nothing beyond it)."""
    end = window_end(t, horizon_days)
    return {i for i, s in zip(later_negs, later_neg_ts) if s < end}


def measurable_horizons(horizons: Iterable[float], max_horizon_days: float) -> tuple[list[float], list[float]]:
    """``(kept, dropped)``, each sorted and distinct. The one policy for a horizon past
    ``max_horizon_days``: it is dropped with a note (:func:`beyond_max_note`), because samples keep
    no negatives that far ahead and its future sets would be silently cut short."""
    wanted = sorted(set(horizons))
    return [h for h in wanted if h <= max_horizon_days], [h for h in wanted if h > max_horizon_days]


def beyond_max_note(dropped: Sequence[float], max_horizon_days: float) -> str:
    """The note shown wherever :func:`measurable_horizons` dropped horizons."""
    return (
        f"Horizons {list(dropped)} exceed data.split.max_horizon_days={max_horizon_days:g} (labels stop there); "
        "not measured. Raise it and rerun `conrec data` to measure them."
    )


def cut_short_shares(ts: Any, log_end: Any, horizons: Iterable[float]) -> dict[float, float]:
    """For each horizon, the share of points (times ``ts``, an array) whose window ``[t, t + h)`` runs
    past ``log_end`` (the exclusive end of the data: last event + 1 s; or an array, each point's own
    end, as a valid point's test start). Their future sets hold only the days before it, so FHR at
    that horizon is measured over a shorter window for them."""
    import numpy as np

    t = np.asarray(ts, dtype=np.int64)
    if t.size == 0:
        return {float(h): 0.0 for h in horizons}
    return {float(h): float(np.mean(window_end(t, h) > log_end)) for h in sorted(set(horizons))}


def utc_minute(ts: int) -> str:
    """A timestamp as the cut-short notes write it (``2024-01-31 23:59 UTC``)."""
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def cut_shares_text(shares: dict[float, float]) -> str | None:
    """``"25.0% of the points at 3 d, ..."`` for the horizons at which some point's window is cut short
    (``shares``: :func:`cut_short_shares`), or None when none is: the one wording of the report's and ``conrec
    analyze``'s notes, each of which adds its own consequence."""
    cut = {h: s for h, s in shares.items() if s > 0}
    return ", ".join(f"{s:.1%} of the points at {h:g} d" for h, s in cut.items()) if cut else None


def cut_short_note(shares: dict[float, float], log_end: int, stop: str | None = None) -> str | None:
    """The report's note on windows cut short (None when no point's window is): by the end of the log, or,
    ``stop`` given (its words: :func:`conrec.data.analyze.stop_causes`), by the valid points' own stop, the
    test cut-off (per user, the user's first test dislike). Why two wordings: only the end of the log is a
    shortcoming of the data; the valid stop is the split's design, so its remedy is another split."""
    parts = cut_shares_text(shares)
    if parts is None:
        return None
    if stop is not None:
        return (
            f"Future windows cut short by {stop}: {parts}. Valid windows stop there by design (the test period is "
            "held out), so their future sets hold only the days before it and FHR at that horizon is lower for every "
            "model (the same points for all, so the paired differences stand). For whole windows: a shorter "
            "data.split.horizon_days, or the test split."
        )
    return (
        f"Future windows cut short by the end of the log (last event {utc_minute(log_end - 1)}): {parts}. Their future sets hold only "
        "the days the log has, so FHR at that horizon is lower for every model (the same points for all, so the "
        "paired differences stand). For whole windows: a shorter data.split.horizon_days, or a log that runs on "
        "past the last evaluated point."
    )
