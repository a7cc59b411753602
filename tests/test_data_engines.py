"""The polars engine gives the same run directory in memory and out of core (streaming).

Streaming is forced with tiny partitions so that users really are spread over many partitions and
the global orders (events by user, ts, input row; samples by split, user, ts) must be rebuilt from
them. The edge cases are in the table below: ties in timestamps, a user with no dislike, windows
crossing the cut-offs, both protocols.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from rich.console import Console

from conrec.config import load_config
from conrec.data import stage
from conrec.data.config import SplitConfig
from conrec.data.sources.common import INFER_ROWS
from conrec.data.splits import time_cutoffs
from conrec.data.windows import DAY
from conrec.errors import DataValidationError
from conrec.runs import RunDir

OUTPUTS = ("events.parquet", "items.parquet", "samples.parquet", "exposures.parquet")


def edge_case_events() -> pl.DataFrame:
    """Six users over 40 days: ties in ts (also between a dislike and a positive), a user without
    dislikes, dislikes right before and after where the cut-offs fall, one very active user."""
    rows: list[tuple[str, str, int, int]] = []
    t0 = 1_700_000_000
    for u in range(6):
        for k in range(60 if u else 400):
            ts = t0 + (k // 3) * DAY // 2 + u  # every third event shares its timestamp with the next two
            fb = -1 if (k % 4 == 0 and u != 3) else 1  # user u3 never dislikes
            rows.append((f"u{u}", f"i{(k * 7 + u) % 23}", ts, fb))
    return pl.DataFrame(rows, schema={"user_id": pl.String, "item_id": pl.String, "ts": pl.Int64, "feedback": pl.Int8}, orient="row")


def _run(tmp_path: Path, name: str, data: dict[str, Any]) -> tuple[RunDir, dict[str, Any]]:
    cfg = load_config(None, {"run_dir": str(tmp_path / name), "data": data})
    stats = stage.run(cfg.data, cfg.run_dir, console=Console(quiet=True))
    return RunDir(cfg.run_dir), stats


def assert_same_run(a: RunDir, b: RunDir) -> None:
    for f in OUTPUTS:
        left, right = pl.read_parquet(a.data / f), pl.read_parquet(b.data / f)
        assert left.schema == right.schema, f
        assert left.equals(right), f
    assert json.loads((a.data / "stats.json").read_text()) == json.loads((b.data / "stats.json").read_text())


@pytest.fixture
def table_file(tmp_path: Path) -> Path:
    path = tmp_path / "events.parquet"
    edge_case_events().write_parquet(path, row_group_size=50)
    return path


@pytest.mark.parametrize("protocol", ["global_time", "per_user"])
@pytest.mark.parametrize("train_points", ["periodic", "recent"])
def test_streaming_a_table_file_equals_loading_it(tmp_path, table_file, protocol, train_points):
    split = {"protocol": protocol, "train_points": train_points, "horizon_days": 3, "max_history": 7}
    base = {"source": "table", "events_path": str(table_file), "split": split}
    mem, mem_stats = _run(tmp_path, "mem", {**base, "streaming": "off"})
    out, out_stats = _run(tmp_path, "stream", {**base, "streaming": "auto", "streaming_min_events": 100, "partition_events": 70})
    assert mem_stats["samples"]["test"] > 0 and mem_stats["users_with_dislikes"] == 5
    assert_same_run(mem, out)
    assert not list(out.data.glob(".*")), "no staging or temporary file is left behind"


def test_a_mapped_column_replaces_the_one_already_named_like_its_role(tmp_path):
    """``conrec init --user-col customer_id`` (and ``--title-col name``) maps the chosen column onto a name the
    file already has: every engine stopped on a duplicate column with a traceback. The mapped column wins."""
    frame = edge_case_events()
    events = frame.rename({"user_id": "customer_id"}).with_columns(user_id=pl.lit("legacy"))
    events.write_csv(tmp_path / "ev.csv")
    items = pl.DataFrame({"item_id": [f"i{k}" for k in range(23)], "title": "x", "name": [f"Item {k}" for k in range(23)]})
    items.write_csv(tmp_path / "items.csv")
    data = {"source": "table", "events_path": str(tmp_path / "ev.csv"), "items_path": str(tmp_path / "items.csv"),
            "columns": {"customer_id": "user_id", "name": "title"}, "split": {"horizon_days": 3, "max_history": 7}}
    mem, _ = _run(tmp_path, "mem", {**data, "streaming": "off"})
    out, _ = _run(tmp_path, "stream", {**data, "streaming": "on", "partition_events": 70})
    assert_same_run(mem, out)
    assert sorted(pl.read_parquet(mem.events)["user_id"].unique()) == sorted(frame["user_id"].unique())
    assert pl.read_parquet(mem.items).filter(pl.col("item_id") == "i3")["title"].item() == "Item 3"


ALL_NEUTRAL = r"every row's feedback is neutral \(0\).*data.feedback_labels"


def all_neutral_log(tmp_path: Path) -> dict[str, Any]:
    """A table source whose feedback words are all labelled 0, as conrec init lists words it cannot tell."""
    path = tmp_path / "ev.csv"
    path.write_text("user_id,item_id,ts,action\n" + "".join(f"u{k % 5},i{k % 7},{1_700_000_000 + k},ausblenden\n" for k in range(40)))
    return {"source": "table", "events_path": str(path), "columns": {"action": "feedback"}, "feedback_labels": {"ausblenden": 0}}


def test_a_log_whose_every_feedback_is_neutral_says_so_in_every_polars_engine(tmp_path):
    """It said "no events" in memory and "table items: no items" when streamed (Spark: tests/test_data_engine_spark.py)."""
    from conrec.errors import DataValidationError

    data = all_neutral_log(tmp_path)
    for streaming in ("off", "on"):
        with pytest.raises(DataValidationError, match=ALL_NEUTRAL):
            _run(tmp_path, streaming, {**data, "streaming": streaming})


def test_streaming_simulator_events_equals_in_memory(tmp_path):
    sim = {"n_users": 30, "n_items": 80, "days": 12}
    mem, _ = _run(tmp_path, "mem", {"source": "simulator", "simulator": sim})
    out, _ = _run(tmp_path, "stream", {"source": "simulator", "simulator": sim, "streaming": "on", "partition_events": 300})
    assert_same_run(mem, out)
    assert (out.data / "user_facets.parquet").exists()


def test_auto_keeps_small_tables_in_memory(tmp_path, table_file):
    from conrec.data.engine import get_engine

    cfg = load_config(None, {"data": {"source": "table", "events_path": str(table_file)}})
    engine = get_engine("polars")
    assert not engine.reads_file(cfg.data)
    assert engine.reads_file(cfg.data.model_copy(update={"streaming_min_events": 10}))


def test_a_missing_engine_package_is_named_with_a_command_that_works_outside_a_checkout_too(monkeypatch):
    """Found in review: without pyspark, data.engine: spark said only `pip install -e '.[spark]'`, which works in a
    source checkout alone. The hint names the package at the version pyproject's spark extra pins (a checkout and an
    installed conrec alike), then the checkout's extra, each a command that pastes into a shell."""
    import sys

    import tomllib

    from conrec.data.engine import EXTRAS, get_engine
    from conrec.errors import ConfigError

    extras = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {name: " ".join(extras[name]) for name in EXTRAS} == EXTRAS  # the hint installs what the extra pins
    for module in ["pyspark", *[m for m in sys.modules if m.startswith("pyspark.")]]:  # imported or not, unimportable now
        monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.delitem(sys.modules, "conrec.data.engine.spark", raising=False)
    with pytest.raises(ConfigError) as missing:
        get_engine("spark")
    assert str(missing.value) == ("data.engine: spark needs 'pyspark': `pip install pyspark==4.0.5` "
                                  "(or, from a conrec checkout: `pip install -e '.[spark]'`)")


