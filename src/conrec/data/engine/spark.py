"""The Spark engine (``data.engine: spark``): the data stage as PySpark DataFrame code.

The semantics are those of :mod:`conrec.data.splits` (the reference, run by the polars engine),
re-expressed with window functions and joins so that no step needs one user's events, let alone all
of them, on one executor beyond what a window partition holds:

* order: a user's events by ``(ts, input row)``; the input row is the file's row order
  (``monotonically_increasing_id`` on read, or the loader's row order for in-memory sources);
* cut-offs: the same "higher" quantiles of ``ts``, computed exactly from two histograms;
* points: the same filters as window functions (first dislike per period window, most recent
  ``max_train_samples_per_user``, first dislike after a cut-off, per-user shares);
* history: the ``max_history`` events before the point, found by an equi-join on
  ``(user, pos // max_history)`` blocks (two blocks per point) rather than a join on the user;
* labels: negatives and positives in ``[t, min(t + N days, label_cut))`` by an equi-join on
  ``(user, ts // window)`` buckets (two buckets per point);
* ``sample_id``: the global (split, user, ts) order numbered with per-partition offsets (no
  single-partition window).

Spark writes part files; they are streamed, in order, into the run directory's single
``events.parquet`` / ``samples.parquet`` (the run-dir contract), cast to the canonical dtypes.
So the run directory must be on a filesystem the driver can write (see docs/data-at-scale.md).

A JVM this process starts writes its output to the run's ``data/spark.log`` (:func:`_launch_jvm`), and a failed Spark
call is one line naming it (:func:`spark_failure`); the stage's progress line names each part as it starts.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import Any

import polars as pl
from py4j.protocol import Py4JError
from pyspark.errors import PySparkException
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from conrec.data.config import DataConfig, SparkConfig, SplitConfig
from conrec.data.datetimes import SAMPLE, ZULU, detect_format, digit_layout_width, inferred_dates
from conrec.data.engine.base import EVENTS_FILE, SAMPLES_FILE, BuildResult, EventsInput, Step, quiet_step
from conrec.data.engine.polars import parquet_appender
from conrec.data.engine.scan import neutral_kind, report_invalid, report_unknown_items
from conrec.data.feedback_labels import SEPARATORS
from conrec.data.repair import UNKNOWN_SAMPLE, InvalidPolicy, RepairLog, nothing_valid, unknown_item_details
from conrec.data.samples import SAMPLE_COLUMNS
from conrec.data.schema import DECIMAL_TEXT, DISLIKE, EPOCH_UNITS, EVENT_COLUMNS, INTEGRAL_FLOAT_TEXT, MAX_TS, POSITIVE, dated, mixed_epoch_units
from conrec.data.sources.common import (
    DECIMAL_COMMA,
    INFER_ROWS,
    PER_SECOND,
    csv_separator,
    existing_file,
    first_line,
    float_id_columns,
    refuse_feedback_words,
    renaming,
)
from conrec.data.splits import NO_CUT, SAMPLE_SCHEMA, SPLITS, Cutoffs, cutoffs_from
from conrec.data.stats import EventParts, SampleParts
from conrec.data.windows import horizon_seconds
from conrec.errors import ConfigError, ConrecError, DataValidationError

_ROW = "_row"
_MS_THRESHOLD = 100_000_000_000


SPARK_LOG = "spark.log"
_jvm_log: Path | None = None  # where the JVM this process started writes its output (see spark_session)


def session_options(cfg: SparkConfig, master: str | None) -> dict[str, str]:
    """The settings a session is built with: ``cfg.conf`` and the ones the engine needs (see :func:`spark_session`)."""
    options = {"spark.app.name": "conrec-data", **({"spark.master": master} if master else {}), "spark.ui.showConsoleProgress": "false"}
    options.update(cfg.conf)
    options["spark.sql.session.timeZone"] = "UTC"
    # Parquet TIMESTAMP(NANOS) (pandas' datetime64[ns]) as its integer nanoseconds: without it Spark refuses
    # the whole file, an unused column too; read_table converts a ts column so from the file's schema
    options["spark.sql.legacy.parquet.nanosAsLong"] = "true"
    return options


def spark_session(cfg: SparkConfig, log: Path | None = None) -> SparkSession:
    """The session to run on: ``cfg.master``, else ``$CONREC_SPARK_MASTER``, else whatever
    ``spark-submit`` set, else ``local[*]``. An existing session (spark-submit, a notebook, a test
    module) is reused, so its settings win over ``cfg.conf``, except its SQL time zone: UTC, so that
    times without a zone (naive timestamps, dates, ISO strings Spark reads itself) mean what they mean
    to the polars engine, whatever the machine's zone.

    ``log``: where a JVM this call starts writes its output, for its whole life (:func:`_launch_jvm`); None: on
    this process's terminal. A reused session's JVM keeps the output it had."""
    master = cfg.master or os.environ.get("CONREC_SPARK_MASTER")
    options = session_options(cfg, master)
    builder = SparkSession.builder
    for key, value in options.items():
        builder = builder.config(key, value)
    launches = _launches_jvm()
    if launches:
        problem = java_home_problem(os.environ.get("JAVA_HOME"))
        if problem:
            raise ConfigError(f"data.engine: spark could not start a Spark session: {problem}")
    try:
        if launches and log is not None:
            _launch_jvm(options, log)
        session = builder.getOrCreate()
    except Exception as exc:  # py4j / pyspark raise several types when the JVM cannot start
        hint = "" if shutil.which("java") else " Java was not found: apt-get install -y openjdk-17-jre-headless."
        raise ConfigError(f"data.engine: spark could not start a Spark session ({first_line(exc)}{_log_head(log)}).{hint}") from exc
    if not master and "spark.master" not in dict(session.sparkContext.getConf().getAll()):
        session = builder.master("local[*]").getOrCreate()
    return session


def _launch_jvm(options: dict[str, str], log: Path) -> None:
    """Start Spark's JVM, as a session would (``spark-submit`` with ``options``), with its output in ``log``.

    Why: the JVM writes to the terminal it inherits, so ``conrec data`` showed Spark's start-up lines ("Using Spark's
    default log4j profile", the hostname and native-hadoop warnings, "Setting default log level") and, later, its
    WARN and ERROR lines between the progress lines. pyspark's ``launch_gateway`` takes the process's output files
    (its ``popen_kwargs``, meant for that); the session then uses this JVM. A failure still comes back as the
    exception of the call that failed (:func:`spark_failure` makes it one line naming the log)."""
    global _jvm_log
    from subprocess import STDOUT

    from pyspark import SparkConf, SparkContext
    from pyspark.java_gateway import launch_gateway

    conf = SparkConf(loadDefaults=False).setAll(list(options.items()))
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:  # this JVM's output only: an earlier one's ended with it
        gateway = launch_gateway(conf, popen_kwargs={"stdout": out, "stderr": STDOUT})
    SparkContext._ensure_initialized(gateway=gateway)
    _jvm_log = log


def _log_head(log: Path | None) -> str:
    """``; it said: '...'; Spark's log: <log>``, empty where no JVM was started with that log. The first line but the
    JVM's own notices ("WARNING: Using incubator modules") says why it did not start ("JAVA_HOME is not set", the
    java's own error); spark-class's shell noise follows it."""
    lines = _log_lines(log)
    if lines is None:
        return ""
    said = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("WARNING: ")][:2]
    if said[:1] != [_VM_INIT]:  # the second line is spark-class's shell noise, but after the JVM's own "could not
        said = said[:1]  # initialise" it says why ("Could not reserve enough space for ... object heap")
    return (f"; it said: {' / '.join(said)!r}" if said else "") + f"; Spark's log: {log}"


_VM_INIT = "Error occurred during initialization of VM"


_LOG_FAILURE = ("Exception", "Error", "OutOfMemory", "Killed")


def _log_failure(log: Path | None) -> str | None:
    """The last line of ``log`` that names an exception or error (an ``OutOfMemoryError``, a killed executor), None if
    there is none or no log. Why: a JVM that dies mid-job leaves Py4J with only "Answer from Java side is empty"; what
    happened is in the JVM's own output, which now goes to the log rather than the terminal."""
    return next((ln.strip() for ln in reversed(_log_lines(log) or []) if any(word in ln for word in _LOG_FAILURE)), None)


