"""The one future-window definition: rounding, inclusivity and the horizon-beyond-max policy."""

from __future__ import annotations

import polars as pl

from conrec.data.windows import DAY, beyond_max_note, future_set, horizon_seconds, measurable_horizons, window_end


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
