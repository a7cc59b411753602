"""Date/time strings are read in the one layout they are written in (conrec.data.datetimes): a
month-first export keeps every row and its true dates, and a layout that reads as month/day and
day/month alike is refused instead of guessed."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from conrec.config import load_config
from conrec.data.datetimes import detect_format, parse_datetimes
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


def test_layouts_are_detected_and_ambiguity_is_refused() -> None:
    assert detect_format(pl.Series(["04/16/2024 07:00", "01/05/2024 10:00"])) == "%m/%d/%Y %H:%M"
    assert detect_format(pl.Series(["16.04.2024", "01.05.2024"])) == "%d.%m.%Y"
    assert detect_format(pl.Series(["2024-01-24T01:26:00+02:00"])) == "%Y-%m-%dT%H:%M:%S%.f%z"
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


ISO_LOGS = {  # as logs write ISO 8601: fractions of a second (or none), a UTC "Z", an offset (+02:00 or +0200)
    "%Y-%m-%dT%H:%M:%S%.fZ": ["2024-04-01T00:00:00.636Z", "2024-04-13T01:00:00Z", "2024-04-02T02:00:00.5Z"],
    "%Y-%m-%dT%H:%M:%S%.f%z": ["2024-04-01T02:00:00+02:00", "2024-04-13T02:00:00.25+0200", "2024-04-02T02:00:00-05:00"],
    "%Y-%m-%d %H:%M:%S%.f": ["2024-04-01 00:00:00.636", "2024-04-13 01:00:00", "2024-04-02 02:00:00.123456"],
    "%Y-%m-%dT%H:%MZ": ["2024-04-01T00:13Z", "2024-04-13T01:00Z", "2024-04-02T22:59Z"],  # to the minute: read by inference alone before
    "%Y-%m-%d %H:%M%z": ["2024-04-01 02:13+02:00", "2024-04-13 01:00-0500", "2024-04-02 22:59+00:00"],
}


@pytest.mark.parametrize("layout", sorted(ISO_LOGS))
def test_iso_times_with_fractions_and_zones_are_one_explicit_layout_that_streaming_reads_too(tmp_path: Path, layout: str) -> None:
    """They were left to polars' inference, which the streaming scan cannot run: it stopped and asked for
    data.ts_format. Now they are a listed layout, read as polars' inference reads them (offsets to UTC)."""
    values = ISO_LOGS[layout]
    assert detect_format(pl.Series(values)) == layout
    want = pl.Series(values).str.to_datetime(strict=False, time_unit="us").dt.epoch("s").to_list()
    assert None not in want
    path = tmp_path / "events.csv"
    path.write_text("user_id,item_id,ts,feedback\n" + "".join(f"u{k},i{k},{v},-1\n" for k, v in enumerate(values)))
    data = {"source": "table", "events_path": str(path)}
    events, _ = load_source(load_config(None, {"data": data}).data)
    assert sorted(events["ts"].to_list()) == sorted(want)
    from conrec.data.engine.scan import scan_table

    streamed = scan_table(load_config(None, {"data": {**data, "streaming": "on"}}).data).collect()
    assert sorted(streamed["ts"].to_list()) == sorted(want)


def test_spark_patterns_read_fractions_of_any_length() -> None:
    pytest.importorskip("pyspark")
    from conrec.data.engine.spark import java_pattern

    assert java_pattern("%Y-%m-%dT%H:%M:%S%.fZ") == "yyyy-M-d'T'H:m:s[.SSSSSSSSS]'Z'"


def test_two_digit_years_are_read_with_the_two_digit_layout() -> None:
    """``%m/%d/%Y`` reads ``12/25/23`` as the year 23: the layout that reads them as 2023 wins."""
    assert detect_format(pl.Series(["12/25/23 18:13", "01/02/24 07:00", "03/04/95 10:00"])) == "%m/%d/%y %H:%M"
    assert parse_datetimes(pl.Series(["25.12.23", "03.04.95"])).dt.year().to_list() == [2023, 1995]
    assert detect_format(pl.Series(["12/25/2023 18:13"])) == "%m/%d/%Y %H:%M"  # four digits: as before


def test_two_layouts_reading_as_many_values_but_other_rows_are_refused_in_one_line(tmp_path: Path) -> None:
    """``...Z`` and zoneless ISO times mixed half and half: each layout read as many values, on other rows, and
    picking the example of a disagreement raised an IndexError (a traceback) instead of a message."""
    mixed = pl.Series(["2024-01-01T10:00:00Z", "2024-01-02T10:00:00"] * 5)
    with pytest.raises(DataValidationError, match=r"mixes two date layouts.*'2024-01-02T10:00:00'.*'2024-01-01T10:00:00Z'.*data.ts_format"):
        detect_format(mixed)
    path = tmp_path / "events.csv"
    path.write_text("user,item,rating,timestamp\n" + "".join(f"u{k % 3},i{k},{k % 5 + 1},{t}\n" for k, t in enumerate(mixed)))
    with pytest.raises(DataValidationError, match="--time-format"):
        init_config(path, None, tmp_path / "my.yaml", preset="tiny")