def _log_lines(log: Path | None) -> list[str] | None:
    """The lines of Spark's log, None where there is no log or it cannot be read."""
    try:
        return log.read_text(errors="replace").splitlines() if log is not None else None
    except OSError:
        return None


def spark_said(exc: BaseException) -> str:
    """The first line of what Spark said about a failed call: a Py4JJavaError's own is only "An error occurred while
    calling o44.parquet.", its Java exception's names the failure."""
    java = getattr(exc, "java_exception", None)
    return first_line(java.toString()) if java is not None else first_line(exc)


def _see_log() -> str:
    """`` (Spark's log: <file>)`` where the JVM this process started writes (empty for a reused session's JVM)."""
    return f" (Spark's log: {_jvm_log})" if _jvm_log is not None else ""


def spark_failure(exc: Exception) -> ConrecError:
    """A failed Spark call (a Py4J error, a pyspark exception) as one line: what Spark said first, and where the
    JVM this process started keeps the rest (its WARN and ERROR lines, the stack traces)."""
    said = spark_said(exc)
    if isinstance(exc, Py4JError) and getattr(exc, "java_exception", None) is None and (logged := _log_failure(_jvm_log)):
        said = f"{said}; the log's last error: {logged}"  # Py4J got no Java exception back: the JVM itself failed
    return ConrecError(f"data.engine: spark failed: {said}{_see_log()}")


def _launches_jvm() -> bool:
    """Whether a session would start its own JVM (through ``spark-class``, which reads ``JAVA_HOME``):
    not when this process already has one (an earlier session, a notebook) or spark-submit gave it one."""
    from pyspark import SparkContext

    return SparkContext._gateway is None and "PYSPARK_GATEWAY_PORT" not in os.environ


def java_home_problem(java_home: str | None) -> str | None:
    """Why ``JAVA_HOME`` cannot start Spark's JVM, or None. ``spark-class`` runs ``$JAVA_HOME/bin/java``
    whenever ``JAVA_HOME`` is set (the ``java`` on PATH only when it is not), so a wrong one failed with
    shell noise and Spark's "Java gateway process exited", which names neither Java nor JAVA_HOME."""
    if not java_home:
        return None
    home = Path(java_home)
    if _executable(home / "bin" / "java"):
        return None
    fix = f"set it to {home.parent}, the JDK's root" if _executable(home / "java") else "set it to the JDK's root (e.g. /usr/lib/jvm/java-17-openjdk-amd64, not its bin/)"
    return f"JAVA_HOME={java_home} has no bin/java (Spark runs $JAVA_HOME/bin/java): {fix}, or unset it to use the java on PATH."


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


class SparkEngine:
    """``data.engine: spark``."""

    name = "spark"

    def reads_file(self, cfg: DataConfig) -> bool:
        """A ``table`` source's file is always read by Spark itself (it may be larger than the driver)."""
        return cfg.source == "table"

    def build(self, events: EventsInput, items: pl.DataFrame, cfg: DataConfig, out: Path, step: Step = quiet_step,
              log_dir: Path | None = None) -> BuildResult:
        """(:class:`DataEngine`) The JVM a session starts here writes its output to ``log_dir/spark.log`` (else
        ``out``'s)."""
        step("starting Spark")
        spark = spark_session(cfg.spark, log=(log_dir or out) / SPARK_LOG)
        work = out / "_spark"
        shutil.rmtree(work, ignore_errors=True)
        try:
            if events.frame is not None:
                step("handing the events to Spark")
                src = work / "input.parquet"
                src.parent.mkdir(parents=True)
                events.frame.select(list(EVENT_COLUMNS)).with_row_index(_ROW).with_columns(pl.col(_ROW).cast(pl.Int64)).write_parquet(src)
                ev = spark.read.parquet(str(src))
            else:
                step("reading the events file")
                ev = read_table(spark, cfg)
            return _build(spark, ev, items, cfg, out, work, step)
        except (Py4JError, PySparkException) as exc:  # conrec's own errors (ConrecError) pass as they are
            raise spark_failure(exc) from exc
        finally:
            shutil.rmtree(work, ignore_errors=True)


