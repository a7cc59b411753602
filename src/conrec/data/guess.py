"""Guess the ``data.columns`` mapping of an events file (and an items file) from its header and a
sample of its rows, for ``conrec init``.

Why: writing the config by hand means knowing the canonical column names, the direction of the
mapping (source -> canonical) and that a rating column needs two thresholds. Each guess here comes
with the reason it was made, and an ambiguous or missing role is refused with the flag that settles
it (``--user-col`` and the like), never guessed silently.

Everything here is a pure function of the sampled tables, so the rules are tested on small frames.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from conrec.data.datetimes import DIGIT_DATE, detect_format, digit_dates, parse_datetimes
from conrec.data.feedback_labels import normalise, normalised, propose
from conrec.data.repair import id_mismatch_hint, placeholder_id_warnings
from conrec.data.schema import (
    MOSTLY_DISLIKES,
    dated,
    epoch_unit_facts,
    flatten_list_columns,
    id_as_text,
    integral_float_ids,
    integral_float_text,
    mixed_epoch_units,
)
from conrec.data.sources.common import (
    CSV_SUFFIXES,
    PARQUET_SUFFIXES,
    categoricals_as_text,
    csv_separator,
    existing_file,
    file_suffix,
    has_rows,
    read_bytes,
    read_error,
    text_numbers,
    unsupported_format,
)
from conrec.errors import ConfigError, DataValidationError

SAMPLE_ROWS = 10_000
_MS_THRESHOLD = 10**11
_US_THRESHOLD = 10**14  # epoch milliseconds reach 1e14 only in the year 5138: larger integers are microseconds

# role -> (exact names, substrings), compared on lower-case names with non-alphanumerics removed.
# An exact name scores 2, a substring 1; the unique best wins, a tie is refused.
NAMES: dict[str, tuple[frozenset[str], tuple[str, ...]]] = {
    "user_id": (frozenset({"userid", "user", "uid", "users", "customerid", "customer", "reviewerid", "visitorid", "memberid",
                           "accountid", "viewerid", "clientid", "personid"}), ("user", "customer", "reviewer", "visitor")),
    "item_id": (frozenset({"itemid", "item", "iid", "movieid", "productid", "asin", "parentasin", "videoid", "songid", "trackid",
                           "bookid", "articleid", "sku", "contentid", "showid", "mediaid", "isbn", "businessid", "animeid",
                           "recipeid", "gameid", "newsid", "postid", "courseid"}), ("item", "movie", "product", "video")),
    "ts": (frozenset({"ts", "timestamp", "time", "datetime", "date", "unixtime", "eventtime", "createdat", "unixreviewtime",
                      "epoch", "when", "timems", "timestampms"}), ("time", "date")),
    "rating": (frozenset({"rating", "ratings", "stars", "star", "score", "overall", "rate", "grade", "userrating"}), ("rating", "star")),
    "feedback": (frozenset({"feedback", "label", "reaction", "signal", "vote", "liked", "like", "dislike", "ishate", "thumbs",
                            "action", "actiontype", "event", "eventtype", "interaction", "interactiontype", "behavior", "behaviour"}),
                 ("feedback", "reaction", "thumb", "action")),
    "title": (frozenset({"title", "name", "movietitle", "productname", "itemname", "itemtitle", "headline"}), ("title", "name")),
    "text": (frozenset({"text", "description", "desc", "overview", "summary", "plot", "body", "content", "synopsis"}),
             ("description", "overview", "summary", "text")),
    "category": (frozenset({"category", "categories", "genre", "genres", "maincategory", "tag", "tags", "section", "topic"}),
                 ("category", "genre", "tag")),
}
EVENT_ROLES = ("user_id", "item_id", "ts")
ITEM_ROLES = ("title", "text", "category")
FLAGS = {"user_id": "--user-col", "item_id": "--item-col", "ts": "--time-col", "rating": "--rating-col",
         "feedback": "--rating-col", "title": "--title-col", "text": "--text-col", "category": "--category-col"}
ITEMS_ID = "items_item_id"  # the key of ``given`` for the items file's id column, when it is named otherwise than the events'
ITEMS_ID_FLAG = "--items-item-col"


@dataclass(frozen=True)
class Choice:
    """One role's column and why it was chosen."""

    role: str
    column: str
    reason: str


@dataclass
class Guess:
    """The guessed mapping, ready to be written as a config."""

    events: dict[str, Choice] = field(default_factory=dict)  # user_id, item_id, ts, and rating or feedback
    items: dict[str, Choice] = field(default_factory=dict)  # item_id (items file), title, text, category
    ts_unit: str = "auto"
    ts_reason: str = ""
    ts_format: str | None = None  # the layout of date/time strings, when one of the listed layouts reads them
    rating_range: tuple[float, float] | None = None
    dislike_max_rating: float | None = None
    like_min_rating: float | None = None
    rating_reason: str = ""
    rating_warning: str = ""  # when the proposed thresholds would make most events dislikes (see rating_warning)
    outlier_warning: str = ""  # when a few ratings lie far beyond the scale the rest span (see outlier_warning)
    scale_hint: str = ""  # when the ratings hold only two or three low values (see narrow_scale_hint)
    items_warning: str = ""  # when most sampled event item ids are not in the items file (see id_overlap_warning)
    extra_text: list[str] = field(default_factory=list)  # the items file's other text columns (see other_text_columns)
    feedback_labels: dict[str, int] | None = None  # a text feedback column: each value -> -1/0/+1
    labels_reason: str = ""  # why, for a 0/1 or true/false flag (word labels give a reason per word)
    labels_unknown: list[str] = field(default_factory=list)  # its values no word list knows (proposed neutral)
    labels_warning: str = ""  # when no value is a known dislike word, so that the labels are the user's to fill in
    feedback_warning: str = ""  # when a -1/0/+1 feedback column shows no -1 in the sample (see _only_positives)
    ids_warning: str = ""  # when sampled user or item ids are a missing-value placeholder, NULL (see placeholder_id_warnings)

    def columns(self) -> dict[str, str]:
        """``data.columns``: source -> canonical, leaving out columns already named canonically."""
        out: dict[str, str] = {}
        for choice in [*self.events.values(), *self.items.values()]:
            if choice.column != choice.role:
                if out.get(choice.column, choice.role) != choice.role:
                    raise ConfigError(
                        f"column {choice.column!r} would be both {out[choice.column]} and {choice.role}; "
                        "rename one in the file, or name the columns with the --*-col flags"
                    )
                out[choice.column] = choice.role
        return out


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _score(column: str, role: str) -> int:
    exact, parts = NAMES[role]
    n = _norm(column)
    if n in exact:
        return 2
    if role == "ts" and re.search(r"(_at|At)$", column):  # created_at, ratedAt
        return 1
    return 1 if any(p in n for p in parts) else 0


