"""Date/time strings are read in the one layout they are written in (conrec.data.datetimes): a
month-first export keeps every row and its true dates, and a layout that reads as month/day and
day/month alike is refused instead of guessed."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from conrec.config import load_config
from conrec.data.datetimes import detect_format
from conrec.data.loaders import load_source
from conrec.data.repair import RepairLog
from conrec.errors import DataValidationError
from conrec.init_config import init_config

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)


def _times(n: int = 300) -> list[dt.datetime]:
    return [T0 + dt.timedelta(hours=37 * k + 5) for k in range(n)]  # days 1..31 of several months


def _events(tmp_path: Path, layout: str) -> tuple[Path, list[int]]:
    times = _times()
    path = tmp_path / "events.csv"
    rows = [f"u{k % 9},i{k % 13},{t.strftime(layout)},{1 + k % 5}" for k, t in enumerate(times)]
    path.write_text("user_id,item_id,ts,rating\n" + "\n".join(rows) + "\n")
    return path, [int(t.timestamp()) // 60 * 60 for t in times]


@pytest.mark.parametrize("layout", ["%m/%d/%Y %H:%M", "%d.%m.%Y %H:%M", "%Y-%m-%d %H:%M:%S", "%d/%m/%Y %H:%M"])
def test_every_row_keeps_its_true_time_whatever_the_layout(tmp_path: Path, layout: str) -> None:
    """Month first (US) was read day first by polars' inference: 60% of the rows dropped, the rest moved."""
    path, want = _events(tmp_path, layout)
    repairs = RepairLog("drop")
    events, _ = load_source(load_config(None, {"data": {"source": "table", "events_path": str(path)}}).data, repairs)
    assert "bad_timestamp" not in repairs.counts
    rated = pl.read_csv(path)["rating"]
    kept = [w for w, r in zip(want, rated) if r <= 2 or r >= 4]  # the preset-free thresholds: 3 stars dropped
    assert sorted(events["ts"].to_list()) == sorted(kept)


def test_layouts_are_detected_offsets_are_left_to_polars_and_ambiguity_is_refused() -> None:
    assert detect_format(pl.Series(["04/16/2024 07:00", "01/05/2024 10:00"])) == "%m/%d/%Y %H:%M"
    assert detect_format(pl.Series(["16.04.2024", "01.05.2024"])) == "%d.%m.%Y"
    assert detect_format(pl.Series(["2024-01-24T01:26:00+02:00"])) is None  # inference reads offsets
    with pytest.raises(DataValidationError, match=r"read as '%m/%d/%Y' and as '%d/%m/%Y' alike.*data.ts_format"):
        detect_format(pl.Series(["04/05/2024", "01/02/2024"]))


def test_init_writes_the_layout_and_an_ambiguous_one_needs_the_flag(tmp_path: Path) -> None:
    path, _ = _events(tmp_path, "%m/%d/%Y %H:%M")
    out, g = init_config(path, None, tmp_path / "us.yaml", preset="tiny")
    assert g.ts_format == "%m/%d/%Y %H:%M" and load_config(out).data.ts_format == "%m/%d/%Y %H:%M"
    amb = tmp_path / "amb.csv"
    amb.write_text("user_id,item_id,ts,rating\n" + "".join(f"u{k},i{k},{k % 12 + 1:02d}/03/2024,{k % 5 + 1}\n" for k in range(40)))
    with pytest.raises(DataValidationError, match="--time-format"):
        init_config(amb, None, tmp_path / "amb.yaml", preset="tiny")
    out, g = init_config(amb, None, tmp_path / "amb.yaml", preset="tiny", ts_format="%d/%m/%Y")
    events, _ = load_source(load_config(out).data)
    assert {dt.datetime.fromtimestamp(t, dt.timezone.utc).month for t in events["ts"].to_list()} == {3}  # day first: all March


def test_streaming_reads_the_same_times_as_the_loader(tmp_path: Path) -> None:
    from conrec.data.engine.scan import scan_table

    path, _ = _events(tmp_path, "%m/%d/%Y %H:%M")
    cfg = load_config(None, {"data": {"source": "table", "events_path": str(path), "streaming": "on"}}).data
    events, _ = load_source(cfg)
    streamed = scan_table(cfg).collect()
    cols = ["user_id", "item_id", "ts"]
    assert streamed.select(cols).sort(cols).equals(events.select(cols).sort(cols))