def read_table(spark: SparkSession, cfg: DataConfig) -> DataFrame:
    """The ``table`` source's events file as canonical events plus the input row (file order), with
    the mapping of :func:`conrec.data.engine.scan.scan_table` (renames, feedback or rating, ts unit)."""
    assert cfg.events_path is not None
    path = str(existing_file(cfg.events_path, "events"))
    suffix = "".join(Path(path).suffixes).lower()
    nanos: set[str] = set()
    durations: set[str] = set()
    if suffix.endswith((".parquet", ".pq")):
        try:
            df = spark.read.parquet(path)
        except Exception as exc:  # AnalysisException (an illegal Parquet type) or a Py4J error: one line, not a Java traceback
            raise DataValidationError(f"events file {path}: Spark cannot read it ({spark_said(exc)}){_unreadable_columns(path)}{_see_log()}") from exc
        nanos, durations = _parquet_times(path)
    elif suffix.endswith((".csv", ".tsv", ".csv.gz", ".tsv.gz")):
        df = _read_csv_ids_as_text(spark, path, cfg)
    else:
        raise DataValidationError(f"events file {path}: the Spark engine reads .parquet, .csv or .tsv")
    renames, shadowed = renaming(cfg.columns, df.columns)
    df = df.drop(*shadowed).withColumnsRenamed(renames)
    for c in durations - set(shadowed):  # int64 to Spark: it would read as epoch numbers
        if renames.get(c, c) == "ts":
            dated(pl.Duration(), f"events file {path}", c)
    if "ts" in {renames.get(c, c) for c in nanos if c not in shadowed}:  # integer nanoseconds (nanosAsLong): a timestamp, as polars reads it
        df = df.withColumn("ts", F.timestamp_micros(F.expr("(`ts` - pmod(`ts`, 1000)) div 1000")))
    if not {"user_id", "item_id", "ts"} <= set(df.columns) or not ({"feedback", "rating"} & set(df.columns)):
        raise DataValidationError(
            f"events file {path}: needs user_id, item_id, ts and feedback (-1/+1) or rating (map them with `columns`); have {df.columns}"
        )
    df = df.withColumn(_ROW, F.monotonically_increasing_id())
    what = f"events file {path}"
    whole = _whole_float_ids(df, [c for c in ("user_id", "item_id") if dict(df.dtypes)[c] in ("double", "float")])  # a Parquet file's
    if dict(df.dtypes)["ts"] == "date":  # midnight UTC, as polars reads a date
        df = df.withColumn("ts", F.unix_date("ts").cast("long") * 86_400)
    elif dict(df.dtypes)["ts"] == "timestamp_ntz":  # a time without a zone: UTC (the session's zone), as polars reads it
        df = df.withColumn("ts", F.col("ts").cast("timestamp"))
    elif cfg.ts_format is not None and dict(df.dtypes)["ts"] in ("string", "int", "bigint"):  # every value in the layout, 20231225 too
        text = F.col("ts").cast("string")
        if dict(df.dtypes)["ts"] != "string" and (width := digit_layout_width(cfg.ts_format)) is not None:
            text = F.lpad(text, width, "0")  # 02122023 (%d%m%Y) inferred as the integer 2122023, as the loaders restore it
        df = df.withColumn("ts", _string_times(pl.Series("ts", [], dtype=pl.String), cfg.ts_format, what, text))
    elif dict(df.dtypes)["ts"] == "string":  # date/time strings Spark did not read as timestamps itself, or numbers with junk
        sample = _sample(df, "ts").str.strip_chars()
        dates = sample.len() > 0 and sample.cast(pl.Int64, strict=False).null_count() == sample.len()
        fmt = detect_format(sample, what, "ts") if dates else None
        if fmt is not None or (dates and inferred_dates(sample)):  # the latter refused: no layout to read them in
            df = df.withColumn("ts", _string_times(sample, fmt, what))
        else:  # epoch numbers, integers or floats (1703528010.0); a value that does not read null (an invalid row), as the polars engines read them
            text = F.trim(F.col("ts"))
            df = df.withColumn("_int", text.try_cast("long")).withColumn("ts", text.try_cast("double"))
            df = _finite_floor(df, cfg, what, F.col("_int").isNull())
            df = df.withColumn("ts", F.coalesce("_int", "ts")).drop("_int")
    elif dict(df.dtypes)["ts"] in ("double", "float"):  # as the loaders read them: NaN, infinities null; fractions refused
        df = _finite_floor(df, cfg, what)
    ts = F.col("ts").cast("long")
    bands = [((ts >= low) & (ts < high), unit) for unit, _, low, high in EPOCH_UNITS]  # conrec.data.schema.epoch_unit_facts
    first = df.agg(
        *[F.sum(band.cast("long")).alias(f"n_{u}") for band, u in bands], *[F.min(F.when(band, ts)).alias(f"eg_{u}") for band, u in bands],
        F.min(ts).alias("low"),
    ).first()
    facts = first.asDict() if first is not None else {}
    if mixed := mixed_epoch_units(facts, f"{what}: column 'ts'"):
        raise DataValidationError(mixed)
    unit = cfg.ts_unit
    if unit == "auto":
        low = facts.get("low")
        unit = "ms" if low is not None and low > _MS_THRESHOLD else "s"
    df = df.withColumn("ts", F.floor(ts / PER_SECOND[unit]).cast("long") if unit != "s" else ts)
    if "feedback" in df.columns and cfg.feedback_labels:  # words or a flag: the loaders' mapping; not named -> null, invalid
        words = F.regexp_replace(F.lower(_strip(F.col("feedback").cast("string"))), _UNICODE + SEPARATORS, "_")
        words = F.regexp_replace(words, INTEGRAL_FLOAT_TEXT, "$1")  # a float flag, 1.0: "1", as normalise reads it
        table = F.create_map(*[x for k, v in cfg.feedback_labels.items() for x in (F.lit(k), F.lit(float(v)))])
        df = df.withColumn("feedback", F.try_element_at(table, words))
    elif "feedback" in df.columns and dict(df.dtypes)["feedback"] == "string":  # a few unreadable values: null, invalid
        refuse_feedback_words(_sample(df, "feedback"), what)
        df = df.withColumn("feedback", F.trim(F.col("feedback")).try_cast("double"))
    if "rating" in df.columns and "feedback" not in df.columns:  # conrec.data.sources.common.rating_feedback
        if dict(df.dtypes)["rating"] == "string":  # e.g. a decimal comma, "3,5": as the loaders read it; else null, invalid
            df = df.withColumn("rating", F.regexp_replace(F.trim(F.col("rating")), DECIMAL_COMMA, "$1.$2").try_cast("double"))
        r = F.col("rating").cast("double")
        bad = r.isNull() | F.isnan(r) | (F.abs(r) == float("inf"))  # NaN sorts above every threshold: it would read as a like
        if cfg.rating_range is not None:
            bad = bad | (r < cfg.rating_range[0]) | (r > cfg.rating_range[1])
        fb = F.when(bad, F.lit(None)).when(r <= cfg.dislike_max_rating, F.lit(DISLIKE)).when(r >= cfg.like_min_rating, F.lit(POSITIVE))
        df = df.withColumn("feedback", fb.otherwise(F.lit(0)))
    if cfg.on_invalid != "drop":  # under drop neutral events stay, for _check to count (neutral_rating, neutral_feedback), as the loaders count them
        df = df.filter(F.col("feedback").isNull() | (F.col("feedback") != 0))
    return df.select(
        _id_text(df, "user_id", whole.get("user_id", False)),
        _id_text(df, "item_id", whole.get("item_id", False)),
        "ts",
        "feedback",
        _ROW,
    )


