"""Date/time strings in an events file: find the one layout they are written in, or refuse to guess.

Why not polars' inference alone: it picks a layout from the first values. For ``04/16/2024 07:00``
(month first, as US exports write) it settled on day first, so every date with a day above 12 was
unreadable (dropped as a bad timestamp) and every other one moved to another month, silently: the
time split and the future windows were then built on wrong times. Here every listed layout is tried
on a sample and the one that reads the most values wins. When two layouts read the sample equally
well but disagree (``04/05/2024`` is April 5 or May 4: every sampled day is at most 12), the loader
refuses and asks for ``data.ts_format``. Inference is kept for what the list does not name, and is
used only when it reads more values than any listed layout.
"""

from __future__ import annotations

import re

import polars as pl

from conrec.errors import DataValidationError

_FULL_YEARS = ("%Y-%m-%d", "%Y/%m/%d", "%m/%d/%Y", "%d/%m/%Y", "%d.%m.%Y", "%m-%d-%Y", "%d-%m-%Y")
# Two-digit years (``12/25/23``): 00-68 are 2000-2068, 69-99 1969-1999 (as strftime reads them).
_DATES = _FULL_YEARS + tuple(d.replace("%Y", "%y") for d in _FULL_YEARS if d.endswith("%Y"))
_MIN_YEAR = 1000  # a %Y layout reads ``23`` as the year 23: such a reading is not a date of a log
_TIMES = ("", " %H:%M", " %H:%M:%S", "T%H:%M", "T%H:%M:%S")
# ISO 8601 as logs write it: fractions of a second (``%.f`` also reads none) and a UTC ``Z`` or an offset
# (``%z`` reads +02:00 and +0200; the time is converted to UTC). Named here, not left to polars'
# inference, so that every engine, the streaming scan included, reads them with one explicit layout.
_ISO = tuple(f"%Y-%m-%d{sep}%H:%M:%S%.f{zone}" for sep in ("T", " ") for zone in ("", "Z", "%z"))
# and to the minute with a zone (2023-12-25T18:13Z, as JavaScript's toISOString() shortened to minutes writes it)
_ISO += tuple(f"%Y-%m-%d{sep}%H:%M{zone}" for sep in ("T", " ") for zone in ("Z", "%z"))
FORMATS: tuple[str, ...] = tuple(d + t for d in _DATES for t in _TIMES) + _ISO
"""The layouts tried, each a strftime format matched exactly (``T`` only after an ISO date is usual, but harmless)."""
SAMPLE = 100_000


def read_layout(text: pl.Expr, fmt: str) -> pl.Expr:
    """Strings read in the layout ``fmt``, unreadable ones null. With an offset (``%z``), a trailing ``Z``
    is read as ``+00:00``: ``%z`` does not read it, and RFC 3339 logs mix both (``...Z`` and ``...+01:00``);
    every engine reads so (Spark's ``_string_times`` too)."""
    if "%z" in fmt:
        text = text.str.replace(ZULU, "+00:00")
    return text.str.to_datetime(fmt, strict=False, time_unit="us")


ZULU = r"Z$"
"""A UTC time's trailing ``Z``, read as the offset ``+00:00`` by a ``%z`` layout."""


def _parse(s: pl.Series, fmt: str | None) -> pl.Series:
    if fmt is not None:
        return s.to_frame("x").select(read_layout(pl.col("x"), fmt)).to_series().alias(s.name)
    try:
        return s.str.to_datetime(strict=False, time_unit="us")
    except pl.exceptions.ComputeError:  # inference gives up entirely when the first value is bad
        return pl.Series(s.name, [None] * s.len(), dtype=pl.Datetime("us"))


def _utc_naive(parsed: pl.Series) -> pl.Series:
    """UTC datetimes without their zone: a ``Z`` layout's and a ``%z`` one's readings of ``...Z`` compare equal."""
    return parsed.dt.replace_time_zone(None) if isinstance(parsed.dtype, pl.Datetime) and parsed.dtype.time_zone else parsed


def _plausible(parsed: pl.Series) -> pl.Series:
    """Parsed datetimes, null before the year 1000.

    Why: ``%m/%d/%Y`` reads ``12/25/23`` as the year 23, as many values as ``%m/%d/%y`` reads as 2023,
    so the two tied (and disagreed); every event then had a negative timestamp and was dropped.
    """
    return parsed.to_frame("t").select(pl.when(pl.col("t").dt.year() >= _MIN_YEAR).then(pl.col("t"))).to_series().alias(parsed.name)