def read_sample(path: str | Path, what: str, n_rows: int | None = SAMPLE_ROWS, columns: list[str] | None = None) -> pl.DataFrame:
    """The header and first ``n_rows`` rows (None: all) of a CSV/TSV or Parquet file (of its ``columns``, None: all),
    every CSV column as text and every categorical Parquet column too (:func:`categoricals_as_text`)."""
    p = existing_file(path, what)
    fmt = file_suffix(p)
    if fmt not in PARQUET_SUFFIXES | CSV_SUFFIXES:
        raise unsupported_format(p, fmt, what)
    sep = csv_separator(p, what) if fmt in CSV_SUFFIXES else ","  # a UTF-16 file is refused here, in one line
    try:
        if fmt in PARQUET_SUFFIXES:
            table = pl.read_parquet(p, n_rows=n_rows, columns=columns)
            table = table.with_columns(categoricals_as_text(table.schema))
        else:
            table = pl.read_csv(io.BytesIO(read_bytes(p)), separator=sep, n_rows=n_rows, infer_schema=False, columns=columns)
    except Exception as exc:  # polars/arrow raise many types for malformed files
        raise read_error(exc, p, fmt, what) from exc
    return has_rows(table, p, what)


def _numbers(s: pl.Series) -> pl.Series:
    """The non-null values of a column as floats (non-numbers dropped)."""
    as_float = pl.select(text_numbers(pl.lit(s))).to_series() if s.dtype == pl.String else s.cast(pl.Float64, strict=False)
    return as_float.drop_nulls().filter(as_float.drop_nulls().is_finite())


def _mostly_numeric(s: pl.Series) -> bool:
    present = s.drop_nulls()
    return present.len() > 0 and _numbers(present).len() >= 0.95 * present.len()


def _is_feedback(s: pl.Series) -> bool:
    values = set(_numbers(s).unique().to_list())
    return bool(values) and values <= {-1.0, 0.0, 1.0} and -1.0 in values


def _pick(role: str, columns: list[str], given: str | None, what: str, exclude: set[str]) -> Choice | None:
    """The column for ``role``: the flag's, else the unique best name match; None when no name matches."""
    if given is not None:
        if given not in columns:
            raise ConfigError(f"{FLAGS[role]} {given!r}: no such column in the {what}; it has {columns}")
        return Choice(role, given, f"named by {FLAGS[role]}")
    scored = [(s, c) for c in columns if c not in exclude and (s := _score(c, role)) > 0]
    if not scored:
        return None
    best = max(s for s, _ in scored)
    top = [c for s, c in scored if s == best]
    if len(top) > 1:
        raise ConfigError(f"ambiguous {role} column in the {what}: {top} all look like one; pass {FLAGS[role]} NAME")
    how = "is a usual name" if best == 2 else "contains a usual word"
    return Choice(role, top[0], f"{top[0]!r} {how} for {role}")


def _time_unit(s: pl.Series, ts_format: str | None = None) -> tuple[str, str, str | None]:
    """(``data.ts_unit``, why, ``data.ts_format``) from the sampled values of the time column."""
    try:
        is_dated = dated(s.dtype, "events file", str(s.name), f"pass {FLAGS['ts']} with a date/time or epoch column")
    except DataValidationError as exc:
        raise ConfigError(str(exc)) from None
    nums = _numbers(s)
    if is_dated:
        return "auto", "a date/time column", None
    if ts_format is None and digit_dates(s):
        return "auto", f"values like {s.drop_nulls()[0]!r}: dates written as digits, layout {DIGIT_DATE} (not epoch seconds)", DIGIT_DATE
    if ts_format is None and nums.len() >= 0.95 * max(s.drop_nulls().len(), 1) and nums.len():
        return _epoch_unit(s, nums)
    text = s.cast(pl.String).str.strip_chars().drop_nulls()
    fmt = ts_format if ts_format is not None else detect_format(text, "events file", str(s.name))
    parsed = parse_datetimes(text, fmt)
    read, bad = text.filter(parsed.is_not_null()), text.filter(parsed.is_null())
    if not read.len():
        raise unreadable_times(str(s.name), text.head(2).to_list(), ts_format)
    how = f"layout {fmt}" if fmt is not None else "a layout polars reads (e.g. with a UTC offset)"
    # placeholders without a digit (n/a, NULL, -) are missing times, dropped and counted: only date-like values count
    in_other_layout = bad.filter(bad.str.contains(r"\d"))
    if ts_format is None and in_other_layout.len() > (1 - TIME_READ_SHARE) * (read.len() + in_other_layout.len()):
        raise partly_read_times(str(s.name), read.len(), read.len() + in_other_layout.len(), in_other_layout[0], fmt)
    why = f"values like {read[0]!r}: date/time strings, {how}"
    if bad.len():
        why += f"; {bad.len():,} of the {text.len():,} sampled values (like {bad[0]!r}) it does not read are dropped as bad_timestamp"
    return "auto", why, fmt


TIME_READ_SHARE = 0.99
"""The share of the sampled date-like values (those with a digit) the guessed layout must read; placeholders such as
``n/a`` are missing times, dropped and counted as bad_timestamp whatever their share."""


def partly_read_times(column: str, n_read: int, n: int, example: str, fmt: str | None) -> ConfigError:
    """The one-line error for a guessed layout that reads only some of the sampled times.

    Why refuse: the best listed layout reading 2 ISO dates among 298 ``Dec 22, 2023`` was written to the
    config, and ``conrec data`` then dropped 298 of 300 rows as bad timestamps. The unreadable values are
    most often dates in a layout not listed, which one ``--time-format`` settles.
    """
    keep = f", or --time-format {fmt!r} to keep this layout and drop the rest as bad_timestamp" if fmt is not None else ""
    return ConfigError(
        f"time column {column!r}: {f'the layout that reads most, {fmt!r},' if fmt else 'the layout polars infers'} reads only {n_read:,} of the {n:,} sampled values; {1 - n_read / n:.0%} "
        f"(like {example!r}) are in another layout: pass --time-format '<strftime layout>' that reads them "
        f"(e.g. '%b %d, %Y' reads 'Dec 25, 2023'){keep}"
    )