def _parquet_times(path: str) -> tuple[set[str], set[str]]:
    """The Parquet file's TIMESTAMP(NANOS) columns, which Spark reads as integer nanoseconds
    (``spark.sql.legacy.parquet.nanosAsLong``, set by :func:`spark_session`), and its durations (Arrow's,
    which Spark reads as plain integers)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    nanos = {f.name for f in schema if pa.types.is_timestamp(f.type) and f.type.unit == "ns"}
    return nanos, {f.name for f in schema if pa.types.is_duration(f.type)}


def _unreadable_columns(path: str) -> str:
    """``; column 'rating' is float16, ...`` for the Parquet file's columns of a type Spark does not read
    (half floats, times of day, durations), with the fix; empty where there are none (or no schema)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except Exception:  # noqa: BLE001  # not Parquet at all: Spark's own line says so
        return ""
    odd = [f"{f.name!r} is {f.type}" for f in schema if pa.types.is_float16(f.type) or pa.types.is_time(f.type) or pa.types.is_duration(f.type)]
    if not odd:
        return ""
    return f"; column {', '.join(odd)}: cast it to a type Spark reads (float16 to float32) or drop it"


_UNICODE = "(?U)"  # Java's \s is ASCII whitespace; with this flag it is Unicode's (a no-break space too), as in Python and polars


def _strip(text: Column) -> Column:
    """Outer whitespace dropped, Unicode's (as polars' ``strip_chars`` and Python's ``strip``): ``trim`` drops only spaces."""
    return F.regexp_replace(text, _UNICODE + r"^\s+|\s+$", "")


def _missing_id(column: str) -> Column:
    """:func:`conrec.data.repair.missing_id` in Spark: null, empty or only whitespace."""
    return F.col(column).isNull() | (_strip(F.col(column)) == "")


def _finite_floor(df: DataFrame, cfg: DataConfig, what: str, where: Column | None = None) -> DataFrame:
    """A double ``ts`` as the loaders read them: NaN and infinities null, floored (a fraction of a second too)."""
    ts = F.col("ts")
    df = df.withColumn("ts", F.when(~F.isnan(ts) & (F.abs(ts) != float("inf")), ts))
    return df.withColumn("ts", F.floor("ts"))  # fractions of a second floored, as the loaders floor them


def _id_text(df: DataFrame, column: str, whole: bool) -> Column:
    """An id column as text; a float one whose every finite id is an integer (pandas' integers with a
    missing value, 32.0; ``whole``: :func:`_whole_float_ids`) as its integer text, as
    :func:`conrec.data.schema.id_as_text` reads it; NaN and infinities null (a missing id)."""
    x = F.col(column)
    text = x.cast("string")
    if dict(df.dtypes)[column] in ("double", "float"):  # Spark writes 10000006.0 as 1.0000006E7: the integer's own text
        missing = F.isnan(x) | (F.abs(x) == float("inf"))
        text = F.when(missing, F.lit(None)).otherwise(F.floor(x).cast("string") if whole else text)
    return text.alias(column)


def _whole_float_ids(df: DataFrame, columns: list[str]) -> dict[str, bool]:
    """Per id column of ``columns`` (text or float), whether every id is an integer written as a float, in
    one Spark job: :func:`conrec.data.schema.integral_float_ids`, which the polars engines ask (a text
    column: an id written so, ``32.0``, no decimal like ``0.5`` and no two ids that would become one,
    ``10`` and ``10.0``; a float one: every finite id an integer below 2**63)."""
    if not columns:
        return {}
    checks = []
    for c in columns:
        x = F.col(c)
        if dict(df.dtypes)[c] in ("double", "float"):
            finite = ~F.isnan(x) & (F.abs(x) != float("inf"))
            ok = x.isNull() | ~finite | ((F.abs(x) < 2.0**63) & (x == F.floor(x)))
            checks.append((F.min(ok.cast("int")) == 1) & (F.max(finite.cast("int")) == 1))
        else:
            written = F.max(x.rlike(INTEGRAL_FLOAT_TEXT).cast("int")) == 1
            decimal = F.max(x.rlike(DECIMAL_TEXT).cast("int")) == 1
            merged = F.countDistinct(F.regexp_replace(x, INTEGRAL_FLOAT_TEXT, "$1")) != F.countDistinct(x)
            checks.append(written & ~decimal & ~merged)
    row = df.agg(*[F.coalesce(check, F.lit(False)).alias(c) for check, c in zip(checks, columns)]).first()
    return {c: bool(row[c]) if row is not None else False for c in columns}


def _sample(df: DataFrame, column: str) -> pl.Series:
    """The first non-null values of a text column, as the polars engines sample one to tell its kind."""
    rows = df.select(column).where(F.col(column).isNotNull()).limit(SAMPLE).collect()
    return pl.Series(column, [r[0] for r in rows], dtype=pl.String)


def _read_csv_ids_as_text(spark: SparkSession, path: str, cfg: DataConfig) -> DataFrame:
    """A CSV with Spark's inferred types, except the id columns, read as text as the polars engine
    reads them: inferred, ``0032`` became the number 32 and matched no ``0032`` of the items file."""
    from pyspark.sql.types import StringType, StructField, StructType

    reader = spark.read.option("header", True).option("sep", csv_separator(Path(path)))
    inferred = reader.option("inferSchema", True).csv(path).schema
    ids = {"user_id", "item_id"} | {src for src, dst in cfg.columns.items() if dst in ("user_id", "item_id")}
    # with data.ts_format the times are text read in that layout, as polars reads them: inferred, Spark's own ISO
    # parser read the rows the layout does not (2023-12-22T07:54:31 for '...%.fZ') where polars dropped them
    times = {"ts"} | {src for src, dst in cfg.columns.items() if dst == "ts"} if cfg.ts_format is not None else set()
    schema = StructType([StructField(f.name, StringType()) if f.name in ids | times else f for f in inferred.fields])
    df = reader.schema(schema).csv(path)
    # the id columns whose first rows read as floats, as the polars engines infer them (Spark infers from the whole
    # file: one text id after row 10,000 made the column text, and its 32.0 kept the .0 polars drops)
    first_rows = pl.scan_csv(path, separator=csv_separator(Path(path)), infer_schema_length=INFER_ROWS).collect_schema()
    floats = float_id_columns(first_rows, {f.name: pl.String() for f in inferred.fields if f.name in ids})
    for c, whole in _whole_float_ids(df, floats).items():  # ids written as floats (pandas: 32.0): their integer text, as polars reads them
        if whole:
            df = df.withColumn(c, F.regexp_replace(F.col(c), INTEGRAL_FLOAT_TEXT, "$1"))
    return df