DIGIT_DATE = "%Y%m%d"
_DIGIT_WIDTHS = {"Y": 4, "y": 2, "m": 2, "d": 2, "H": 2, "M": 2, "S": 2}


def digit_layout_width(fmt: str) -> int | None:
    """The width of a layout made only of numeric directives (``%d%m%Y``: 8), else None.

    Why: a CSV reader infers such a column as integers and Parquet may store it so, and ``02122023``
    (2 December) becomes the integer 2122023: read back as text it must get its leading zero again,
    or every day 01-09 is dropped as an unreadable timestamp.
    """
    if not re.fullmatch(r"(?:%[YymdHMS])+", fmt):
        return None
    return sum(_DIGIT_WIDTHS[d] for d in fmt[1::2])


def digit_dates(s: pl.Series) -> bool:
    """Whether every value of ``s`` is a date written as eight digits, ``20231225``.

    Why: such a column is integers, which the loaders read as epoch seconds (20231225 s is 23 August
    1970), squeezing two months of a log into hours; the layout must be given (``data.ts_format``).
    Eight-digit epoch seconds (1970-04 to 1973-03) are not the times of a log, and few of them read as
    dates, let alone all.
    """
    text = s.drop_nulls().cast(pl.String).str.strip_chars()
    if text.len() == 0 or not text.str.contains(r"^\d{8}$").all():
        return False
    return _plausible(_parse(text, DIGIT_DATE)).null_count() == 0


def inferred_dates(s: pl.Series) -> bool:
    """Whether polars' inference reads some value of ``s`` as a date/time (when :func:`detect_format`
    finds no layout, the loader then reads the column so, and otherwise as epoch numbers)."""
    return _parse(s.drop_nulls().head(SAMPLE), None).drop_nulls().len() > 0


def detect_format(s: pl.Series, what: str = "events", column: str = "ts") -> str | None:
    """The layout of the date/time strings in ``s`` (a format from :data:`FORMATS`), or None when
    polars' inference reads more of them (offsets, fractions) or none is read at all.

    Raises :class:`DataValidationError` when two layouts read the sample equally well but disagree.
    """
    sample = s.drop_nulls().head(SAMPLE)
    if sample.len() == 0:
        return None
    parsed = {fmt: _plausible(_utc_naive(_parse(sample, fmt))) for fmt in FORMATS}
    best = max(p.count() for p in parsed.values())
    if best == 0 or _parse(sample, None).count() > best:
        return None
    winners = [fmt for fmt, p in parsed.items() if p.count() == best]
    first = parsed[winners[0]]
    rival = next((fmt for fmt in winners[1:] if not parsed[fmt].equals(first)), None)
    if rival is not None:
        differ = (first != parsed[rival]).fill_null(False)
        if not differ.any():  # equally many values read, but other rows: two layouts mixed in one column
            raise mixed_layouts(sample, first, parsed[rival], winners[0], rival, what, column)
        example = sample[int(differ.arg_true()[0])]
        raise DataValidationError(
            f"{what}: column {column!r} has dates like {example!r} that read as {winners[0]!r} and as {rival!r} alike "
            f"(every sampled day is 12 or less); set data.ts_format to the one it is (conrec init: --time-format)"
        )
    return winners[0]


def mixed_layouts(
    sample: pl.Series, first: pl.Series, second: pl.Series, fmt: str, other: str, what: str, column: str
) -> DataValidationError:
    """The one-line error for a column whose values are written in two layouts, each reading as many as the other.

    Why refuse: ``data.ts_format`` is one layout, and either choice drops half the rows (``2024-01-01T10:00:00Z``
    and ``2024-01-02T10:00:00`` mixed); picking one silently would lose them without saying why.
    """
    a = sample.filter(first.is_not_null() & second.is_null())
    b = sample.filter(second.is_not_null() & first.is_null())
    return DataValidationError(
        f"{what}: column {column!r} mixes two date layouts, {a[0]!r} ({fmt!r}) and {b[0]!r} ({other!r}), each reading "
        f"{first.count():,} of {sample.len():,} sampled values; write every time in one layout, or set data.ts_format "
        "(conrec init: --time-format) to the one to keep (the other rows are dropped as bad_timestamp)"
    )


def parse_datetimes(s: pl.Series, fmt: str | None = None, what: str = "events", column: str = "ts") -> pl.Series:
    """Strings -> datetimes, nulls where unreadable: with ``fmt``, or the layout :func:`detect_format` finds."""
    return _parse(s, fmt if fmt is not None else detect_format(s, what, column))