def test_streaming_refuses_unknown_items_before_writing_under_on_invalid_error(tmp_path, table_file):
    items = tmp_path / "items.csv"
    items.write_text("item_id,title\n" + "".join(f"i{k},Item {k}\n" for k in range(20)))  # i20..i22 missing
    data = {"source": "table", "events_path": str(table_file), "items_path": str(items), "streaming": "on", "on_invalid": "error"}
    with pytest.raises(DataValidationError, match=r"3 item id\(s\) are not in the items table, e.g. \['i20', 'i21', 'i22'\]"):
        _run(tmp_path, "bad", data)
    assert not (tmp_path / "bad" / "data" / "samples.parquet").exists()


def test_streaming_refuses_feedback_outside_minus_one_plus_one_under_on_invalid_error(tmp_path):
    path = tmp_path / "ev.parquet"
    edge_case_events().with_columns(feedback=pl.when(pl.col("ts") % 5 == 0).then(2).otherwise(pl.col("feedback"))).write_parquet(path)
    with pytest.raises(DataValidationError, match="'feedback' must be -1 .* value\\(s\\) are not, e.g. \\[\\{'user_id': .*'feedback': 2") as err:
        _run(tmp_path, "bad", {"source": "table", "events_path": str(path), "streaming": "on", "on_invalid": "error"})
    assert str(err.value).count("'feedback': 2") <= 3 and "\n" not in str(err.value)  # a few rows, one line (the docs promise examples)


# each kind of invalid row, as rows appended to the edge-case events (as ratings: 1 is a dislike, 5 a like)
WARTS_BY_KIND = {
    "missing_id": [(None, "i1", 1.0e9, 1.0), ("u1", None, 1.0e9, 5.0), (None, "i2", float("nan"), float("nan")),  # the last: its first kind
                   ("", "i1", 1.0e9 + 3, 1.0), ("u2", " ", 1.0e9 + 3, 5.0)],  # empty ids: polars kept them as ids, Spark not
    "bad_timestamp": [("u1", "i1", float("nan"), 1.0), ("u2", "i3", float("inf"), 5.0), ("u2", "i4", -5.0, 1.0)],
    "bad_feedback": [("u1", "i5", 1.0e9, float("nan")), ("u4", "i5", 1.0e9, 9.0), ("u4", "i6", 1.0e9, None)],  # NaN would read as a like
    "unknown_item": [("u1", "zzz", 1.0e9, 1.0), ("u5", "yyy", 1.0e9 + 7, 5.0)],
}


def warty_table(tmp_path: Path, duplicates: bool = True) -> tuple[dict[str, Any], dict[str, int]]:
    """The edge-case events as a ratings file with float timestamps (as pandas writes them when one
    is missing), every kind of invalid row, neutral ratings, optionally exact duplicates, and an items
    file with a duplicated id and an empty title; returns the data config and the expected counts."""
    good = edge_case_events().select(
        "user_id", "item_id", pl.col("ts").cast(pl.Float64), rating=pl.when(pl.col("feedback") == -1).then(1.0).otherwise(5.0)
    )
    schema = {"user_id": pl.String, "item_id": pl.String, "ts": pl.Float64, "rating": pl.Float64}
    bad = pl.DataFrame([row for rows in WARTS_BY_KIND.values() for row in rows], schema=schema, orient="row")
    neutral = good.head(4).with_columns(rating=pl.lit(3.0))
    parts = [good.head(300), bad, neutral, good.tail(-300)] + ([good.gather_every(17)] if duplicates else [])
    path = tmp_path / "warty.parquet"
    pl.concat(parts).write_parquet(path, row_group_size=64)
    items = tmp_path / "items.csv"
    orphans = ',Orphan\n"  ",Orphan too\n'  # items without an id: they stopped the run, naming the events file
    items.write_text("item_id,title\n" + "".join(f"i{k},{'' if k == 7 else f'Item {k}'}\n" for k in range(23)) + "i3,again\n" + orphans)
    expected = {k: len(rows) for k, rows in WARTS_BY_KIND.items()} | {"duplicate_item": 1, "empty_title": 1, "item_without_id": 2}
    expected["neutral_rating"] = neutral.height  # the 3-star ratings between the thresholds (they were dropped uncounted)
    if duplicates:
        expected["duplicate_event"] = good.gather_every(17).height
    data = {"source": "table", "events_path": str(path), "items_path": str(items), "rating_range": [1, 5],
            "split": {"horizon_days": 3, "max_history": 7}}
    return data, expected


def test_streaming_drops_and_counts_invalid_rows_as_the_loader_does(tmp_path):
    """Under ``on_invalid: drop`` (the default) the streaming scan drops the rows the loader drops,
    counts each under the same kind (a row with two faults under its first), reads float timestamps
    and repairs the items file: the same run directory, statistics included. NaN and out-of-scale
    ratings were read as likes by the scan before; missing ids and timestamps stopped it."""
    data, expected = warty_table(tmp_path)
    mem, mem_stats = _run(tmp_path, "mem", {**data, "streaming": "off"})
    out, out_stats = _run(tmp_path, "stream", {**data, "streaming": "on", "partition_events": 70})
    assert mem_stats["invalid_rows"] == {"policy": "drop", **expected}
    assert mem_stats["events"] == edge_case_events().height and mem_stats["samples"]["test"] > 0
    assert_same_run(mem, out)
    with pytest.raises(DataValidationError, match=r"items\.csv: 2 item\(s\) .* missing or empty id, e\.g\. \[\"the row titled 'Orphan'\".*on_invalid: error") as err:
        _run(tmp_path, "strict", {**data, "streaming": "on", "on_invalid": "error"})
    assert "\n" not in str(err.value)
    assert not (tmp_path / "strict" / "data" / "events.parquet").exists()


@pytest.mark.parametrize("labelled", [False, True])
def test_neutral_feedback_is_counted_as_neutral_ratings_are_in_memory_and_streamed(tmp_path, labelled):
    """Rows whose feedback is 0 (an impression, or a word conrec init listed as neutral) were dropped with no count:
    10,000 rows gave ``events 6,004`` and nothing said where the other 3,996 went. They are counted now, as
    ``neutral_feedback`` (a row with a missing id too under it, its first kind, as for neutral ratings), by the loader and
    the streaming scan alike; under ``on_invalid: error`` they are dropped uncounted, as they are no wart."""
    frame = edge_case_events()
    words = {-1: "hide", 0: "impression", 1: "click"}
    neutral = [(f"u{k % 6}", f"i{k % 23}", 1_700_000_000 + 97 * k, 0) for k in range(30)] + [("", "i1", 1_700_000_001, 0)]
    rows = [*frame.iter_rows(), *neutral]
    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id,ts,action\n" + "".join(f"{u},{i},{ts},{words[fb] if labelled else fb}\n" for u, i, ts, fb in rows))
    data = {"source": "table", "events_path": str(path), "columns": {"action": "feedback"}, "split": {"horizon_days": 3, "max_history": 7},
            **({"feedback_labels": {"hide": -1, "impression": 0, "click": 1}} if labelled else {})}
    mem, mem_stats = _run(tmp_path, "mem", {**data, "streaming": "off"})
    out, _ = _run(tmp_path, "stream", {**data, "streaming": "on", "partition_events": 300})
    assert mem_stats["invalid_rows"] == {"policy": "drop", "neutral_feedback": len(neutral)}
    assert mem_stats["events"] == frame.height
    assert_same_run(mem, out)
    for streaming in ("off", "on"):
        strict, strict_stats = _run(tmp_path, f"strict_{streaming}", {**data, "streaming": streaming, "on_invalid": "error"})
        assert strict_stats["invalid_rows"] == {"policy": "error"}
        assert pl.read_parquet(strict.events).equals(pl.read_parquet(mem.events))


