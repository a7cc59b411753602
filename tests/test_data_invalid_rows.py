"""``data.on_invalid`` (issue 22, and issue 24's NaN timestamps and silent duplicates): every wart a
real export carries is repaired or dropped with a count under ``drop`` (the default), and stops
with one clear line under ``error``; structural problems stop under both."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import polars as pl
import pytest
from rich.console import Console

from conrec.config import load_config
from conrec.data import stage
from conrec.data.config import DataConfig
from conrec.data.loaders import load_source, load_table
from conrec.data.repair import WARTS, RepairLog
from conrec.errors import DataValidationError
from conrec.runs import RunDir

HEADER = "user_id,item_id,ts,feedback"
CLEAN = ["u1,a,100,1", "u1,b,200,-1", "u2,a,150,-1", "u2,b,160,1"]
ITEMS = "item_id,title\na,Alpha\nb,Beta\n"


def _files(tmp_path: Path, rows: list[str], items: str | None = ITEMS) -> tuple[Path, Path | None]:
    ev = tmp_path / "ev.csv"
    ev.write_text("\n".join([HEADER, *rows]) + "\n")
    it = None
    if items is not None:
        it = tmp_path / "it.csv"
        it.write_text(items)
    return ev, it


def _drop(ev: Path, it: Path | None, **kw) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, int]]:
    log = RepairLog("drop")
    events, items = load_table(ev, it, {}, log=log, **kw)
    return events, items, log.counts


# ------------------------------------------------------------------ one test per wart, both policies

WART_ROWS = {
    "missing_id": ",a,120,-1",
    "bad_timestamp": "u1,a,NaN,-1",
    "bad_feedback": "u1,a,130,7",
    "unknown_item": "u1,zzz,140,-1",
    "duplicate_event": "u1,b,200,-1",  # the same as a clean row
}


@pytest.mark.parametrize("kind", sorted(WART_ROWS))
def test_each_event_wart_is_dropped_and_counted(tmp_path, kind):
    events, _, counts = _drop(*_files(tmp_path, [*CLEAN, WART_ROWS[kind]]))
    assert counts == {kind: 1}
    assert events.height == len(CLEAN)


@pytest.mark.parametrize("kind", sorted(WART_ROWS))
def test_each_event_wart_is_one_clear_error_under_on_invalid_error(tmp_path, kind):
    ev, it = _files(tmp_path, [*CLEAN, WART_ROWS[kind]])
    with pytest.raises(DataValidationError) as err:
        load_table(ev, it, {}, log=RepairLog("error"))
    message = str(err.value)
    assert "\n" not in message and "ev.csv" in message and "on_invalid" in message
    assert WARTS[kind].split(":")[0] in message
    assert EXAMPLES.get(kind, "") in message, "the examples are the offending values, labelled with their column"


EXAMPLES = {
    "missing_id": "e.g. [{'user_id': None, 'item_id': 'a'}]",  # were user ids, unlabelled
    "bad_timestamp": "e.g. [{'user_id': 'u1', 'item_id': 'a', 'ts': None}]",  # were item ids, read as timestamps
    "bad_feedback": "e.g. feedback [7.0]",
    "unknown_item": "e.g. item_id ['zzz']",
    "duplicate_event": "e.g. [{'user_id': 'u1', 'item_id': 'b', 'ts': 200}]",  # were bare item ids
}


def test_an_empty_or_blank_id_is_a_missing_id_and_an_item_without_one_names_the_items_file(tmp_path):
    """A quoted empty user (``""``) or one of spaces was kept as a user by polars (Spark dropped it as missing);
    an items row with an empty id stopped the run with a message naming the events file."""
    events, _, counts = _drop(*_files(tmp_path, [*CLEAN, '"",a,120,-1', '"  ",b,121,1', 'u1," ",122,1']))
    assert counts == {"missing_id": 3} and events.height == len(CLEAN)
    _, items, counts = _drop(*_files(tmp_path, CLEAN, items=ITEMS + ",Orphan\n"))
    assert counts == {"item_without_id": 1} and items["item_id"].to_list() == ["a", "b"]
    with pytest.raises(DataValidationError, match=r"items file .*it\.csv: 1 item\(s\) in the items file with a missing or empty id") as err:
        load_table(*_files(tmp_path, CLEAN, items=ITEMS + ",Orphan\n"), {}, log=RepairLog("error"))
    assert "ev.csv" not in str(err.value)


def test_empty_titles_become_the_item_id(tmp_path):
    _, items, counts = _drop(*_files(tmp_path, CLEAN, items="item_id,title\na,Alpha\nb,\n"))
    assert counts == {"empty_title": 1}
    assert dict(items.select("item_id", "title").iter_rows()) == {"a": "Alpha", "b": "b"}
    with pytest.raises(DataValidationError, match=r"1 item\(s\) with an empty title, e\.g\. \['b'\]"):
        load_table(*_files(tmp_path, CLEAN, items="item_id,title\na,Alpha\nb,\n"), {}, log=RepairLog("error"))


def test_duplicate_item_rows_keep_the_first(tmp_path):
    _, items, counts = _drop(*_files(tmp_path, CLEAN, items="item_id,title\na,Alpha\nb,Beta\na,Again\n"))
    assert counts == {"duplicate_item": 1}
    assert items.filter(pl.col("item_id") == "a")["title"].item() == "Alpha"


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_parquet_timestamps_are_dropped_not_a_polars_traceback(tmp_path, bad):
    """Issue 24, defect 3: `conversion from f64 to i64 failed in column 'ts'`."""
    ev = tmp_path / "ev.parquet"
    pl.DataFrame({"user_id": ["u", "u", "u"], "item_id": ["a", "b", "a"], "ts": [100.0, bad, 300.0], "feedback": [1, -1, -1]}).write_parquet(ev)
    events, _, counts = _drop(ev, None)
    assert counts == {"bad_timestamp": 1} and events["ts"].to_list() == [100, 300]
    with pytest.raises(DataValidationError, match=r"1 event\(s\) with a missing, unreadable, NaN"):
        load_table(ev, None, {}, log=RepairLog("error"))


@pytest.mark.parametrize(("dtype", "kind"), [(pl.Time, "times of day"), (pl.Duration("us"), "durations")])
def test_a_time_column_without_dates_is_refused_in_one_line_by_init_and_every_polars_reader(tmp_path, dtype, kind):
    """A Parquet time64 (or duration) column passed ``conrec init`` as "a date/time column", then the
    loader and the streaming scan ended in a polars InvalidOperationError (casting Time to Datetime)."""
    from conrec.config import load_config
    from conrec.data.engine.scan import scan_table
    from conrec.data.guess import guess
    from conrec.errors import ConfigError

    ev = tmp_path / "ev.parquet"
    times = pl.Series("ts", [3_600_000_000, 7_200_000_000, 10_800_000_000]).cast(dtype)
    frame = pl.DataFrame({"user_id": ["u", "u", "v"], "item_id": ["a", "b", "a"], "ts": times, "rating": [1, 5, 4]})
    frame.write_parquet(ev)
    refusal = rf"column 'ts' holds {kind} \({re.escape(str(dtype))}.*\), not dates and times"
    with pytest.raises(ConfigError, match=refusal + "; pass --time-col"):
        guess(frame)
    with pytest.raises(DataValidationError, match=refusal):
        _drop(ev, None)
    cfg = load_config(None, {"data": {"source": "table", "events_path": str(ev), "streaming": "on"}}).data
    with pytest.raises(DataValidationError, match=refusal):
        scan_table(cfg)


def test_nan_timestamps_in_a_csv_are_dropped(tmp_path):
    ev, _ = _files(tmp_path, ["u,a,100.0,1", "u,b,nan,-1", "u,a,inf,-1", "u,b,,1", "u,a,yesterday,-1", "u,b,300.0,-1"], items=None)
    events, _, counts = _drop(ev, None)
    assert counts == {"bad_timestamp": 4} and events["ts"].to_list() == [100, 300]


def test_ratings_outside_the_scale_or_nan_are_dropped(tmp_path):
    ev = tmp_path / "ev.csv"
    ev.write_text("user_id,item_id,ts,rating\nu,a,1,0.5\nu,b,2,5\nu,a,3,7\nu,b,4,NaN\nu,a,5,-1\nu,b,6,\n")
    log = RepairLog("drop")
    events, _ = load_table(ev, None, {}, log=log, rating_range=(0.5, 5.0))
    assert log.counts == {"bad_feedback": 4}
    assert events["feedback"].to_list() == [-1, 1]


def test_a_nan_rating_is_not_a_positive_even_without_a_scale(tmp_path):
    """polars orders NaN above every number, so `NaN >= like_min_rating` was true: a NaN rating was a like."""
    ev = tmp_path / "ev.parquet"
    pl.DataFrame({"user_id": ["u", "u"], "item_id": ["a", "b"], "ts": [1, 2], "rating": [1.0, math.nan]}).write_parquet(ev)
    log = RepairLog("drop")
    events, _ = load_table(ev, None, {}, log=log)
    assert log.counts == {"bad_feedback": 1} and events["feedback"].to_list() == [-1]


def test_library_calls_without_a_log_stay_strict(tmp_path):
    with pytest.raises(DataValidationError, match="not in the items table.*zzz"):
        load_table(*_files(tmp_path, [*CLEAN, "u1,zzz,140,-1"]), {})


# ------------------------------------------------------------------ structural problems stop under drop


def test_structural_problems_still_stop_under_drop(tmp_path):
    ev = tmp_path / "ev.csv"
    ev.write_text("user_id,item_id,feedback\nu,a,1\n")
    with pytest.raises(DataValidationError, match=r"missing column\(s\) \['ts'\]"):
        load_source(DataConfig(source="table", events_path=ev))
    bad = tmp_path / "ev.parquet"
    bad.write_bytes(b"not a table")
    with pytest.raises(DataValidationError, match="could not be read"):
        load_source(DataConfig(source="table", events_path=bad))


def test_a_log_whose_every_row_is_dropped_names_the_kinds_and_an_empty_one_says_so(tmp_path):
    ev, it = _files(tmp_path, ["u1,zz,100,1", ",a,120,-1"])
    with pytest.raises(DataValidationError, match=r"no valid event left: every row was dropped \(1 event\(s\) with a missing user or item id, "
                       r"1 event\(s\) on item ids not in the items table\); event item ids such as \['zz'\] vs the items file's \['a', 'b'\]"):
        _drop(ev, it)
    ev, it = _files(tmp_path, [], items=ITEMS + "a,Again\n")  # only the items file was repaired
    with pytest.raises(DataValidationError, match=r"events file .*/ev.csv has no rows, only a header \(user_id, item_id, ts, feedback\)$"):
        _drop(ev, it)


def test_no_dislikes_left_after_the_drops_stops_the_stage(tmp_path):
    ev, it = _files(tmp_path, ["u1,a,100,1", "u1,b,NaN,-1"])
    cfg = load_config(None, {"run_dir": str(tmp_path / "run"), "data": {"source": "table", "events_path": str(ev), "items_path": str(it)}})
    with pytest.raises(DataValidationError, match="none of the 1 events is a dislike"):
        stage.run(cfg.data, cfg.run_dir, console=Console(quiet=True))
    assert not RunDir(cfg.run_dir).is_done("data")


# ------------------------------------------------------------------ the stage prints and records the counts


def test_stage_prints_one_warning_block_and_records_counts(tmp_path):
    rows = [f"u{u},{'ab'[k % 2]},{k * 3600 + u + 1},{-1 if k % 3 == 0 else 1}" for u in range(3) for k in range(30)]
    warts = [",a,5,-1", "u0,a,nan,-1", "u0,a,7,9", "u0,zzz,8,-1", rows[3]]
    ev, it = _files(tmp_path, rows + warts, items="item_id,title\na,Alpha\nb,\n")
    cfg = load_config(None, {"run_dir": str(tmp_path / "run"), "data": {"source": "table", "events_path": str(ev), "items_path": str(it)}})
    console = Console(record=True, width=200)
    stats = stage.run(cfg.data, cfg.run_dir, console=console)
    expected = {"policy": "drop", "empty_title": 1, "missing_id": 1, "bad_timestamp": 1, "bad_feedback": 1, "unknown_item": 1, "duplicate_event": 1}
    assert stats["invalid_rows"] == expected and stats["events"] == len(rows)
    written = json.loads((RunDir(cfg.run_dir).data / "stats.json").read_text())
    assert written["invalid_rows"] == expected
    out = console.export_text()
    assert out.count("warning:") == 1 and "6 invalid row(s) or item(s)" in out
    assert all(WARTS[k] in out for k in expected if k != "policy")


@pytest.mark.parametrize("streaming", ["off", "on"])
def test_dropped_ratings_and_feedback_words_are_named_with_their_counts_and_the_setting(tmp_path, streaming):
    """Half stars below the rating_range init saw in its first rows, and a feedback word first logged after them, were
    dropped as "N event(s) with a missing or out-of-range feedback/rating", naming neither the values nor the setting."""
    rows = [f"u{u},{'ab'[k % 2]},{k * 3600 + u + 1},{1 + (u + k) % 5}" for u in range(3) for k in range(30)]
    late = ["u0,a,200000,0.5", "u1,b,200001,0.5", "u2,a,200002,0.5", "u0,b,200003,", "u1,a,nan,0.5", "u2,b,200004,7"]
    ev = tmp_path / "ratings.csv"
    ev.write_text("user_id,item_id,ts,rating\n" + "\n".join(rows + late) + "\n")
    it = tmp_path / "it.csv"
    it.write_text(ITEMS)
    data = {"source": "table", "events_path": str(ev), "items_path": str(it), "rating_range": [1, 5], "dislike_max_rating": 2,
            "like_min_rating": 2.01, "streaming": streaming}
    console = Console(record=True, width=400)
    stage.run(load_config(None, {"data": data}).data, tmp_path / "ratings", console=console)
    assert ("5 event(s) with a missing or out-of-range feedback/rating: dropped; the rating values: 0.5 (3), 7 (1) outside "
            "data.rating_range [1, 5]: widen it to keep them; missing (1)") in console.export_text()  # the NaN time: bad_timestamp

    words = [f"u{u},{'ab'[k % 2]},{k * 3600 + u + 1},{('thumbs_down', 'like', 'like')[k % 3]}" for u in range(3) for k in range(30)]
    late = ["u0,a,200000,not_interested", "u1,b,200001,Not Interested", "u2,a,200002,not_interested", "u0,b,200003,mystery"]
    ev = tmp_path / "words.csv"
    ev.write_text("user_id,item_id,ts,action\n" + "\n".join(words + late) + "\n")
    data = {"source": "table", "events_path": str(ev), "items_path": str(it), "columns": {"action": "feedback"},
            "feedback_labels": {"thumbs_down": -1, "like": 1}, "streaming": streaming}
    console = Console(record=True, width=400)
    stage.run(load_config(None, {"data": data}).data, tmp_path / "words", console=console)
    assert ("4 event(s) with a missing or out-of-range feedback/rating: dropped; the feedback values: 'not_interested' (2), "
            "'Not Interested' (1), 'mystery' (1) not in data.feedback_labels: name them there (-1 dislike, 1 positive, 0 neutral) "
            "to keep them ('not_interested' is a usual word for a dislike)") in console.export_text()


@pytest.mark.parametrize("streaming", ["off", "on"])
def test_user_ids_that_differ_only_by_spaces_around_them_are_warned_about_and_kept(tmp_path, streaming):
    """An export that wrote one user as ``u1`` and ``u1 `` gave twice the users, each with half the history, without a
    word, where such item ids get a warning. A user id padded but like no other stays as it is, without one."""
    rows = [f"{'u' + str(u) + (' ' if k % 2 else '')},{'ab'[k % 2]},{k * 3600 + u + 1},{-1 if k % 3 == 0 else 1}" for u in range(3) for k in range(30)]
    ev, it = _files(tmp_path, [*rows, " lone,a,500000,-1"])
    data = {"source": "table", "events_path": str(ev), "items_path": str(it), "streaming": streaming}
    console = Console(record=True, width=400)
    stats = stage.run(load_config(None, {"data": data}).data, tmp_path / "run", console=console)
    out = console.export_text()
    assert ("6 user id(s) differ from another only by the spaces around them, e.g. 'u0' and 'u0 '; 'u1' and 'u1 '; 'u2' and 'u2 ': "
            "they stay separate users") in out and "lone" not in out
    assert stats["users"] == 7 and " lone" in pl.read_parquet(RunDir(tmp_path / "run").events)["user_id"].to_list()


def test_ids_alike_but_for_their_spaces_are_named_readably() -> None:
    """Found by probing: the user warning printed its examples as a nested Python list, ``e.g. [['u5', 'u5 ']]``."""
    from conrec.data.repair import alike_ids, user_warnings

    assert alike_ids(["u5", "u5 "]) == "'u5' and 'u5 '"
    assert alike_ids([" u5", "u5", "u5 "]) == "' u5', 'u5' and 'u5 '"
    (line,) = user_warnings(pl.Series(["u5", "u5 ", "u6", "u7", " u7"]))
    assert line.startswith("4 user id(s) differ from another only by the spaces around them, e.g. 'u5' and 'u5 '; ' u7' and 'u7': ")


@pytest.mark.parametrize("streaming", ["off", "on"])
def test_ids_that_are_a_missing_value_placeholder_are_counted_in_a_warning_and_kept(tmp_path, streaming):
    """A database export's literal ``NULL`` user id (rows of different people) became one pseudo-user ``NULL`` with its
    own train and eval points, without a word, while the same file's NULL ratings and times were counted. The rows are
    kept (the events table stays as it was), but conrec data and conrec init count them and say how to drop them."""
    rows = [f"u{u},{'ab'[k % 2]},{k * 3600 + u + 1},{-1 if k % 3 == 0 else 1}" for u in range(3) for k in range(30)]
    rows += [f"NULL,{'ab'[k % 2]},{k * 3600 + 7},{-1 if k % 2 else 1}" for k in range(20)] + [f" n/a ,a,{k * 3600 + 8},-1" for k in range(3)]
    rows += [f"u0,-,{k * 3600 + 9},1" for k in range(4)]  # no items file: '-' is an item of its own
    ev, _ = _files(tmp_path, rows, items=None)
    data = {"source": "table", "events_path": str(ev), "streaming": streaming}
    console = Console(record=True, width=400)
    stats = stage.run(load_config(None, {"data": data}).data, tmp_path / "run", console=console)
    out = console.export_text()
    assert ("warning: 23 event(s) have a user id that is a missing-value placeholder, 'NULL' (20), ' n/a ' (3): they are kept, each "
            "value as one user of that name (only an empty or null id is missing, dropped as missing_id); if they are missing ids, "
            "remove those rows from the events file (data.on_invalid cannot: the id is a value)") in out
    assert "warning: 4 event(s) have an item id that is a missing-value placeholder, '-' (4)" in out
    events = pl.read_parquet(RunDir(tmp_path / "run").events)
    assert stats["users"] == 5 and (events["user_id"] == "NULL").sum() == 20 and stats["invalid_rows"] == {"policy": "drop"}
    from conrec.data.guess import guess

    sampled = guess(pl.read_csv(ev, infer_schema=False)).ids_warning
    assert sampled.startswith("23 of the sampled rows have a user id that is a missing-value placeholder, 'NULL' (20), ' n/a ' (3)")


def test_clean_data_prints_no_warning(tmp_path):
    rows = [f"u{u},{'ab'[k % 2]},{k * 3600 + u + 1},{-1 if k % 3 == 0 else 1}" for u in range(3) for k in range(30)]
    ev, it = _files(tmp_path, rows)
    cfg = load_config(None, {"run_dir": str(tmp_path / "run"), "data": {"source": "table", "events_path": str(ev), "items_path": str(it)}})
    console = Console(record=True, width=200)
    stats = stage.run(cfg.data, cfg.run_dir, console=console)
    assert stats["invalid_rows"] == {"policy": "drop"} and "warning" not in console.export_text()


def test_the_report_shows_the_counts(tmp_path):
    from conrec.io import write_json
    from conrec.stages import STAGE_REGISTRY

    from builders import eval_run_dir

    run, _ = eval_run_dir(tmp_path / "run")
    stats = json.loads((run.data / "stats.json").read_text())
    write_json({**stats, "invalid_rows": {"policy": "drop", "empty_title": 5, "bad_timestamp": 2}}, run.data / "stats.json")
    section = {"baselines": ["popularity"], "models": [], "ks": [2, 5], "horizons": [1], "tune": False}
    cfg = load_config(None, {"run_dir": str(run.root), "data": {"split": {"horizon_days": 3, "max_horizon_days": 10}}, "eval": section})
    STAGE_REGISTRY["eval"].call(cfg, console=Console(quiet=True))
    row = next(line for line in run.report.read_text().splitlines() if line.startswith("| invalid_rows |"))
    assert all(part in row for part in ("policy=drop", "empty_title=5", "bad_timestamp=2"))


def test_cli_error_under_on_invalid_error_keeps_its_examples(tmp_path):
    from typer.testing import CliRunner

    from conrec.cli import app

    ev = tmp_path / "ev.csv"
    ev.write_text("user_id,item_id,ts,rating\nu,a,1,1\nu,b,2,NaN\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"run_dir: {tmp_path / 'run'}\ndata: {{source: table, events_path: {ev}, on_invalid: error}}\n")
    result = CliRunner().invoke(app, ["data", "-c", str(cfg)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    text = " ".join(result.output.split())  # the console wraps at its width
    assert "error: events file" in text and "1 event(s) with a missing or out-of-range feedback/rating, e.g. rating [nan]" in text  # not eaten as markup


def test_a_dropped_row_beyond_year_9999_does_not_stop_the_load(tmp_path):
    """Found in review: the year-9999 check ran on every row before the drops, so a row the policy drops anyway (a
    missing id) with a huge time refused the whole file in memory, while streaming and Spark, which check the rows
    that survive, read it. A surviving one is still one line naming the unit the numbers look like."""
    events, _, counts = _drop(*_files(tmp_path, [*CLEAN, ",a,99999999999999,-1"]), ts_unit="s")
    assert counts == {"missing_id": 1} and events.height == len(CLEAN)
    with pytest.raises(DataValidationError, match=r"beyond year 9999 read with data.ts_unit: s .*set data.ts_unit: ms"):
        _drop(*_files(tmp_path, [*CLEAN, "u1,a,99999999999999,-1"]), ts_unit="s")


def test_fixed_format_sources_do_not_count_their_neutral_ratings(tmp_path):
    """Found in review: Amazon's 3-star reviews (neutral under its default thresholds, as MovieLens's) were
    reported as invalid rows; only a table's own thresholds' neutral ratings are counted (``neutral_rating``)."""
    from conrec.data.sources.common import ratings_to_feedback

    df = pl.DataFrame({"user_id": ["u"] * 3, "item_id": ["a", "b", "c"], "ts": [1, 2, 3], "rating": [1.0, 3.0, 5.0]})
    for count, expected in ((True, {"neutral_rating": 1}), (False, {})):
        log = RepairLog("drop")
        out = ratings_to_feedback(df, 2.0, 4.0, "reviews", log, count_neutral=count)
        assert out["feedback"].to_list() == [-1, 1] and log.counts == expected
    import inspect

    from conrec.data.sources import amazon

    assert "count_neutral=False" in inspect.getsource(amazon)


@pytest.mark.parametrize("streaming", ["off", "on"])
def test_the_id_warnings_read_the_events_once_and_say_what_each_check_says(tmp_path, streaming, monkeypatch):
    """Found in review (2026-12): the data stage read its events file three times for its id warnings (the distinct
    users for the padded-id line, then once per role for the placeholder lines). It now reads it once
    (:func:`conrec.data.repair.event_id_warnings`), and says what each check says on its own, in the same order."""
    rows = [f"{'u' + str(u) + (' ' if k % 2 else '')},{'ab'[k % 2]},{k * 3600 + u + 1},{-1 if k % 3 == 0 else 1}" for u in range(3) for k in range(30)]
    rows += [f"NULL,{'ab'[k % 2]},{k * 3600 + 7},{-1 if k % 2 else 1}" for k in range(20)] + [f" n/a ,a,{k * 3600 + 8},-1" for k in range(3)]
    rows += [f"u0,-,{k * 3600 + 9},1" for k in range(4)] + [f"NULL,None,{k * 3600 + 10},-1" for k in range(2)] + ["u1,none,50000,1"]
    ev, _ = _files(tmp_path, rows, items=None)
    reads: list[str] = []
    collect = pl.LazyFrame.collect

    def counted(self: pl.LazyFrame, *args, **kwargs):
        plan = self.explain(optimized=False)
        if "staging" in plan and "events.parquet" in plan:  # a pass over the events file the engine wrote
            reads.append(plan)
        return collect(self, *args, **kwargs)

    monkeypatch.setattr(pl.LazyFrame, "collect", counted)
    console = Console(record=True, width=1000)
    stage.run(load_config(None, {"data": {"source": "table", "events_path": str(ev), "streaming": streaming}}).data, tmp_path / "run", console=console)
    assert len(reads) == 1, reads
    monkeypatch.setattr(pl.LazyFrame, "collect", collect)
    from conrec.data.repair import placeholder_id_warnings, user_warnings

    events = pl.read_parquet(RunDir(tmp_path / "run").events)
    separately = user_warnings(events["user_id"]) + placeholder_id_warnings(events.lazy())
    assert len(separately) == 3 and separately[1].startswith("25 event(s) have a user id that is a missing-value placeholder, 'NULL' (22), ' n/a ' (3)")
    assert separately[2].startswith("7 event(s) have an item id that is a missing-value placeholder, '-' (4), 'None' (2), 'none' (1)")
    out = console.export_text()
    assert all(f"warning: {line}" in out for line in separately)
    assert [out.index(line) for line in separately] == sorted(out.index(line) for line in separately)