_NS_THRESHOLD = 10**17  # epoch microseconds reach 1e17 only in the year 5138: larger integers are nanoseconds
EXCEL_MAX = 10**6  # epoch seconds all below this lie in the first 12 days of 1970: Excel serial days (45037) most often


def _epoch_unit(s: pl.Series, nums: pl.Series) -> tuple[str, str, str | None]:
    """(``data.ts_unit``, why, None) for epoch numbers, told by their typical (median) size, not their smallest.

    Why the median of the positive values: a few ``0`` placeholders among milliseconds made the rule "every value
    above 1e11" fail, and the file was read as seconds (every time beyond the year 9999, refused by conrec data).
    """
    positive = nums.filter(nums > 0)
    typical = float((positive if positive.len() else nums).median())  # type: ignore[arg-type]
    present = s.drop_nulls().cast(pl.String).str.strip_chars()
    read = pl.select(text_numbers(pl.lit(present))).to_series()
    example = present.filter(read > 0).head(1)
    shown = repr(example[0]) if example.len() else repr(present[0])  # the text as written: 19 digits lose their end as floats
    by_unit = pl.DataFrame({"v": read.floor(), "text": present}).select(epoch_unit_facts(pl.col("v"), pl.col("text")))
    if mixed := mixed_epoch_units(by_unit.row(0, named=True), f"time column {s.name!r}"):
        raise ConfigError(mixed.replace("and rerun", "and rerun conrec init"))
    if typical > _NS_THRESHOLD:
        raise ConfigError(f"time column {s.name!r}: values like {shown} are epoch nanoseconds, which no data.ts_unit reads; "
                          "write them as microseconds (divide by 1,000: then ts_unit us) or seconds, and rerun")
    unit, name = ("us", "microseconds") if typical > _US_THRESHOLD else ("ms", "milliseconds") if typical > _MS_THRESHOLD else ("s", "seconds")
    why = f"values like {shown}: epoch {name}"
    if (read.is_not_null() & (read != read.floor())).any():
        why += " (fractions of a second are floored)"
    if (zeros := int((nums <= 0).sum())) and unit != "s":
        why += f" ({zeros:,} sampled value(s) of 0 or less are kept as 1970-01-01 or dropped as negative)"
    if unit == "s" and float(nums.max()) < EXCEL_MAX:  # type: ignore[arg-type]
        why += ("; WARNING: read as epoch seconds every sampled time is in the first 12 days of 1970: if they are Excel "
                "serial dates (days since 1899-12-30, 45037 is 2023-04-21), export the column as dates (2023-04-21) and rerun "
                "conrec init; a synthetic clock that starts at 0 is fine as it is")
    return unit, why, None


def unreadable_times(column: str, examples: list[object], ts_format: str | None) -> ConfigError:
    """The one-line error for a time column no listed layout reads.

    Why name --time-format first: a column named like a time whose values are text is most often
    dates in a layout not listed (``Dec 25, 2023``, ``12/25/2023 06:13 PM``), which one strftime
    layout settles; ``--time-col`` helps only when another column holds the times.
    """
    if ts_format is not None:
        return ConfigError(f"time column {column!r}: --time-format {ts_format!r} reads none of its values (like {examples}); "
                           "pass the strftime layout they are written in")
    return ConfigError(
        f"time column {column!r}: values like {examples} are neither epoch numbers nor dates in a layout conrec knows; "
        "if they are dates, pass --time-format '<strftime layout>' (e.g. '%b %d, %Y' reads 'Dec 25, 2023', "
        "'%m/%d/%Y %I:%M %p' reads '12/25/2023 06:13 PM'); if another column holds the times, pass --time-col NAME"
    )


def _step(values: pl.Series) -> float:
    """The rating scale's step: 0.5 for half stars, 1 for whole ones, else the smallest gap."""
    uniq = sorted(set(values.to_list()))
    gaps = [b - a for a, b in zip(uniq, uniq[1:]) if b - a > 1e-9]
    return min(gaps) if gaps else 1.0


LIKE_ABOVE = 0.01
"""How far above ``dislike_max_rating`` the proposed ``like_min_rating`` lies (half the step on a finer scale)."""


def suggest_thresholds(values: pl.Series) -> tuple[tuple[float, float], float, float, str]:
    """(rating_range, dislike_max_rating, like_min_rating, why) for a numeric rating sample.

    The lowest ~35% of the scale is a dislike and every rating above it a positive: 0.5-5 and 1-5 give <= 2 / >= 2.01,
    1-10 gives <= 4 / >= 4.01. Why ``like_min_rating`` just above the dislike threshold, not at the next sampled value:
    ratings off the sampled grid (half stars after 10,000 whole ones) fell between the two and were dropped as neutral.
    Why no neutral band: a lukewarm rating still says the user was
    shown the item, and the LM learns what each user is shown from its positives (the timeline's targets). On
    MovieLens-100K's per-user valid split, counting 3 stars as positives instead of dropping them raised FHR@20 from
    0.404 to 0.450 (docs/results.md, "Lukewarm ratings as positives"). Raise ``like_min_rating`` to drop them.
    """
    low, high = float(values.min()), float(values.max())  # type: ignore[arg-type]
    if not high > low:
        raise ConfigError(f"rating column {values.name!r}: every sampled value is {low:g}; no dislike can be told from a like")
    step = _step(values)
    dislike = low + math.floor(0.35 * (high - low) / step + 1e-9) * step
    like = dislike + min(step, LIKE_ABOVE * 2) / 2  # everything above the dislike threshold, off the sampled steps too
    why = (
        f"ratings {low:g}..{high:g} in steps of {step:g}: <= {dislike:g} is a dislike, anything above it (>= {like:g}) a positive "
        "(a lukewarm rating still shows what the user is shown; raise like_min_rating to drop them)"
    )
    return (low, high), round(dislike, 6), round(like, 6), why


