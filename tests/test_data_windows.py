"""The one future-window definition: rounding, inclusivity and the horizon-beyond-max policy."""

from __future__ import annotations

import numpy as np
import polars as pl

from conrec.data.windows import (
    DAY,
    beyond_max_note,
    cut_short_note,
    cut_short_shares,
    future_set,
    horizon_seconds,
    measurable_horizons,
    window_end,
)


def test_window_is_half_open_and_rounded_once_for_ints_and_expressions() -> None:
    assert horizon_seconds(1) == DAY and horizon_seconds(0.1) == 8640  # 0.1 * 86400 = 8640.000000000002
    assert window_end(100, 0.1) == 100 + 8640
    ends = pl.DataFrame({"ts": [0, 5]}).select(window_end(pl.col("ts"), 1))["ts"].to_list()
    assert ends == [DAY, DAY + 5]
    # [t, t + h): the item exactly h later is outside, the one a second earlier inside
    assert future_set(["a", "b", "c"], [0, 8639, 8640], 0, 0.1) == {"a", "b"}


def test_horizons_past_max_are_dropped_with_one_note() -> None:
    assert measurable_horizons([30, 1, 7, 60, 7], 30) == ([1, 7, 30], [60])
    note = beyond_max_note([60], 30)
    assert "max_horizon_days=30" in note and "[60]" in note


def test_windows_cut_short_by_the_end_of_the_log_are_counted_per_horizon() -> None:
    log_end = 10 * DAY  # exclusive: the last event is at 10 d - 1 s
    ts = np.array([0, 3 * DAY, 8 * DAY, 9 * DAY + 1])
    shares = cut_short_shares(ts, log_end, [1, 7, 3])
    # a window [t, t + h) ending exactly at the log end is whole; one second more is cut
    assert shares == {1.0: 0.25, 3.0: 0.5, 7.0: 0.5}
    assert cut_short_shares(np.array([DAY]), log_end, [1]) == {1.0: 0.0}
    note = cut_short_note(shares, log_end)
    assert note is not None and "25.0% of the points at 1 d" in note and "1970-01-10 23:59 UTC" in note
    assert cut_short_note({7.0: 0.0}, log_end) is None
    assert cut_short_shares(np.array([], dtype=np.int64), log_end, [7]) == {7.0: 0.0}
