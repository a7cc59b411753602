"""What every baseline implements, and the pieces they share.

Contract (:class:`Recommender`):

* ``fit(events, items)`` sees only events strictly before the evaluation split's cut-off. The
  *caller* filters (``conrec.eval.stage`` does); a baseline trusts what it is given, so fitting on
  later events would leak the labels.
* ``item_scores(samples)`` reads each sample's ``hist_items``/``hist_feedback`` (the events before
  its evaluation time) and returns an ``(n_samples, n_catalogue_items)`` array of dislike scores in
  catalogue order (``items`` order at fit time; higher = more likely disliked; 0 = no signal). It is
  the one place a baseline's judgement lives: slates of candidates are scored by reading it out
  (:func:`candidate_scores`), and top-K lists are derived from it.
* ``recommend(samples, k, on_row=None)`` = :func:`top_k` over ``item_scores``: never an item already in
  the history, ``k`` distinct catalogue items per sample (fewer only when the catalogue minus the
  history is smaller). ``on_row`` (:data:`RowHook`) is shown each score row as it is ranked, so that the
  eval can read a per-point fact off the same pass (:func:`recommend_noting_flat`).

Ties and fill-up follow global dislike popularity (then catalogue order), so every baseline is
deterministic and never returns a short list because its own signal ran out.

After ``fit``, a baseline keeps the :class:`Catalog` it scores over (``Catalog.build(events, items)``) in the attribute
``_catalog`` (None before; :class:`~conrec.eval.baselines.scored.ScoredRecommender` declares it), read through
:func:`fitted_catalog` by :func:`popularity_points` and by its repr (:class:`DescribedBaseline`: "fitted on N items").
Without it, :func:`popularity_points` finds nothing (None) and the repr says "not fitted"; the eval's per-point
popularity note does not need it (:func:`recommend_noting_flat` reads the rows ``on_row`` is shown).

A baseline that can find nothing to learn from on some data (SASRec with no user of 2 dislikes, the
facet baselines with no facet value) says so after ``fit`` in an optional attribute ``no_signal``: a
one-line reason, read by :func:`no_signal_reason`; its row is then dislike popularity under another
name, and the eval stage notes it.

A baseline that trains in epochs (SASRec) reports each one to an optional attribute ``on_epoch``, set
by :func:`watch_epochs`, which the eval stage shows in its bar.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import polars as pl

from conrec.data.popularity import catalogue_dislike_counts, popularity_order
from conrec.errors import DataValidationError, require_columns
from conrec.eval.seen import exclusion_indices
from conrec.slate import check_slates

RowHook = Callable[[np.ndarray, np.ndarray], None]
"""``on_row(scores, excluded)``: called by a baseline's ``recommend`` once per sample, in sample order, with the
sample's ``item_scores`` row (as ``item_scores`` gave it, before any shift for :func:`top_k`) and its excluded catalogue
indices. Why: the eval's per-point popularity count (:func:`recommend_noting_flat`) scored every point a second time
(itemknn at 30,000 items and 5,000 points: 1.8 s to rank, 2.7 s more to count); it now reads the rows ranked anyway."""


@runtime_checkable
class Recommender(Protocol):
    name: str

    def fit(self, events: pl.DataFrame, items: pl.DataFrame) -> None:
        """Learn from ``events`` (already restricted to before the evaluation cut-off) over ``items``."""
        ...

    def item_scores(self, samples: pl.DataFrame) -> np.ndarray:
        """(n_samples, n_catalogue_items) float64 dislike scores, catalogue order, higher = more likely."""
        ...

    def recommend(self, samples: pl.DataFrame, k: int, on_row: RowHook | None = None) -> list[list[str]]:
        """Top-``k`` likely dislikes per sample row, best first, history excluded, distinct; ``on_row`` (if given) sees
        each row's ``item_scores`` and excluded indices as it is ranked (:data:`RowHook`)."""
        ...


def require_polars(frame: object, what: str) -> None:
    """Refuse, in one line, a table that is not a polars DataFrame.

    Why: the baselines are a public Python API and a run's Parquet files are as easily read with pandas,
    whose frames failed deep inside with ``AttributeError: ... no attribute 'height'``. Converting here
    would not help (each baseline goes on reading the frame it was given), so the entry points
    (:meth:`Catalog.build` for ``fit``, :func:`histories` and :func:`score_chunks` for scoring) say which
    type they take and how to get it.
    """
    if not isinstance(frame, pl.DataFrame):
        kind = f"{type(frame).__module__.split('.')[0]}.{type(frame).__name__}"
        raise TypeError(
            f"{what}: the baselines take a polars DataFrame, got {kind}; read the file with pl.read_parquet "
            "or convert with pl.from_pandas(frame)"
        )


