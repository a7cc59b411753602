"""The CoNRec motivation study: how much of a user's future dislikes the *next* negative covers.

For each evaluation sample at time t and horizon h, F_h is the set of items the user dislikes in
[t, t + h days) (it always contains the next negative). We report, per split and horizon:

* ``mean_future_items``: mean |F_h|;
* ``item_coverage``: mean share of F_h that the next negative covers, i.e. mean 1 / |F_h|;
* ``mean_future_categories`` / ``category_coverage``: the same one level up, over the categories
  of F_h (share of the user's future disliked categories the next negative's categories cover; a
  ``|``-separated cell is several categories, an empty one none: split on ``eval.category.separator``, as the
  category baselines split).

If the next negative were a good summary of negative taste, coverage would stay near 1 as the
horizon grows; on exposure-biased data it falls quickly, which is why conrec trains and evaluates
on multi-day future sets. Windows of valid samples stop at the test cut-off, per user at the user's test
start (as their labels do), and every window at the end of the log: the notes give the share of points cut.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence

import numpy as np
import polars as pl
from rich.console import Console
from rich.table import Table

from conrec.config import PipelineConfig
from conrec.console_text import shown
from conrec.data.categories import split_labels
from conrec.data.windows import DAY, beyond_max_note, cut_shares_text, cut_short_shares, measurable_horizons, utc_minute, window_end
from conrec.errors import ConfigError, StageInputError, require_columns
from conrec.io import read_json, read_parquet
from conrec.runs import RunDir

STUDY_SPLITS = ("valid", "test")
MIN_HORIZON_DAYS = 1 / DAY
"""One second. Timestamps and windows are whole seconds, so a shorter horizon's window ``[t, t)`` is empty and the
next negative would read as the whole future set (1 item, 100% covered)."""


def item_categories(items: pl.DataFrame, separator: str | None = "|") -> pl.DataFrame:
    """``(item_id, category)``, one row per label of an item's ``category`` cell: split on ``separator``
    (``eval.category.separator``, as the category baselines split their facet columns) and a missing or blank one
    giving no row (:func:`conrec.data.categories.split_labels`). Without the split, ``"X|Y"`` and ``"Y|X"`` were two
    categories that were neither X nor Y, and "no category" was one more."""
    require_columns(items, ("item_id", "category"), "items")
    labels = split_labels(items["category"].cast(pl.String).to_list(), separator)
    table = pl.DataFrame(
        {"item_id": items["item_id"].cast(pl.String), "category": labels},
        schema={"item_id": pl.String, "category": pl.List(pl.String)},
    )
    return table.explode("category").drop_nulls("category")


def coverage_by_horizon(
    samples: pl.DataFrame,
    items: pl.DataFrame,
    horizons: Sequence[float],
    splits: Sequence[str] = STUDY_SPLITS,
    separator: str | None = "|",
    categories: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """One row per (split, horizon): samples, mean future-set size and next-negative coverage at item
    and category level. A pure function of the samples/items tables, apart from ``conrec analyze``'s printing, so
    that it can be tested and called on its own (the result is also what :func:`run` returns).

    Categories are the items' labels (:func:`item_categories`): a sample's future categories are the labels of the
    items of its future set, and the next negative covers those among them that are its own labels. A sample whose
    future set has no labelled item has no category figure and is left out of the category means, which are null
    (shown n/a) when no sample has one: with no categories there is nothing to cover, not 100% covered.
    ``categories``: :func:`item_categories` of ``items`` when the caller has it already (computed otherwise)."""
    if not horizons:
        raise ConfigError("horizons: give at least one horizon (days)")
    if any(not h >= MIN_HORIZON_DAYS for h in horizons):
        raise ConfigError(f"horizons must be at least one second ({MIN_HORIZON_DAYS:.2g} days), got {list(horizons)}")
    cats = item_categories(items, separator) if categories is None else categories
    base = samples.filter(pl.col("split").is_in(list(splits))).select("sample_id", "split", "ts", "next_neg", "later_negs", "later_neg_ts")
    long = (
        base.explode(["later_negs", "later_neg_ts"])
        .rename({"later_negs": "item_id", "later_neg_ts": "neg_ts"})
        .filter(pl.col("item_id").is_not_null())
    )
    next_cats = base.select("sample_id", item_id="next_neg").join(cats, on="item_id").select(
        "sample_id", "category", is_next=pl.lit(True)
    )
    long_cats = long.join(cats, on="item_id").join(next_cats, on=["sample_id", "category"], how="left")
    rows = []
    for h in horizons:
        end = window_end(pl.col("ts"), h)
        n_items = long.filter(pl.col("neg_ts") < end).group_by("sample_id").agg(n_items=pl.col("item_id").n_unique())
        n_cats = (
            long_cats.filter(pl.col("neg_ts") < end)
            .group_by("sample_id")
            .agg(n_cats=pl.col("category").n_unique(), n_covered=pl.col("category").filter(pl.col("is_next")).n_unique())
        )
        per_sample = (
            base.select("sample_id", "split")
            .join(n_items, on="sample_id", how="left")
            .join(n_cats, on="sample_id", how="left")
            # A sample's own next negative is always inside its window, so n_items >= 1 (guarded anyway).
            .with_columns(pl.col("n_items").fill_null(1).clip(lower_bound=1))
            .with_columns(item_cov=1.0 / pl.col("n_items"), cat_cov=pl.col("n_covered") / pl.col("n_cats"))
        )
        rows.append(
            per_sample.group_by("split")
            .agg(
                samples=pl.len(),
                mean_future_items=pl.col("n_items").mean(),
                item_coverage=pl.col("item_cov").mean(),
                mean_future_categories=pl.col("n_cats").mean(),
                category_coverage=pl.col("cat_cov").mean(),
            )
            .with_columns(horizon_days=pl.lit(float(h)))
        )
    schema = {
        "split": pl.String,
        "horizon_days": pl.Float64,
        "samples": pl.UInt32,
        "mean_future_items": pl.Float64,
        "item_coverage": pl.Float64,
        "mean_future_categories": pl.Float64,
        "category_coverage": pl.Float64,
    }
    if not rows:
        return pl.DataFrame(schema=schema)
    order = {s: i for i, s in enumerate(splits)}
    out = pl.concat(rows).select(list(schema)).cast(schema)  # type: ignore[arg-type]
    return out.sort([pl.col("split").replace_strict(order, return_dtype=pl.Int32), "horizon_days"])


def category_note(items: pl.DataFrame, separator: str | None = "|", categories: pl.DataFrame | None = None) -> str | None:
    """Say when items have no category (None when every item has one): with none at all the category columns are
    n/a, with some the unlabelled items are left out of them, and the reader should know which. ``categories``: as
    for :func:`coverage_by_horizon`."""
    labelled = (item_categories(items, separator) if categories is None else categories)["item_id"].n_unique()
    if labelled == items.height:
        return None
    if labelled == 0:
        return "note: the items have no categories (no items file, or an empty category column): the category columns are n/a"
    return (
        f"note: items without a category: {items.height - labelled:,} of {items.height:,}; the category columns "
        "count only the labelled items of each future set"
    )


def parse_horizons(text: str) -> list[float]:
    """``--horizons`` ("1,3,7,14") as days, each finite and at least one second (:data:`MIN_HORIZON_DAYS`), or a
    one-line error naming the bad value."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            days = float(part)
        except ValueError:
            raise ConfigError(f"--horizons: {part!r} is not a number of days (give e.g. 1,3,7,14)") from None
        if not math.isfinite(days) or days <= 0:
            raise ConfigError(f"--horizons: {part!r} is not a positive, finite number of days (give e.g. 1,3,7,14)")
        if days < MIN_HORIZON_DAYS:
            raise ConfigError(
                f"--horizons: {part!r} days is under one second, the finest window (times are whole seconds); "
                f"give at least {MIN_HORIZON_DAYS:.2g} days"
            )
        out.append(days)
    if not out:
        raise ConfigError(f"--horizons: no horizon in {text!r} (give e.g. 1,3,7,14)")
    return out


