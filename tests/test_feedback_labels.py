"""Feedback logged as words (conrec.data.feedback_labels): ``conrec init`` proposes the mapping,
the loader and the streaming scan apply it, and a value the mapping does not name is an invalid row,
never a silent dislike or like."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from conrec.config import load_config
from conrec.data.engine.scan import scan_table
from conrec.data.feedback_labels import normalise, propose
from conrec.data.guess import guess
from conrec.data.loaders import load_source
from conrec.data.repair import RepairLog
from conrec.errors import ConfigError, DataValidationError
from conrec.init_config import init_config

# a platform log: the action names as a product logs them, one of them unknown to the word lists
ACTIONS = ["Not Interested", "hide", "click", "impression", "impression", "share", "skip", "click", "impression", "report"]
WANT = {"Not Interested": -1, "hide": -1, "click": 1, "share": 1, "report": -1}  # impression and skip: neutral, dropped


def _log(tmp_path: Path) -> Path:
    rows = [f"v{u},a{(u * 5 + k) % 30},{1_600_000_000 + 3_600 * k + u},{ACTIONS[(u + k) % len(ACTIONS)]}" for u in range(12) for k in range(40)]
    path = tmp_path / "log.csv"
    path.write_text("visitor_id,content_id,event_time,action\n" + "\n".join(rows) + "\n")
    return path


def _expected(path: Path) -> pl.DataFrame:
    raw = pl.read_csv(path, schema_overrides={"visitor_id": pl.String, "content_id": pl.String})
    return raw.filter(pl.col("action").is_in(list(WANT))).select(
        pl.col("visitor_id").alias("user_id"), pl.col("content_id").alias("item_id"),
        pl.col("action").replace_strict(WANT, return_dtype=pl.Int8).alias("feedback"),
    )


def test_words_compare_in_one_spelling_and_unknown_ones_are_proposed_neutral() -> None:
    assert normalise("  Not Interested ") == normalise("not-interested") == "not_interested"
    mapping, unknown = propose(["Not Interested", "not_interested", "Like", "impression", "skip"])
    assert mapping == {"impression": 0, "like": 1, "not_interested": -1, "skip": 0} and unknown == ["skip"]


def test_init_proposes_the_labels_and_the_data_loads_as_mapped(tmp_path: Path) -> None:
    log = _log(tmp_path)
    out, g = init_config(log, None, tmp_path / "my.yaml", preset="tiny")
    assert g.events["feedback"].column == "action" and g.labels_unknown == ["skip"]
    assert g.feedback_labels == {"click": 1, "hide": -1, "impression": 0, "not_interested": -1, "report": -1, "share": 1, "skip": 0}
    assert "skip: 0  # not a known feedback word" in out.read_text()  # the user is told to check it
    cfg = load_config(out)
    events, _ = load_source(cfg.data)
    got = events.select("user_id", "item_id", "feedback").sort(pl.all())
    assert got.equals(_expected(log).sort(pl.all()))
    streamed = scan_table(cfg.data.model_copy(update={"streaming": "on"})).collect()
    assert streamed.select("user_id", "item_id", pl.col("feedback").cast(pl.Int8)).sort(pl.all()).equals(_expected(log).sort(pl.all()))


def test_a_value_the_mapping_does_not_name_is_an_invalid_row(tmp_path: Path) -> None:
    log = _log(tmp_path)
    labels = {"not interested": -1, "hide": -1, "click": 1, "share": 1, "report": -1, "impression": 0}  # no "skip"
    data = {"source": "table", "events_path": str(log), "columns": {"visitor_id": "user_id", "content_id": "item_id",
            "event_time": "ts", "action": "feedback"}, "feedback_labels": labels}
    repairs = RepairLog("drop")
    events, _ = load_source(load_config(None, {"data": data}).data, repairs)
    n_skip, n_impression = (sum(ACTIONS[(u + k) % len(ACTIONS)] == word for u in range(12) for k in range(40)) for word in ("skip", "impression"))
    assert repairs.counts == {"neutral_feedback": n_impression, "bad_feedback": n_skip} and events.height == _expected(log).height
    with pytest.raises(DataValidationError, match=r"value\(s\) \['skip'\] that are not -1/0/\+1; name them in data.feedback_labels"):
        load_source(load_config(None, {"data": {**data, "on_invalid": "error"}}).data)
    no_labels = {k: v for k, v in data.items() if k != "feedback_labels"}
    for policy in ("error", "drop"):  # words and no labels: no row is usable, under either policy
        with pytest.raises(DataValidationError, match="map them with data.feedback_labels"):
            load_source(load_config(None, {"data": {**no_labels, "on_invalid": policy}}).data)


TABLE = {"source": "table", "events_path": "e.csv"}  # feedback_labels is read by the table source only


def test_labels_must_be_minus_one_zero_or_one_and_agree_once_spelled_alike() -> None:
    for bad in ({"like": True}, {"like": 2}, {"like": 1, "Like": -1}):
        with pytest.raises(ConfigError, match="feedback_labels"):
            load_config(None, {"data": {"feedback_labels": bad}})
    # a flag's values written unquoted in YAML (1: -1, true: -1) are its values as text
    assert load_config(None, {"data": {**TABLE, "feedback_labels": {1: -1, 0: 1}}}).data.feedback_labels == {"1": -1, "0": 1}
    labels = load_config(None, {"data": {**TABLE, "feedback_labels": {True: -1, False: 1}}}).data.feedback_labels
    assert labels == {"true": -1, "yes": -1, "on": -1, "false": 1, "no": 1, "off": 1}  # YAML's true is also its yes and on


def _flags(tmp_path: Path, name: str, as_bool: bool) -> tuple[Path, pl.DataFrame]:
    frame = pl.DataFrame({
        "user": [f"u{u}" for u in range(10) for _ in range(20)],
        "item": [f"m{(u * 3 + k) % 25}" for u in range(10) for k in range(20)],
        "ts": [1_600_000_000 + 3_600 * k + u for u in range(10) for k in range(20)],
        name: [(u + k) % 3 == 0 for u in range(10) for k in range(20)],
    })
    if as_bool:
        path = tmp_path / "flags.parquet"
        frame.write_parquet(path)
    else:
        path = tmp_path / "flags.csv"
        frame.with_columns(pl.col(name).cast(pl.Int8)).write_csv(path)
    return path, frame


@pytest.mark.parametrize(("name", "as_bool", "yes", "no"), [("disliked", True, "true", "false"), ("is_disliked", False, "1", "0")])
def test_a_dislike_flag_is_found_by_its_name_and_its_true_or_1_is_the_dislike(tmp_path: Path, name: str, as_bool: bool, yes: str, no: str) -> None:
    """Read as a 0..1 rating scale, 0 would have been the dislike: the opposite of what the column says."""
    path, frame = _flags(tmp_path, name, as_bool)
    out, g = init_config(path, None, tmp_path / "my.yaml", preset="tiny")
    assert g.events["feedback"].column == name and g.feedback_labels == {yes: -1, no: 1} and g.rating_range is None
    cfg = load_config(out)
    events, _ = load_source(cfg.data)
    want = frame.select(pl.col("user").alias("user_id"), pl.col("item").alias("item_id"),
                        pl.when(pl.col(name)).then(-1).otherwise(1).cast(pl.Int8).alias("feedback")).sort(pl.all())
    assert events.select("user_id", "item_id", "feedback").sort(pl.all()).equals(want)
    streamed = scan_table(cfg.data.model_copy(update={"streaming": "on"})).collect()
    assert streamed.select("user_id", "item_id", pl.col("feedback").cast(pl.Int8)).sort(pl.all()).equals(want)


def test_a_flag_whose_name_does_not_say_is_refused_and_a_bare_true_false_column_names_the_setting(tmp_path: Path) -> None:
    path, _ = _flags(tmp_path, "liked", as_bool=False)  # is 0 a thumbs-down, or no like at all? the values cannot say
    with pytest.raises(ConfigError, match="its name does not say which value is a dislike"):
        init_config(path, None, tmp_path / "my.yaml", preset="tiny", given={"rating": "liked"})
    path, _ = _flags(tmp_path, "score", as_bool=False)  # named as a rating: a two-point scale, 0 the dislike, as before
    _, g = init_config(path, None, tmp_path / "score.yaml", preset="tiny")
    assert g.feedback_labels is None and (g.rating_range, g.dislike_max_rating, g.like_min_rating) == ((0.0, 1.0), 0.0, 0.01)
    path, _ = _flags(tmp_path, "flag", as_bool=True)
    data = {"source": "table", "events_path": str(path), "columns": {"user": "user_id", "item": "item_id", "flag": "feedback"}}
    with pytest.raises(DataValidationError, match="holds true/false; say which is a dislike with data.feedback_labels"):
        load_source(load_config(None, {"data": data}).data)
    events, _ = load_source(load_config(None, {"data": {**data, "feedback_labels": {"true": -1, "false": 1}}}).data)
    assert set(events["feedback"].unique()) == {-1, 1}


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_float_flag_as_pandas_exports_it_is_a_flag_like_0_and_1(tmp_path: Path, suffix: str) -> None:
    """``is_disliked`` written as 0.0/1.0 (pandas, a missing value in the column) was not seen as a flag: init found no
    feedback column, and named with --rating-col it became a 0..1 rating whose 0 (the positives) was the dislike."""
    _, frame = _flags(tmp_path, "is_disliked", as_bool=False)
    frame = frame.with_columns(pl.col("is_disliked").cast(pl.Float64))
    path = tmp_path / f"float{suffix}"
    frame.write_csv(path) if suffix == ".csv" else frame.write_parquet(path)
    out, g = init_config(path, None, tmp_path / "my.yaml", preset="tiny")
    assert g.events["feedback"].column == "is_disliked" and g.feedback_labels == {"1": -1, "0": 1} and g.rating_range is None
    cfg = load_config(out)
    want = frame.select(pl.col("user").alias("user_id"), pl.col("item").alias("item_id"),
                        pl.when(pl.col("is_disliked") == 1.0).then(-1).otherwise(1).cast(pl.Int8).alias("feedback")).sort(pl.all())
    events, _ = load_source(cfg.data)
    assert events.select("user_id", "item_id", "feedback").sort(pl.all()).equals(want)
    streamed = scan_table(cfg.data.model_copy(update={"streaming": "on"})).collect()
    assert streamed.select("user_id", "item_id", pl.col("feedback").cast(pl.Int8)).sort(pl.all()).equals(want)
    assert load_config(None, {"data": {**TABLE, "feedback_labels": {1.0: -1, 0.0: 1}}}).data.feedback_labels == {"1": -1, "0": 1}


def test_a_feedback_column_whose_sample_is_all_positives_is_read_as_feedback_and_said_to_be_a_guess(tmp_path: Path) -> None:
    """The -1s of a -1/0/+1 column came after the sampled rows: init refused the column as a flag that "holds only 1
    and 0" (it held only 1) and proposed {'1': -1, '0': 1}, which would have made every positive a dislike."""
    rows = [f"u{k % 7},i{k % 11},{1_600_000_000 + k},1" for k in range(300)] + [f"u{k % 7},i{k % 11},{1_600_001_000 + k},-1" for k in range(40)]
    path = tmp_path / "events.csv"
    path.write_text("user_id,item_id,timestamp,feedback\n" + "\n".join(rows) + "\n")
    from conrec.data.guess import read_sample

    for given in ({}, {"rating": "feedback"}):
        g = guess(read_sample(path, "events", n_rows=300), given=given)
        assert g.events["feedback"].column == "feedback" and g.feedback_labels is None and g.rating_range is None
        assert "every one of the 300 sampled values of 'feedback' is 1" in g.feedback_warning
    liked = pl.DataFrame({"u": ["a", "b"], "i": ["x", "y"], "ts": [1, 2], "liked": ["1", "0"]})
    with pytest.raises(ConfigError, match=r"\{'0': -1, '1': 1\} if 0 is a thumbs-down, \{'1': -1, '0': 1\} if 1 marks a dislike"):
        guess(liked, given={"user_id": "u", "item_id": "i", "rating": "liked"})