def rating_warning(values: pl.Series, dislike_max_rating: float) -> str:
    """A warning when most sampled ratings would be dislikes; empty otherwise.

    Why: explicit dislikes are a minority in any log (5% to 25% in the data sets measured here), so a
    majority means the scale was misread, most often because its lowest value codes "no rating" (an
    implicit interaction). Nothing would stop later: the model would simply learn what users interact
    with. The fix is one setting, which the warning names. Book-Crossing's 0 and an anime log's -1 below 1..10 never
    get here (:func:`no_rating_code` takes them out first, at any share); this catches the other codes, such as a
    code that tops the scale, or one below a scale that starts elsewhere than 0.5 or 1.
    """
    values = values.drop_nulls().drop_nans()
    share = float((values <= dislike_max_rating).mean() or 0.0)  # type: ignore[arg-type]
    if share <= MOSTLY_DISLIKES:
        return ""
    low = float(values.min())  # type: ignore[arg-type]
    out = f"{share:.0%} of the sampled ratings are <= {dislike_max_rating:g}, so most events would be dislikes (they are usually a minority)"
    rest = values.filter(values > low)
    low_share = 1.0 - rest.len() / values.len()
    if low_share >= 0.3 and rest.n_unique() > 1:
        (lo, hi), dislike, like, _ = suggest_thresholds(rest)
        out += (
            f"; {low_share:.0%} are {low:g}: if {low:g} means 'no rating' (an implicit interaction), set rating_range: "
            f"[{lo:g}, {hi:g}] to drop those rows, and for that scale dislike_max_rating: {dislike:g}, like_min_rating: {like:g}"
        )
    return out


NARROW_SCALE_TOP = 3.0
"""The highest rating of a scale of two or three values that :func:`narrow_scale_hint` asks about."""
WIDER_SCALE_TOP = 5.0
"""The top of the wider scale it proposes (1..5 stars)."""


def narrow_scale_hint(values: pl.Series) -> str:
    """A hint when the ratings hold only two or three low values (1 and 2 stars); empty otherwise.

    Why: an export of dislikes only (1 and 2 stars of a 1..5 scale) reads as a 1..2 scale, whose 2 is a positive:
    every 2-star rating became a like, silently. The values cannot tell that from a real two-point scale, so the
    proposal stands and the hint names the setting and the thresholds of the wider scale."""
    values = values.drop_nulls().drop_nans()
    uniq = values.unique().sort()
    if not 2 <= uniq.len() <= 3 or not float(uniq.min()) > 0 or float(uniq.max()) > NARROW_SCALE_TOP:  # type: ignore[arg-type]
        return ""
    (lo, hi), dislike, like, _ = suggest_thresholds(pl.concat([uniq.cast(pl.Float64), pl.Series([WIDER_SCALE_TOP])]))
    return (f"the ratings hold only {', '.join(f'{v:g}' for v in uniq)}: if these are the bottom of a wider scale, set "
            f"data.rating_range to it, e.g. [{lo:g}, {hi:g}] with dislike_max_rating: {dislike:g}, like_min_rating: {like:g}")


OUTLIER_SHARE = 0.01  # ratings beyond the rest's scale, at most this share of the sample, are named


def _tail(counts: list[tuple[float, int]], total: int) -> list[tuple[float, int]]:
    """The (value, count) pairs from the start of ``counts`` whose running total stays under :data:`OUTLIER_SHARE`."""
    out: list[tuple[float, int]] = []
    for value, n in counts:
        if sum(c for _, c in out) + n >= OUTLIER_SHARE * total:
            break
        out.append((value, n))
    return out


def outlier_warning(values: pl.Series) -> str:
    """A warning when under 1% of the sampled ratings lie beyond the scale the rest span, off its grid
    (``7`` among 1..5 stars, ``0.5`` among whole stars); empty otherwise.

    Why: the proposed ``rating_range`` and dislike threshold come from the lowest and highest rating,
    so ten typos among two thousand ratings (a 7 on a 1..5 scale) move the dislike threshold from 2 to 3,
    silently. The proposal is kept (the values may be real), and the warning names them and the range
    and thresholds of the rest, for the user to choose. A rare value one step past the rest (a 5 where
    most stop at 4) is the scale's own and is not named; but not a 0 one step below a scale that starts at 0.5 or 1:
    the caller takes those out first, as "no rating" (:func:`no_rating_code`).
    """
    values = values.drop_nulls().drop_nans().rename("value")  # a column named "count" clashed with value_counts' own
    counts = sorted(zip(*values.value_counts(name="n").select("value", "n").to_dict(as_series=False).values()))
    low, high = _tail(counts, values.len()), _tail(counts[::-1], values.len())
    rest = values.filter(~values.is_in([v for v, _ in low + high]))
    if rest.n_unique() < 2:
        return ""
    step = _step(rest)
    lo, hi = float(rest.min()), float(rest.max())  # type: ignore[arg-type]
    low = low if low and abs(lo - low[-1][0] - step) > 1e-9 else []
    high = high if high and abs(high[-1][0] - hi - step) > 1e-9 else []
    if not low and not high:
        return ""
    named = ", ".join(f"{v:g} ({n}x)" for v, n in sorted(low + high))
    (lo, hi), dislike, like, _ = suggest_thresholds(rest)
    return (f"{sum(n for _, n in low + high):,} of the {values.len():,} sampled ratings lie beyond the {lo:g}..{hi:g} the rest span: "
            f"{named}; if they are errors, set rating_range: [{lo:g}, {hi:g}] to drop them, and for that scale "
            f"dislike_max_rating: {dislike:g}, like_min_rating: {like:g}")


NO_RATING_STARTS = (0.5, 1.0)
"""The lowest ratings of a scale under which a 0 or a negative code is read as "no rating" (:func:`no_rating_code`)."""
NO_RATING_SCALE = 3
"""How many distinct values the other ratings must hold for their 0s to be "no rating": 0 beside one or two values (0/1,
0/5, 0/1/2) is the dislike end of a flag or a three-point label."""