_JAVA_DIRECTIVES = {"%Y": "yyyy", "%y": "yy", "%m": "MM", "%d": "dd", "%H": "HH", "%M": "mm", "%S": "ss", "%z": "xxx"}
# strftime (polars) reads a month, day, hour, minute or second of one or two digits (1/6/2024 7:05); so does
# Java's single letter, where the next character is not a digit of another directive (20231225 needs MMdd)
_ONE_OR_TWO_DIGITS = {"%m": "M", "%d": "d", "%H": "H", "%M": "m", "%S": "s"}
# polars' %z reads +02:00, +0200, +02 00 and a space before them (not Z); Java's xxx only the first: the
# others are written so before they are read
_OFFSET = (r"\s*([+-]\d\d)[:\s]?(\d\d)$", "$1:$2")


def _directives(fmt: str) -> list[str]:
    """``fmt`` as its tokens: ``%.f``, two-character directives and single characters."""
    tokens: list[str] = []
    k = 0
    while k < len(fmt):
        n = 3 if fmt.startswith("%.f", k) else 2 if fmt[k] == "%" else 1
        tokens.append(fmt[k : k + n])
        k += n
    return tokens


def java_pattern(fmt: str) -> str:
    """A strftime layout (``data.ts_format``) as a Java DateTimeFormatter pattern, letters quoted."""
    tokens = _directives(fmt)
    out: list[str] = []
    for k, token in enumerate(tokens):
        if token == "%.f":  # fractions of a second, of any length or none (an optional section)
            out.append("[.SSSSSSSSS]")
        elif token.startswith("%"):
            if token not in _JAVA_DIRECTIVES:
                raise ConfigError(f"data.ts_format {fmt!r}: the Spark engine reads {sorted([*_JAVA_DIRECTIVES, '%.f'])}, not {token!r}")
            adjacent = any(0 <= j < len(tokens) and tokens[j] in _JAVA_DIRECTIVES for j in (k - 1, k + 1))
            out.append(_ONE_OR_TWO_DIGITS[token] if token in _ONE_OR_TWO_DIGITS and not adjacent else _JAVA_DIRECTIVES[token])
        else:
            out.append(f"'{token}'" if token.isalpha() else token)
    return "".join(out)


def _string_times(sample: pl.Series, ts_format: str | None, what: str, text: Column | None = None) -> Column:
    """The ``ts`` strings as timestamps in their one layout (``ts_format``, else detected on ``sample``,
    the column's first values, as the polars loader does), read as UTC whatever the session's time
    zone; unreadable ones null."""
    if ts_format is None:
        ts_format = detect_format(sample.str.strip_chars(), what, "ts")
    if ts_format is None:
        raise DataValidationError(
            f"{what}: column 'ts' holds text that is neither epoch numbers only nor date/time strings in a known layout; "
            "set data.ts_format, or fix the rows"
        )
    text = F.trim(F.col("ts") if text is None else text)
    if "%z" in ts_format:  # the offset is in the text: the instant it names, as polars converts it to UTC
        text = F.regexp_replace(text, ZULU, "+00:00")  # a UTC Z, as read_layout reads it for the polars engines
        ts = F.try_to_timestamp(F.regexp_replace(text, *_OFFSET), F.lit(java_pattern(ts_format)))
    else:
        ts = F.try_to_timestamp(F.concat(text, F.lit(" UTC")), F.lit(java_pattern(ts_format) + " VV"))
    if "%y" in ts_format:  # Java reads a two-digit year as 2000-2099, strftime (polars) 69-99 as 1969-1999
        ts = F.when(F.year(ts) >= 2069, ts - F.expr("INTERVAL 100 YEARS")).otherwise(ts)
    return ts


def _check(
    ev: DataFrame, items: DataFrame, what: str, on_invalid: InvalidPolicy, ts_unit: str | None = None, neutral: str = "neutral_rating"
) -> tuple[DataFrame, int, int, dict[str, int]]:
    """:func:`conrec.data.engine.scan.check_event_rules` in Spark: one aggregate (and, under
    ``error``, an anti-join); returns the valid events, their count, the item count and the rows
    dropped per kind; ``neutral``: the kind a feedback of 0 counts under."""
    if on_invalid == "error":
        return ev, *_strict_check(ev, items, what, ts_unit), {}
    ev = ev.join(items.withColumn("_known", F.lit(True)), on="item_id", how="left")
    fb = F.col("feedback")
    kinds = {
        neutral: fb == 0,  # a neutral rating or feedback (see the reader)
        "missing_id": _missing_id("user_id") | _missing_id("item_id"),
        "bad_timestamp": F.col("ts").isNull() | (F.col("ts") < 0),
        "bad_feedback": fb.isNull() | ~fb.cast("double").isin(float(DISLIKE), float(POSITIVE)),
        "unknown_item": F.col("_known").isNull(),
    }
    seen = F.lit(False)
    counts = []
    for kind, bad in kinds.items():
        bad = F.coalesce(bad, F.lit(False))
        counts.append(F.sum((bad & ~seen).cast("long")).alias(kind))
        seen = seen | bad
    ev = ev.withColumn("_valid", ~seen)
    valid = F.col("_valid")
    row = ev.agg(
        *counts,
        F.sum(valid.cast("long")).alias("n"),
        F.sum((valid & (F.col("ts") > MAX_TS)).cast("long")).alias("huge_ts"),
        F.max(F.when(valid, F.col("ts"))).alias("max_ts"),
        F.countDistinct(F.when(valid, F.col("item_id"))).alias("items_with_events"),
    ).first()
    facts = row.asDict() if row is not None else {}
    dropped = {k: int(facts[k] or 0) for k in kinds if facts.get(k)}
    if dropped and not facts.get("n"):
        unknown = [r[0] for r in ev.where(F.col("_known").isNull()).select("item_id").distinct().limit(3).collect()]
        raise nothing_valid(what, dropped, unknown, [r[0] for r in items.select("item_id").collect()])
    report_invalid({"n": facts.get("n"), "huge_ts": facts.get("huge_ts"), "max_ts": facts.get("max_ts"), "ts_unit": ts_unit}, what)
    return ev.filter(valid).drop("_known", "_valid"), int(facts["n"]), int(facts["items_with_events"]), dropped


