"""What each baseline costs as the catalogue grows, so eval can say how long a step will take, or
skip what would never finish.

Why: on a 9,066-item export, tuning EASE took over 6 minutes (a dense item x item inverse per grid
point) with no word on screen; at 10^5 items it would need 80 GB and days. Every baseline in the
registry (:mod:`conrec.eval.baselines`) declares a :class:`Cost`: a rough seconds estimate for one
fit + scoring from the workload's sizes, and whether it needs a dense ``n_items x n_items`` matrix.
Dense baselines are skipped past ``eval.max_dense_items`` with a one-line reason, and also below it when their
estimated peak memory exceeds :data:`MEMORY_SHARE` of the memory available when the step starts.

The coefficients are rough, and stand for 2 idle cores (:data:`CALIBRATION_CORES`, which the
announcement names): 2.5e-11 s per n^3 for EASE's in-place Cholesky inverse (one fit on 10,000 items: 35 s
on 2 cores at load average 4, where numpy's LU inverse took 89 s; the LU inverse's 6e-11 matched the reported
6+ minutes of EASE tuning, 7 fits, on 9,066 items); numpy's inverse of a 3,000-item Gram matrix measured 3e-10 s
per n^3 on 2 cores at load average 12, so a loaded machine is several times slower. The dense score arrays
are taken at about 1e-8 s per cell. They tell minutes from hours, nothing finer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

ANNOUNCE_AFTER_S = 10.0  # steps expected to take longer are announced before they start
CALIBRATION_CORES = 2
"""The cores the coefficients stand for, with nothing else running on them (SASRec's measured so, with 2 torch
threads); every announcement says so ("on 2 idle cores"). Why: with the same cores busy with other work, SASRec's 7
fits announced as ~74 s took 15 min (2 threads time-slicing against other processes). The stage's thread count is fixed
at its start and recorded in its fingerprint, so the announcement says what it assumes, and warns when the cores are
busy at the stage start, rather than the stage changing threads."""

MEMORY_SHARE = 0.8
"""A baseline whose estimated peak memory (:attr:`Cost.memory`) exceeds this share of the memory available at its
step's start (:func:`conrec.runtime.available_memory`) is skipped with a one-line note: the rest is left to what
the stage already holds and the estimate's slack. Why: EASE at 20,000 items (the default eval.max_dense_items)
swapped or was killed on machines with less memory, with no word about memory."""

ITEM_ITEM_MAX_ITEMS = 20_000
"""Up to this many items taste x exposure's facet personal score goes through an item x item matrix (as measured);
beyond, through the facets: the matrix has n_items^2 / n_categories nonzeros (4.7 GB at 10^5 items and 50 categories;
13 GiB asked for at 3 x 10^5), the facets n_items. Equal up to float rounding (tests/test_baselines.py). Here, not in
:mod:`conrec.eval.baselines.taste_exposure`, because that baseline's cost reads it too."""


@dataclass(frozen=True)
class Workload:
    """The sizes a baseline's cost depends on."""

    n_items: int
    n_events: int
    n_samples: int
    n_dislikes: int = 0  # the dislike events among n_events: SASRec trains on these only
    # item pairs sharing a facet value, once per shared value (the sum of squared value counts: n_items^2 / n_values for
    # values of one size): the nonzeros of taste x exposure's item x item matrix (eval.baselines.category.facet_pairs)
    facet_pairs: float = 0.0


@dataclass(frozen=True)
class Cost:
    """``seconds(workload)``: rough time of one fit + scoring; ``what``: the dominant term in words."""

    what: str
    seconds: Callable[[Workload], float]
    dense_items: bool = False  # needs an n_items x n_items dense matrix (memory n^2 * 8 bytes)
    memory: Callable[[Workload], float] | None = None  # bytes at its peak beyond what the stage holds; None: small


def dense_scores(w: Workload) -> float:
    """Every baseline fills an (n_samples, n_items) score array, and reads its events once."""
    return 1e-8 * w.n_samples * w.n_items + 2e-6 * w.n_events


LINEAR = Cost("linear in events and samples x items", dense_scores)


def ease_cost(w: Workload) -> float:
    """The dense Gram inverse (n^3) and the dense score product (samples x n^2)."""
    return 2.5e-11 * w.n_items**3 + 2e-11 * w.n_samples * w.n_items**2 + dense_scores(w)


def ease_memory(w: Workload) -> float:
    """EASE's peak: its dense float64 ``n_items^2`` matrices (:data:`conrec.eval.baselines.ease.DENSE_COPIES`: one,
    inverted and divided in place) and one chunk of float64 scores (:data:`conrec.eval.baselines.base.SCORE_CELLS`).
    Measured: 0.92 GB of RSS for one fit on 10,000 items (0.80 GB the matrix, the rest Python and its libraries)."""
    from conrec.eval.baselines.base import SCORE_CELLS
    from conrec.eval.baselines.ease import DENSE_COPIES

    return DENSE_COPIES * 8.0 * w.n_items**2 + 8.0 * SCORE_CELLS


EASE = Cost("a dense n_items x n_items inverse", ease_cost, dense_items=True, memory=ease_memory)