def no_rating_code(values: pl.Series) -> tuple[float, int]:
    """(the code, how many ratings hold it) when the lowest rating is 0 or negative and lies below a scale of at least
    three values that the rest start at 0.5 or 1, whatever its share; (0.0, 0) otherwise.

    Why: 0 is the usual "no rating" code (Book-Crossing's), -1 another (an anime log's "watched, not rated"), and a scale
    that starts at 0.5 or 1 has no 0 of its own. Read as its lowest value, ten 0s among 20,000 half stars made the
    proposal 0..5 with a dislike threshold of 1.5 instead of 2, 1% to 20% of 0s below 1..5 stars made it 0..5 with <= 1
    (2-star ratings became positives), and 20% of -1s below 1..10 made it -1..10 with <= 2, so every unrated view became a
    dislike, silently (no warning: :func:`outlier_warning` lets a value one step past the rest through, and
    :func:`rating_warning` fires only once most ratings would be dislikes). One rule at any share, so that the proposal
    does not jump between scales as the share grows. A real 0..10 scale cannot be told from 0s below 1..10 by its values,
    so it is read the same way, and the warning names the settings that keep 0 as a rating; 0 beside one or two values (a
    0/1 flag) is not touched.
    """
    values = values.drop_nulls().drop_nans()
    if values.is_empty():
        return 0.0, 0
    code = float(values.min())  # type: ignore[arg-type]
    rest = values.filter(values != code)
    if code > 0 or rest.n_unique() < NO_RATING_SCALE or float(rest.min()) not in NO_RATING_STARTS:  # type: ignore[arg-type]
        return 0.0, 0
    return code, int((values == code).sum())


def no_rating_warning(values: pl.Series, code: float, count: int) -> str:
    """The warning for :func:`no_rating_code`'s ``count`` ratings of ``code`` among ``values``: the proposal is the rest's
    scale, which drops them, and the settings that keep them as ratings instead (with the share of dislikes those give,
    when most would be); empty when there are none."""
    if not count:
        return ""
    values = values.drop_nulls().drop_nans()
    rest = values.filter(values != code)
    (lo, hi), dislike, like, _ = suggest_thresholds(rest)
    _, dislike0, like0, _ = suggest_thresholds(values)
    share0 = float((values <= dislike0).mean() or 0.0)  # type: ignore[arg-type]
    mostly = f" (then {share0:.0%} of the sampled ratings would be dislikes, usually a minority)" if share0 > MOSTLY_DISLIKES else ""
    usual = ("0 usually codes 'no rating' (as Book-Crossing's 0, an implicit interaction)" if code == 0 else
             f"{code:g} usually codes 'no rating' (as an anime log's -1, watched but not rated)")
    return (f"{count:,} of the {values.len():,} sampled ratings ({count / values.len():.1%}) are {code:g}, below the {lo:g}..{hi:g} "
            f"the rest span: {usual}, so the proposal is the rest's scale, rating_range: [{lo:g}, {hi:g}] with dislike_max_rating: "
            f"{dislike:g}, like_min_rating: {like:g}, and conrec data drops the {code:g}s (counted as bad_feedback); if {code:g} is a "
            f"rating, set rating_range: [{code:g}, {hi:g}], and for that scale dislike_max_rating: {dislike0:g}, like_min_rating: "
            f"{like0:g}{mostly}")


def _id_values(ids: pl.Series, whole: pl.Series | None = None) -> pl.Series:
    """Sampled ids as the data stage reads them: integers that pandas wrote as floats (``32.0``) as their
    integer text where :func:`conrec.data.schema.integral_float_ids` says so of the column. ``whole``: the
    whole column, which that verdict is about (a ``0.5`` or ``10`` beside ``10.0`` after the sample), else the sample's."""
    column = ids if whole is None else whole
    verdict = bool(column.to_frame("x").select(integral_float_ids("x", column.dtype)).item())
    if ids.dtype.is_float():
        return ids.to_frame("x").select(id_as_text("x", ids.dtype, verdict)).to_series()
    return ids.cast(pl.String).to_frame("x").select(integral_float_text("x", verdict)).to_series().alias(ids.name)


def id_overlap_warning(event_ids: pl.Series, item_ids: pl.Series, all_event_ids: pl.Series | None = None) -> str:
    """A warning when most distinct item ids of the events sample are not in the items file; empty otherwise.

    Why: the data stage drops events on unknown items (counted), so two files that spell ids
    differently (``12`` and ``0012``, a prefix, the wrong column) lose most of the log. Said here, the
    fix is a rename before any stage runs. ``all_event_ids``: the events file's whole item id column, whose
    ``.0`` verdict the data stage follows (else the sample's).
    """
    seen = _id_values(event_ids, all_event_ids).drop_nulls().unique()
    if seen.len() == 0:
        return ""
    known = _id_values(item_ids).drop_nulls()
    missing = seen.filter(~seen.is_in(known.implode()))
    if missing.len() * 2 <= seen.len():
        return ""
    return (
        f"{missing.len():,} of the {seen.len():,} item ids in the events sample are not in the items file "
        f"(events {missing.sort().head(3).to_list()} vs items {known.head(3).to_list()}); the data stage drops events on "
        f"unknown items: {id_mismatch_hint(missing.sort().to_list(), known.to_list())}"
    )