def _strict_check(ev: DataFrame, items: DataFrame, what: str, ts_unit: str | None = None) -> tuple[int, int]:
    """``on_invalid: error``: the loaders' validation rules, the first broken one raising; returns the
    event and item counts."""
    fb = F.col("feedback")
    rules = {  # report_invalid's order: the first broken one is the error
        **{f"null_{c}": _missing_id(c) if c in ("user_id", "item_id") else F.col(c).isNull() for c in EVENT_COLUMNS},
        "bad_feedback": fb.isNotNull() & ~fb.cast("double").isin(float(DISLIKE), float(POSITIVE)),
        "negative_ts": F.col("ts") < 0,
    }
    row = ev.agg(
        F.count(F.lit(1)).alias("n"),
        *[F.sum(rule.cast("long")).alias(name) for name, rule in rules.items()],
        F.sum((F.col("ts") > MAX_TS).cast("long")).alias("huge_ts"),
        F.max("ts").alias("max_ts"),
        F.countDistinct("item_id").alias("items_with_events"),
    ).first()
    facts = row.asDict() if row is not None else {}
    broken = next((name for name in rules if facts.get(name)), None)
    if facts.get("n") and broken is not None:  # a few of its rows, as the polars readers show them (on the error path only)
        facts["examples"] = {broken: [r.asDict() for r in ev.where(rules[broken]).select(*EVENT_COLUMNS).limit(3).collect()]}
    report_invalid({**facts, "ts_unit": ts_unit}, what)
    unknown = ev.select("item_id").join(items, on="item_id", how="left_anti").distinct().cache()
    n_unknown = unknown.count()
    report_unknown_items(n_unknown, [r[0] for r in unknown.orderBy("item_id").limit(5).collect()] if n_unknown else [], what)
    unknown.unpersist()
    return int(facts["n"]), int(facts["items_with_events"])


def drop_exact_duplicates(ev: DataFrame) -> DataFrame:
    """Exact duplicate events (same user, item, time and feedback) dropped, the first by input row
    kept, as the loaders and the polars streaming engine drop them (one window: duplicates share a key)."""
    w = Window.partitionBy(*EVENT_COLUMNS).orderBy(_ROW)
    return ev.withColumn("_dup", F.row_number().over(w)).filter(F.col("_dup") == 1).drop("_dup")