@dataclass(frozen=True)
class Catalog:
    """Item ids in ``items`` order, their index, and global dislike popularity over ``events``."""

    item_ids: list[str]
    index: dict[str, int]
    dislike_counts: np.ndarray  # float64, per catalogue index
    popularity_order: np.ndarray  # catalogue indices, most disliked first, ties in catalogue order
    popularity_rank: np.ndarray  # inverse of popularity_order

    @classmethod
    def build(cls, events: pl.DataFrame, items: pl.DataFrame) -> Catalog:
        require_polars(events, "events")
        require_polars(items, "items")
        require_columns(events, ("user_id", "item_id", "feedback"), "events")
        require_columns(items, ("item_id",), "items")
        if items.height == 0:
            raise DataValidationError("items: the catalogue is empty")
        item_ids = items["item_id"].cast(pl.String).to_list()
        index = {it: i for i, it in enumerate(item_ids)}
        counts = catalogue_dislike_counts(events, item_ids)
        order = popularity_order(counts)
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        return cls(item_ids, index, counts, order, rank)

    def encode(self, items: Sequence[str]) -> list[int]:
        """Catalogue indices of ``items``; ids outside the catalogue are dropped."""
        return [j for j in (self.index.get(i) for i in items) if j is not None]


def histories(samples: pl.DataFrame) -> list[tuple[list[str], list[int]]]:
    """Each sample's (hist_items, hist_feedback), oldest first."""
    require_polars(samples, "samples")
    require_columns(samples, ("hist_items", "hist_feedback"), "samples")
    return [
        (list(items or ()), list(fb or ()))
        for items, fb in zip(samples["hist_items"].to_list(), samples["hist_feedback"].to_list())
    ]


def recent_dislikes(items: Sequence[str], feedback: Sequence[int]) -> list[str]:
    """The disliked items of a history, most recent first (repeats kept: a repeated dislike counts twice)."""
    return [i for i, f in zip(reversed(items), reversed(feedback)) if f < 0]


