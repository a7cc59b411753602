"""One definition of the semantics: the Spark engine writes exactly what the polars engine writes.

Both engines run the whole data stage on the same inputs, and the run directories are compared
exactly: events (order included), samples (ids, histories, next negative, future sets), the split
cut-offs and every statistic. The inputs cover ties in timestamps (between a dislike and a
positive too), a user with no dislikes, label windows crossing the cut-offs, both protocols and both
train-point rules, the simulator, invalid rows and duplicates, and a table file that Spark reads itself.

Each further file layout (date formats, separators, feedback words, id types) is compared where the
layouts differ, in how the file is *read*: the canonical events (order included) and the invalid-row
counts, which is all the stage's later steps see (:func:`assert_reads_like_polars`). Labelling them
too would cost seconds of Spark jobs per layout and compare the same code again.

One local[2] Spark session serves the whole module (starting one takes seconds). Skipped when
pyspark or Java is missing, unless CONREC_REQUIRE_SPARK=1 (CI sets it), where that is a failure.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

if os.environ.get("CONREC_REQUIRE_SPARK") != "1":
    pytest.importorskip("pyspark", reason="pip install pyspark==4.0.5 (the spark extra) for the Spark engine")
    if shutil.which("java") is None:
        pytest.skip("the Spark engine needs Java 17 (apt-get install openjdk-17-jre-headless)", allow_module_level=True)

from pyspark.sql import SparkSession
from test_data_engines import (
    ALL_NEUTRAL,
    COLUMNS_REFUSED,
    MIXED_UNITS,
    WORDS_REFUSED,
    _run,
    all_neutral_log,
    assert_same_run,
    categorical_logs,
    decimal_id_logs,
    digit_date_log,
    edge_case_events,
    float_id_logs,
    float_text_time_log,
    half_star_log,
    loose_time_log,
    microsecond_log,
    mixed_float_id_logs,
    mixed_units_log,
    offset_time_log,
    text_feedback_log,
    two_digit_year_logs,
    warty_table,
)

from conrec.config import load_config
from conrec.runs import RunDir

SPARK = {"master": "local[2]"}
pytestmark = pytest.mark.slow  # a JVM and a dozen Spark jobs per test: seconds each; still runs in CI


@pytest.fixture(scope="module")
def spark() -> Iterator[SparkSession]:
    session = (
        SparkSession.builder.master("local[2]")
        .appName("conrec-tests")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.codegen.wholeStage", "false")  # compiling each plan costs more than running it on a tiny log
        .config("spark.ui.showConsoleProgress", "false")
        # the JVM's quick compiler only and one GC thread: these jobs are too short for the optimising compiler to
        # pay back its compile threads (the JVM's CPU time in this module was about 40% lower); results are unchanged
        .config("spark.driver.extraJavaOptions", "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def assert_reads_like_polars(tmp_path: Path, name: str, data: dict[str, Any]) -> tuple[RunDir, dict[str, Any]]:
    """Spark reads ``data``'s events file as the polars engine does: the same canonical events (the
    stage's ``events.parquet``, order and dtypes included), invalid-row counts and items with events.
    Returns the polars run and its stats for further checks."""
    from conrec.data.engine.scan import scan_table, table_items
    from conrec.data.engine.spark import clean_events, item_table, read_table, spark_session, write_events
    from conrec.data.repair import RepairLog

    ref, ref_stats = _run(tmp_path, f"{name}_polars", data)
    cfg = load_config(None, {"run_dir": str(tmp_path / name), "data": {**data, "engine": "spark", "spark": SPARK}}).data
    log = RepairLog(cfg.on_invalid)
    items = table_items(cfg, scan_table(cfg), log)  # as the stage does for an engine that reads the file itself
    spark = spark_session(cfg.spark)
    ev, items_with_events, dropped = clean_events(read_table(spark, cfg), item_table(spark, items), cfg)
    for kind, n in dropped.items():
        log.record(kind, n, "events")
    path = tmp_path / name / "events.parquet"
    write_events(ev, tmp_path / name / "work", path)
    ev.unpersist()
    got, want = pl.read_parquet(path), pl.read_parquet(ref.events)
    assert got.schema == want.schema and got.equals(want)
    assert {"policy": cfg.on_invalid, **log.counts} == ref_stats["invalid_rows"]
    assert items_with_events == ref_stats["items_with_events"]
    return ref, ref_stats


@pytest.fixture(scope="module")
def table_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("table") / "events.parquet"
    edge_case_events().write_parquet(path, row_group_size=50)
    return path


@pytest.mark.parametrize(
    "split",
    [
        {"protocol": "global_time", "train_points": "periodic"},
        {"protocol": "global_time", "train_points": "recent", "train_until": "test", "min_history": 0},
        {"protocol": "per_user", "train_points": "periodic"},
        {"protocol": "per_user", "train_points": "recent", "train_until": "test"},
    ],
    ids=["global-periodic", "global-recent-refit", "per_user-periodic", "per_user-recent-refit"],
)
def test_spark_reads_a_table_file_into_the_same_run_as_polars(spark, tmp_path, table_file, split):
    data = {"source": "table", "events_path": str(table_file), "split": {**split, "horizon_days": 3, "max_history": 7}}
    ref, ref_stats = _run(tmp_path, "polars", data)
    got, _ = _run(tmp_path, "spark", {**data, "engine": "spark", "spark": SPARK})
    assert ref_stats["samples"]["test"] > 0 and ref_stats["users"] - ref_stats["users_with_dislikes"] == 1
    assert_same_run(ref, got)


@pytest.mark.parametrize("train_until", ["valid", "test"])
def test_spark_leaves_a_dislike_at_the_second_of_a_users_start_out_of_the_train_points_like_polars(spark, tmp_path, train_until):
    """Per-user split of a log rated in bursts (times floored to 3 days): a train candidate at the second of its user's
    label cut-off is no train point in either engine, nor a valid-share dislike at the second of its user's test start a
    valid point (one such in both variants; tests/test_data_splits_per_user.py; polars alone was fixed first each time)."""
    path = tmp_path / "bursts.parquet"
    edge_case_events().with_columns(pl.col("ts") // (3 * 86_400) * (3 * 86_400)).write_parquet(path)
    split = {"protocol": "per_user", "train_until": train_until, "horizon_days": 3, "max_history": 7}
    data = {"source": "table", "events_path": str(path), "on_invalid": "drop", "split": split}
    ref, _ = _run(tmp_path, "polars", data)
    got, _ = _run(tmp_path, "spark", {**data, "engine": "spark", "spark": SPARK})
    assert_same_run(ref, got)


def test_spark_on_simulator_events_equals_polars(spark, tmp_path):
    sim = {"source": "simulator", "simulator": {"n_users": 30, "n_items": 80, "days": 12}}
    ref, _ = _run(tmp_path, "polars", sim)
    got, _ = _run(tmp_path, "spark", {**sim, "engine": "spark", "spark": SPARK})
    assert_same_run(ref, got)


def test_spark_refuses_unknown_items_in_one_line_under_on_invalid_error(spark, tmp_path, table_file):
    from conrec.errors import DataValidationError

    items = tmp_path / "items.csv"
    items.write_text("item_id,title\n" + "".join(f"i{k},Item {k}\n" for k in range(20)))
    data = {"source": "table", "events_path": str(table_file), "items_path": str(items), "engine": "spark", "spark": SPARK,
            "on_invalid": "error"}
    with pytest.raises(DataValidationError, match=r"3 item id\(s\) are not in the items table, e.g. \['i20', 'i21', 'i22'\]"):
        _run(tmp_path, "bad", data)
    items.write_text("item_id,title\n" + "".join(f"{k:04d},Item {k}\n" for k in range(23)))  # no event item matches
    with pytest.raises(DataValidationError, match=r"every row was dropped .* event item ids such as \['i\d+', .* vs the items file's"):
        _run(tmp_path, "none", {**data, "on_invalid": "drop"})


def test_spark_drops_and_counts_invalid_rows_and_duplicates_like_polars(spark, tmp_path, monkeypatch):
    """Every kind of invalid row and exact duplicates dropped and counted
    as the polars loader does, float timestamps read, the items file repaired: the same run. Under
    ``on_invalid: error`` the duplicates stop it, with nothing published. The item table goes to the JVM once,
    although events on unknown items need it twice (the checks, then the ``.0`` hint): it went twice."""
    from conrec.errors import DataValidationError

    data, expected = warty_table(tmp_path)
    ref, ref_stats = _run(tmp_path, "polars", data)
    sent: list[object] = []
    create = SparkSession.createDataFrame

    def counted(self: SparkSession, *args: Any, **kwargs: Any) -> Any:
        sent.append(args)
        return create(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(SparkSession, "createDataFrame", counted)
        got, _ = _run(tmp_path, "spark", {**data, "engine": "spark", "spark": SPARK})
    assert len(sent) == 1 and expected["unknown_item"] > 0
    assert ref_stats["invalid_rows"] == {"policy": "drop", **expected} and expected["duplicate_event"] > 0
    assert_same_run(ref, got)
    clean = edge_case_events()
    path = tmp_path / "dups.parquet"
    pl.concat([clean, clean.head(5)]).write_parquet(path)
    strict = {"source": "table", "events_path": str(path), "engine": "spark", "spark": SPARK, "on_invalid": "error"}
    with pytest.raises(DataValidationError, match=r"5 exact duplicate event\(s\) \(same user, item, time and feedback\), e\.g\. \[\{'user_id': .*on_invalid: error"):
        _run(tmp_path, "strict", strict)
    assert not (tmp_path / "strict" / "data" / "events.parquet").exists()
    # a broken rule shows a few of its rows, as the polars readers do (Spark gave the count only)
    pl.concat([clean, clean.head(1).with_columns(feedback=pl.lit(7, dtype=clean.schema["feedback"]))]).write_parquet(path)
    with pytest.raises(DataValidationError, match=r"1 value\(s\) are not, e\.g\. \[\{'user_id': .*'feedback': 7"):
        _run(tmp_path, "strict", strict)


def test_spark_without_java_fails_in_one_line(tmp_path, table_file):
    """A fresh process (no session to reuse) whose Java is missing: a one-line error, no traceback."""
    import subprocess
    import sys

    import yaml

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"run_dir": str(tmp_path / "run"), "data": {"source": "table", "events_path": str(table_file), "engine": "spark"}}))
    env = {**os.environ, "JAVA_HOME": str(tmp_path / "no-java")}  # spark-submit runs $JAVA_HOME/bin/java
    proc = subprocess.run([sys.executable, "-m", "conrec.cli", "data", "-c", str(cfg)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "could not start a Spark session" in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr


def test_a_jvm_that_does_not_start_is_named_by_what_it_said(tmp_path, table_file):
    """Its output goes to data/spark.log now (below), so the refusal quotes the line that says why (a JDK whose java
    fails at once here) and names the log, instead of Spark's "Java gateway process exited" alone."""
    import subprocess
    import sys

    import yaml

    java = tmp_path / "jdk" / "bin" / "java"
    java.parent.mkdir(parents=True)
    java.write_text("#!/bin/sh\necho 'Error: this JDK is broken' >&2\nexit 1\n")
    java.chmod(0o755)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"run_dir": str(tmp_path / "run"), "data": {"source": "table", "events_path": str(table_file), "engine": "spark"}}))
    env = {**os.environ, "JAVA_HOME": str(tmp_path / "jdk")}
    proc = subprocess.run([sys.executable, "-m", "conrec.cli", "data", "-c", str(cfg)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "could not start a Spark session (" in proc.stderr
    assert f"; it said: 'Error: this JDK is broken'; Spark's log: {tmp_path / 'run' / 'data' / 'spark.log'})." in proc.stderr


# a session's settings for a short test JVM, as the module's session has them (see the spark fixture)
QUICK_JVM = {"spark.sql.shuffle.partitions": "4", "spark.ui.enabled": "false", "spark.sql.codegen.wholeStage": "false",
             "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"}


def test_spark_keeps_its_jvm_output_in_the_run_and_a_failed_job_is_one_line_naming_it(tmp_path, table_file):
    """Found in review: on a 300k-event log `conrec data` showed "validate, split, label (spark), write 0/3" for minutes,
    between Spark's start-up lines on the terminal ("Using Spark's default log4j profile", the hostname and
    native-hadoop warnings, "Setting default log level"), and a failed Spark job was Py4J's traceback. A fresh process
    (the JVM is started here) whose first job fails (spark.driver.maxResultSize: 1 byte): the JVM's output goes to
    data/spark.log, nothing of it to the terminal, the progress line names the part at work, and the error is one
    line, what Spark said first and where the rest is."""
    import subprocess
    import sys

    import yaml

    cfg, events = tmp_path / "cfg.yaml", tmp_path / "events.csv"
    pl.read_parquet(table_file).write_csv(events)  # a CSV: its first job is the engine's, not the Parquet reader's (below)
    spark = {**SPARK, "conf": {**QUICK_JVM, "spark.driver.maxResultSize": "1b"}}
    cfg.write_text(yaml.safe_dump({"run_dir": str(tmp_path / "run"), "data": {"source": "table", "events_path": str(events), "engine": "spark",
                                                                              "spark": spark}}))
    env = {**os.environ, "CONREC_PROGRESS_SECONDS": "0.2"}  # off a terminal: a progress line every 0.2 s
    proc = subprocess.run([sys.executable, "-m", "conrec.cli", "data", "-c", str(cfg)], env=env, capture_output=True, text=True, timeout=300)
    log = tmp_path / "run" / "data" / "spark.log"
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("error: data.engine: spark failed: org.apache.spark.SparkException: Job aborted due to stage failure: ")
    assert proc.stderr.endswith(f"(Spark's log: {log})\n") and proc.stderr.count("\n") == 1, proc.stderr
    assert "validate, split, label (spark), write: starting Spark: 0/3" in proc.stdout  # the JVM's start takes seconds
    assert "log4j" not in proc.stdout and "WARN" not in proc.stdout
    said = log.read_text()
    assert "Using Spark's default log4j profile" in said and "Setting default log level" in said and " ERROR " in said


def test_spark_tells_the_stage_each_part_of_its_work(spark, tmp_path, table_file):
    """Each part whose Spark jobs take long on a big log is told before it runs (the stage shows it after its label)."""
    from conrec.data.engine.base import EventsInput
    from conrec.data.engine.scan import scan_table, table_items
    from conrec.data.engine.spark import SparkEngine
    from conrec.data.repair import RepairLog

    cfg = load_config(None, {"data": {"source": "table", "events_path": str(table_file), "engine": "spark", "spark": SPARK}}).data
    items = table_items(cfg, scan_table(cfg), RepairLog(cfg.on_invalid))
    said: list[str] = []
    (tmp_path / "out").mkdir()
    SparkEngine().build(EventsInput(table=table_file), items, cfg, tmp_path / "out", step=said.append)
    assert said == ["starting Spark", "reading the events file", "checking the events", "finding the split cut-offs",
                    "selecting and labelling the samples", "writing events.parquet", "writing samples.parquet", "counting the statistics"]


def test_spark_reads_feedback_words_from_a_semicolon_csv_like_polars(spark, tmp_path):
    """The separator (from the header) and ``data.feedback_labels`` are read the same way by Spark;
    zero-padded numeric ids stay text (Spark's inferred types made ``0012`` the number 12), and user ids
    that pandas wrote as floats (``3.0``) read as ``3``, as polars reads them."""
    words = {-1: "Not Interested", 1: "click"}
    frame = edge_case_events()
    path = tmp_path / "log.csv"
    lines = [f"{u[1:]}.0;{i[1:]:0>4};{ts};{words[fb]};x" for u, i, ts, fb in frame.iter_rows()]
    lines += [f"0.0;0001;{1_700_000_000 + k};impression;x" for k in range(5)]  # neutral: dropped by both
    # a column already named like the role "action" is mapped to: the mapped one wins (a duplicate column before)
    path.write_text("user_id;item_id;ts;action;feedback\n" + "\n".join(lines) + "\n")
    data = {"source": "table", "events_path": str(path), "columns": {"action": "feedback"},
            "feedback_labels": {"not interested": -1, "click": 1, "impression": 0}, "split": {"horizon_days": 3, "max_history": 7}}
    ref, ref_stats = assert_reads_like_polars(tmp_path, "spark", data)
    assert ref_stats["events"] == frame.height and ref_stats["dislikes"] == int((frame["feedback"] == -1).sum())
    assert ref_stats["invalid_rows"] == {"policy": "drop", "neutral_feedback": 5}  # the impressions, counted by both
    events = pl.read_parquet(ref.events)
    assert events["item_id"].str.len_chars().min() == 4 and events["user_id"].str.contains(r"\.").sum() == 0


def test_spark_reads_month_first_dates_and_decimal_commas_like_polars_and_refuses_an_ambiguous_layout(spark, tmp_path):
    """Date/time strings Spark does not read itself are read in the layout the polars loader detects
    (or ``data.ts_format``), as UTC, and ratings with a decimal comma as numbers: both engines read the
    same events."""
    import datetime as dt

    from conrec.data.engine.spark import java_pattern
    from conrec.errors import DataValidationError

    assert java_pattern("%Y-%m-%dT%H:%M:%S") == "yyyy-M-d'T'H:m:s"
    frame = edge_case_events()
    path = tmp_path / "us.csv"
    stamp = [dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%m/%d/%Y %H:%M:%S") for ts in frame["ts"]]
    stars = {-1: "1,5", 1: "4,5"}
    path.write_text("user_id;item_id;ts;rating\n" + "".join(
        f"{u};{i};{s};{stars[fb]}\n" for (u, i, _, fb), s in zip(frame.iter_rows(), stamp)))
    data = {"source": "table", "events_path": str(path), "split": {"horizon_days": 3, "max_history": 7}}
    _, ref_stats = assert_reads_like_polars(tmp_path, "spark", data)
    assert ref_stats["events"] == frame.height and ref_stats["dislikes"] == int((frame["feedback"] == -1).sum())
    amb = tmp_path / "amb.csv"
    amb.write_text("user_id,item_id,ts,feedback\n" + "".join(f"u{k},i{k},{k % 12 + 1:02d}/03/2024,{1 - 2 * (k % 2)}\n" for k in range(30)))
    with pytest.raises(DataValidationError, match="data.ts_format"):
        _run(tmp_path, "amb", {"source": "table", "events_path": str(amb), "engine": "spark", "spark": SPARK})



def test_spark_reads_dates_and_times_without_a_zone_as_utc_like_polars_on_a_machine_in_another_zone(spark, tmp_path):
    """A Parquet date or naive timestamp stopped Spark with a Java cast error, and ISO strings (which
    Spark reads as timestamps itself) were read in the machine's zone: 5 hours off the polars engine
    in New York. The session in another zone stands for such a machine."""
    from conrec.data.config import DataConfig
    from conrec.data.engine.spark import read_table, spark_session
    from conrec.data.sources.table import load_table

    spark.conf.set("spark.sql.session.timeZone", "America/New_York")
    naive = edge_case_events().with_columns(pl.from_epoch("ts", "s"))
    files = {
        "naive.parquet": naive,
        "date.parquet": naive.with_columns(pl.col("ts").dt.date()),
        "iso.csv": naive.with_columns(pl.col("ts").dt.strftime("%Y-%m-%d %H:%M:%S")),
    }
    for name, table in files.items():
        path = tmp_path / name
        table.write_parquet(path) if name.endswith(".parquet") else table.write_csv(path)
        cfg = DataConfig(source="table", events_path=path, engine="spark", spark=SPARK)
        got = read_table(spark_session(cfg.spark), cfg).orderBy("_row").select("ts").toPandas()["ts"].tolist()
        assert got == load_table(path, None)[0]["ts"].to_list(), name


def test_spark_reads_a_text_feedback_column_like_polars(spark, tmp_path):
    """A feedback column with one "n/a" stopped Spark with a Java CAST_INVALID_INPUT trace, and epoch
    times with one "n/a" were taken for date strings and refused; now such rows are dropped and counted
    as by polars, and words throughout get polars' one line."""
    from conrec.errors import DataValidationError

    data, words = text_feedback_log(tmp_path)
    _, ref_stats = assert_reads_like_polars(tmp_path, "spark", data)
    assert ref_stats["invalid_rows"] == {"policy": "drop", "bad_feedback": 2, "bad_timestamp": 1}
    with pytest.raises(DataValidationError, match=WORDS_REFUSED):
        _run(tmp_path, "words", {**data, "events_path": str(words), "engine": "spark", "spark": SPARK})


def test_spark_reads_late_half_stars_and_categorical_parquet_like_polars(spark, tmp_path):
    """Spark infers a CSV's types from the whole file and reads Parquet dictionaries as text; the polars
    engines dropped half stars after the rows they infer from and refused categorical columns."""
    data, text = half_star_log(tmp_path)
    assert_reads_like_polars(tmp_path, "text", {**data, "events_path": str(text)})
    for k, (data, categorical) in enumerate(categorical_logs(tmp_path)):
        assert_reads_like_polars(tmp_path, f"categorical{k}", {**data, "events_path": str(categorical)})


def test_spark_reads_two_digit_years_in_the_century_polars_reads(spark, tmp_path):
    """Java reads ``yy`` as 2000-2099, polars (strftime) 69-99 as 1969-1999: ``95`` is 1995 in both."""
    for k, (data, text) in enumerate(two_digit_year_logs(tmp_path)):
        assert_reads_like_polars(tmp_path, f"log{k}", {**data, "events_path": str(text)})


def test_spark_reads_dates_written_as_digits_with_their_layout_like_polars(spark, tmp_path):
    """``20231114`` with ``ts_format: '%Y%m%d'``: Spark infers an integer column and read it as epoch seconds."""
    for layout in ("%Y%m%d", "%d%m%Y"):  # a leading zero Spark's integer inference drops too
        data, text = digit_date_log(tmp_path, layout)
        data = {**data, "events_path": str(text), "ts_format": layout}
        assert_reads_like_polars(tmp_path, layout[1], data)


def test_spark_reads_epoch_microseconds_like_polars(spark, tmp_path):
    data, micro = microsecond_log(tmp_path)
    data = {**data, "events_path": str(micro), "ts_unit": "us"}
    assert_reads_like_polars(tmp_path, "spark", data)


def test_spark_reads_times_without_leading_zeros_like_polars(spark, tmp_path):
    """``12/1/2023 7:13:20``: Java's ``MM/dd``/``HH`` read two digits only, so most rows were dropped as
    bad timestamps; a single letter reads one or two, as strftime does (two where fields touch: 20231225)."""
    from conrec.data.engine.spark import java_pattern

    assert java_pattern("%Y%m%d") == "yyyyMMdd" and java_pattern("%d.%m.%Y %H:%M") == "d.M.yyyy H:m"
    data, text = loose_time_log(tmp_path)
    assert_reads_like_polars(tmp_path, "spark", {**data, "events_path": str(text)})


def test_spark_reads_iso_times_with_an_offset_like_polars(spark, tmp_path):
    """``2023-12-25T20:13:30+02:00`` (or ``+0200``) and one ``n/a``: polars reads them as UTC and drops the
    ``n/a``; Spark refused the layout ("reads [...] not '%z'")."""
    data, _ = offset_time_log(tmp_path)
    _, ref_stats = assert_reads_like_polars(tmp_path, "spark", data)
    assert ref_stats["invalid_rows"] == {"policy": "drop", "bad_timestamp": 1}


def test_spark_maps_feedback_words_with_a_no_break_space_like_polars(spark, tmp_path):
    """``not\u00a0interested``: polars' whitespace is Unicode's, Java's ``\\s`` and ``trim`` ASCII only, so
    Spark dropped such rows as bad feedback."""
    frame = edge_case_events()
    path = tmp_path / "nbsp.csv"
    words = {-1: "not\u00a0interested", 1: "\u00a0like"}
    path.write_text("user_id,item_id,ts,action\n" + "".join(f"{u},{i},{ts},{words[fb]}\n" for u, i, ts, fb in frame.iter_rows()), encoding="utf-8")
    data = {"source": "table", "events_path": str(path), "columns": {"action": "feedback"},
            "feedback_labels": {"not interested": -1, "like": 1}, "split": {"horizon_days": 3, "max_history": 7}}
    _, ref_stats = assert_reads_like_polars(tmp_path, "spark", data)
    assert ref_stats["events"] == frame.height


def test_spark_reads_large_float_ids_as_their_integers_like_polars(spark, tmp_path):
    """Spark writes the double 10000006.0 as ``1.0000006E7``: no item of a Parquet log with float ids
    from ten million on matched its items file."""
    data, files = float_id_logs(tmp_path, first=10_000_000)
    data = {**data, "events_path": str(files[0])}
    ref, _ = assert_reads_like_polars(tmp_path, "spark", data)
    assert pl.read_parquet(ref.data / "events.parquet")["item_id"].str.starts_with("100000").all()


def test_spark_keeps_decimal_looking_ids_as_written_like_polars(spark, tmp_path):
    """``10``, ``10.0`` and ``10.00`` (beside ``0.5``) are three ids as written, in a CSV and as Parquet
    floats, to Spark as to polars: it stripped every float-looking id's ``.0`` and merged them."""
    for k, (case, users, _) in enumerate(decimal_id_logs(tmp_path)[1]):
        ref, stats = assert_reads_like_polars(tmp_path, f"spark{k}", case)
        assert stats["users"] == len(set(users.values())), k


def test_spark_reads_logs_mixing_integer_ids_written_as_floats_with_others_like_polars(spark, tmp_path):
    """A concat of ``33.0``-style and bare-integer ids, and float-looking ids with a text id after row 10,000 (which
    Spark's own inference, over the whole file, made a text column), lose their ``.0`` as polars reads them; events
    dropped on ids that differ from the items file's by a ``.0`` alone say so."""
    from conrec.data.engine.spark import _unknown_item_details, item_table, read_table, spark_session

    concat, late, items = mixed_float_id_logs(tmp_path)
    assert_reads_like_polars(tmp_path, "concat", concat)
    assert_reads_like_polars(tmp_path, "late", late)
    ev = tmp_path / "both.csv"  # 10 and 10.0 both: kept as written, 10.0 is no item
    ev.write_text("user_id,item_id,ts,feedback\n" + "".join(f"u{k % 5},{10 + k % 10}{'.0' if k % 3 == 0 else ''},{1_700_000_000 + k * 3600},{-1 if k % 4 == 0 else 1}\n" for k in range(60)))
    data = {"source": "table", "events_path": str(ev), "items_path": str(items)}
    assert_reads_like_polars(tmp_path, "both", data)
    cfg = load_config(None, {"run_dir": str(tmp_path / "both_spark"), "data": {**data, "engine": "spark", "spark": SPARK}}).data
    items_pl = pl.DataFrame({"item_id": [str(k) for k in range(50)]})
    hint = _unknown_item_details(read_table(spark_session(cfg.spark), cfg), item_table(spark_session(cfg.spark), items_pl), items_pl)
    assert hint["unknown_item"].startswith("the ids differ by a '.0' (")


def test_spark_reads_epoch_seconds_written_as_floats_in_a_text_column_like_polars(spark, tmp_path):
    """``1700000000.0`` with one ``n/a``: Spark (and the streaming scan before it) took them for date strings and refused them."""
    data, path = float_text_time_log(tmp_path)
    assert_reads_like_polars(tmp_path, "spark", data)
    path.write_text(path.read_text().replace("n/a", "1700000000.5"))  # a fraction of a second: floored by every engine
    assert_reads_like_polars(tmp_path, "spark_frac", data)


def test_spark_refuses_a_columns_source_in_neither_file_like_polars(spark, tmp_path, table_file):
    from conrec.errors import ConfigError

    with pytest.raises(ConfigError, match=COLUMNS_REFUSED):
        _run(tmp_path, "cols", {"source": "table", "events_path": str(table_file), "columns": {"genre": "category"}, "engine": "spark", "spark": SPARK})


def test_spark_refuses_epoch_times_in_two_units_like_polars(spark, tmp_path):
    from conrec.errors import DataValidationError

    with pytest.raises(DataValidationError, match=MIXED_UNITS):
        _run(tmp_path, "mixed", {"source": "table", "events_path": str(mixed_units_log(tmp_path)), "ts_unit": "ms", "engine": "spark", "spark": SPARK})


def test_spark_says_a_log_whose_every_feedback_is_neutral_is_so_like_polars(spark, tmp_path):
    """It said "no events", which named neither the feedback column nor data.feedback_labels."""
    from conrec.errors import DataValidationError

    with pytest.raises(DataValidationError, match=ALL_NEUTRAL):
        _run(tmp_path, "neutral", {**all_neutral_log(tmp_path), "engine": "spark", "spark": SPARK})


def test_spark_reads_times_in_the_configured_layout_only_like_polars(spark, tmp_path):
    """``data.ts_format: '%Y-%m-%dT%H:%M:%S%.fZ'`` with some times written without the ``Z``: polars drops those
    rows as unreadable; Spark inferred the column as timestamps itself and kept them (other files)."""
    import datetime as dt

    frame = edge_case_events()
    stamps = [dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + ("" if k % 10 == 3 else "Z")
              for k, ts in enumerate(frame["ts"])]
    path = tmp_path / "iso.csv"
    path.write_text("user_id,item_id,ts,feedback\n" + "".join(f"{u},{i},{t},{fb}\n" for (u, i, _, fb), t in zip(frame.iter_rows(), stamps)))
    data = {"source": "table", "events_path": str(path), "ts_format": "%Y-%m-%dT%H:%M:%S%.fZ", "split": {"horizon_days": 3, "max_history": 7}}
    _, ref_stats = assert_reads_like_polars(tmp_path, "spark", data)
    assert ref_stats["invalid_rows"]["bad_timestamp"] == sum(1 for t in stamps if not t.endswith("Z"))


def test_spark_reads_parquet_types_like_polars_or_refuses_them_in_one_line(spark, tmp_path):
    """Parquet types Spark does not read itself: TIMESTAMP(NANOS) (pandas' ``datetime64[ns]``), as the time
    column and as an unused column, is read like polars reads it (Spark refused the whole file with a Java
    traceback); other types Spark cannot read (FLOAT16, TIME) are refused in one line naming the file and the
    columns, and a duration as the time column (Spark reads it as integers) like polars refuses it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from conrec.errors import DataValidationError

    frame = edge_case_events()
    ns = pa.array([t * 10**9 + 999_999_999 for t in frame["ts"]], pa.timestamp("ns", tz="UTC"))
    table = frame.drop("ts").to_arrow().append_column("when", ns).append_column("exported_at", ns.cast(pa.timestamp("ns")))
    path = tmp_path / "nanos.parquet"
    pq.write_table(table, path)
    data = {"source": "table", "events_path": str(path), "columns": {"when": "ts"}, "split": {"horizon_days": 3, "max_history": 7}}
    _, ref_stats = assert_reads_like_polars(tmp_path, "nanos", data)
    assert ref_stats["events"] > 0
    odd = table.append_column("score", pa.array([1.5] * table.num_rows, pa.float16()))
    odd = odd.append_column("at", pa.array([1_000_000] * table.num_rows, pa.time64("us")))
    pq.write_table(odd, tmp_path / "odd.parquet")
    with pytest.raises(DataValidationError, match=r"odd.parquet: Spark cannot read it .*'score' is halffloat, 'at' is time64\[us\]") as err:
        _run(tmp_path, "odd", {**data, "events_path": str(tmp_path / "odd.parquet"), "engine": "spark", "spark": SPARK})
    assert "\n" not in str(err.value)
    durations = table.append_column("ts", pa.array([3_600_000_000] * table.num_rows, pa.duration("us")))  # read as integers by Spark
    pq.write_table(durations.drop_columns(["when"]), tmp_path / "durations.parquet")
    with pytest.raises(DataValidationError, match=r"durations.parquet: column 'ts' holds durations"):
        _run(tmp_path, "durations", {**data, "events_path": str(tmp_path / "durations.parquet"), "columns": {}, "engine": "spark", "spark": SPARK})