def test_unquoted_yes_and_no_label_keys_read_a_yes_no_column(tmp_path: Path) -> None:
    """``yes: -1`` / ``no: 1`` unquoted are YAML booleans: they became the labels 'true' / 'false', which no value of
    the yes/no column matched, and every row was dropped as bad feedback."""
    rows = [f"u{k % 5},i{k % 7},{1_600_000_000 + 60 * k},{'yes' if k % 4 == 0 else 'no'}" for k in range(80)]
    events = tmp_path / "events.csv"
    events.write_text("user_id,item_id,ts,hidden\n" + "\n".join(rows) + "\n")
    cfg = tmp_path / "my.yaml"
    cfg.write_text(f"data:\n  source: table\n  events_path: {events}\n  columns: {{hidden: feedback}}\n"
                   "  feedback_labels:\n    yes: -1\n    no: 1\n")
    log = RepairLog("drop")
    got, _ = load_source(load_config(cfg).data, log)
    assert got.height == 80 and (got["feedback"] == -1).sum() == 20 and log.counts == {}
    streamed = scan_table(load_config(cfg).data.model_copy(update={"streaming": "on"})).collect()
    assert streamed.height == 80 and (streamed["feedback"] == -1).sum() == 20
    out, g = init_config(events, None, tmp_path / "init.yaml", preset="tiny")  # a yes/no flag named for a dislike: a flag
    assert g.feedback_labels == {"yes": -1, "no": 1}
    got, _ = load_source(load_config(out).data)
    assert got.height == 80 and (got["feedback"] == -1).sum() == 20
