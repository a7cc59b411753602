"""Helpers every source shares: reading table files, timestamps, rating thresholds, and the
final validation into canonical tables (see :mod:`conrec.data.schema`).

Why public names: each source lives in its own module, and a module must not reach into
another's private helpers.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, Literal

import polars as pl

from conrec.data.datetimes import digit_layout_width, parse_datetimes
from conrec.data.repair import RepairLog, drop_rows, repair_events, repair_items
from conrec.data.schema import (
    DISLIKE,
    EVENT_COLUMNS,
    POSITIVE,
    dated,
    epoch_unit_facts,
    integral_float_text,
    mixed_epoch_units,
    validate_events,
    validate_items,
)
from conrec.errors import ConfigError, DataValidationError, require_columns

TsUnit = Literal["auto", "s", "ms", "us"]
PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000}  # integer timestamps per second, by data.ts_unit
_MS_THRESHOLD = 10**11  # epoch seconds reach 1e11 only in the year 5138: larger integers are milliseconds

CSV_SUFFIXES = {".csv", ".tsv", ".txt"}
PARQUET_SUFFIXES = {".parquet", ".pq"}
JSONL_SUFFIXES = {".jsonl", ".ndjson", ".json"}




def file_suffix(path: Path) -> str:
    """Format suffix, looking through a trailing ``.gz``."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def existing_file(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise DataValidationError(f"{what} file not found: {p.absolute()}")
    if p.is_dir():
        raise DataValidationError(f"{what} path {p} is a directory; expected a file")
    return p


def read_bytes(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes()) if path.suffix.lower() == ".gz" else path.read_bytes()


def csv_separator(path: Path, what: str = "events") -> str:
    """The field separator of a CSV or TSV file: a tab for ``.tsv``; for ``.csv`` a comma, unless the
    header line has none but has a semicolon, tab or pipe.

    Why: spreadsheets in locales with a decimal comma export ``;``-separated "CSV", and other tools
    write tabs or pipes into ``.csv`` files. Read with a comma, such a file is one column named after
    the whole header, and every later error is about that column rather than the separator.
    A UTF-16 file (a byte-order mark, or a NUL after every character of the header) is refused in one
    line (:func:`utf16`): read as UTF-8, its column names and values carried NULs, and the error was about those.
    """
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.readline(65_536)
    if (encoding := utf16(raw)) is not None:
        raise DataValidationError(
            f"{what} file {path} is {encoding}, not UTF-8 (as Excel's 'Unicode Text' saves); re-save it as UTF-8 (Excel: "
            f"'CSV UTF-8'), e.g. iconv -f UTF-16 -t UTF-8 {path.name} > utf8_{path.name}"
        )
    if file_suffix(path) == ".tsv":
        return "\t"
    header = raw.decode("utf-8", errors="replace")
    if "," in header:
        return ","
    return next((sep for sep in (";", "\t", "|") if sep in header), ",")


def utf16(header: bytes) -> str | None:
    """``"UTF-16 LE"`` / ``"UTF-16 BE"`` when the first bytes of a text file say so (a byte-order mark, or a NUL
    byte beside every ASCII character), else None."""
    if header.startswith(b"\xff\xfe"):
        return "UTF-16 LE"
    if header.startswith(b"\xfe\xff"):
        return "UTF-16 BE"
    head = header[:200]
    if len(head) < 8:
        return None
    odd, even = head[1::2].count(0), head[0::2].count(0)
    if odd >= 0.8 * len(head[1::2]) and even == 0:
        return "UTF-16 LE"
    if even >= 0.8 * len(head[0::2]) and odd == 0:
        return "UTF-16 BE"
    return None