def text_feedback_log(tmp_path: Path) -> tuple[dict[str, Any], Path]:
    """A CSV whose feedback column is text to polars and Spark (padded numbers, one "n/a", one empty)
    and whose epoch times read as numbers for more than the rows types are inferred from, then hold an
    "n/a"; its data config; and a second CSV whose feedback is words throughout."""
    frame = edge_case_events()
    path = tmp_path / "log.csv"
    lines = [f"{u},{i},{ts},{' ' if k % 9 else ''}{fb}" for k, (u, i, ts, fb) in enumerate(frame.iter_rows())]
    lines += [f"f{k % 40},i{k % 23},{1_700_000_000 + 300 * k},{1 - 2 * (k % 5 == 0)}" for k in range(INFER_ROWS)]
    late = ["u0,i1,1700000001,n/a", "u1,i2,1700000002,", "u2,i3,n/a,1"]
    path.write_text("user_id,item_id,ts,feedback\n" + "\n".join(lines + late) + "\n")
    words = tmp_path / "words.csv"
    words.write_text("user_id,item_id,ts,feedback\n" + "".join(f"u{k},i{k},{100 + k},{'hide' if k % 2 else 'like'}\n" for k in range(6)))
    return {"source": "table", "events_path": str(path), "split": {"horizon_days": 3, "max_history": 7}}, words


WORDS_REFUSED = r"column 'feedback' has value\(s\) \['hide', 'like'\] that are not -1/0/\+1; for words"


def test_a_feedback_column_read_as_text_streams_as_the_loader_reads_it(tmp_path):
    """A CSV feedback column with a few unreadable values ("n/a") is text to polars: the loader drops
    and counts those rows, but the streaming scan stopped on the whole file ("got String"). An "n/a"
    after the rows the types are inferred from made the whole file unreadable (a polars traceback
    when streaming). Words throughout are refused by both in one line naming data.feedback_labels."""
    data, words = text_feedback_log(tmp_path)
    mem, mem_stats = _run(tmp_path, "mem", {**data, "streaming": "off"})
    out, _ = _run(tmp_path, "stream", {**data, "streaming": "on", "partition_events": 700})
    assert mem_stats["events"] == edge_case_events().height + INFER_ROWS
    assert mem_stats["invalid_rows"] == {"policy": "drop", "bad_feedback": 2, "bad_timestamp": 1}
    assert_same_run(mem, out)
    packed = tmp_path / "log.csv.gz"  # a gzipped CSV streams too (the scan refused one)
    packed.write_bytes(gzip.compress(Path(data["events_path"]).read_bytes()))
    assert_same_run(mem, _run(tmp_path, "stream_gz", {**data, "events_path": str(packed), "streaming": "on", "partition_events": 700})[0])
    for streaming in ("off", "on"):
        with pytest.raises(DataValidationError, match=WORDS_REFUSED):
            _run(tmp_path, f"words_{streaming}", {**data, "events_path": str(words), "streaming": streaming})


def half_star_log(tmp_path: Path) -> tuple[dict[str, Any], Path]:
    """Ratings that are whole stars and times that are integers for the rows a CSV's types are inferred from, then
    half stars and float times: the data config of the log as Parquet (the ratings floats throughout), and the same
    log as CSV."""
    whole = [(f"u{k % 40}", f"i{k % 23}", 1_700_000_000 + 300 * k, float(1 + 4 * (k % 3 != 0))) for k in range(INFER_ROWS)]
    late = [(f"u{k % 40}", f"i{k % 23}", 1_700_000_000 + 300 * (INFER_ROWS + k), 4.5 if k % 3 else 1.5) for k in range(60)]
    frame = pl.DataFrame(whole + late, schema={"user": pl.String, "item": pl.String, "ts": pl.Int64, "stars": pl.Float64}, orient="row")
    plain, text = tmp_path / "ratings.parquet", tmp_path / "ratings.csv"
    frame.write_parquet(plain)
    # and, after those rows, times written as floats (1700000000.0, as pandas writes them; a fraction floored): polars
    # cast them to the integers of the first rows, null, and dropped them as bad timestamps where Spark kept them
    late_ts = {n: f"{ts}.0" if n % 2 else f"{ts}.25" for n, ts in enumerate(frame["ts"]) if n >= INFER_ROWS}
    text.write_text("user,item,ts,stars\n" + "".join(f"{u},{i},{late_ts.get(n, ts)},{r:g}\n" for n, (u, i, ts, r) in enumerate(frame.iter_rows())))
    data = {"source": "table", "events_path": str(plain), "columns": {"user": "user_id", "item": "item_id", "stars": "rating"},
            "dislike_max_rating": 2, "like_min_rating": 3, "rating_range": [1, 5], "split": {"horizon_days": 3, "max_history": 7}}
    return data, text


def test_half_stars_after_the_rows_types_are_inferred_from_are_ratings(tmp_path):
    """The rating column's type was inferred from the first rows (integers) and later values cast to
    it: every half star after them (``4.5``) became null and was dropped as an invalid rating, in memory
    and streamed (Spark infers from the whole file and kept them). They are ratings, as in a Parquet file."""
    data, text = half_star_log(tmp_path)
    ref, ref_stats = _run(tmp_path, "plain", data)
    assert ref_stats["events"] == INFER_ROWS + 60  # no rating dropped
    for streaming in ("off", "on"):
        assert_same_run(ref, _run(tmp_path, f"csv_{streaming}", {**data, "events_path": str(text), "streaming": streaming})[0])