def guess(
    events: pl.DataFrame,
    items: pl.DataFrame | None = None,
    given: dict[str, str] | None = None,
    ts_format: str | None = None,
    whole_column: Callable[[str], pl.Series] | None = None,
) -> Guess:
    """The mapping for ``events`` (and ``items``), with reasons; ``given``: role -> column from the flags;
    ``ts_format``: the layout of date/time strings, from ``--time-format``; ``whole_column``: a column of the whole
    events file by name, whose values the rating scale or the feedback labels are read from (None: the sample's).

    Why the whole column for those: in a time-sorted file, half stars that start after row 10,000 were outside the
    proposed ``rating_range``, and a feedback word first logged there (a new ``not_interested`` button) was in no
    label; conrec data dropped those rows, the strongest dislikes of the test period. One column costs one read.

    Raises :class:`ConfigError` naming the flag to pass when a required role is ambiguous or absent.
    """
    given = dict(given or {})
    if items is None and ITEMS_ID in given:
        raise ConfigError(f"{ITEMS_ID_FLAG} names a column of the items file; pass the file with --items too")
    cols = list(events.columns)
    out = Guess()
    taken: set[str] = set()
    for role in EVENT_ROLES:
        choice = _pick(role, cols, given.get(role), "events file", taken)
        if choice is None:
            need = " (conrec needs a time per event: the split and the future-dislike labels are by time)" if role == "ts" else ""
            raise ConfigError(f"no column of the events file looks like {role} ({cols}); pass {FLAGS[role]} NAME{need}")
        out.events[role] = choice
        taken.add(choice.column)
    out.ts_unit, out.ts_reason, out.ts_format = _time_unit(events[out.events["ts"].column], ts_format)
    ids = {"user": out.events["user_id"].column, "item": out.events["item_id"].column}
    out.ids_warning = "; ".join(placeholder_id_warnings(events.lazy(), ids, "of the sampled rows"))

    rating = given.get("rating")
    if rating is not None:
        choice = _pick("rating", cols, rating, "events file", taken)
    else:
        fb = _pick_value_role("feedback", cols, events, taken)
        choice = fb if fb is not None else _pick_value_role("rating", cols, events, taken)
        choice = choice if choice is not None else _label_column(cols, events, taken)
        choice = choice if choice is not None else _flag_column(cols, events, taken)
        choice = choice if choice is not None else _word_column(cols, events, taken)
    if choice is None:
        named = _pick("feedback", cols, None, "events file", taken)  # an action column of one word (a view log)
        if named is not None and (word := _only_word(events[named.column] if whole_column is None else whole_column(named.column))):
            raise one_word_feedback(named.column, word)
        raise ConfigError(
            f"no column of the events file looks like a rating or a -1/0/+1 feedback ({cols}); pass --rating-col NAME "
            "(a column of words, in any language, gets data.feedback_labels to fill in)"
        )
    assert choice is not None
    values = events[choice.column] if whole_column is None else whole_column(choice.column)
    if _is_feedback(values):
        out.events["feedback"] = Choice("feedback", choice.column, choice.reason + "; values in {-1, 0, +1}: -1 is a dislike")
    elif _only_positives(values, choice.column):
        out.events["feedback"] = Choice("feedback", choice.column, choice.reason + "; read as -1/0/+1 feedback (every sampled value is 1)")
        out.feedback_warning = only_positives_warning(choice.column, values.drop_nulls().len())
    elif (proposal := _labels(values)) is not None:
        out.feedback_labels, out.labels_unknown = proposal
        out.events["feedback"] = Choice("feedback", choice.column, choice.reason + "; its values are words, mapped in feedback_labels")
    elif (flag := _flag_values(values)) is not None and (_says_dislike(choice.column) or _score(choice.column, "rating") == 0):
        # a 0/1 column named as a rating (rating, score, stars) stays a two-point scale whose 0 is the dislike
        out.feedback_labels, out.labels_reason = _flag_labels(choice.column, flag)
        out.events["feedback"] = Choice("feedback", choice.column, choice.reason + "; a flag, mapped in feedback_labels")
    elif (words := _word_labels(values)) is not None:
        out.feedback_labels, out.labels_unknown = words
        out.labels_warning = unknown_words_warning(choice.column, words[1])
        out.events["feedback"] = Choice("feedback", choice.column, choice.reason + "; its values are words no list knows, listed in feedback_labels")
    else:
        if word := _only_word(values):
            raise one_word_feedback(choice.column, word)
        if not _mostly_numeric(values):
            distinct = values.drop_nulls().cast(pl.String).unique().sort()
            held = (f"holds more than {_MAX_LABELS} distinct words" if distinct.len() > _MAX_LABELS
                    else f"holds the words {distinct.to_list()}, which no word list reads as -1/0/+1")
            raise ConfigError(
                f"rating column {choice.column!r} is not numeric (values like {values.drop_nulls().head(3).to_list()}) and {held}; "
                "name a rating or feedback column with --rating-col NAME, or write data.feedback_labels yourself"
            )
        out.events["rating"] = choice
        ratings = _numbers(values)
        code, coded = no_rating_code(ratings)
        scale = ratings.filter(ratings != code) if coded else ratings
        out.rating_range, out.dislike_max_rating, out.like_min_rating, out.rating_reason = suggest_thresholds(scale)
        out.rating_warning = rating_warning(scale, out.dislike_max_rating)
        out.scale_hint = narrow_scale_hint(scale)
        out.outlier_warning = "; and ".join(w for w in (no_rating_warning(ratings, code, coded), outlier_warning(scale)) if w)
    taken.add(choice.column)

    if items is not None:
        icols = list(items.columns)
        item_id = out.items["item_id"] = _items_id(out.events["item_id"].column, icols, cols, given.get(ITEMS_ID))
        guessed = ITEMS_ID not in given and item_id.column != out.events["item_id"].column  # a guess the flag may settle
        itaken = {item_id.column}
        for role in ITEM_ROLES:
            if guessed and given.get(role) == item_id.column:
                raise ConfigError(f"{FLAGS[role]} {item_id.column!r} names the column guessed as the items file's id ({item_id.reason}); "
                                  f"pass {ITEMS_ID_FLAG} NAME for the column that holds the items' ids")
            choice = _pick(role, icols, given.get(role), "items file", itaken)
            if choice is not None:
                out.items[role] = choice
                itaken.add(choice.column)
        if "title" not in out.items:
            settle = (f", or {ITEMS_ID_FLAG} NAME if {item_id.column!r}, guessed as the items' id ({item_id.reason}), is not it"
                      if guessed else "")
            raise ConfigError(f"no column of the items file looks like a title ({icols}); pass --title-col NAME{settle}")
        out.extra_text = other_text_columns(items, itaken)
    return out


def _items_id(item_col: str, icols: list[str], cols: list[str], given: str | None) -> Choice:
    """The items file's id column: ``--items-item-col``'s, else the events file's item column, else the
    unique usual name.

    Why a flag of its own: ``--item-col`` names the events file's column, and the items file's id is
    often named otherwise (``product_id`` in the events, ``id`` in the catalogue). ``data.columns``
    renames in both files, so the items file's column maps to ``item_id`` too, and must not be an
    events column as well (the events file would get two item ids).
    """
    if given is not None:
        if given not in icols:
            raise ConfigError(f"{ITEMS_ID_FLAG} {given!r}: no such column in the items file; it has {icols}")
        found: Choice | None = Choice("item_id", given, f"named by {ITEMS_ID_FLAG}")
    elif item_col in icols:
        return Choice("item_id", item_col, f"the events file's item column {item_col!r} is in the items file too")
    else:
        found = _guess_items_id(item_col, icols)
    if found is None:
        raise ConfigError(f"the items file has no column {item_col!r} nor one that looks like an item id ({icols}); pass {ITEMS_ID_FLAG} NAME")
    if found.column in cols and found.column != item_col:
        raise ConfigError(f"items file column {found.column!r} is also an events column; rename one")
    return found