def not_utf8(data: bytes, path: Path, what: str) -> DataValidationError | None:
    """The one-line error for a text file that is not UTF-8 (the line of its first bad byte, and the fix), or None.

    Why: polars says only "invalid utf-8 sequence"; spreadsheet exports on Windows are often Latin-1 /
    cp1252 (an accented title), and the user needs to know where and how to re-save the file.
    """
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return DataValidationError(
            f"{what} file {path} is not UTF-8 (byte 0x{data[exc.start]:02x} on line {line}); re-save it as UTF-8, "
            f"e.g. iconv -f cp1252 -t utf-8 {path.name} > utf8_{path.name}"
        )
    return None


def not_feedback_values(what: str, values: list[object], labelled: bool = False) -> DataValidationError:
    """The one-line error for feedback values that are not -1/0/+1: unnamed words of a labelled
    column, or words throughout a column without ``data.feedback_labels`` (every engine says the same)."""
    hint = ("; name them in data.feedback_labels" if labelled
            else "; for words such as 'hide' or 'like', map them with data.feedback_labels (conrec init proposes it)")
    return DataValidationError(f"{what}: column 'feedback' has value(s) {values} that are not -1/0/+1{hint}")


def refuse_feedback_words(sample: pl.Series, what: str) -> None:
    """Raise :func:`not_feedback_values` when no sampled value of a text feedback column reads as a
    number: words throughout are a mapping to set, not invalid rows to drop (the lazy engines'
    check; the loader sees the whole column)."""
    numbers = sample.str.strip_chars().cast(pl.Float64, strict=False)
    if sample.len() and numbers.null_count() == sample.len():
        raise not_feedback_values(what, sample.unique().sort().head(3).to_list())


def read_error(exc: Exception, path: Path, fmt: str, what: str) -> DataValidationError:
    """The one-line error for a table file polars could not read: a text file that is not UTF-8 gets
    :func:`not_utf8`'s message, anything else polars' first line."""
    if fmt in CSV_SUFFIXES and "utf-8" in str(exc).lower() and (bad := not_utf8(read_bytes(path), path, what)) is not None:
        return bad
    return DataValidationError(f"{what} file {path} could not be read as {fmt.lstrip('.')}: {first_line(exc)}")


INFER_ROWS = 10_000  # the rows a CSV's column types are inferred from, by every engine


def categoricals_as_text(schema: Mapping[str, pl.DataType]) -> list[pl.Expr]:
    """Casts of a table's categorical and enum columns to text.

    Why: pandas writes a ``category`` column to Parquet as a dictionary, which polars reads as
    ``Categorical``; its values are the same words or numbers as the CSV's, but a categorical is
    neither text nor a number to the checks that read ids, ratings, feedback words and dates. Read
    as text, such a file behaves like the same CSV.
    """
    return [pl.col(c).cast(pl.String) for c, dtype in schema.items() if isinstance(dtype, (pl.Categorical, pl.Enum))]


def read_table_file(
    path: str | Path, what: str, schema_overrides: dict[str, pl.DataType] | None = None, values: Collection[str] = ()
) -> pl.DataFrame:
    """Read a CSV/TSV or Parquet file (chosen by suffix) with a clear error for missing/corrupt files.

    A CSV's columns get the types their first rows show, but a later value that does not read as
    its column's type (an ``n/a`` in row 25,001) becomes null (in an events column, an invalid row
    for the policy to count) rather than making the whole file unreadable; numeric ``values`` columns
    stay text (:func:`csv_reading`)."""
    p = existing_file(path, what)
    fmt = file_suffix(p)
    if fmt not in PARQUET_SUFFIXES | CSV_SUFFIXES:
        raise unsupported_format(p, fmt, what)
    sep = csv_separator(p, what) if fmt in CSV_SUFFIXES else ","  # a UTF-16 file is refused here, in one line
    try:
        if fmt in PARQUET_SUFFIXES:
            table = pl.read_parquet(p)
            table = table.with_columns(categoricals_as_text(table.schema))
        else:
            data = read_bytes(p)
            options: dict[str, Any] = {"separator": sep, "infer_schema_length": INFER_ROWS}
            texts, fixes = csv_reading(pl.scan_csv(io.BytesIO(data), **options).collect_schema(), schema_overrides or {}, values)  # no parse
            table = pl.read_csv(io.BytesIO(data), schema_overrides=texts, **options).with_columns(fixes)
    except Exception as exc:  # polars/arrow raise many types for malformed files
        raise read_error(exc, p, fmt, what) from exc
    return has_rows(table, p, what)