def run(cfg: PipelineConfig, horizons: list[float], console: Console) -> pl.DataFrame:
    """Read the data stage's outputs, print the coverage table, return it."""
    rd = RunDir(cfg.run_dir)
    max_h = cfg.data.split.max_horizon_days
    horizons, dropped = measurable_horizons(horizons, max_h)
    if dropped and not horizons:
        raise ConfigError(beyond_max_note(dropped, max_h))
    samples = read_parquet(rd.samples, what="samples (run `conrec data` first)")
    items = read_parquet(rd.items, what="items (run `conrec data` first)")
    counts = {s: samples.filter(pl.col("split") == s).height for s in STUDY_SPLITS}
    if not any(counts.values()):
        raise StageInputError(
            f"{rd.samples} has no valid and no test point: nothing to measure (no dislike with data.split.min_history "
            "earlier events lies in the valid or test share; see data.split.valid_frac and test_frac)"
        )
    separator = cfg.eval.category.separator  # one setting for how categories split, the baselines' too
    categories = item_categories(items, separator)  # once: the table and the note read them
    table = coverage_by_horizon(samples, items, horizons, categories=categories)
    console.print(render_table(table))
    notes = [beyond_max_note(dropped, max_h)] if dropped else []
    notes += [f"note: no {s} point in this run, so no {s} rows" for s, n in counts.items() if n == 0]
    notes += [n for n in [category_note(items, categories=categories)] if n is not None]
    for note in notes + _truncation_notes(rd, horizons, samples):
        console.print(f"[dim]{shown(note)}[/]")
    return table