def taste_exposure_cost(category_share: float) -> Cost:
    """The item x item product of the facet personal score (``members.T @ members``, then each point's history
    through it) up to ITEM_ITEM_MAX_ITEMS, in ``category_share`` of the fits (the others take the item-kNN path,
    linear); beyond, the facets' path, linear.

    Why: costed as linear, its tuning on 20,000 items took 35 s where 3.4 s were estimated (one fit 27 times its
    estimate), with no announcement. 6e-8 s per facet pair: fit and scoring measured 9e-8 s per pair on synthetic
    catalogues of 8,000 and 16,000 items (one facet column of 8 values, 300 points; 6 December 2026) on 2 cores at load
    average 3, niced: a loaded machine, so quiet cores are taken to be somewhat faster; scipy's sparse product is
    single-threaded. The order of magnitude, no finer."""
    if category_share <= 0:
        return LINEAR

    def seconds(w: Workload) -> float:
        pairs = w.facet_pairs if w.n_items <= ITEM_ITEM_MAX_ITEMS else 0.0
        return 6e-8 * category_share * pairs + dense_scores(w)

    return Cost("an item x item matrix of the items sharing a facet value, n_items^2 / values", seconds)


def sasrec_cost(epochs: int, hidden: int) -> Cost:
    """Training passes over the dislike sequences, whose full softmax scores every item at every position (the
    n_items term), plus a full-softmax score of every item per sample.

    Per dislike event, not per event: SASRec trains on the dislikes only, and counting every event announced ~9 min
    for the MovieLens demo's 1.5 (17% of its events are dislikes). Measured on 2 cores, hidden 64 (6 December 2026):
    0.35 s per epoch on 1.4 x 10^4 dislikes and 1,682 items, 45 s on 6 x 10^4 dislikes and 10^5 items."""

    def seconds(w: Workload) -> float:
        train = (1.2e-5 + 7.4e-9 * w.n_items) * epochs * w.n_dislikes * hidden / 64
        return train + 5e-8 * w.n_samples * w.n_items * hidden / 64 + dense_scores(w)

    return Cost(f"{epochs} training epochs over the dislikes", seconds)


def human_seconds(s: float) -> str:
    """``45 s``, ``12 min``, ``3.1 h``: the precision an estimate deserves."""
    if s < 90:
        return f"{s:.0f} s"
    if s < 90 * 60:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def human_bytes(n: float) -> str:
    """``22.6 MB``, ``3.2 GB``: a size in the unit that shows it (a 1,682-item matrix printed as "0.0 GB")."""
    return f"{n / 1e6:,.1f} MB" if n < 1e9 else f"{n / 1e9:,.1f} GB"


def skip_reason(name: str, cost: Cost, w: Workload, max_dense_items: int, available: float | None = None) -> str | None:
    """Why ``name`` is not run on this catalogue (one line), or None when it runs: past ``max_dense_items`` for a
    dense baseline, or an estimated peak memory over :data:`MEMORY_SHARE` of ``available`` bytes (None: unknown,
    not checked). The time per fit is left out under a second: "~0 s per fit" argued against the skip it explained."""
    seconds = cost.seconds(w)
    per_fit = f", ~{human_seconds(seconds)} per fit" if seconds >= 1 else ""
    need = cost.memory(w) if cost.memory is not None else (8.0 * w.n_items**2 if cost.dense_items else 0.0)
    if cost.dense_items and w.n_items > max_dense_items:
        return (
            f"baseline {name} skipped: {w.n_items:,} items > eval.max_dense_items={max_dense_items:,} "
            f"(it needs {cost.what}: {human_bytes(need)}{per_fit}); raise the limit to run it"
        )
    if cost.memory is not None and available is not None and need > MEMORY_SHARE * available:
        return (
            f"baseline {name} skipped: it needs ~{human_bytes(need)} on {w.n_items:,} items ({cost.what}), more than "
            f"{MEMORY_SHARE:.0%} of the {human_bytes(available)} of memory available now; free memory to run it"
        )
    return None


def announcement(name: str, cost: Cost, w: Workload, fits: int, busy: tuple[float, int] | None = None) -> str | None:
    """``baseline ease: expected ~12 min on 2 idle cores (7 fits; a dense ...)`` when that is over ANNOUNCE_AFTER_S,
    else None. ``busy``: (cores other processes keep busy now, cores this process may use), as
    :func:`conrec.runtime.busy_cores` measures them; half a core or more busy adds that it may take several times
    longer. One line either way."""
    total = cost.seconds(w) * fits
    if total < ANNOUNCE_AFTER_S:
        return None
    plural = "fit" if fits == 1 else "fits"
    memory = f", ~{human_bytes(cost.memory(w))} of memory" if cost.memory is not None else ""
    text = (f"baseline {name}: expected ~{human_seconds(total)} on {CALIBRATION_CORES} idle cores "
            f"({fits} {plural} on {w.n_items:,} items; {cost.what}{memory})")
    if busy is not None and busy[0] >= 0.5:
        text += f"; other processes keep {busy[0]:.1f} of {busy[1]} cores busy now, so it may take several times longer"
    return text