def higher_quantiles(ts: DataFrame, qs: list[float]) -> list[int]:
    """Exact ``quantile(q, interpolation="higher")`` of ``ts`` (the polars definition: the value at
    sorted index ``ceil(q * (n - 1))``), from a coarse histogram and a fine one inside the bucket
    that holds each rank: two passes, a few thousand rows to the driver, no global sort."""
    lo, hi, n = ts.agg(F.min("ts"), F.max("ts"), F.count("ts")).first()  # type: ignore[misc]
    ranks = [math.ceil(q * (n - 1)) for q in qs]
    width = max(1, -(-(hi - lo + 1) // 4096))
    coarse = sorted(ts.groupBy(F.floor((F.col("ts") - lo) / width).alias("b")).count().collect())
    out = []
    for rank in ranks:
        seen, b = 0, 0
        for bucket, c in coarse:  # the bucket holding the rank, and how many values lie before it
            b = bucket
            if seen + c > rank:
                break
            seen += c
        fine = sorted(ts.filter((F.col("ts") >= lo + b * width) & (F.col("ts") < lo + (b + 1) * width)).groupBy("ts").count().collect())
        for value, c in fine:
            if seen + c > rank:
                out.append(int(value))
                break
            seen += c
    return out


def _floordiv(x: Column, d: int) -> Column:
    """Floor division of longs (as polars ``//``), exact: no trip through doubles."""
    return ((x - F.pmod(x, F.lit(d))) / d).cast("long")


def _first_per(df: DataFrame, keys: list[str | Column]) -> DataFrame:
    w = Window.partitionBy(*keys).orderBy("ts", _ROW)
    return df.withColumn("_k", F.row_number().over(w)).filter(F.col("_k") == 1).drop("_k")


def _pick_train(cands: DataFrame, window_end: Column, cfg: SplitConfig) -> DataFrame:
    """:func:`conrec.data.splits._pick_train_points` in Spark."""
    if cfg.train_points == "periodic":
        period = horizon_seconds(cfg.train_period_days)
        cands = _first_per(cands.withColumn("_w", _floordiv(window_end - 1 - F.col("ts"), period)), ["user_id", "_w"]).drop("_w")
    recent = Window.partitionBy("user_id").orderBy(F.col("ts").desc(), F.col(_ROW).desc())
    return (
        cands.withColumn("_r", F.row_number().over(recent))
        .filter(F.col("_r") <= cfg.max_train_samples_per_user)
        .drop("_r")
        .withColumn("split", F.lit("train"))
    )


def select_points(neg: DataFrame, cuts: Cutoffs, cfg: SplitConfig) -> DataFrame:
    """:func:`conrec.data.splits.select_points` (both protocols): ``user_id, split, ts, _row, item_id, pos, label_cut,
    hist_negatives`` (``neg`` carries the user's dislikes before each one)."""
    cols = ["user_id", "split", "ts", _ROW, "item_id", "pos", "label_cut", "hist_negatives"]
    no_cut = F.lit(NO_CUT).cast("long")
    if cfg.protocol == "per_user":
        w = Window.partitionBy("user_id")
        rank = F.row_number().over(w.orderBy("ts", _ROW)) - 1
        n = F.count(F.lit(1)).over(w)
        n_test = F.floor(n * cfg.test_frac + 0.5)
        n_vt = F.floor(n * (cfg.test_frac + cfg.valid_frac) + 0.5)
        shares = neg.withColumn("share", F.when(rank >= n - n_test, "test").when(rank >= n - n_vt, "valid").otherwise("train"))
        shares = shares.withColumn("valid_start", F.min(F.when(F.col("share") == "valid", F.col("ts"))).over(w)).withColumn(
            "test_start", F.min(F.when(F.col("share") == "test", F.col("ts"))).over(w)
        )
        shares = shares.filter(F.col("pos") >= cfg.min_history)
        if cfg.train_until == "test":
            train = shares.filter(F.col("share") != "test").withColumn("label_cut", F.coalesce("test_start", no_cut))
        else:
            train = shares.filter(F.col("share") == "train").withColumn("label_cut", F.coalesce("valid_start", "test_start", no_cut))
        train = train.filter(F.col("ts") < F.col("label_cut"))  # as polars: a dislike at the start's second is no train point
        last = F.max("ts").over(Window.partitionBy("user_id")) + 1
        train = _pick_train(train, F.when(F.col("label_cut") == NO_CUT, last).otherwise(F.col("label_cut")), cfg)
        valid = shares.filter(F.col("share") == "valid").withColumn("split", F.lit("valid")).withColumn("label_cut", F.coalesce("test_start", no_cut))
        valid = valid.filter(F.col("ts") < F.col("label_cut"))  # as polars: nor is one at the test start's second a valid point
        test = shares.filter(F.col("share") == "test").withColumn("split", F.lit("test")).withColumn("label_cut", no_cut)
        return train.select(cols).unionByName(valid.select(cols)).unionByName(test.select(cols))
    neg = neg.filter(F.col("pos") >= cfg.min_history)
    train_cut = cuts.valid if cfg.train_until == "valid" else cuts.test
    train = _pick_train(neg.filter(F.col("ts") < train_cut).withColumn("label_cut", F.lit(train_cut).cast("long")), F.lit(train_cut), cfg)
    valid = _first_per(neg.filter((F.col("ts") >= cuts.valid) & (F.col("ts") < cuts.test)), ["user_id"])
    valid = valid.withColumn("split", F.lit("valid")).withColumn("label_cut", F.lit(cuts.test).cast("long"))
    test = _first_per(neg.filter(F.col("ts") >= cuts.test), ["user_id"]).withColumn("split", F.lit("test")).withColumn("label_cut", no_cut)
    return train.select(cols).unionByName(valid.select(cols)).unionByName(test.select(cols))


def _in_buckets(points: DataFrame, key: Column, width: int) -> DataFrame:
    """Each point twice, once per ``width`` bucket its window can reach (``key // width`` and the next)."""
    b = _floordiv(key, width)
    return points.withColumn("_b", F.explode(F.array(b, b + 1)))


def _sorted_field(col: str, field: str) -> Column:
    return F.transform(F.array_sort(F.col(col)), lambda s: s[field])


def attach(ev: DataFrame, points: DataFrame, cfg: SplitConfig) -> DataFrame:
    """:func:`conrec.data.splits.attach_history_and_labels` in Spark (without ``sample_id``)."""
    h = cfg.max_history
    p = points.withColumn("_pid", F.monotonically_increasing_id()).cache()
    key = ["_pid", "user_id"]

    # history: events with pos in [pos - max_history, pos); they lie in blocks pos//h - 1 and pos//h
    e_hist = ev.select("user_id", F.col("pos").alias("_epos"), F.col("item_id").alias("_eitem"), F.col("feedback").alias("_efb"), F.col("ts").alias("_ets"))
    hist = (
        _in_buckets(p.select(*key, "pos"), F.col("pos"), h)
        .withColumn("_b", F.col("_b") - 1)
        .join(e_hist.withColumn("_b", _floordiv(F.col("_epos"), h)), on=["user_id", "_b"])
        .filter((F.col("_epos") >= F.col("pos") - h) & (F.col("_epos") < F.col("pos")))
        .groupBy(*key)
        .agg(F.collect_list(F.struct("_epos", "_eitem", "_efb", "_ets")).alias("_h"))
        .select(
            *key,
            _sorted_field("_h", "_eitem").alias("hist_items"),
            _sorted_field("_h", "_efb").alias("hist_feedback"),
            _sorted_field("_h", "_ets").alias("hist_ts"),
        )
    )

    # negatives from the point on (itself first) before min(t + max_horizon, cut)
    far = horizon_seconds(cfg.max_horizon_days)
    near = horizon_seconds(cfg.horizon_days)
    negs = ev.filter(F.col("feedback") == DISLIKE).select(
        "user_id", F.col("pos").alias("_npos"), F.col("ts").alias("_nts"), F.col("item_id").alias("_nitem")
    )
    later_limit = F.least(F.col("ts") + far, F.col("label_cut"))
    near_limit = F.least(F.col("ts") + near, F.col("label_cut"))
    labels = (
        _in_buckets(p.select(*key, "ts", "pos", "label_cut"), F.col("ts"), far)
        .join(negs.withColumn("_b", _floordiv(F.col("_nts"), far)), on=["user_id", "_b"])
        .filter((F.col("_npos") == F.col("pos")) | ((F.col("_npos") > F.col("pos")) & (F.col("_nts") < later_limit)))
        .groupBy(*key)
        .agg(
            F.collect_list(F.struct("_npos", "_nitem", "_nts")).alias("_l"),
            F.collect_list(F.when((F.col("_npos") == F.col("pos")) | (F.col("_nts") < near_limit), F.struct("_npos", "_nitem"))).alias("_f"),
        )
        .select(
            *key,
            _sorted_field("_l", "_nitem").alias("later_negs"),
            _sorted_field("_l", "_nts").alias("later_neg_ts"),
            F.array_distinct(_sorted_field("_f", "_nitem")).alias("future_negs"),
        )
    )

    # positives after the point (in the canonical order) before min(t + horizon, cut)
    poss = ev.filter(F.col("feedback") > 0).select("user_id", F.col("pos").alias("_ppos"), F.col("ts").alias("_pts"), F.col("item_id").alias("_pitem"))
    fpos = (
        _in_buckets(p.select(*key, "ts", "pos", "label_cut"), F.col("ts"), near)
        .join(poss.withColumn("_b", _floordiv(F.col("_pts"), near)), on=["user_id", "_b"])
        .filter((F.col("_ppos") > F.col("pos")) & (F.col("_pts") < near_limit))
        .groupBy(*key)
        .agg(F.collect_list(F.struct("_ppos", "_pitem")).alias("_p"))
        .select(*key, F.array_distinct(_sorted_field("_p", "_pitem")).alias("future_pos"))
    )

    empty_str = F.array().cast("array<string>")
    return (
        p.join(hist, on=key, how="left")
        .join(labels, on=key, how="left")
        .join(fpos, on=key, how="left")
        .select(
            "user_id",
            "split",
            "ts",
            "pos",
            F.coalesce("hist_items", empty_str).alias("hist_items"),
            F.coalesce("hist_feedback", F.array().cast("array<tinyint>")).alias("hist_feedback"),
            F.coalesce("hist_ts", F.array().cast("array<bigint>")).alias("hist_ts"),
            F.col("item_id").alias("next_neg"),
            "future_negs",
            "later_negs",
            "later_neg_ts",
            F.coalesce("future_pos", empty_str).alias("future_pos"),
            "hist_negatives",
        )
    )


def number_rows(df: DataFrame, order: list[Column]) -> DataFrame:
    """``sample_id``: the 0-based rank in ``order``, from per-partition counts and offsets (a global
    ``row_number`` window would pull every row into one partition)."""
    ordered = df.orderBy(*order).withColumn("_part", F.spark_partition_id()).withColumn("_mono", F.monotonically_increasing_id()).cache()
    # a plain collect, not ``.rdd.map``: a Python lambda over an RDD starts Python worker processes (seconds)
    counts = {r[0]: (r[1], r[2]) for r in ordered.groupBy("_part").agg(F.count(F.lit(1)), F.min("_mono")).collect()}
    offsets, total = {}, 0
    for part in sorted(counts):
        offsets[part] = total - counts[part][1]
        total += counts[part][0]
    offset = F.create_map(*[x for part, off in offsets.items() for x in (F.lit(part), F.lit(off))]) if offsets else F.create_map()
    return ordered.withColumn("sample_id", (F.col("_mono") + offset[F.col("_part")]).cast("long")).drop("_part", "_mono")


def _write_single(df: DataFrame, work: Path, path: Path, schema: dict[str, pl.DataType]) -> None:
    """Spark's ordered part files -> one Parquet file in canonical dtypes, streamed part by part."""
    df.write.mode("overwrite").parquet(str(work))
    parts = sorted(work.glob("part-*.parquet"))
    with parquet_appender(path) as write:
        for f in parts:
            write(pl.read_parquet(f).select(pl.col(c).cast(t) for c, t in schema.items()))
        if not parts:
            write(pl.DataFrame(schema=schema))


def item_table(spark: SparkSession, items_pl: pl.DataFrame) -> DataFrame:
    """The items' ids as a Spark table, sent to the JVM once per build for both its readers (:func:`clean_events`,
    :func:`_unknown_item_details`): each sent its own, twice a catalogue of millions of ids."""
    return spark.createDataFrame([(i,) for i in items_pl["item_id"].to_list()], "item_id string")


def clean_events(raw: DataFrame, items: DataFrame, cfg: DataConfig) -> tuple[DataFrame, int, dict[str, int]]:
    """The valid, deduplicated events with their per-user position ``pos`` (cached), the number of items
    with events, and the rows dropped per kind: everything the stage's outputs derive from. Its own
    function so that tests can compare how each file layout is *read* without the seconds of Spark
    jobs that labelling costs (the labelling is compared whole on the split settings). ``items``: :func:`item_table`."""
    # a loader's table (events.frame) is valid and deduplicated already: only the file Spark read itself may
    # hold invalid rows and exact duplicates
    from_file = cfg.source == "table"
    what = f"{cfg.source} events"
    raw, n_valid, n_items, dropped = _check(raw, items, what, cfg.on_invalid if from_file else "error", cfg.ts_unit if from_file else None,
                                            neutral_kind(cfg) if from_file else "neutral_rating")
    ev = (drop_exact_duplicates(raw) if from_file else raw).withColumn("feedback", F.col("feedback").cast("tinyint"))
    ev = ev.withColumn("pos", F.row_number().over(Window.partitionBy("user_id").orderBy("ts", _ROW)) - 1).cache()
    dropped["duplicate_event"] = n_valid - ev.count() if from_file else 0
    if cfg.on_invalid == "error" and dropped["duplicate_event"]:  # stop before labelling, with the line the stage's record would raise
        repeated = raw.groupBy(*EVENT_COLUMNS).count().where(F.col("count") > 1).orderBy("user_id", "ts", "item_id").limit(5)
        RepairLog("error").record("duplicate_event", dropped["duplicate_event"], what, [r.asDict() for r in repeated.select("user_id", "item_id", "ts").collect()])
    return ev, n_items, dropped


def _unknown_item_details(raw: DataFrame, items: DataFrame, items_pl: pl.DataFrame) -> dict[str, str]:
    """The ``.0`` hint for events dropped on unknown items (:func:`conrec.data.repair.unknown_item_details`),
    from a few of their distinct ids: one more Spark job, only when some were dropped. ``items``: ``items_pl``'s
    :func:`item_table`."""
    unknown = raw.select("item_id").where(F.col("item_id").isNotNull()).join(items, on="item_id", how="left_anti").distinct()
    return unknown_item_details([r[0] for r in unknown.limit(UNKNOWN_SAMPLE).collect()], items_pl["item_id"].to_list())


def write_events(ev: DataFrame, work: Path, path: Path) -> None:
    """The canonical events file: by user, time and input row, as the polars engines write it."""
    _write_single(ev.orderBy("user_id", "ts", _ROW).select(*EVENT_COLUMNS), work, path, dict(EVENT_COLUMNS))


def _build(spark: SparkSession, raw: DataFrame, items_pl: pl.DataFrame, cfg: DataConfig, out: Path, work: Path, step: Step) -> BuildResult:
    """The stage's work on Spark; ``step`` is told each part before its Spark jobs run (they take minutes on a big
    log, and the stage's progress said nothing meanwhile)."""
    step("checking the events")
    items = item_table(spark, items_pl)
    ev, n_items, dropped = clean_events(raw, items, cfg)
    details = _unknown_item_details(raw, items, items_pl) if dropped.get("unknown_item") else {}
    step("finding the split cut-offs")
    valid, test = higher_quantiles(ev.select("ts"), [1.0 - cfg.split.test_frac - cfg.split.valid_frac, 1.0 - cfg.split.test_frac])
    cuts = cutoffs_from(valid, test)

    negatives = ev.filter(F.col("feedback") == DISLIKE)
    negatives = negatives.withColumn("hist_negatives", (F.row_number().over(Window.partitionBy("user_id").orderBy("ts", _ROW)) - 1).cast("long"))
    points = select_points(negatives, cuts, cfg.split)
    samples = attach(ev, points, cfg.split)
    split_order = F.when(F.col("split") == "train", 0).when(F.col("split") == "valid", 1).otherwise(2)
    step("selecting and labelling the samples")
    samples = number_rows(samples, [split_order, F.col("user_id"), F.col("ts"), F.col("pos")]).cache()

    step(f"writing {EVENTS_FILE}")
    write_events(ev, work / "events", out / EVENTS_FILE)
    step(f"writing {SAMPLES_FILE}")
    _write_single(samples.select(*SAMPLE_COLUMNS), work / "samples", out / SAMPLES_FILE, SAMPLE_SCHEMA)

    step("counting the statistics")
    per_user = ev.groupBy("user_id").agg(F.sum((F.col("feedback") == DISLIKE).cast("long")).alias("neg"))
    totals = ev.agg(F.count(F.lit(1)), F.sum((F.col("feedback") == DISLIKE).cast("long")), F.min("ts"), F.max("ts")).first()
    assert totals is not None
    neg_counts = pl.Series("neg", [r[0] for r in per_user.select("neg").collect()], pl.UInt32)
    ev_parts = EventParts(
        events=int(totals[0]), dislikes=int(totals[1]), users=neg_counts.len(), first_ts=int(totals[2]), last_ts=int(totals[3]), neg_per_user=neg_counts
    )
    count: dict[str, int] = dict.fromkeys(SPLITS, 0)
    future: dict[str, int] = dict.fromkeys(SPLITS, 0)
    hist = 0
    rows: list[Any] = samples.groupBy("split").agg(
        F.count(F.lit(1)), F.sum(F.size("hist_items")), F.sum(F.size("future_negs"))
    ).collect()
    for split, n, h, f in rows:
        count[split], future[split] = int(n), int(f)
        hist += int(h)
    samples.unpersist()
    ev.unpersist()
    return BuildResult(cuts, ev_parts, SampleParts(count=count, hist_len=hist, future_len=future), n_items, dropped=dropped, details=details)