def two_digit_year_logs(tmp_path: Path) -> list[tuple[dict[str, Any], Path]]:
    """The edge-case log in 2023 and 30 years earlier: the data config of each as Parquet, and the same
    log as CSV with times like ``11/14/23 22:13:20`` (a two-digit year; 93 is 1993, 23 is 2023)."""
    import datetime as dt

    out = []
    for back in (0, 30 * 365 * DAY):
        frame = edge_case_events().with_columns(pl.col("ts") - back)
        plain, text = tmp_path / f"log{back}.parquet", tmp_path / f"log{back}.csv"
        frame.write_parquet(plain)
        stamps = [dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%m/%d/%y %H:%M:%S") for ts in frame["ts"]]
        text.write_text("user_id,item_id,ts,feedback\n" + "".join(f"{u},{i},{t},{fb}\n" for (u, i, _, fb), t in zip(frame.iter_rows(), stamps)))
        out.append(({"source": "table", "events_path": str(plain), "split": {"horizon_days": 3, "max_history": 7}}, text))
    return out


def test_two_digit_years_read_as_their_century(tmp_path):
    """``12/25/23`` tied between ``%m/%d/%Y`` (the year 23) and ``%m/%d/%y`` was read as the year 23
    (``%y`` was not listed): every event was then dropped as a negative timestamp."""
    for k, (data, text) in enumerate(two_digit_year_logs(tmp_path)):
        ref, _ = _run(tmp_path, f"plain{k}", data)
        for streaming in ("off", "on"):
            assert_same_run(ref, _run(tmp_path, f"yy{k}_{streaming}", {**data, "events_path": str(text), "streaming": streaming})[0])


def digit_date_log(tmp_path: Path, layout: str = "%Y%m%d") -> tuple[dict[str, Any], Path]:
    """The edge-case log at midnights: the data config of it as Parquet (epoch seconds), and the same
    log as CSV with its days as eight digits (``20231114``; ``02122023`` with ``%d%m%Y``), read with
    ``ts_format: layout``."""
    import datetime as dt

    frame = edge_case_events().with_columns(pl.col("ts") // DAY * DAY + pl.int_range(pl.len()) % 7 * DAY).unique(["user_id", "item_id", "ts"])
    plain, text = tmp_path / "days.parquet", tmp_path / f"days_{layout.replace('%', '')}.csv"
    frame.write_parquet(plain)
    days = [dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime(layout) for ts in frame["ts"]]
    text.write_text("user_id,item_id,ts,feedback\n" + "".join(f"{u},{i},{d},{fb}\n" for (u, i, _, fb), d in zip(frame.iter_rows(), days)))
    return {"source": "table", "events_path": str(plain), "split": {"horizon_days": 3, "max_history": 7}}, text


def test_dates_written_as_digits_read_with_their_layout(tmp_path):
    """With ``ts_format: '%Y%m%d'`` an integer column is dates (the loaders read integers as epoch
    seconds whatever the layout said), in memory and streamed."""
    for layout in ("%Y%m%d", "%d%m%Y"):  # 02122023: read as the integer 2122023, a day lost its zero and the row was dropped
        data, text = digit_date_log(tmp_path, layout)
        assert layout == "%Y%m%d" or any(line.split(",")[2].startswith("0") for line in text.read_text().splitlines()[1:])
        ref, _ = _run(tmp_path, f"plain_{layout[1]}", data)  # the log's row order is drawn anew per call: its own reference
        for streaming in ("off", "on"):
            got, _ = _run(tmp_path, f"days_{layout[1]}_{streaming}", {**data, "events_path": str(text), "ts_format": layout, "streaming": streaming})
            assert_same_run(ref, got)


def microsecond_log(tmp_path: Path) -> tuple[dict[str, Any], Path]:
    """The edge-case log's data config (epoch seconds), and the same log with epoch microseconds."""
    plain, micro = tmp_path / "seconds.parquet", tmp_path / "micro.parquet"
    edge_case_events().write_parquet(plain)
    edge_case_events().with_columns(pl.col("ts") * 1_000_000 + 999).write_parquet(micro)
    return {"source": "table", "events_path": str(plain), "split": {"horizon_days": 3, "max_history": 7}}, micro


def test_epoch_microseconds_read_with_ts_unit_us(tmp_path):
    """16-digit epoch microseconds had no unit: init called them milliseconds (every time beyond year 9999)."""
    data, micro = microsecond_log(tmp_path)
    ref, _ = _run(tmp_path, "plain", data)
    for streaming in ("off", "on"):
        assert_same_run(ref, _run(tmp_path, f"us_{streaming}", {**data, "events_path": str(micro), "ts_unit": "us", "streaming": streaming})[0])


def float_id_logs(tmp_path: Path, first: int = 0) -> tuple[dict[str, Any], list[Path]]:
    """Numeric ids as pandas writes them when one is missing (``32.0``), as Parquet and as CSV, with one
    such row (the Parquet file has two more: a NaN user and a NaN item, missing ids too); and the data
    config of the same log with integer ids (from ``first`` on)."""
    frame = edge_case_events().with_columns(pl.col("user_id", "item_id").str.slice(1).cast(pl.Int64) + first)
    plain = tmp_path / "plain.parquet"
    frame.write_parquet(plain)
    floats = pl.concat([frame.with_columns(pl.col("user_id", "item_id").cast(pl.Float64)),
                        pl.DataFrame({"user_id": [None], "item_id": [1.0 + first], "ts": [1_700_000_000], "feedback": [1]},
                                     schema={"user_id": pl.Float64, "item_id": pl.Float64, "ts": pl.Int64, "feedback": pl.Int8})])
    files = [tmp_path / "floats.parquet", tmp_path / "floats.csv"]
    floats.write_csv(files[1])
    nan = float("nan")
    pl.concat([floats, pl.DataFrame({"user_id": [nan, 2.0], "item_id": [3.0 + first, nan], "ts": [1_700_000_000] * 2, "feedback": [-1] * 2},
                                    schema=floats.schema)]).write_parquet(files[0])
    return {"source": "table", "events_path": str(plain), "split": {"horizon_days": 3, "max_history": 7}}, files


def test_integer_ids_that_pandas_wrote_as_floats_read_as_integers(tmp_path):
    """``32.0`` matched no ``32`` of an items file, and named other users than the integer log: every
    event could be dropped as on an unknown item. Integral float ids now read as their integer text; a NaN
    id is a missing id (it was a user or item ``"NaN"``)."""
    data, files = float_id_logs(tmp_path)
    ref, _ = _run(tmp_path, "plain", data)
    for path in files:
        for streaming in ("off", "on"):
            got, stats = _run(tmp_path, f"{path.suffix[1:]}_{streaming}", {**data, "events_path": str(path), "streaming": streaming})
            assert stats["invalid_rows"] == {"policy": "drop", "missing_id": 3 if path.suffix == ".parquet" else 1}, path.name
            for f in ("events.parquet", "samples.parquet"):
                assert pl.read_parquet(ref.data / f).equals(pl.read_parquet(got.data / f)), (path.name, streaming, f)


DECIMAL_USERS = {"u0": "0.5", "u1": "1", "u2": "1.0", "u3": "1.00", "u4": "2.5", "u5": "7.0"}
DECIMAL_ITEMS = {f"i{k}": ("10", "10.0", "10.00")[k] if k < 3 else (f"{k + 30}.5" if k % 2 else f"{k + 30}.0") for k in range(23)}


def decimal_id_logs(tmp_path: Path) -> tuple[dict[str, Any], list[tuple[dict[str, Any], dict[str, str], dict[str, str]]]]:
    """Ids that look like decimals in columns that are no integers written as floats: the data config of the
    plain log, and per case the config of the same log with its ids rewritten and the rewrites (user, item).

    As CSV (events and items file): ``0.5``, ``1``, ``1.0``, ``1.00``, ``10``, ``10.0`` and ``10.00`` are
    distinct ids as written. As Parquet floats: ``0.5``, ``1.0`` and ``2.0`` are, and the integral ones keep
    their float text (a column holding ``0.5`` is no column of integers)."""
    frame = edge_case_events()
    plain = tmp_path / "plain.parquet"
    frame.write_parquet(plain)
    items = pl.DataFrame({"item_id": sorted(DECIMAL_ITEMS), "title": [f"title {i}" for i in sorted(DECIMAL_ITEMS)]})
    data = {"source": "table", "events_path": str(plain), "split": {"horizon_days": 3, "max_history": 7}}
    cases = []
    csv_events, csv_items = tmp_path / "decimal.csv", tmp_path / "decimal_items.csv"
    frame.with_columns(pl.col("user_id").replace_strict(DECIMAL_USERS), pl.col("item_id").replace_strict(DECIMAL_ITEMS)).write_csv(csv_events)
    items.with_columns(pl.col("item_id").replace_strict(DECIMAL_ITEMS)).write_csv(csv_items)
    cases.append(({**data, "events_path": str(csv_events), "items_path": str(csv_items)}, DECIMAL_USERS, DECIMAL_ITEMS))
    users = {u: ("0.5", "1.0", "2.0", "3.0", "4.0", "5.0")[k] for k, u in enumerate(sorted(DECIMAL_USERS))}
    item_ids = {i: f"{k}.5" if k % 2 else f"{k}.0" for i, k in ((f"i{k}", k) for k in range(23))}
    pq_events, pq_items = tmp_path / "decimal.parquet", tmp_path / "decimal_items.parquet"
    frame.with_columns(pl.col("user_id").replace_strict(users).cast(pl.Float64), pl.col("item_id").replace_strict(item_ids).cast(pl.Float64)).write_parquet(pq_events)
    items.with_columns(pl.col("item_id").replace_strict(item_ids).cast(pl.Float64)).write_parquet(pq_items)
    cases.append(({**data, "events_path": str(pq_events), "items_path": str(pq_items)}, users, item_ids))
    return data, cases


def test_decimal_looking_ids_are_kept_as_written(tmp_path):
    """Items ``10``, ``10.0`` and ``10.00`` became one item ``10`` (their events too, as one item both liked
    and disliked), called "duplicate item ids": every float-looking id lost its ``.0``, although a column
    holding ``0.5`` is no column of integers that pandas wrote as floats. Such ids are now kept as written,
    in the events' user and item ids and in the items file, by both polars engines."""
    data, cases = decimal_id_logs(tmp_path)
    ref, _ = _run(tmp_path, "plain", data)
    want = pl.read_parquet(ref.data / "events.parquet")
    for k, (case, users, item_ids) in enumerate(cases):
        for streaming in ("off", "on"):
            got, stats = _run(tmp_path, f"case{k}_{streaming}", {**case, "streaming": streaming})
            assert stats["invalid_rows"] == {"policy": "drop"}, (k, streaming)  # no duplicate item, no unknown one
            items = pl.read_parquet(got.data / "items.parquet")
            assert sorted(items["item_id"]) == sorted(item_ids.values()), (k, streaming)
            events = pl.read_parquet(got.data / "events.parquet")
            renamed = want.with_columns(pl.col("user_id").replace_strict(users), pl.col("item_id").replace_strict(item_ids))
            assert events.sort(pl.all()).equals(renamed.sort(pl.all())), (k, streaming)


def test_ids_one_file_writes_as_floats_and_the_other_does_not_are_named_as_such(tmp_path):
    """An items file holding ``0.5`` keeps ``10.0`` as written, while an events file whose item ids are all ``10.0`` and
    ``20.0`` reads them as ``10`` and ``20``: every event is on an unknown item. Init and the stage (both polars engines)
    say that the ids differ by a '.0' rather than only "check that both name items alike"."""
    from conrec.init_config import init_config

    ev, it = tmp_path / "ev.csv", tmp_path / "items.csv"
    ev.write_text("user_id,item_id,ts,feedback\n" + "".join(f"u{k % 3},{10 * (1 + k % 2)}.0,{1_700_000_000 + k * 3600},{-1 if k % 4 == 0 else 1}\n"
                                                          for k in range(60)))
    it.write_text("item_id,title\n0.5,Half\n10.0,Ten\n20.0,Twenty\n")
    for streaming in ("off", "on"):
        with pytest.raises(DataValidationError, match=r"the ids differ by a '\.0' \('10' vs '10\.0'\)"):
            _run(tmp_path, f"mismatch_{streaming}", {"source": "table", "events_path": str(ev), "items_path": str(it), "streaming": streaming})
    assert "the ids differ by a '.0' ('10' vs '10.0')" in init_config(ev, it, tmp_path / "my.yaml", preset="tiny")[1].items_warning


def test_integer_ids_written_as_floats_lose_the_point_unless_the_column_holds_decimals_or_both_spellings():
    """Which id columns lose the ``.0`` of integers written as floats (``32.0``, read as ``32``): any holding one,
    beside bare integers and text ids too; a ``0.5``, or an id both with and without it (``10`` and ``10.0``, or
    ``10.0`` and ``10.00``, which would become one id) keeps the column as written."""
    from conrec.data.schema import id_as_text, integral_float_text

    def text(values: list[str | None]) -> list[str | None]:
        return pl.DataFrame({"x": values}, schema={"x": pl.String}).select(integral_float_text("x"))["x"].to_list()

    assert text(["32.0", None, "-4.0", "007.0"]) == ["32", None, "-4", "007"]
    assert text(["32.00", "4.00"]) == ["32", "4"]
    assert text(["33.0", "32", "X1", None, "4.00"]) == ["33", "32", "X1", None, "4"]  # a concat of exports, a text id
    for kept in (["0.5", "10.0"], ["10", "10.0"], ["10.0", "10.00"], [None, None]):
        assert text(kept) == kept
    floats = pl.DataFrame({"a": [32.0, None, float("nan")], "b": [0.5, 10.0, None]})
    assert floats.select(id_as_text(c, pl.Float64()) for c in floats.columns).rows() == [("32", "0.5"), (None, "10.0"), (None, None)]


def mixed_float_id_logs(tmp_path: Path) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """Two logs whose item ids are integers, some written as floats (``33.0``), for an items file of bare integers:
    a concat of a pandas export (ids 0..24 as ``k.0``) and a plain one (ids 25..49), and 10,010 events of
    float-looking ids with one text id ``X1`` after row 10,000 (the rows a CSV's types are inferred from). Returns
    both ``data`` settings and the items file."""
    items = tmp_path / "items.csv"
    items.write_text("item_id,title\n" + "".join(f"{k},t{k}\n" for k in range(50)))
    concat, late = tmp_path / "concat.csv", tmp_path / "late.csv"
    concat.write_text("user_id,item_id,ts,feedback\n" + "".join(
        f"u{k % 20},{k % 25 if k < 300 else 25 + k % 25}{'.0' if k < 300 else ''},{1_700_000_000 + k * 3600},{-1 if k % 4 == 0 else 1}\n"
        for k in range(400)))
    late.write_text("user_id,item_id,ts,feedback\n" + "".join(
        f"u{k % 200},{'X1' if k == 10_005 else f'{k % 50}.0'},{1_700_000_000 + k * 600},{-1 if k % 4 == 0 else 1}\n" for k in range(10_010)))
    base = {"source": "table", "items_path": str(items)}
    return {**base, "events_path": str(concat)}, {**base, "events_path": str(late)}, items


def test_logs_mixing_integer_ids_written_as_floats_with_others_keep_their_events(tmp_path):
    """Found in review: an id column lost its ``.0`` only when every id had one, so a concat of a pandas export
    (``33.0``) and a plain one (``32``) kept ``33.0``, and float-looking ids with one text id after row 10,000
    kept theirs: 300 of 400 events, and all but one of 10,010, were on ids the items file writes ``33``, dropped
    (the second refused as "no valid event left"). Both engines now read them as the items file does."""
    concat, late, _ = mixed_float_id_logs(tmp_path)
    for streaming in ("off", "on"):
        run, stats = _run(tmp_path, f"concat_{streaming}", {**concat, "streaming": streaming})
        assert stats["invalid_rows"] == {"policy": "drop"}, streaming
        assert pl.read_parquet(run.data / "events.parquet").height == 400
        run, stats = _run(tmp_path, f"late_{streaming}", {**late, "streaming": streaming})
        assert stats["invalid_rows"] == {"policy": "drop", "unknown_item": 1}, streaming  # X1 alone
        assert pl.read_parquet(run.data / "events.parquet").height == 10_009


def test_the_point_zero_verdict_is_one_pass_per_file_and_anew_when_the_file_changes(tmp_path, monkeypatch):
    """Found in review: whether an id column's ``.0`` goes (a pass over the whole file) was asked at every scan of the
    events file, and a streaming run scans it twice (for its items, then its events): one more read of the file per run.
    It is remembered per file: a run asks it once, a rewritten file is judged anew, and two ``data.columns`` that name
    different columns of one file each get their column's verdict."""
    from conrec.data.engine import scan
    from conrec.data.engine.scan import scan_table

    asked: list[str] = []

    def counted(column: str, dtype: pl.DataType) -> pl.Expr:
        asked.append(column)
        return integral_float_ids(column, dtype)

    integral_float_ids = scan.integral_float_ids
    monkeypatch.setattr(scan, "integral_float_ids", counted)
    ev = tmp_path / "ev.csv"
    rows = [f"u{k % 10},{10 + k % 20}.0,{1_700_000_000 + k * 3600},{-1 if k % 4 == 0 else 1}\n" for k in range(300)]
    ev.write_text("user_id,item_id,ts,feedback\n" + "".join(rows))
    run, _ = _run(tmp_path, "once", {"source": "table", "events_path": str(ev), "streaming": "on"})
    assert asked == ["item_id"]  # the user ids (u0) are text: no verdict to ask
    assert "10" in pl.read_parquet(run.data / "events.parquet")["item_id"].to_list()
    ev.write_text("user_id,item_id,ts,feedback\n" + "".join(rows) + "u1,0.5,1700000000,1\n")  # a decimal: the ids stay as written
    cfg = load_config(None, {"data": {"source": "table", "events_path": str(ev)}}).data
    assert "10.0" in scan_table(cfg).collect()["item_id"].to_list()
    assert asked == ["item_id"] * 2
    floats = tmp_path / "floats.parquet"  # column a: integers written as floats; b: one is 0.5
    pl.DataFrame({"u": ["u1", "u2"], "a": [10.0, 20.0], "b": [10.0, 0.5], "ts": [1_700_000_000] * 2, "feedback": [1, -1]}).write_parquet(floats)
    for column, want in (("a", ["10", "20"]), ("b", ["10.0", "0.5"]), ("a", ["10", "20"])):
        cfg = load_config(None, {"data": {"source": "table", "events_path": str(floats), "columns": {"u": "user_id", column: "item_id"}}}).data
        assert scan_table(cfg).collect()["item_id"].to_list() == want, column
    assert asked == ["item_id"] * 4  # a and b once each


def test_a_file_replaced_with_the_same_size_and_time_is_judged_anew(tmp_path):
    """Found in review: the verdict was kept per (path, mtime_ns, size), so a file replaced by one of the same size with
    its modification time kept (`cp -p`, `rsync -a`, an archive) got the old verdict in a long-lived process: `10.0` was
    read as `10` beside `20.5`, which neither file gives. The inode and status-change time are part of the key."""
    import os

    from conrec.data.engine.scan import scan_table

    ev = tmp_path / "ev.csv"

    def write(ids: list[str], to: Path = ev) -> None:
        to.write_text("user_id,item_id,ts,feedback\n" + "".join(f"u{k},{i},{1_700_000_000 + k},1\n" for k, i in enumerate(ids)))

    cfg = load_config(None, {"data": {"source": "table", "events_path": str(ev)}}).data
    write(["10.0", "20.0"])
    kept = ev.stat()
    assert scan_table(cfg).collect()["item_id"].to_list() == ["10", "20"]
    write(["10.0", "20.5"])  # rewritten in place, its time set back (os.utime, as `cp -p` does)
    os.utime(ev, ns=(kept.st_atime_ns, kept.st_mtime_ns))
    assert scan_table(cfg).collect()["item_id"].to_list() == ["10.0", "20.5"]
    other = tmp_path / "other.csv"  # a replacement by rename (`rsync -a`), same size and time
    write(["30.0", "40.0"], other)
    os.utime(other, ns=(kept.st_atime_ns, kept.st_mtime_ns))
    os.replace(other, ev)
    assert scan_table(cfg).collect()["item_id"].to_list() == ["30", "40"]


def test_events_dropped_on_ids_that_differ_by_a_point_zero_say_so(tmp_path):
    """Found in review: when some, not all, events were on item ids that differ from the items file's by a ``.0``
    (``10.0`` beside ``10``, kept as written since both are there), the warning said only "N event(s) on item ids
    not in the items table: dropped"; it now says why, in both polars engines, and init judges the ids over the whole
    column as the stage does."""
    import io

    from conrec.init_config import init_config

    items, ev = tmp_path / "items.csv", tmp_path / "ev.csv"
    items.write_text("item_id,title\n" + "".join(f"{k},t{k}\n" for k in range(10, 30)))
    ev.write_text("user_id,item_id,ts,feedback\n" + "".join(
        f"u{k % 10},{10 + k % 20}{'.0' if k % 3 == 0 else ''},{1_700_000_000 + k * 3600},{-1 if k % 4 == 0 else 1}\n" for k in range(300)))
    data = {"source": "table", "events_path": str(ev), "items_path": str(items)}
    for streaming in ("off", "on"):
        out = io.StringIO()
        cfg = load_config(None, {"run_dir": str(tmp_path / f"hint_{streaming}"), "data": {**data, "streaming": streaming}})
        stats = stage.run(cfg.data, cfg.run_dir, console=Console(file=out, width=2000))
        assert stats["invalid_rows"] == {"policy": "drop", "unknown_item": 100}, streaming
        assert "event(s) on item ids not in the items table: dropped; the ids differ by a '.0' (" in out.getvalue(), streaming
    # init judges the '.0' over the whole column, as the stage does: a sample of 10,000 ids all '.0' would lose it,
    # but the bare ids after it keep the column as written
    late = tmp_path / "late.csv"
    late.write_text("user_id,item_id,ts,feedback\n" + "".join(
        f"u{k % 10},{10 + k % 20}{'.0' if k < 10_000 else ''},{1_700_000_000 + k * 60},{-1 if k % 4 == 0 else 1}\n" for k in range(10_020)))
    assert "the ids differ by a '.0' (" in init_config(late, items, tmp_path / "my.yaml", preset="tiny")[1].items_warning


def test_decimal_times_and_ratings_of_a_database_export_read_as_numbers(tmp_path):
    """A Parquet export of NUMERIC columns holds decimals: a decimal epoch was refused by both polars
    engines ("must hold timestamps"); it now reads as the integer it is, ratings too."""
    frame = edge_case_events()
    plain = tmp_path / "plain.parquet"
    frame.with_columns(rating=pl.when(pl.col("feedback") == -1).then(1.0).otherwise(4.5)).drop("feedback").write_parquet(plain)
    decimal = tmp_path / "decimal.parquet"
    pl.read_parquet(plain).with_columns(pl.col("ts").cast(pl.Decimal(18, 0)), pl.col("rating").cast(pl.Decimal(3, 1))).write_parquet(decimal)
    data = {"source": "table", "events_path": str(plain), "split": {"horizon_days": 3, "max_history": 7}}
    ref, _ = _run(tmp_path, "plain", data)
    for streaming in ("off", "on"):
        assert_same_run(ref, _run(tmp_path, f"decimal_{streaming}", {**data, "events_path": str(decimal), "streaming": streaming})[0])


def categorical_logs(tmp_path: Path) -> list[tuple[dict[str, Any], Path]]:
    """Feedback words and text ratings as Parquet: the data config of each plain file, and the same
    file with every column but the time categorical (as pandas writes its ``category`` columns)."""
    frame = edge_case_events()
    words = frame.with_columns(feedback=pl.when(pl.col("feedback") == -1).then(pl.lit("hide")).otherwise(pl.lit("like")))
    ratings = frame.with_columns(rating=pl.when(pl.col("feedback") == -1).then(pl.lit("1")).otherwise(pl.lit("4"))).drop("feedback")
    out = []
    for name, plain, extra in (("words", words, {"feedback_labels": {"hide": -1, "like": 1}}), ("ratings", ratings, {})):
        paths = [tmp_path / f"{name}.parquet", tmp_path / f"{name}_cat.parquet"]
        plain.write_parquet(paths[0])
        plain.with_columns(pl.exclude("ts").cast(pl.Categorical)).write_parquet(paths[1])
        out.append(({"source": "table", "events_path": str(paths[0]), "split": {"horizon_days": 3, "max_history": 7}, **extra}, paths[1]))
    return out


def test_categorical_parquet_columns_read_as_the_same_text(tmp_path):
    """pandas writes a ``category`` column to Parquet as a dictionary, which polars reads as Categorical:
    a categorical feedback column was refused ("holds Categorical, not text"), a categorical rating too
    ("must be numeric"). Read as text, such a file gives the run of the plain one, in memory and streamed."""
    for k, (data, categorical) in enumerate(categorical_logs(tmp_path)):
        ref, _ = _run(tmp_path, f"plain{k}", data)
        for streaming in ("off", "on"):
            assert_same_run(ref, _run(tmp_path, f"cat{k}_{streaming}", {**data, "events_path": str(categorical), "streaming": streaming})[0])


@pytest.mark.parametrize("streaming", ["off", "on"])
def test_a_file_with_only_a_header_is_named(tmp_path, streaming):
    """A header-only events file ended in "table items: no items" (the placeholder items come from the
    events), a header-only items file in "no items" under the events file's name."""
    empty = tmp_path / "empty.csv"
    empty.write_text("user_id,item_id,ts,feedback\n")
    with pytest.raises(DataValidationError, match=r"events file .*/empty.csv has no rows, only a header \(user_id, item_id, ts, feedback\)$"):
        _run(tmp_path, "no_events", {"source": "table", "events_path": str(empty), "streaming": streaming})
    events = tmp_path / "events.parquet"
    edge_case_events().write_parquet(events)
    items = tmp_path / "items.csv"
    items.write_text("item_id,title\n")
    with pytest.raises(DataValidationError, match=r"items file .*/items.csv has no rows, only a header \(item_id, title\)$"):
        _run(tmp_path, "no_items", {"source": "table", "events_path": str(events), "items_path": str(items), "streaming": streaming})


@pytest.mark.parametrize("streaming", ["off", "on"])
def test_a_log_with_no_valid_row_is_told_why(tmp_path, streaming):
    """Every row dropped: the error says which kinds, and for ids the items file does not know, a few
    of each side (``12`` against ``0012``), not "no events"."""
    path = tmp_path / "ev.csv"
    path.write_text("user_id,item_id,ts,feedback\n" + "".join(f"u{k},i{k},{100 + k},7\n" for k in range(5)))
    with pytest.raises(DataValidationError, match=r"no valid event left: every row was dropped \(5 event\(s\) with a missing or out-of-range"):
        _run(tmp_path, "bad", {"source": "table", "events_path": str(path), "streaming": streaming})
    padded = tmp_path / "padded.parquet"
    edge_case_events().with_columns(item_id=pl.col("item_id").str.strip_prefix("i")).write_parquet(padded)
    items = tmp_path / "items.csv"
    items.write_text("item_id,title\n" + "".join(f"{k:04d},Item {k}\n" for k in range(23)))
    data = {"source": "table", "events_path": str(padded), "items_path": str(items), "streaming": streaming}
    with pytest.raises(DataValidationError, match=r"on item ids not in the items table\); event item ids such as \['\d+', .* vs the items file's \['0000', '0001', '0002'\]"):
        _run(tmp_path, "padded", data)
    spaced = tmp_path / "spaced.csv"  # written with ", " between fields: the ids carry the space
    spaced.write_text("user_id, item_id,ts,feedback\n" + "".join(f"u{k}, {k:04d},{100 + k},-1\n" for k in range(5)))
    data = {"source": "table", "events_path": str(spaced), "items_path": str(items), "streaming": streaming, "columns": {" item_id": "item_id"}}
    with pytest.raises(DataValidationError, match=r"the ids differ by the spaces around them \(' 0000' vs '0000'\), as in a CSV written with ', '"):
        _run(tmp_path, "spaced", data)


def mixed_units_log(tmp_path: Path) -> Path:
    """40 events in epoch seconds, then 60 in milliseconds (a logger that changed its unit)."""
    path = tmp_path / "mixed.csv"
    times = [1_600_000_000 + 3_600 * k for k in range(40)] + [(1_610_000_000 + 3_600 * k) * 1_000 for k in range(60)]
    path.write_text("user_id,item_id,ts,feedback\n" + "".join(f"u{k % 4},i{k % 9},{t},{-1 if k % 3 else 1}\n" for k, t in enumerate(times)))
    return path


MIXED_UNITS = (r"column '(ts|timestamp)' mixes epoch units: 40 value\(s\) look like epoch seconds \(e.g. 1600000000\) and 60 value\(s\) "
               r"look like epoch milliseconds \(e.g. 1610000000000\); no data.ts_unit reads both")


@pytest.mark.parametrize("streaming", ["off", "on"])
@pytest.mark.parametrize("unit", ["auto", "s", "ms"])
def test_epoch_times_in_two_units_are_refused_whatever_the_unit_and_policy(tmp_path, streaming, unit):
    """With ts_unit: ms (init's guess from the median) the seconds rows were kept as January-1970 events without a
    word; with s the milliseconds were refused as "beyond year 9999 ... set data.ts_unit: ms", advice that led to the same."""
    data = {"source": "table", "events_path": str(mixed_units_log(tmp_path)), "streaming": streaming, "ts_unit": unit, "on_invalid": "drop"}
    with pytest.raises(DataValidationError, match=MIXED_UNITS):
        _run(tmp_path, "mixed", data)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_streaming_equals_in_memory_on_random_logs_with_many_ties(tmp_path, seed):
    """Random users, items and feedback on a coarse clock (many equal timestamps), partitions far
    smaller than the log: the partitioned path must rebuild exactly the same files."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n = 3000
    events = pl.DataFrame(
        {
            "user_id": [f"u{k}" for k in rng.zipf(1.6, n) % 97],
            "item_id": [f"i{k}" for k in rng.integers(0, 40, n)],
            "ts": 1_700_000_000 + rng.integers(0, 200, n) * 7200,
            "feedback": np.where(rng.random(n) < 0.3, -1, 1).astype(np.int8),
        }
    )
    path = tmp_path / "ev.parquet"
    events.write_parquet(path, row_group_size=500)
    split = {"protocol": "per_user" if seed % 2 else "global_time", "horizon_days": 2, "max_horizon_days": 5, "max_history": 9}
    base = {"source": "table", "events_path": str(path), "split": split}
    mem, _ = _run(tmp_path, "mem", {**base, "streaming": "off"})
    out, _ = _run(tmp_path, "stream", {**base, "streaming": "on", "partition_events": 211})
    assert_same_run(mem, out)


def _file_with_duplicates(tmp_path: Path) -> tuple[Path, pl.DataFrame, int]:
    """The edge cases plus exact duplicate rows, shuffled into the file: u0's last 100 events three
    times over (late events: they pull both quantiles later) and every 7th event of u1..u5 once
    more (users in other partitions). Returns (file, the events without their duplicates, count)."""
    import numpy as np

    base = edge_case_events()
    late = base.filter(pl.col("user_id") == "u0").tail(100)
    spread = base.filter(pl.col("user_id") != "u0").gather_every(7)
    dups = pl.concat([late, late, spread])
    rows = pl.concat([base, dups])
    rows = rows[np.random.default_rng(0).permutation(rows.height)]  # duplicates before and after their originals
    path = tmp_path / "dup.parquet"
    rows.write_parquet(path, row_group_size=100)
    return path, rows.unique(maintain_order=True), dups.height


def test_streaming_drops_duplicates_per_partition_like_the_loader(tmp_path):
    """Dropping exact duplicates is per user partition in streaming: the same events, samples,
    cut-offs and count as the loader's global dedupe, with the cut-offs taken after the dedupe
    (here the duplicates would move them)."""
    path, deduped, n_dups = _file_with_duplicates(tmp_path)
    raw = pl.read_parquet(path)
    assert time_cutoffs(raw, SplitConfig()) != time_cutoffs(deduped, SplitConfig()), "the duplicates must move a cut-off"
    base = {"source": "table", "events_path": str(path), "split": {"horizon_days": 3, "max_history": 7}}
    mem, mem_stats = _run(tmp_path, "mem", {**base, "streaming": "off"})
    out, out_stats = _run(tmp_path, "stream", {**base, "streaming": "on", "partition_events": 70})
    assert mem_stats["invalid_rows"] == {"policy": "drop", "duplicate_event": n_dups}
    cuts = time_cutoffs(deduped, SplitConfig())
    assert (out_stats["valid_cutoff_ts"], out_stats["test_cutoff_ts"]) == (cuts.valid, cuts.test)
    assert out_stats["events"] == deduped.height and mem_stats["samples"]["test"] > 0
    assert_same_run(mem, out)
    assert not list(out.data.glob(".*")), "no staging or temporary file is left behind"


def test_streaming_looks_for_duplicate_examples_only_when_it_shows_them(tmp_path, monkeypatch):
    """Found in review: the examples for on_invalid: error's refusal were computed (is_duplicated + unique per
    partition with duplicates) under drop too, the default, and thrown away."""
    path, deduped, _ = _file_with_duplicates(tmp_path)

    def examples_computed(self: pl.DataFrame) -> pl.Series:
        raise AssertionError("duplicate examples computed under on_invalid: drop")

    monkeypatch.setattr(pl.DataFrame, "is_duplicated", examples_computed)
    _, stats = _run(tmp_path, "stream", {"source": "table", "events_path": str(path), "streaming": "on", "partition_events": 70})
    assert stats["events"] == deduped.height


def test_streaming_refuses_duplicates_under_on_invalid_error(tmp_path):
    path, _, n_dups = _file_with_duplicates(tmp_path)
    data = {"source": "table", "events_path": str(path), "streaming": "on", "partition_events": 70, "on_invalid": "error"}
    with pytest.raises(DataValidationError) as err:
        _run(tmp_path, "bad", data)
    message = str(err.value)
    assert "\n" not in message and f"{n_dups:,} exact duplicate event(s)" in message and "on_invalid" in message
    assert "e.g. [{'user_id': " in message, "a few of the repeated events, as the in-memory reader shows them"
    data_dir = tmp_path / "bad" / "data"
    assert not (data_dir / "events.parquet").exists() and not list(data_dir.glob(".*")), "nothing published, no staging left"


def loose_time_log(tmp_path: Path) -> tuple[dict[str, Any], Path]:
    """The edge-case log's data config (Parquet), and the same log as CSV with times whose month, day and
    hour have no leading zero (``12/1/2023 7:13:20``), as US exports write them."""
    import datetime as dt

    frame = edge_case_events().with_columns(pl.col("ts") - 4 * 3600)  # at 6:13 and 18:13
    plain, text = tmp_path / "plain.parquet", tmp_path / "loose.csv"
    frame.write_parquet(plain)
    stamps = [dt.datetime.fromtimestamp(ts, dt.timezone.utc) for ts in frame["ts"]]
    loose = [f"{t.month}/{t.day}/{t.year} {t.hour}:{t:%M:%S}" for t in stamps]
    assert any(v.startswith("12/1/") for v in loose) and any(" 6:" in v for v in loose)
    text.write_text("user_id,item_id,ts,feedback\n" + "".join(f"{u},{i},{t},{fb}\n" for (u, i, _, fb), t in zip(frame.iter_rows(), loose)))
    return {"source": "table", "events_path": str(plain), "split": {"horizon_days": 3, "max_history": 7}}, text


def offset_time_log(tmp_path: Path) -> tuple[dict[str, Any], Path]:
    """The edge-case log as CSV with ISO times at +02:00 (+0200 in every third row, UTC's ``Z`` in every
    fifth, as RFC 3339 mixes them) and one ``n/a`` (a bad timestamp); its data config."""
    import datetime as dt

    zone = dt.timezone(dt.timedelta(hours=2))
    rows = [(u, i, dt.datetime.fromtimestamp(ts, zone).isoformat(), fb) for u, i, ts, fb in edge_case_events().iter_rows()]
    rows = [(u, i, t[:-3] + t[-2:] if k % 3 == 0 else t, fb) for k, (u, i, t, fb) in enumerate(rows)] + [("u1", "i1", "n/a", -1)]
    zulu = [dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") for ts in edge_case_events()["ts"]]
    rows = [(u, i, zulu[k] if k % 5 == 1 else t, fb) for k, (u, i, t, fb) in enumerate(rows)]
    path = tmp_path / "offsets.csv"
    path.write_text("user_id,item_id,ts,feedback\n" + "".join(f"{u},{i},{t},{fb}\n" for u, i, t, fb in rows))
    return {"source": "table", "events_path": str(path), "split": {"horizon_days": 3, "max_history": 7}}, path


def test_iso_times_mixing_z_and_offsets_are_read_alike_by_both_polars_engines_and_with_a_z_layout(tmp_path):
    """``...T09:13:20Z`` among ``...T11:13:20+02:00``: only the in-memory loader read them (polars' inference);
    streaming refused the column, and ``data.ts_format: ...%z`` dropped every ``Z`` row (``%z`` does not read
    ``Z``). A trailing ``Z`` is now ``+00:00`` to a ``%z`` layout, which detection then finds."""
    data, _ = offset_time_log(tmp_path)
    ref, ref_stats = _run(tmp_path, "mem", {**data, "streaming": "off"})
    assert ref_stats["invalid_rows"] == {"policy": "drop", "bad_timestamp": 1}
    assert pl.read_parquet(ref.events)["ts"].sort().equals(edge_case_events()["ts"].sort())
    for k, extra in enumerate([{"streaming": "on"}, {"streaming": "off", "ts_format": "%Y-%m-%dT%H:%M:%S%z"}]):
        got, stats = _run(tmp_path, f"run{k}", {**data, **extra})
        assert stats["invalid_rows"] == ref_stats["invalid_rows"], extra
        assert_same_run(ref, got)


def float_text_time_log(tmp_path: Path) -> tuple[dict[str, Any], Path]:
    """The edge-case log as CSV with its epoch seconds written as floats (``1700000000.0``; every fifth
    an integer, one ``1.7e9``) and one ``n/a`` early (a text column to polars and Spark); its data config."""
    frame = edge_case_events()
    stamps = [f"{ts}" if k % 5 == 0 else f"{ts}.0" for k, ts in enumerate(frame["ts"])]
    stamps[7] = f"{frame['ts'][7] / 1e9:.10g}e9"
    assert float(stamps[7]) == frame["ts"][7]
    lines = [f"{u},{i},{t},{fb}" for (u, i, _, fb), t in zip(frame.iter_rows(), stamps)]
    lines.insert(3, "u1,i1,n/a,-1")
    path = tmp_path / "floats.csv"
    path.write_text("user_id,item_id,ts,feedback\n" + "\n".join(lines) + "\n")
    return {"source": "table", "events_path": str(path), "split": {"horizon_days": 3, "max_history": 7}}, path


def test_epoch_seconds_written_as_floats_in_a_text_column_stream_as_the_loader_reads_them(tmp_path):
    """``1700000000.0`` with an ``n/a``: the loader read the floats and dropped the ``n/a``; the streaming
    scan took the column for date/time strings and refused it. A fraction of a second is floored by both alike
    (it stopped the whole file, even under on_invalid: drop)."""
    data, path = float_text_time_log(tmp_path)
    mem, mem_stats = _run(tmp_path, "mem", {**data, "streaming": "off"})
    assert mem_stats["events"] == edge_case_events().height and mem_stats["invalid_rows"] == {"policy": "drop", "bad_timestamp": 1}
    assert_same_run(mem, _run(tmp_path, "stream", {**data, "streaming": "on", "partition_events": 70})[0])
    path.write_text(path.read_text().replace("n/a", "1700000000.5"))
    mem, mem_stats = _run(tmp_path, "frac_off", {**data, "streaming": "off"})
    assert mem_stats["events"] == edge_case_events().height + 1 and "bad_timestamp" not in mem_stats["invalid_rows"]
    assert_same_run(mem, _run(tmp_path, "frac_on", {**data, "streaming": "on", "partition_events": 70})[0])


def test_minute_iso_times_with_a_zone_stream_as_the_loader_reads_them(tmp_path):
    """``2023-12-25T18:13Z``: only polars' inference read it, so the streaming scan (and Spark) refused it."""
    import datetime as dt

    frame = edge_case_events().with_columns(pl.col("ts") // 60 * 60)
    path = tmp_path / "minutes.csv"
    stamps = [dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%MZ") for ts in frame["ts"]]
    path.write_text("user_id,item_id,ts,feedback\n" + "".join(f"{u},{i},{t},{fb}\n" for (u, i, _, fb), t in zip(frame.iter_rows(), stamps)))
    plain = tmp_path / "plain.parquet"
    frame.write_parquet(plain)
    data = {"source": "table", "events_path": str(plain), "split": {"horizon_days": 3, "max_history": 7}}
    ref, _ = _run(tmp_path, "plain", data)
    for streaming in ("off", "on"):
        assert_same_run(ref, _run(tmp_path, f"minutes_{streaming}", {**data, "events_path": str(path), "streaming": streaming})[0])


def test_a_layout_only_polars_infers_is_refused_naming_the_setting_of_the_engine(tmp_path):
    """``20231225T181330`` is read by polars' inference alone: the scan refuses it, and told Spark users to
    set data.streaming: off, which does nothing there."""
    from conrec.data.engine.scan import scan_table

    path = tmp_path / "compact.csv"
    path.write_text("user_id,item_id,ts,feedback\n" + "".join(f"u{k},i{k},202312{10 + k}T181330,-1\n" for k in range(5)))
    data = {"source": "table", "events_path": str(path)}
    with pytest.raises(DataValidationError, match=r"no listed layout; set data.ts_format, or data.streaming: off$"):
        scan_table(load_config(None, {"data": {**data, "streaming": "on"}}).data)
    with pytest.raises(DataValidationError, match=r"no listed layout; set data.ts_format$"):
        scan_table(load_config(None, {"data": {**data, "engine": "spark"}}).data)


COLUMNS_REFUSED = r"^columns: source column\(s\) \['genre'\] are in neither the events nor the items file$"


def test_a_columns_source_in_neither_file_is_refused_when_streaming_too(tmp_path, table_file):
    """The loader refused ``columns: {genre: ...}`` naming no column of either file; the streaming scan
    (and Spark) ignored it."""
    from conrec.errors import ConfigError

    items = tmp_path / "items.csv"
    items.write_text("item_id,title,kind\n" + "".join(f"i{k},Item {k},x\n" for k in range(23)))
    data = {"source": "table", "events_path": str(table_file), "items_path": str(items), "columns": {"genre": "category"}}
    for streaming in ("off", "on"):
        with pytest.raises(ConfigError, match=COLUMNS_REFUSED):
            _run(tmp_path, f"cols_{streaming}", {**data, "streaming": streaming})
    _run(tmp_path, "kind", {**data, "columns": {"kind": "category"}, "streaming": "on"})  # a column of the items file: mapped