def _guess_items_id(item_col: str, icols: list[str]) -> Choice | None:
    """The items file's id column when the events' item column is not in it: the unique best of the events' column written
    otherwise (``Product ID`` for ``product_id``), a usual item-id name (``item_id``, ``sku``), a bare ``id``, and a name
    containing a usual item-id word (``product_code``) and no usual word of another item role (title, text, category);
    None when no column is any.

    Why ``id`` above a name containing a word: a catalogue ``id,product_name,category`` beside events' ``product_id`` had
    ``product_name`` taken as its id (it contains ``product``); init then found no title, and ``--title-col product_name``
    failed as "both item_id and title". A catalogue's ``id`` is its own key. Why no word of another role: with only a
    usual name of one ruled out, ``code,item_description,title`` had ``item_description`` taken as the id (conrec data
    then dropped every event as on an unknown item), and ``product_code`` beside ``product_title`` or
    ``product_category`` was refused as ambiguous.
    """
    def rank(column: str) -> tuple[int, str]:
        if _norm(column) == _norm(item_col):
            return 4, f"{column!r} is the events file's item column {item_col!r}, written otherwise"
        score = _score(column, "item_id")
        if score == 2:
            return 3, f"{column!r} is a usual name for item_id"
        if _norm(column) == "id":
            return 2, f"{column!r} is the usual name of a table's own key"
        if score and not any(_score(column, role) for role in ITEM_ROLES):  # product_name, product_title: a title
            return 1, f"{column!r} contains a usual word for item_id"
        return 0, ""

    ranked = {c: rank(c) for c in icols}
    best = max((r for r, _ in ranked.values()), default=0)
    if best == 0:
        return None
    top = [c for c, (r, _) in ranked.items() if r == best]
    if len(top) > 1:
        raise ConfigError(f"ambiguous item id column in the items file: {top} all look like one; pass {ITEMS_ID_FLAG} NAME")
    return Choice("item_id", top[0], ranked[top[0]][1])


def other_text_columns(items: pl.DataFrame, taken: set[str]) -> list[str]:
    """Columns of the items sample that hold words but no role took (an author, a brand, a publisher).

    Why: the data stage keeps them, but the SIDs are built from ``sid.encoder.text_fields`` only
    (title, category, text), so such a column says nothing about the item unless it is named there.
    Init proposes it rather than adding it: whether it helps is not measured. Numbers, links and
    empty columns are left out; a list of words (authors, tags) counts as its words.
    """
    out = []
    words = [c for c, t in items.schema.items() if isinstance(t, (pl.List, pl.Array)) and t.inner == pl.String]
    items = items.with_columns(flatten_list_columns(items.select(words)).get_columns()) if words else items  # in file order
    for col in items.columns:
        if col in taken or items[col].dtype != pl.String:
            continue
        values = items[col].drop_nulls().str.strip_chars()
        values = values.filter(values != "")
        links = values.str.contains(r"^(https?://|www\.)").sum()
        if values.len() and not _mostly_numeric(values) and links * 2 < values.len():
            out.append(col)
    return out


def _pick_value_role(role: str, cols: list[str], events: pl.DataFrame, taken: set[str]) -> Choice | None:
    """A rating/feedback column by name; for ``feedback`` the values must also be -1/0/+1 (or only 1 so far)
    or feedback words."""
    choice = _pick(role, cols, None, "events file", taken)
    if choice is not None and role == "feedback":
        values = events[choice.column]
        if not _is_feedback(values) and _labels(values) is None and not _only_positives(values, choice.column):
            return None
    return choice


def _only_positives(s: pl.Series, column: str) -> bool:
    """Whether every sampled value of a column not named as a rating nor a dislike flag is 1.

    Why: a -1/0/+1 feedback column whose first 10,000 rows are all positives (the dislikes come later)
    was taken for a 0/1 flag, refused as one that "holds only 1 and 0", with a mapping proposed that
    made every positive a dislike. Read as -1/0/+1 feedback it loses nothing, and the guess says it is one.
    """
    present = s.drop_nulls()
    return (present.len() > 0 and _numbers(present).len() == present.len() and set(_numbers(present).unique().to_list()) == {1.0}
            and _score(column, "rating") == 0 and not _says_dislike(column))


def only_positives_warning(column: str, n: int) -> str:
    """The guess of :func:`_only_positives`, said to be a guess, with what to write if it is wrong."""
    return (f"every one of the {n:,} sampled values of {column!r} is 1, so no dislike was seen: it is read as -1/0/+1 feedback "
            f"(-1 a dislike, 1 a positive); if it is a 0/1 flag instead, write data.feedback_labels saying which value is the "
            f"dislike (e.g. {{'0': -1, '1': 1}} if 0 is a thumbs-down)")


_MAX_LABELS = 50  # more distinct text values than this is not an action column (titles, ids, comments)


def _labels(s: pl.Series) -> tuple[dict[str, int], list[str]] | None:
    """The proposed ``feedback_labels`` of a text column whose values are feedback words, at least one
    of them a dislike; None for anything else (numbers, free text, no dislike word)."""
    present = s.drop_nulls()
    if present.len() == 0 or _mostly_numeric(present):
        return None
    distinct = present.cast(pl.String).unique()
    if distinct.len() > _MAX_LABELS:
        return None
    mapping, unknown = propose(distinct.to_list())
    return (mapping, unknown) if -1 in mapping.values() else None


def _word_labels(s: pl.Series) -> tuple[dict[str, int], list[str]] | None:
    """``feedback_labels`` listing every value of a column of words none of which is a known dislike
    (``gefällt mir``, ``ausblenden``), the unknown ones neutral; None for numbers, a flag or free text."""
    present = s.drop_nulls()
    if present.len() == 0 or _mostly_numeric(present) or _flag_values(s) is not None:
        return None
    distinct = present.cast(pl.String).unique()
    return propose(distinct.to_list()) if 2 <= distinct.len() <= _MAX_LABELS else None