def has_rows(table: pl.DataFrame, path: Path, what: str) -> pl.DataFrame:
    """``table``, or a one-line error for a file with a header and no rows (later steps would only say
    "no items" or "no events", naming neither the file nor why)."""
    if table.height == 0:
        raise DataValidationError(f"{what} file {path} has no rows, only a header ({', '.join(table.columns)})")
    return table


def float_id_columns(inferred: Mapping[str, pl.DataType], fixed: Mapping[str, pl.DataType]) -> list[str]:
    """The ``fixed`` (id) columns whose first rows read as floats: ids that may be integers written as floats."""
    return [c for c in fixed if c in inferred and inferred[c].is_float()]


def csv_reading(
    inferred: Mapping[str, pl.DataType], fixed: Mapping[str, pl.DataType], values: Collection[str] = (),
    whole: Mapping[str, bool] | None = None,
) -> tuple[dict[str, pl.DataType], list[pl.Expr]]:
    """How to read a CSV whose first rows show the types ``inferred``: the schema overrides and the
    expressions to apply after reading.

    ``fixed`` columns (the ids, read as text so that ``0032`` stays ``0032``) get their type; if their
    first rows are floats and every id of the column is an integer written as a float (pandas writes
    integer ids with a missing value as ``32.0``), the ids lose their ``.0``
    (:func:`conrec.data.schema.integral_float_text`; ``whole``: that answer per such column, where a
    pass of its own found it). The other columns the first rows show as numbers are read as text and cast back,
    a value that does not read becoming null: polars' reader stops the whole file at the first such
    value otherwise, however late in it. ``values`` columns (a rating, a feedback) the first rows show
    as numbers stay text: cast back to the integers of the first rows, a later half star (``4.5``) was
    null, an invalid row; the loaders read numbers from text (a decimal comma too) and validate them.
    """
    numeric = [c for c, dtype in inferred.items() if dtype.is_numeric() and c not in fixed]
    fixes = [pl.col(c).str.strip_chars().cast(inferred[c], strict=False) for c in numeric if c not in values]
    fixes += [integral_float_text(c, None if whole is None else whole[c]) for c in float_id_columns(inferred, fixed)]
    return {**fixed, **{c: pl.String() for c in numeric}}, fixes


def check_column_sources(columns: Mapping[str, str], present: Collection[str]) -> None:
    """Refuse a ``data.columns`` source that is a column of neither file (a misspelt one would silently
    map nothing); ``present``: the events' and the items' column names. Every engine asks this."""
    unknown = sorted(set(columns) - set(present))
    if unknown:
        raise ConfigError(f"columns: source column(s) {unknown} are in neither the events nor the items file")


def all_neutral(what: str, labelled: bool) -> str:
    """The one line for a feedback column whose every value is neutral (0), which the loaders drop."""
    how = ("mark the words that mean a dislike -1 and a positive +1 in data.feedback_labels (conrec init lists them as 0 "
           "when it cannot tell)") if labelled else "a feedback column needs -1 (dislike) and +1 (positive) values"
    return f"{what}: every row's feedback is neutral (0), and neutral events are left out: {how}"


def renaming(columns: Mapping[str, str], present: Collection[str]) -> tuple[dict[str, str], list[str]]:
    """(the ``data.columns`` renames that apply to a file with columns ``present``, the columns to drop first).

    Why the drop: a file with both ``user_id`` and ``customer_id``, mapped ``customer_id: user_id`` (as
    ``conrec init --user-col customer_id`` writes it), kept its own ``user_id`` too, and every engine
    stopped on a duplicate column with a traceback. The mapping names the column that plays the role;
    a column already called like the role is then not it, and is left out. Every engine renames so."""
    renames = {src: dst for src, dst in columns.items() if src in present}
    shadowed = [c for c in present if c in renames.values() and c not in renames]
    return renames, shadowed