def top_k(scores: np.ndarray | None, exclude: set[int] | np.ndarray, catalog: Catalog, k: int) -> list[str]:
    """Items with a positive score (score desc, popularity breaks ties), then popularity fill-up.

    ``exclude`` (catalogue indices, normally the history) never appears; the result is distinct.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    # a mask, not a set: ``exclude`` is the whole history before the point (hundreds of items on long logs), read
    # for every point of every recommend call
    taken = np.zeros(len(catalog.item_ids), dtype=bool)
    taken[np.asarray(exclude if isinstance(exclude, np.ndarray) else list(exclude), dtype=np.int64)] = True
    scored = np.flatnonzero(scores > 0) if scores is not None else np.zeros(0, dtype=np.int64)
    if scores is not None and scored.size:
        scored = scored[np.lexsort((catalog.popularity_rank[scored], -scores[scored]))]
    chosen: list[int] = scored[~taken[scored]][:k].tolist()
    taken[chosen] = True
    if len(chosen) < k:
        for j in map(int, catalog.popularity_order):  # lazy fill-up
            if not taken[j]:
                chosen.append(j)
                taken[j] = True
                if len(chosen) == k:
                    break
    return [catalog.item_ids[j] for j in chosen]


SCORE_CELLS = 1 << 24
"""At most this many (sample, item) scores are held at once: a baseline scores the samples in chunks of
``SCORE_CELLS // n_items`` rows (one (samples x items) float64 array of 3,000 points x 10^5 items was 2.4 GB,
several copies of it 9.8 GB). Every score row depends on its own sample only, so chunks change nothing."""


def score_chunks(samples: pl.DataFrame, n_items: int) -> list[pl.DataFrame]:
    """``samples`` in consecutive slices of at most ``SCORE_CELLS // n_items`` rows (at least one)."""
    require_polars(samples, "samples")
    rows = max(1, SCORE_CELLS // max(1, n_items))
    return [samples.slice(start, rows) for start in range(0, samples.height, rows)] or [samples]


def recommend_in_chunks(
    score: Callable[[pl.DataFrame], np.ndarray], samples: pl.DataFrame, catalog: Catalog, k: int,
    on_row: RowHook | None = None,
) -> list[list[str]]:
    """:func:`recommend_from_scores` over :func:`score_chunks`: ``score`` (a baseline's ``item_scores``) per chunk."""
    return [
        rec for part in score_chunks(samples, len(catalog.item_ids))
        for rec in recommend_from_scores(score(part), part, catalog, k, on_row)
    ]


def recommend_from_scores(
    scores: np.ndarray, samples: pl.DataFrame, catalog: Catalog, k: int, on_row: RowHook | None = None
) -> list[list[str]]:
    """``recommend`` derived from ``item_scores``: :func:`top_k` of each row, the sample's history excluded (all of
    it before the point where the eval stage attached it, not only the window: :mod:`conrec.eval.seen`); each row
    shown to ``on_row`` first."""
    hist = histories(samples)
    if scores.shape != (len(hist), len(catalog.item_ids)):
        raise ValueError(f"scores have shape {scores.shape}, expected ({len(hist)}, {len(catalog.item_ids)})")
    out = []
    for row, seen in zip(scores, exclusion_indices(samples, catalog.index)):
        if on_row is not None:
            on_row(row, seen)
        out.append(top_k(row, seen, catalog, k))
    return out


def candidate_scores(scores: np.ndarray, item_ids: Sequence[str], candidates: Sequence[Sequence[str]]) -> list[np.ndarray]:
    """Each sample's candidates' scores, read out of an ``item_scores`` array (row = sample).

    ``item_ids`` is the catalogue order of the columns. Unknown candidate ids are an error naming
    them: a model must score every candidate of a slate, or the comparison is not on the same items. The slates
    are checked as the Predictor checks them (:func:`conrec.slate.check_slates`: a string, an empty slate or a
    repeated id is a one-line :class:`DataValidationError`): a string's characters were read as item ids.
    """
    if scores.ndim != 2 or scores.shape[0] != len(candidates) or scores.shape[1] != len(item_ids):
        raise ValueError(f"scores have shape {scores.shape}, expected ({len(candidates)}, {len(item_ids)})")
    check_slates(candidates, len(candidates), per="sample", per_plural="sample(s)")
    index = {it: j for j, it in enumerate(item_ids)}
    unknown = sorted({c for slate in candidates for c in slate if c not in index})
    if unknown:
        raise DataValidationError(f"{len(unknown)} candidate item id(s) are not in the catalogue, e.g. {unknown[:5]}")
    return [scores[r, [index[c] for c in slate]].astype(np.float64) for r, slate in enumerate(candidates)]


def no_signal_reason(model: object) -> str | None:
    """Why a fitted baseline has no signal of its own (its top-K is then the popularity fill-up), or None.

    Read from the optional ``no_signal`` attribute (not part of :class:`Recommender`: most baselines
    always have a signal), so that the report can say that a row is popularity under another name
    rather than show it as a model of its own."""
    reason = getattr(model, "no_signal", None)
    return reason if isinstance(reason, str) else None


NO_POINT_SIGNAL = "no signal from the history"
"""What :func:`popularity_points` finds at a point, in the eval's note, unless the baseline names it more exactly in an
optional ``no_point_signal`` attribute (swing, itemknn, EASE: "no co-dislike signal")."""


def fitted_catalog(model: object) -> Catalog | None:
    """The :class:`Catalog` a fitted baseline scores over, from the contract's ``_catalog`` attribute (module
    docstring); None when it has none (not fitted, or kept elsewhere). Why one reader: the per-point popularity note
    and the repr read the private name, which the contract did not mention (found by a contributor probe, 7 December
    2026: a baseline keeping its catalogue as ``self.cat`` got no note and a repr saying "not fitted")."""
    catalog = getattr(model, "_catalog", None)
    return catalog if isinstance(catalog, Catalog) else None


def popularity_points(model: object, samples: pl.DataFrame) -> np.ndarray | None:
    """Which of ``samples``' points a fitted baseline ranks by dislike popularity alone (a bool per point), or None
    for a model without a :class:`Catalog` (not fitted, or not built on one).

    Such a point is one whose ``item_scores`` row is one value over every item the baseline may recommend there (the
    catalogue less the point's excluded items, :func:`conrec.eval.seen.exclusion_indices`): :func:`top_k` then takes
    those items in the popularity order (a positive value ties them all, zero leaves them to the fill-up), and their
    slate scores all tie. Why per point: ``no_signal`` speaks of the whole fit only (no co-dislike in any event); on a
    log where most histories' dislikes have no neighbour, swing's top-20 was popularity's at 196 of 205 test points,
    with no word. Scores the samples again (in :func:`score_chunks`), so it changes no ranking; the eval, which ranks
    them anyway, reads the same flags off that pass (:func:`recommend_noting_flat`)."""
    catalog = fitted_catalog(model)
    score = getattr(model, "item_scores", None)
    if catalog is None or not callable(score):
        return None
    flat: list[bool] = []
    for part in score_chunks(samples, len(catalog.item_ids)):
        for row, excluded in zip(np.asarray(score(part)), exclusion_indices(part, catalog.index)):
            flat.append(is_flat_row(row, excluded))
    return np.array(flat, dtype=bool)


def is_flat_row(row: np.ndarray, excluded: np.ndarray) -> bool:
    """Whether ``row`` (one point's item scores) is one value over every catalogue index not in ``excluded`` (and some
    index is left): the point :func:`popularity_points` counts."""
    allowed = np.ones(row.shape[0], dtype=bool)
    allowed[excluded] = False
    left = row[allowed]
    return bool(left.size) and bool(left.min() == left.max())


def recommend_noting_flat(model: Recommender, samples: pl.DataFrame, k: int) -> tuple[list[list[str]], np.ndarray | None]:
    """``model.recommend(samples, k)`` and, read off the same pass (its ``on_row``), :func:`popularity_points`' flags
    (None for a ``recommend`` without the hook, or one that did not show every row). Why: the eval counted those points
    with a second scoring pass, as long as the top-K's own and left out of its timings (about 1-2 minutes per baseline
    at 200k per-user points). The rows and excluded indices the hook is shown are all it needs: it asked for the
    ``_catalog`` attribute too, so a baseline written from the contract that kept its catalogue under another name
    got no note (found by a contributor probe, 7 December 2026)."""
    if "on_row" not in inspect.signature(model.recommend).parameters:  # a baseline written before the hook: no note
        return model.recommend(samples, k), None
    flat: list[bool] = []
    recs = model.recommend(samples, k, on_row=lambda row, excluded: flat.append(is_flat_row(row, excluded)))
    if len(flat) != len(recs):
        return recs, None  # a recommend that did not show every row: nothing to count, not a failed eval
    return recs, np.array(flat, dtype=bool)


def no_point_signal(model: object) -> str:
    """What the baseline lacks at a point :func:`popularity_points` counts (:data:`NO_POINT_SIGNAL` unless it says)."""
    what = getattr(model, "no_point_signal", None)
    return what if isinstance(what, str) else NO_POINT_SIGNAL


EpochHook = Callable[[int, int, float], None]
"""``on_epoch(epoch, epochs, mean_loss)``: called after each training epoch (1-based) of a baseline that has them."""


def watch_epochs(model: object, on_epoch: EpochHook | None) -> None:
    """Give ``model`` the epoch callback where it trains in epochs (an optional ``on_epoch`` attribute, not part of
    :class:`Recommender`: most baselines fit in one closed-form step); a no-op for the others or for None. Why:
    SASRec's fits (one per grid point, 30-60 epochs each) ran for minutes with the bar's line unchanged."""
    if on_epoch is not None and hasattr(model, "on_epoch"):
        model.on_epoch = on_epoch


class DescribedBaseline:
    """A baseline's ``repr``: its name, settings and whether it is fitted, e.g.
    ``PopularityRecommender(name='popularity', half_life_days=7.0; fitted on 1682 items)``. Every baseline class
    derives from it; it reads the ``name``, ``cfg`` (its pydantic settings) and ``_catalog`` (:func:`fitted_catalog`)
    each of them has.

    Why: a notebook showed ``<conrec.eval.baselines.popularity.PopularityRecommender object at 0x...>``, which said
    neither the settings it scores with (tuning changes them) nor whether ``fit`` had run. The tuning grid is left
    out: it is what tuning tries, not what this object scores with."""

    def __repr__(self) -> str:
        cfg = getattr(self, "cfg", None)
        words = [f"name={getattr(self, 'name', '?')!r}"]
        if cfg is not None and hasattr(cfg, "model_dump"):
            words += [f"{key}={value!r}" for key, value in cfg.model_dump(exclude={"grid"}).items()]
        catalog = fitted_catalog(self)
        state = "not fitted" if catalog is None else f"fitted on {len(catalog.item_ids)} items"
        return f"{type(self).__name__}({', '.join(words)}; {state})"


class NotFittedError(RuntimeError):
    """``recommend`` was called before ``fit``."""
