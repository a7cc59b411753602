"""Which feedback or rating values the invalid-row policy dropped as ``bad_feedback``, and the setting that keeps them.

Why: under ``data.on_invalid: drop`` a rating below the ``rating_range`` init saw in its first rows (half stars that
start late in a time-sorted file), or a feedback word that first appears after them (a new ``not_interested``
button), was dropped under "N event(s) with a missing or out-of-range feedback/rating", naming neither the values
nor the setting. Those were the strongest dislikes of the test period. Named, each is one line of config.

The values are read once more from the ``table`` source's file, only when rows were dropped, with the streaming
scan's mapping (:func:`conrec.data.engine.scan.scan_table`) and the invalid kinds in the order every engine counts
them (:func:`conrec.data.repair.invalid_kinds`), so the counts per value add up to the count of the warning.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import polars as pl

from conrec.data.config import DataConfig
from conrec.data.feedback_labels import propose
from conrec.data.repair import invalid_kinds
from conrec.data.sources.common import DECIMAL_COMMA
from conrec.errors import ConrecError

SHOWN = 5
"""The most frequent dropped values named; the rest are counted."""


@dataclass(frozen=True)
class Dropped:
    """The dropped rows' values: ``table`` has ``value`` (as the file writes it, text; null where missing) and ``n``
    (rows), most frequent first; ``column`` is ``feedback`` or ``rating``, the role the values had."""

    column: str
    table: pl.DataFrame


def dropped_values(cfg: DataConfig) -> Dropped:
    """The values of the ``table`` source's rows counted as ``bad_feedback``."""
    from conrec.data.engine.scan import scan_table

    kinds = invalid_kinds(pl.lit(True))
    counted_before = pl.lit(False)
    for kind in ("neutral_rating", "missing_id", "bad_timestamp"):  # a row counts under its first kind
        counted_before = counted_before | kinds[kind].fill_null(False)
    bad = kinds["bad_feedback"].fill_null(False) & ~counted_before
    lf = scan_table(cfg, keep_neutral=True, source_values=True)
    column = "feedback" if "source_feedback" in lf.collect_schema() else "rating"
    table = (
        lf.filter(bad).group_by(value=f"source_{column}").agg(n=pl.len())
        .sort(["n", "value"], descending=[True, False], nulls_last=True).collect(engine="streaming")
    )
    return Dropped(column, table)


def _why(value: str | None, column: str, cfg: DataConfig) -> str:
    """Why one dropped value is not feedback, under ``cfg``'s mapping."""
    text = (value or "").strip()
    if not text:
        return "missing"
    if column == "feedback" and cfg.feedback_labels:
        return "not in data.feedback_labels"
    try:
        number = float(re.sub(DECIMAL_COMMA, r"\1.\2", text))  # 3,5 is 3.5, as the loaders read it
    except ValueError:
        return "not a number"
    if not math.isfinite(number):
        return "not a number"
    if column == "rating" and cfg.rating_range is not None:
        return f"outside data.rating_range [{cfg.rating_range[0]:g}, {cfg.rating_range[1]:g}]"
    return "not -1/0/+1" if column == "feedback" else "not a rating"


def _fix(why: str, values: list[str]) -> str:
    """The setting that keeps the rows of one reason, where one does."""
    if why == "not in data.feedback_labels":
        mapping, unknown = propose(values)
        usual = ", ".join(f"{v!r} is a usual word for a {'dislike' if w < 0 else 'positive' if w > 0 else 'no reaction'}"
                          for v, w in mapping.items() if v not in unknown)
        return "name them there (-1 dislike, 1 positive, 0 neutral) to keep them" + (f" ({usual})" if usual else "")
    if why.startswith("outside data.rating_range"):
        return "widen it to keep them"
    return ""


def describe(dropped: Dropped, cfg: DataConfig) -> str:
    """:func:`dropped_values` as one clause: by reason, each value with its count, then the fix."""
    table = dropped.table
    if table.height == 0:
        return ""
    groups: dict[str, list[tuple[str | None, int]]] = {}
    for value, n in table.head(SHOWN).iter_rows():
        groups.setdefault(_why(value, dropped.column, cfg), []).append((value, int(n)))
    parts = []
    for why, rows in groups.items():
        if why == "missing":
            parts.append(f"missing ({sum(n for _, n in rows):,})")
            continue
        quoted = why in ("not in data.feedback_labels", "not a number")
        named = ", ".join(f"{repr(v) if quoted else (v or '').strip()} ({n:,})" for v, n in rows)
        fix = _fix(why, [v for v, _ in rows if v is not None])
        parts.append(f"{named} {why}" + (f": {fix}" if fix else ""))
    rest = table.slice(SHOWN)
    more = f"; {rest['n'].sum():,} more of {rest.height:,} other value(s)" if rest.height else ""
    return f"the {dropped.column} values: " + "; ".join(parts) + more


def bad_feedback_detail(cfg: DataConfig) -> str:
    """:func:`describe` of the ``table`` source's dropped values; empty for another source, or when the file cannot be
    scanned (the warning then stays as it was: a second reading must not stop a stage the first one passed)."""
    if cfg.source != "table" or cfg.events_path is None:
        return ""
    try:
        return describe(dropped_values(cfg), cfg)
    except (ConrecError, pl.exceptions.PolarsError, OSError):
        return ""
