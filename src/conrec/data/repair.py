"""The invalid-row policy (``data.on_invalid``): repair or drop the warts every real export has,
and count each kind, or stop at the first one.

Why a policy and not hard errors: five empty titles among 9,066 items, or a handful of events with
a NaN timestamp, used to refuse a whole dataset, and the only way on was to edit the data by hand.
Why counts and not silence: a drop that nobody sees can hide a broken export (half the rows on
unknown items is a mapping mistake, not a wart), so every repair is counted, printed in one
warning block by the data stage and written to ``data/stats.json`` and the report.

Structural problems (a missing column, a file that is not a table, no dislikes at all) are not
warts: they still stop with a clear error whatever the policy.

The functions here are pure table transforms; the only state is the :class:`RepairLog` they
report to, which also carries the policy (so a caller that passes no log gets strict behaviour
and never a silent drop).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import polars as pl

from conrec.data.schema import DISLIKE, INTEGRAL_FLOAT_TEXT, POSITIVE, flatten_list_columns, id_as_text
from conrec.errors import DataValidationError, spoken_list

InvalidPolicy = Literal["drop", "error"]

# kind -> what was wrong and what ``drop`` does about it (the warning block and the docs use these)
WARTS: dict[str, str] = {
    "empty_title": "item(s) with an empty title: the item id is used as the title",
    "duplicate_item": "duplicate item id(s) in the items file: the first row is kept",
    "item_without_id": "item(s) in the items file with a missing or empty id: dropped",
    "neutral_rating": "rating(s) above dislike_max_rating and below like_min_rating (neutral): dropped",
    "neutral_feedback": "event(s) whose feedback is neutral (0, or a word data.feedback_labels maps to 0, such as an impression): dropped",
    "missing_id": "event(s) with a missing user or item id: dropped",
    "bad_timestamp": "event(s) with a missing, unreadable, NaN, infinite or negative timestamp: dropped",
    "bad_feedback": "event(s) with a missing or out-of-range feedback/rating: dropped",
    "unknown_item": "event(s) on item ids not in the items table: dropped",
    "duplicate_event": "exact duplicate event(s) (same user, item, time and feedback): removed",
}


@dataclass
class RepairLog:
    """What the loaders repaired or dropped, per kind of wart, under ``policy``.

    With ``policy="error"`` the first wart raises :class:`DataValidationError` (one line, naming
    the source, the count and a few examples) instead of being counted.
    """

    policy: InvalidPolicy = "error"
    counts: dict[str, int] = field(default_factory=dict)
    details: dict[str, str] = field(default_factory=dict)  # kind -> which values, and the setting that keeps them

    def record(self, kind: str, n: int, source: str, examples: Sequence[object] = (), label: str = "") -> None:
        """Count ``n`` rows of ``kind``, or raise under ``error`` with ``examples`` (values of the column
        ``label`` names, where one does)."""
        if n <= 0:
            return
        if kind not in WARTS:  # pragma: no cover - a programming error, not a data one
            raise KeyError(kind)
        if self.policy == "error":
            what = wart_label(kind)
            eg = f", e.g. {label + ' ' if label else ''}{list(examples)[:5]}" if examples else ""
            raise DataValidationError(f"{source}: {n:,} {what}{eg} (data.on_invalid: error; `drop` repairs and counts them)")
        self.counts[kind] = self.counts.get(kind, 0) + n

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def lines(self) -> list[str]:
        """One human line per kind, in :data:`WARTS` order, with its :attr:`details` where there are some."""
        return [f"{self.counts[k]:,} {WARTS[k]}" + (f"; {self.details[k]}" if self.details.get(k) else "") for k in WARTS if self.counts.get(k)]


ITEM_KINDS = frozenset({"empty_title", "duplicate_item", "item_without_id"})
"""The kinds of :data:`WARTS` that are items-file rows, not events."""


def missing_id(column: str) -> pl.Expr:
    """An id that is missing: null, empty or only whitespace (as text).

    Why empty too: a CSV's ``""`` or ``"  "`` is no user or item, but polars kept it as one (every such
    row one user named ``""``) where Spark read ``""`` as null and dropped it: the engines wrote other files.
    """
    col = pl.col(column)
    return col.is_null() | (col.cast(pl.String).str.strip_chars() == "")


def wart_label(kind: str) -> str:
    """What was wrong, without what ``drop`` does about it: ``event(s) on item ids not in the items table``."""
    return WARTS[kind].split(":")[0]


def invalid_kinds(known_item: pl.Expr, neutral: str = "neutral_rating") -> dict[str, pl.Expr]:
    """Each kind of invalid event row as a condition, in the order :func:`repair_events` counts them
    (a row counts under its first kind); ``known_item``: the item is in the items table; ``neutral``: the kind a
    feedback of 0 counts under, ``neutral_rating`` (a rating between the thresholds) or ``neutral_feedback`` (a
    feedback column's 0, as the loader drops it before the other kinds). The streaming scan counts and drops the same
    conditions in one aggregate (:mod:`conrec.data.engine.scan`)."""
    fb = pl.col("feedback")
    return {
        neutral: fb == 0,
        "missing_id": missing_id("user_id") | missing_id("item_id"),
        "bad_timestamp": pl.col("ts").is_null() | (pl.col("ts") < 0),
        "bad_feedback": fb.is_null() | ~fb.cast(pl.Float64).is_in([float(DISLIKE), float(POSITIVE)]),
        "unknown_item": ~known_item,
    }


def nothing_valid(source: str, dropped: dict[str, int], unknown_ids: Sequence[object] = (), item_ids: Sequence[object] = ()) -> DataValidationError:
    """The error when the invalid-row policy dropped every event: which kinds, and for events on
    unknown items a few ids of each side (``item_ids``: all of the items file's), since that is most
    often the two files spelling ids differently (``12`` and ``0012``, a prefix, another column,
    spaces) rather than bad rows."""
    kinds = ", ".join(f"{n:,} {wart_label(k)}" for k, n in dropped.items() if n)
    msg = f"{source}: no valid event left: every row was dropped ({kinds})"
    if dropped.get("unknown_item") and unknown_ids:
        msg += f"; event item ids such as {list(unknown_ids)[:3]} vs the items file's {list(item_ids)[:3]}: "
        msg += id_mismatch_hint(unknown_ids, item_ids)
    return DataValidationError(msg)


def id_mismatch_hint(unknown_ids: Sequence[object], item_ids: Sequence[object]) -> str:
    """Why the events' item ids are not the items file's, where their spelling tells (spaces, a ``.0``),
    else to check that both files name items alike: one wording for the data stage and ``conrec init``."""
    return padded_ids_hint(unknown_ids, item_ids) or float_ids_hint(unknown_ids, item_ids) or "check that both files name items alike"


UNKNOWN_SAMPLE = 1000
"""How many distinct unknown item ids an engine that streams the log looks at for :func:`unknown_item_details`."""


def unknown_item_details(unknown_ids: Sequence[object], item_ids: Sequence[object]) -> dict[str, str]:
    """The ``.0`` hint for the warning on events dropped on unknown items (:attr:`RepairLog.details`), when the
    ids differ from the items file's by a ``.0`` alone (:func:`float_ids_hint`), in every engine: a partial drop
    said only how many, and a log that lost most of its events to ``33.0`` vs ``33`` gave no clue why."""
    hint = float_ids_hint(unknown_ids, item_ids)
    return {"unknown_item": hint} if hint else {}


def float_ids_hint(unknown_ids: Sequence[object], item_ids: Sequence[object]) -> str:
    """Why ids that look alike do not match, when one file writes an integer as a float (``'10'`` vs ``'10.0'``):
    a column loses the ``.0`` unless it also holds a decimal (``0.5``) or the same id without it, then keeps its ids as written
    (:func:`conrec.data.schema.integral_float_ids`), so the two files can read the same id differently. Empty otherwise."""
    bare = {re.sub(INTEGRAL_FLOAT_TEXT, r"\1", str(i)): str(i) for i in item_ids}
    for u in map(str, unknown_ids):
        other = bare.get(re.sub(INTEGRAL_FLOAT_TEXT, r"\1", u))
        if other is not None and other != u:
            return (f"the ids differ by a '.0' ({u!r} vs {other!r}): the '.0' of ids that pandas wrote as floats (32.0) is dropped "
                    "unless the column also holds a decimal (0.5) or the same id without it (10 and 10.0); write the ids alike in both files")
    return ""


def padded_ids_hint(unknown_ids: Sequence[object], item_ids: Sequence[object]) -> str:
    """Why ids that look alike do not match, when it is spaces around them (``' 32'`` vs ``'32'``):
    a CSV written with ``", "`` between fields, whose header names carry the space too. Empty otherwise."""
    known = {str(i).strip() for i in item_ids}
    padded = [str(i) for i in unknown_ids if str(i) != str(i).strip() and str(i).strip() in known]
    if not padded:
        return ""
    return (f"the ids differ by the spaces around them ({padded[0]!r} vs {padded[0].strip()!r}), as in a CSV written with ', ' "
            "between fields: write the file without the spaces after the separators")


def repair_items(items: pl.DataFrame, log: RepairLog, source: str) -> pl.DataFrame:
    """Drop an item without an id; keep the first row of a duplicated item id; use the id as an empty (or missing) title."""
    if "item_id" not in items.columns or "title" not in items.columns:
        return items  # validate_items names the missing column
    out = flatten_list_columns(items, source).with_columns(id_as_text("item_id", items.schema["item_id"]))
    no_id = out.filter(missing_id("item_id"))
    if no_id.height:
        log.record("item_without_id", no_id.height, source, [f"the row titled {t!r}" for t in no_id["title"].head(3).to_list()])
        out = out.filter(~missing_id("item_id"))
    dup_mask = out["item_id"].is_duplicated() & out["item_id"].is_not_null()
    if dup_mask.any():
        dup_ids = out.filter(dup_mask)["item_id"].unique(maintain_order=True)
        log.record("duplicate_item", int(out.filter(dup_mask).height - dup_ids.len()), source, dup_ids.to_list())
        out = out.unique(subset="item_id", keep="first", maintain_order=True)
    title = pl.col("title").cast(pl.String).fill_null("").str.strip_chars()
    empty = out.filter(title == "")["item_id"]
    log.record("empty_title", empty.len(), source, empty.to_list())
    return out.with_columns(pl.when(title == "").then(pl.col("item_id")).otherwise(title).alias("title"))


_INVISIBLE_ONLY = r"^[\p{Cc}\p{Cf}\p{Z}]+$"  # controls, format characters (zero-width), spaces of any kind
_CONTROL = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]"  # C0 / C1 controls but tab and line breaks
_ID_UNSEEN = r"[\p{Cc}\p{Cf}\x{2028}\x{2029}]"  # any control, format (zero-width, bidi) or line separator character


def item_warnings(items: pl.DataFrame) -> list[str]:
    """Odd item ids and titles the data stage keeps as they are (changing them would change every run's data):
    ids equal to another after trimming the spaces around them, ids holding a control or invisible character, titles
    with no visible character, and titles with control characters. One line each, with a count and examples; empty
    when there is none.

    Why the ids: ``new\\nline``, ``tab\\tid`` and ``zw\\u200bsp`` were kept without a word, and the last showed as
    ``zwsp``, which a request then named in vain."""
    if "item_id" not in items.columns or "title" not in items.columns or items.height == 0:
        return []
    out: list[str] = []
    ids = items["item_id"].cast(pl.String)
    trimmed = ids.str.strip_chars()
    clash = ids.filter(trimmed.is_duplicated() & ids.is_not_null())
    if clash.len():
        out.append(f"{clash.len():,} item id(s) differ from another only by the spaces around them, e.g. "
                   f"{clash.head(4).to_list()}: they stay separate items, and a request naming one finds only that one")
    unseen = ids.filter(ids.str.contains(_ID_UNSEEN))
    if unseen.len():
        out.append(f"{unseen.len():,} item id(s) hold a control or invisible character (a line break, tab, zero-width space or "
                   f"bidi control), e.g. {unseen.head(4).to_list()}: kept as they are, so a request must name them with it")
    titles = items["title"].cast(pl.String).fill_null("")
    for pattern, what in ((_INVISIBLE_ONLY, "have no visible character (zero-width, control or space characters only)"),
                          (_CONTROL, "contain control characters (printed as \\x.. escapes)")):
        hit = ids.filter(titles.str.contains(pattern))
        if hit.len():
            out.append(f"{hit.len():,} item title(s) {what}: kept as they are, e.g. items {hit.head(4).to_list()}")
    return out


def user_warnings(user_ids: pl.Series) -> list[str]:
    """A line when distinct event user ids equal another after trimming the spaces around them (``u1`` and ``u1 ``), as
    :func:`item_warnings` says of item ids; empty otherwise. They stay separate users, as such items stay separate items.

    Why: a fixed-width or ``", "``-separated export wrote the same user both ways, and the data stage reported 200 users
    for 100 without a word: each user's history cut in two, and a request for ``u1`` sees half of it.
    """
    ids = user_ids.cast(pl.String).drop_nulls().unique()
    clash = ids.to_frame("id").with_columns(key=pl.col("id").str.strip_chars()).filter(pl.col("key").is_duplicated())
    if clash.height == 0:
        return []
    groups = clash.group_by("key").agg(pl.col("id").sort()).sort("key")
    examples = "; ".join(alike_ids(g) for g in groups["id"].head(3).to_list())
    return [f"{clash.height:,} user id(s) differ from another only by the spaces around them, e.g. {examples}: "
            "they stay separate users, each with part of the history, and a request naming one finds only that one; write the "
            "events file without the spaces around its ids (as a CSV written with ', ' between fields has them)"]


def alike_ids(ids: list[str]) -> str:
    """``'u5' and 'u5 '`` (pure): one group of ids that differ only by their spaces, each quoted so the spaces show.

    Why: the warning printed its groups as a nested Python list (``[['u5', 'u5 ']]``)."""
    return spoken_list([repr(i) for i in ids])


PLACEHOLDER_IDS = ("NULL", "None", "NaN", "N/A", "NA", "-")
"""Id values that are a missing-value placeholder as exports write them, compared without case and the spaces around
them (``null``, `` n/a ``): :func:`placeholder_id_warnings` names them."""


def placeholder_id_warnings(events: pl.LazyFrame, columns: dict[str, str] | None = None, what: str = "event(s)") -> list[str]:
    """A line per id role (``columns``: role -> column, default ``user`` and ``item`` of the canonical events) whose ids
    include a :data:`PLACEHOLDER_IDS` value, with the number of ``what`` and each value's count; empty when none does.

    Why: a database export writes a missing id as the text ``NULL``, and the data stage kept its rows as one pseudo-user
    ``NULL`` with train, valid and test points, without a word, where the same file's ``NULL`` ratings and times were
    counted as invalid rows. The rows are kept as they are (dropping them would change every such run's data), but
    said, with the way to drop them: ``data.on_invalid`` drops only empty or null ids, so it is the file to filter.
    """
    columns = columns or {"user": "user_id", "item": "item_id"}
    out: list[str] = []
    for role, column in columns.items():
        ids = pl.col(column).cast(pl.String)
        hits = events.filter(is_placeholder_id(ids)).group_by(ids.alias("id")).agg(n=pl.len()).collect(engine="streaming")
        out += placeholder_line(role, hits, what)
    return out


def is_placeholder_id(ids: pl.Expr) -> pl.Expr:
    """Whether each of the text ``ids`` is a :data:`PLACEHOLDER_IDS` value (without case and the spaces around it)."""
    return ids.str.strip_chars().str.to_lowercase().is_in([v.lower() for v in PLACEHOLDER_IDS])


def placeholder_line(role: str, hits: pl.DataFrame, what: str) -> list[str]:
    """:func:`placeholder_id_warnings`'s line for one id ``role`` from its ``hits`` (placeholder ``id`` -> row count
    ``n``, in any order); empty when there is none."""
    if hits.height == 0:
        return []
    hits = hits.sort(["n", "id"], descending=[True, False])
    named = ", ".join(f"{v!r} ({n:,})" for v, n in hits.head(5).iter_rows())
    return [f"{int(hits['n'].sum()):,} {what} have {'an' if role == 'item' else 'a'} {role} id that is a missing-value placeholder, {named}: they are kept, "
            f"each value as one {role} of that name (only an empty or null id is missing, dropped as missing_id); "
            f"if they are missing ids, remove those rows from the events file (data.on_invalid cannot: the id is a value)"]


def event_id_warnings(events: pl.LazyFrame) -> list[str]:
    """:func:`user_warnings` and :func:`placeholder_id_warnings` (users, then items) of the canonical ``events``, from
    one pass over them.

    Why: the data stage read the events file three times for these lines (the distinct users, then each role's
    placeholders), each pass over every event. One streaming count per (user, placeholder item id or null) holds
    about one row per user, and each line's numbers come from it.
    """
    user, item = pl.col("user_id").cast(pl.String), pl.col("item_id").cast(pl.String)
    pairs = (events.group_by(user.alias("user_id"), pl.when(is_placeholder_id(item)).then(item).alias("item_id"))
             .agg(n=pl.len()).collect(engine="streaming"))
    users = pairs.group_by("user_id").agg(pl.col("n").sum())
    user_hits = users.filter(is_placeholder_id(pl.col("user_id"))).rename({"user_id": "id"})
    item_hits = pairs.drop_nulls("item_id").group_by(pl.col("item_id").alias("id")).agg(pl.col("n").sum())
    return [*user_warnings(users["user_id"]), *placeholder_line("user", user_hits, "event(s)"), *placeholder_line("item", item_hits, "event(s)")]


def drop_rows(df: pl.DataFrame, bad: pl.Expr, kind: str, log: RepairLog, source: str, example_col: str | tuple[str, ...]) -> pl.DataFrame:
    """Drop the rows where ``bad`` is true, recording them under ``kind``: examples are the values of
    ``example_col`` (labelled with its name), or rows of the columns a tuple names (as dicts)."""
    flagged = df.filter(bad)
    if flagged.height == 0:
        return df
    if isinstance(example_col, str):
        log.record(kind, flagged.height, source, flagged[example_col].head(5).to_list(), example_col)
    else:
        log.record(kind, flagged.height, source, flagged.select(example_col).head(5).to_dicts())
    return df.filter(~bad)


def repair_events(events: pl.DataFrame, items: pl.DataFrame, log: RepairLog, source: str) -> pl.DataFrame:
    """Drop events with a missing id, a bad timestamp or feedback, or an unknown item; remove exact duplicates.

    Expects parsed columns (``ts`` integer seconds or null, ``feedback`` numeric or null); what a
    source could not parse it has turned into nulls, which land in the counts here.
    """
    known = items["item_id"].cast(pl.String)
    kinds = invalid_kinds(pl.col("item_id").is_in(known.implode()))
    out = drop_rows(events, kinds["missing_id"], "missing_id", log, source, ("user_id", "item_id"))
    out = out.with_columns(pl.col("user_id", "item_id").cast(pl.String))
    if out.schema["ts"].is_numeric():
        out = drop_rows(out, kinds["bad_timestamp"], "bad_timestamp", log, source, ("user_id", "item_id", "ts"))
    if out.schema["feedback"].is_numeric():
        out = drop_rows(out, kinds["bad_feedback"], "bad_feedback", log, source, "feedback")
    unknown = kinds["unknown_item"]
    kept = drop_rows(out, unknown, "unknown_item", log, source, "item_id")
    unknown_ids = out.filter(unknown)["item_id"].unique(maintain_order=True).to_list() if kept.height < out.height else []
    if unknown_ids:
        log.details.update(unknown_item_details(unknown_ids, known.to_list()))
    event_kinds = {k: n for k, n in log.counts.items() if k not in ITEM_KINDS}
    if kept.height == 0 and event_kinds:  # every row dropped: say why here, not "no events" later
        raise nothing_valid(source, event_kinds, unknown_ids[:3], known.to_list())
    out = kept
    before = out.height
    keys = ["user_id", "item_id", "ts", "feedback"]
    deduped = out.unique(subset=keys, keep="first", maintain_order=True)
    if deduped.height < before:
        # one example per repeated event, as rows (a bare item id did not say which event repeated)
        dups = out.filter(out.select(keys).is_duplicated()).unique(subset=keys, keep="first", maintain_order=True)
        log.record("duplicate_event", before - deduped.height, source, dups.select("user_id", "item_id", "ts").head(5).to_dicts())
    return deduped