def _only_word(s: pl.Series) -> str | None:
    """The one value of a column of words that holds only one (``view`` throughout), else None."""
    present = s.drop_nulls()
    if present.len() == 0 or _mostly_numeric(present):
        return None
    distinct = present.cast(pl.String).unique()
    return str(distinct[0]) if distinct.len() == 1 else None


_EXPLICIT = "conrec learns from explicit negative feedback (a hide, a thumbs-down, a low rating) beside the positives"


def one_word_feedback(column: str, word: str) -> ConfigError:
    """The refusal of a feedback column that holds one word: no value of it can be a dislike.

    Why a refusal of its own: a pure view log (``action`` = ``view`` throughout) was refused as "holds more than 50
    distinct words", or as having no feedback column at all although ``action`` is a usual name for one; neither said
    what is true, that conrec needs explicit dislikes and this log has none.
    """
    positive = propose([word])[0].get(normalise(word)) == 1
    what = ", a usual word for a positive, as a log of implicit interactions writes it" if positive else ""
    return ConfigError(
        f"column {column!r} holds only {word!r}{what}: one value cannot tell a dislike from a positive, and {_EXPLICIT}; "
        "this log has none to learn from. If another column holds such feedback, pass --rating-col NAME"
    )


def unknown_words_warning(column: str, unknown: list[str]) -> str:
    """Why the proposed labels must be edited before ``conrec data``: no value is a known dislike word.

    Why propose them anyway: the words of a log in another language (or a platform's own codes) are
    no list's, but the column is plainly the feedback; listing every value is most of the mapping, and
    only the user can say which is the dislike. Left neutral, every event is dropped.
    """
    if not unknown:  # every word a known positive or no-reaction word: a log of implicit interactions
        return (f"every value of {column!r} is a usual word for a positive or for no reaction (an implicit interaction), none for a "
                f"dislike: {_EXPLICIT}, and this log seems to have none; if one of these words marks a dislike, set it to -1, "
                "else conrec data stops with no dislike")
    words = f" (the words no list knows, {unknown}, are listed as neutral, 0)"
    return f"no value of {column!r} is a known dislike word{words}: mark the dislike words -1 and the positive ones 1 before conrec data"


def _word_column(cols: list[str], events: pl.DataFrame, taken: set[str]) -> Choice | None:
    """The only column of words (2 to 50 distinct values, none a number) left: the feedback, in words no list knows."""
    found = [c for c in cols if c not in taken and _word_labels(events[c]) is not None]
    if len(found) > 1:
        raise ConfigError(f"no column of the events file looks like a rating or a feedback, and {found} all hold words; "
                          "pass --rating-col NAME for the feedback column")
    return Choice("feedback", found[0], f"{found[0]!r} is the only column of words") if found else None


_DISLIKE_STEMS = ("dislike", "hate", "hide", "hidden", "notinterested", "thumbsdown", "thumbdown", "negative", "downvote",
                  "block", "report", "reject", "dismiss")


def _flag_values(s: pl.Series) -> tuple[str, str] | None:
    """(the "yes" value, the "no" value) of a 0/1, true/false or yes/no column as the loader reads them; None otherwise."""
    present = s.drop_nulls()
    if present.len() == 0:
        return None
    if s.dtype == pl.Boolean:
        return "true", "false"
    values = {normalise(v) for v in present.cast(pl.String).unique().to_list()}  # 1.0 (a pandas export) is 1
    if values <= {"0", "1"}:
        return "1", "0"
    if values <= {"true", "false"}:
        return "true", "false"
    if values <= {"yes", "no"}:
        return "yes", "no"
    return None


def _says_dislike(column: str) -> bool:
    return any(stem in re.sub(r"[^a-z0-9]", "", column.lower()) for stem in _DISLIKE_STEMS)


def _flag_labels(column: str, flag: tuple[str, str]) -> tuple[dict[str, int], str]:
    """The labels of a 0/1 or true/false column whose name says it marks a dislike, and why.

    Why not a rating: read as a 0..1 scale, 0 would be the dislike, the opposite of a column named
    ``is_disliked``. Which value is the dislike cannot be told from the values, so only the name
    decides, and a name that does not say (``is_liked``: is 0 a thumbs-down or no click?) is refused.
    """
    yes, no = flag
    if not _says_dislike(column):
        raise ConfigError(
            f"column {column!r} holds only {yes} and {no} in the sampled rows: a 0/1 flag, and its name does not say which value is a "
            f"dislike (or -1/0/+1 feedback whose -1s come later); rename it to say so (e.g. is_disliked) and rerun, or write "
            f"data.feedback_labels yourself: {{'{no}': -1, '{yes}': 1}} if {no} is a thumbs-down, {{'{yes}': -1, '{no}': 1}} if "
            f"{yes} marks a dislike (for -1/0/+1 feedback, no feedback_labels)"
        )
    why = (f"{column!r} holds only {yes} / {no} and its name says dislike: {yes} is a dislike, {no} a positive "
           "(an event without a dislike still shows what the user is shown)")
    return {yes: -1, no: 1}, why


def _flag_column(cols: list[str], events: pl.DataFrame, taken: set[str]) -> Choice | None:
    """A 0/1 or true/false column whose name says dislike (``is_disliked``, ``hidden``)."""
    found = [c for c in cols if c not in taken and _says_dislike(c) and _flag_values(events[c]) is not None]
    if len(found) > 1:
        raise ConfigError(f"ambiguous feedback column in the events file: {found} are all dislike flags; pass --rating-col NAME")
    return Choice("feedback", found[0], f"{found[0]!r} is a flag (0/1, true/false or yes/no) named for a dislike") if found else None


def _label_column(cols: list[str], events: pl.DataFrame, taken: set[str]) -> Choice | None:
    """A column of feedback words whatever its name: most sampled rows (80%) are known words, one a dislike."""
    found = []
    for c in cols:
        if c in taken or (proposal := _labels(events[c])) is None:
            continue
        known = [label for label in proposal[0] if label not in proposal[1]]
        share = events.select(normalised(pl.col(c).drop_nulls()).is_in(known).mean()).item()
        if share is not None and float(share) >= 0.8:
            found.append(c)
    if len(found) > 1:
        raise ConfigError(f"ambiguous feedback column in the events file: {found} all hold feedback words; pass --rating-col NAME")
    return Choice("feedback", found[0], f"{found[0]!r} holds feedback words (e.g. a dislike word)") if found else None