def source_names(columns: Mapping[str, str], roles: Collection[str]) -> set[str]:
    """The names a file may give the canonical ``roles``: the roles themselves, and what ``data.columns`` maps to them."""
    return set(roles) | {src for src, dst in columns.items() if dst in roles}


def unsupported_format(path: Path, fmt: str, what: str) -> DataValidationError:
    """The one-line error for a table file of another format, naming the source that reads the
    well-known ones (MovieLens's ``.dat``, Amazon's JSON lines) rather than leaving the user to convert."""
    hint = ""
    if fmt == ".dat":
        hint = "; MovieLens's ratings.dat and movies.dat are read by data.source: movielens (docs/data.md)"
    elif fmt in (".json", ".jsonl", ".ndjson"):
        hint = "; Amazon review JSON lines are read by data.source: amazon (docs/data.md); other JSON: write it as Parquet first"
    return DataValidationError(f"{what} file {path}: unsupported format {fmt!r}; use .csv, .tsv or .parquet (optionally .gz for text){hint}")


def read_jsonl(path: Path, what: str, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """Read only the ``schema`` fields of a JSON-lines file (other fields, however nested, are skipped)."""
    try:
        return pl.read_ndjson(io.BytesIO(read_bytes(path)), schema=schema)
    except Exception as exc:
        raise DataValidationError(f"{what} file {path} is not valid JSON lines: {first_line(exc)}") from exc


def first_json_record(path: Path, what: str) -> dict[str, Any]:
    """The first record of a JSON-lines file, to tell dataset versions apart by their keys."""
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if line.strip():
                    rec = json.loads(line)
                    if not isinstance(rec, dict):
                        raise DataValidationError(f"{what} file {path}, line {lineno}: expected a JSON object")
                    return rec
    except (json.JSONDecodeError, UnicodeDecodeError, OSError, EOFError) as exc:
        raise DataValidationError(f"{what} file {path} is not valid JSON lines: {exc}") from exc
    raise DataValidationError(f"{what} file {path} is empty")


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def parse_timestamps(
    s: pl.Series,
    unit: TsUnit = "auto",
    what: str = "events",
    column: str = "ts",
    unreadable_to_null: bool = False,
    ts_format: str | None = None,
) -> pl.Series:
    """Any timestamp column -> Int64 epoch seconds.

    Integers are seconds, or milliseconds (``unit="ms"``, or ``"auto"`` when every value exceeds
    1e11), or microseconds (``unit="us"``), unless ``ts_format`` is given: then integers and strings are date/times in that layout
    (``20231225`` with ``%Y%m%d``); strings may be integers or date/times in the one layout
    :mod:`conrec.data.datetimes` detects (an ambiguous one is refused); datetimes/dates are converted (UTC).
    NaN and infinite floats become nulls (for the invalid-row policy to count or refuse: see
    :mod:`conrec.data.repair`), and so do unreadable strings when ``unreadable_to_null``; otherwise
    an unreadable string is an error naming its row.
    """
    name = s.name
    if ts_format is not None and s.dtype.is_integer():  # 20231225 with %Y%m%d: a date written as digits, not epoch seconds
        s = s.cast(pl.String)
        if (width := digit_layout_width(ts_format)) is not None:  # 2122023 read from 02122023 (%d%m%Y)
            s = s.str.zfill(width)
    if s.dtype == pl.Date:
        s = s.cast(pl.Datetime("us"))
    if dated(s.dtype, what, column):
        return s.cast(pl.Datetime("us")).dt.epoch("s").alias(name)
    if s.dtype == pl.String:
        stripped = s.str.strip_chars()
        as_int = stripped.cast(pl.Int64, strict=False)
        if ts_format is None and as_int.null_count() == s.null_count():
            s = as_int
        else:
            as_num = stripped.cast(pl.Float64, strict=False)  # also reads "1.7e9", "nan", "inf"
            as_dt = parse_datetimes(stripped, ts_format, what, column)
            present = s.is_not_null()
            if ts_format is not None:  # the layout is given: a value it does not read is unreadable, whatever it looks like
                as_num = pl.Series(name, [None] * s.len(), dtype=pl.Float64)
            if (present & as_num.is_not_null()).any() and (present & as_dt.is_not_null()).any():
                raise DataValidationError(f"{what}: column {column!r} mixes epoch integers and date/time strings")
            parsed = as_dt if (present & as_dt.is_not_null()).any() else as_num
            bad = present & parsed.is_null()
            if bad.any() and not unreadable_to_null:
                row, n_bad = int(bad.arg_true()[0]), int(bad.sum())
                raise DataValidationError(
                    f"{what}: column {column!r} has {n_bad} value(s) that are neither epoch seconds nor a date/time, e.g. "
                    f"{s[row]!r} (row {row + 1})"
                )
            if parsed.dtype.is_temporal():
                return parsed.dt.epoch("s").alias(name)
            s = parsed
    if s.dtype.is_float() or s.dtype.is_decimal():  # a database export's NUMERIC(18, 0) epoch is a decimal
        s = s.cast(pl.Float64)
        s = pl.select(pl.when(s.is_finite()).then(s)).to_series().alias(name)
        s = s.floor().cast(pl.Int64)  # fractions of a second (time.time()'s 1703231671.123) floored, as ms and us are
    if not s.dtype.is_integer():
        raise DataValidationError(f"{what}: column {column!r} must hold timestamps, got dtype {s.dtype}")
    s = s.cast(pl.Int64)
    if mixed := mixed_epoch_units(pl.select(epoch_unit_facts(pl.lit(s))).row(0, named=True), f"{what}: column {column!r}"):
        raise DataValidationError(mixed)  # whatever the unit and the policy: no unit reads both
    if unit == "auto":
        unit = "ms" if s.len() > 0 and (s.drop_nulls() > _MS_THRESHOLD).all() else "s"
    if unit != "s":
        s = s // PER_SECOND[unit]
    # beyond year 9999: refused by validate_events, after the rows the policy drops (finish_tables passes the unit),
    # as the streaming scan and Spark count only surviving rows
    return s.alias(name)


DECIMAL_COMMA = r"^([+-]?\d+),(\d+)$"
"""A number written with a decimal comma (``3,5``), as ``;``-separated exports from such locales write ratings."""


def text_numbers(column: pl.Expr) -> pl.Expr:
    """Text as floats, null where not a number; a decimal comma is read as a point (``3,5`` is 3.5)."""
    text = column.cast(pl.String).str.strip_chars()
    return text.str.replace(DECIMAL_COMMA, "${1}.${2}").cast(pl.Float64, strict=False)


def ratings_to_feedback(
    df: pl.DataFrame,
    dislike_max_rating: float,
    like_min_rating: float,
    what: str,
    log: RepairLog | None = None,
    rating_range: tuple[float, float] | None = None,
    count_neutral: bool = True,
) -> pl.DataFrame:
    """Replace ``rating`` by ``feedback``: <= dislike_max -> -1, >= like_min -> +1, between -> dropped.

    ``count_neutral``: count the dropped neutral ratings as ``neutral_rating`` under ``drop`` (the table source, where
    a user's own thresholds can leave ratings between them unnoticed); the fixed-format sources' neutral ratings
    (MovieLens's and Amazon's 3 stars) are a documented reading, not counted.

    With a ``log`` whose policy is ``drop``, missing, non-numeric, NaN and out-of-``rating_range``
    ratings become a null ``feedback``, which :func:`conrec.data.repair.repair_events` drops and
    counts as ``bad_feedback`` (in the order every engine counts invalid rows: see
    :func:`rating_feedback`); without one the first is an error.
    """
    if dislike_max_rating >= like_min_rating:
        raise ConfigError("dislike_max_rating must be < like_min_rating (a rating cannot be both)")
    r = df["rating"]
    lenient = log is not None and log.policy == "drop"
    if r.dtype == pl.String:
        r_num = pl.select(text_numbers(pl.lit(r))).to_series()
        bad = r.is_not_null() & r_num.is_null()
        if bad.any() and not lenient:
            row = int(bad.arg_true()[0])
            raise DataValidationError(f"{what}: column 'rating' has a non-numeric value {r[row]!r} (row {row + 1})")
        r = r_num
    if not r.dtype.is_numeric():
        raise DataValidationError(f"{what}: column 'rating' must be numeric, got dtype {r.dtype}")
    df = df.with_columns(rating=r.cast(pl.Float64))
    if not lenient:  # the first invalid rating stops here, with the policy's one line
        drop_rows(df, invalid_rating(pl.col("rating"), rating_range), "bad_feedback", log or RepairLog(), what, "rating")
    df = df.with_columns(feedback=rating_feedback(pl.col("rating"), dislike_max_rating, like_min_rating, rating_range))
    neutral = pl.col("feedback").fill_null(1) == 0
    if lenient and count_neutral:  # counted (under drop: the engines count them with the invalid rows), so that a threshold that drops ratings shows
        assert log is not None
        return drop_rows(df, neutral, "neutral_rating", log, what, "rating").drop("rating")
    return df.filter(~neutral).drop("rating")


def invalid_rating(rating: pl.Expr, rating_range: tuple[float, float] | None) -> pl.Expr:
    """Missing, NaN, infinite or outside ``rating_range``: not a rating (NaN would otherwise sort
    above every threshold and read as a like)."""
    bad = rating.is_null() | ~rating.is_finite()
    if rating_range is not None:
        bad = bad | (rating < rating_range[0]) | (rating > rating_range[1])
    return bad


def rating_feedback(rating: pl.Expr, dislike_max_rating: float, like_min_rating: float, rating_range: tuple[float, float] | None) -> pl.Expr:
    """A float rating as feedback: -1, +1, 0 between the thresholds (neutral, for the caller to drop)
    and null where :func:`invalid_rating` (an invalid row, counted as ``bad_feedback`` after a missing
    id or timestamp, as for a missing feedback value). The loaders and the streaming scan share it."""
    return (
        pl.when(invalid_rating(rating, rating_range))
        .then(pl.lit(None, pl.Int8))
        .when(rating <= dislike_max_rating)
        .then(pl.lit(DISLIKE, pl.Int8))
        .when(rating >= like_min_rating)
        .then(pl.lit(POSITIVE, pl.Int8))
        .otherwise(pl.lit(0, pl.Int8))
    )


def finish_tables(
    events: pl.DataFrame, items: pl.DataFrame, source: str, log: RepairLog | None = None, items_source: str | None = None,
    ts_unit: str | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Repair (under ``log``'s policy; strict without one), then validate items, then events against
    them; keep only canonical event columns. ``items_source``: how messages name the items (default ``<source> items``);
    ``ts_unit``: the unit the timestamps were read in, for the beyond-year-9999 message (None: seconds or unknown)."""
    log = log or RepairLog()
    items_source = items_source or f"{source} items"
    items = validate_items(repair_items(items, log, items_source), source=items_source)
    require_columns(events, EVENT_COLUMNS, f"{source} events")
    events = repair_events(events.select(list(EVENT_COLUMNS)), items, log, f"{source} events")
    events = validate_events(events, items, source=f"{source} events", ts_unit=ts_unit)
    return events, items


def placeholder_items(item_ids: pl.Series, prefix: str) -> pl.DataFrame:
    """Items for sources without metadata: the id is all we know, so it becomes the title."""
    ids = item_ids.cast(pl.String).drop_nulls().unique(maintain_order=True).alias("item_id")  # a missing id: no item
    return ids.to_frame().with_columns(
        title=pl.lit(prefix + " ") + pl.col("item_id"), text=pl.lit(""), category=pl.lit("")
    )