def _truncation_notes(rd: RunDir, horizons: Sequence[float], samples: pl.DataFrame) -> list[str]:
    """Per split, the share of points whose window is cut short at each horizon (:func:`window_stops`), from the
    data stage's ``stats.json``; nothing when it is missing or unreadable.

    Why per point and not the period's span: a point late in the period has its window cut at horizons far shorter
    than the span (on the simulator's defaults 79% of the test points at 14 days, where the span is 14.7 days), and
    per user the valid points' stops are each user's own."""
    stats_path = rd.data / "stats.json"
    if not stats_path.exists():
        return []
    stats = read_json(stats_path, what="data stats")
    try:
        last = dt.datetime.strptime(stats["last_event"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=dt.timezone.utc).timestamp()
        test_cutoff = None if stats.get("split_protocol") == "per_user" else int(stats["test_cutoff_ts"])
    except (KeyError, ValueError, TypeError):
        return []
    log_end = int(last) + 1
    stops = window_stops(samples, log_end, test_cutoff)
    why = stop_causes(log_end, test_cutoff)
    notes = [study_cut_window_note(split, cut_short_shares(ts, stop, horizons), why[split]) for split, (ts, stop) in stops.items()]
    return [n for n in notes if n is not None]


def window_stops(samples: pl.DataFrame, log_end: int, test_cutoff: int | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each study split's point times and, per point, the exclusive end its future set may reach, by the labels'
    own rule (:mod:`conrec.data.splits`). Test: the end of the log (``log_end``). Valid: the test cut-off
    (``test_cutoff``, global split); per user (``test_cutoff`` None) the user's test start, their first test-share
    dislike, which is their earliest test point (every dislike after a valid point is one: ``min_history`` is met),
    or the end of the log for a user with no test share."""
    test = samples.filter(pl.col("split") == "test").select("user_id", "ts")
    valid = samples.filter(pl.col("split") == "valid").select("user_id", "ts")
    if test_cutoff is None:
        starts = test.group_by("user_id").agg(stop=pl.col("ts").min())
        valid = valid.join(starts, on="user_id", how="left")
    else:
        valid = valid.with_columns(stop=pl.lit(test_cutoff))
    valid_stop = np.minimum(valid["stop"].fill_null(log_end).to_numpy(), log_end)
    return {
        "valid": (valid["ts"].to_numpy(), valid_stop),
        "test": (test["ts"].to_numpy(), np.full(test.height, log_end)),
    }


def stop_causes(log_end: int, test_cutoff: int | None) -> dict[str, str]:
    """Per study split, what stops its windows (:func:`window_stops`), in words: the one wording of this
    command's notes and the eval report's, which count the same stops."""
    return {
        "test": f"the end of the log (last event {utc_minute(log_end - 1)})",
        "valid": "their user's first test dislike" if test_cutoff is None else f"the test cut-off ({utc_minute(test_cutoff)})",
    }


def study_cut_window_note(split: str, shares: dict[float, float], stop: str) -> str | None:
    """The note on ``split``'s windows cut short by ``stop`` (``shares``: :func:`cut_short_shares`), or None when
    no point's is. Said here in the study's terms: the future sets are undercounted (no model is measured)."""
    parts = cut_shares_text(shares)
    if parts is None:
        return None
    return (
        f"note: {split} points whose window is cut short by {stop}: {parts}. Their future sets hold only the days "
        "before it, so the future-set sizes at those horizons are undercounted and the coverage overstated."
    )


def render_table(table: pl.DataFrame) -> Table:
    # Short headers (an 80-column terminal fits all seven); the caption says what they mean.
    t = Table(
        title="How much of the future dislike set does the next negative cover?",
        caption="future items / cats: mean distinct items / categories disliked within N days; "
        "covered: mean share of them the next negative alone accounts for",
    )
    for col, justify in (
        ("split", "left"),
        ("N days", "right"),
        ("samples", "right"),
        ("future items", "right"),
        ("items covered", "right"),
        ("future cats", "right"),
        ("cats covered", "right"),
    ):
        t.add_column(col, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for r in table.iter_rows(named=True):
        t.add_row(
            r["split"],
            f"{r['horizon_days']:g}",
            str(r["samples"]),
            f"{r['mean_future_items']:.2f}",
            f"{r['item_coverage']:.1%}",
            "n/a" if r["mean_future_categories"] is None else f"{r['mean_future_categories']:.2f}",
            "n/a" if r["category_coverage"] is None else f"{r['category_coverage']:.1%}",
        )
    return t
