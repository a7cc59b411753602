"""EASE on the dislike matrix: closed-form item-item regression (Steck, WWW 2019).

Why: the strongest simple collaborative baseline in many comparisons, with one parameter. It solves
``min_B ||X - X B||^2 + lambda ||B||^2`` with ``diag(B) = 0`` on the binary user x item dislike
matrix ``X`` of the fit events: ``P = (X'X + lambda I)^-1``, ``B_ij = -P_ij / P_jj``. A sample's
scores are ``h B`` for its binary history-dislike vector ``h``. Dense ``n_items^2``: meant for
catalogues up to a few ten thousand items.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import re
from collections.abc import Callable

import numpy as np
import polars as pl
import scipy.sparse as sp

from conrec.eval.baselines.base import Catalog
from conrec.eval.baselines.scored import NO_CO_DISLIKE_AT_POINT, ScoredRecommender, dislike_history_matrix, dislike_matrix, no_co_dislike
from conrec.eval.config import EaseConfig

log = logging.getLogger("conrec.eval")


def ease_weights(x: sp.spmatrix, l2: float) -> np.ndarray:
    """The EASE item-item matrix ``B`` (zero diagonal) for a users x items matrix ``x``, in one dense
    ``n_items^2`` float64 array at its peak (:data:`DENSE_COPIES`).

    Why in place: ``np.linalg.inv`` copies its input and fills an identity for the result, and ``-P / diag(P)``
    made two more arrays while the Gram matrix was still held: 4 to 5 dense matrices, 12.7 GB of RSS on 20,000
    items where the docs said 3.2 GB. Here the Gram matrix is inverted where it lies (``X'X + lambda I`` is
    symmetric positive definite: LAPACK's Cholesky ``potrf`` + ``potri``, about half the flops of an LU inverse)
    and divided in place. float64, not float32: the MovieLens rankings must not move (ties between items are
    common there, and a float32 inverse of a badly conditioned Gram matrix moves them)."""
    if l2 <= 0:
        raise ValueError(f"l2 must be > 0, got {l2}")
    g = dense_gram(sp.csr_matrix(x, dtype=np.float64))
    g[np.diag_indices_from(g)] += l2
    p = symmetric_inverse_inplace(g)
    p /= -np.diag(p)[None, :]  # the column's -P_jj; np.diag returns a copy, so no aliasing
    p[np.diag_indices_from(p)] = 0.0
    return p


DENSE_COPIES = 1.0
"""Dense n_items x n_items float64 arrays :func:`ease_weights` holds at its peak (the Gram matrix, inverted and
divided where it lies); :mod:`conrec.eval.cost` sizes EASE's memory with it."""

def dense_gram(x: sp.csr_matrix) -> np.ndarray:
    """``x.T @ x`` as a dense C-ordered float64 array, filled a block of item rows at a time.

    Why blocks: the sparse ``x.T @ x`` of a catalogue whose users dislike many items together holds more than the
    dense matrix itself (12 bytes a nonzero), and it was alive while the dense copy was made."""
    n = x.shape[1]
    xt = x.T.tocsr()  # items x users: a block of item rows is a cheap slice
    g = np.empty((n, n), dtype=np.float64)
    rows = _block_rows(n)
    for start in range(0, n, rows):
        end = min(start + rows, n)
        g[start:end] = (xt[start:end] @ x).toarray()
    return g


def _block_rows(n: int) -> int:
    """Rows per block of an n x n pass: at most :data:`_SYMMETRIZE_BLOCK` and n / 16, so a block's temporaries
    stay a small share of the dense matrix."""
    return max(1, min(_SYMMETRIZE_BLOCK, n // 16))


LAPACK_THREADS = 1
"""BLAS threads of EASE's in-place Cholesky inverse (:func:`symmetric_inverse_inplace` says why one)."""

_SYMMETRIZE_BLOCK = 512  # rows per block when mirroring the inverse's triangle (at most n / 16): small temporaries


def symmetric_inverse_inplace(g: np.ndarray) -> np.ndarray:
    """``g``'s inverse, written over ``g`` (C-ordered, symmetric positive definite), returned.

    LAPACK works on Fortran order: the transpose of a C-ordered symmetric matrix is the same matrix in Fortran
    order, so ``potrf``/``potri`` run on ``g.T`` without a copy. ``potri`` fills one triangle only; the other is
    mirrored block by block (no ``n^2`` index arrays). Raises ValueError when ``g`` is not positive definite.

    Both LAPACK calls run on one BLAS thread (:data:`LAPACK_THREADS`). Why: scipy's bundled OpenBLAS (0.3.30) crashed
    the whole eval stage with a segmentation fault in its threaded ``potrf`` from about 16,000 items on 2 threads
    (15,000 worked; one thread works at 30,000), below the default ``eval.max_dense_items`` of 20,000: no traceback, no
    report, after the LM stages' hour. Threaded ``potrf`` crashes of this kind are known in OpenBLAS and depend on the
    size and the thread count, so no size is safe for every machine. One thread costs little next to the rest:
    measured 69 s per fit on 18,000 items and 4.6 min on 30,000 (8.3 GB), on 2 shared cores, 7 December 2026.
    The calls release the GIL (:func:`_in_place_lapack` says why)."""
    from threadpoolctl import threadpool_limits

    _check_gram(g)
    if g.shape[0] == 0:
        return g  # no items: the empty inverse (LAPACK refuses lda = 0 with a line on stderr)
    # resolved first: scipy's LAPACK library, loaded inside the limit, would run on its default thread count
    steps = [(step, what, _in_place_lapack(step)) for step, what in (("potrf", "factored"), ("potri", "inverted"))]
    with threadpool_limits(limits=LAPACK_THREADS, user_api="blas"):
        for step, what, call in steps:
            info = call(g)
            if info != 0:
                raise ValueError(f"EASE's Gram matrix could not be {what} in place (LAPACK {step} info={info})")
    # the upper triangle of the Fortran view is valid: in g's C order that is the lower triangle (g[i, j], i >= j)
    n = g.shape[0]
    rows = _block_rows(n)
    for start in range(0, n, rows):
        end = min(start + rows, n)
        block = g[start:end, start:end]
        block[...] = np.tril(block) + np.tril(block, -1).T
        g[start:end, end:] = g[end:, start:end].T
    return g


def _check_gram(g: np.ndarray) -> None:
    """Refuses what LAPACK, called through ctypes, would misread or write into: it gets only the address, so a
    strided, read-only or misaligned array is not refused there as scipy's wrappers refused it."""
    flags = g.flags
    if g.ndim != 2 or g.shape[0] != g.shape[1] or g.dtype != np.float64 or not flags.c_contiguous:
        raise ValueError(f"EASE's Gram matrix must be a square C-ordered float64 array, got {g.dtype} {g.shape}")
    if not (flags.writeable and flags.aligned):
        raise ValueError(f"EASE's Gram matrix must be writeable and aligned, got writeable={flags.writeable} aligned={flags.aligned}")


_LAPACK_SIGNATURE = re.compile(r"void \(char \*, int \*, \w+_d \*, int \*, int \*\)")
"""What scipy's ``cython_lapack`` exports ``dpotrf`` and ``dpotri`` as: ``(uplo, n, a, lda, info)``, double ``a``."""


def _in_place_lapack(step: str) -> Callable[[np.ndarray], int]:
    """LAPACK's ``d<step>`` (``potrf`` or ``potri``) as a function of a C-ordered float64 ``g``: it runs on the upper
    triangle of ``g``'s Fortran view (``g.T``, the same memory), writes over ``g`` and returns LAPACK's ``info``.

    Why not ``scipy.linalg.lapack``'s wrappers: they hold the GIL through the whole call (up to 3 minutes at 30,000
    items), so no other Python thread ran and the eval stage's progress line froze (its elapsed time on a terminal,
    its timed lines elsewhere) as if the stage hung. The same scipy LAPACK routine, called through ctypes (which
    releases the GIL for the call), computes the same bits. The f2py wrapper remains where scipy exports the routine
    with another signature, and says so once (:func:`_note_gil_fallback`). ``g`` is not empty: LAPACK refuses lda = 0,
    and :func:`symmetric_inverse_inplace` returns no items' empty inverse before it gets here."""
    routine = _nogil_lapack("d" + step)
    if routine is None:
        _note_gil_fallback()
        return functools.partial(_f2py_in_place, step)

    def call(g: np.ndarray) -> int:
        n, info = ctypes.c_int(g.shape[0]), ctypes.c_int(0)  # lda = n: C order, unpadded
        routine(b"U", ctypes.byref(n), g.ctypes.data, ctypes.byref(n), ctypes.byref(info))
        return info.value

    return call


@functools.cache
def _nogil_lapack(name: str) -> Callable[..., None] | None:
    """scipy's ``cython_lapack`` routine ``name`` as a ctypes function (GIL released while it runs); None when scipy
    does not export it with :data:`_LAPACK_SIGNATURE`."""
    from scipy.linalg import cython_lapack

    capsule = getattr(cython_lapack, "__pyx_capi__", {}).get(name)
    if capsule is None:
        return None
    # own prototypes: setting argtypes on ctypes.pythonapi's shared functions would change them for every caller
    capsule_name = ctypes.PYFUNCTYPE(ctypes.c_char_p, ctypes.py_object)(("PyCapsule_GetName", ctypes.pythonapi))(capsule)
    if capsule_name is None or not _LAPACK_SIGNATURE.fullmatch(capsule_name.decode()):
        return None
    get_pointer = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object, ctypes.c_char_p)(("PyCapsule_GetPointer", ctypes.pythonapi))
    address = get_pointer(capsule, capsule_name)
    int_p = ctypes.POINTER(ctypes.c_int)
    routine: Callable[..., None] = ctypes.CFUNCTYPE(None, ctypes.c_char_p, int_p, ctypes.c_void_p, int_p, int_p)(address)
    return routine


@functools.cache
def _note_gil_fallback() -> None:
    """One warning per process that EASE's inverse holds the GIL. Why: a scipy that exports its LAPACK with another
    signature (scipy is pinned in pyproject.toml; another package's pin may move it) would otherwise bring back the
    frozen progress line with nothing saying why."""
    from scipy import __version__

    log.warning(
        "EASE: scipy %s does not export dpotrf/dpotri with the signature conrec expects; its inverse runs through "
        "scipy.linalg.lapack, which holds the GIL, so the progress line stands still while it runs",
        __version__,
    )


def _f2py_in_place(step: str, g: np.ndarray) -> int:
    """:func:`_in_place_lapack`'s call through ``scipy.linalg.lapack`` (the GIL held). Raises ValueError when the
    wrapper worked on a copy: its own error, since any negative ``info`` is LAPACK's (an illegal argument)."""
    from scipy.linalg import lapack

    if step == "potrf":
        out, info = lapack.dpotrf(g.T, lower=False, overwrite_a=True, clean=False)
    else:
        out, info = lapack.dpotri(g.T, lower=False, overwrite_c=True)
    if not np.shares_memory(out, g):
        raise ValueError(f"EASE's Gram matrix: scipy.linalg.lapack's d{step} worked on a copy, not in place")
    return int(info)


class EaseRecommender(ScoredRecommender):
    name = "ease"
    no_point_signal = NO_CO_DISLIKE_AT_POINT  # see conrec.eval.baselines.base.popularity_points

    def __init__(self, cfg: EaseConfig | None = None) -> None:
        self.cfg = cfg or EaseConfig()
        self._catalog: Catalog | None = None
        self._b: np.ndarray | None = None
        self.no_signal: str | None = None

    def fit(self, events: pl.DataFrame, items: pl.DataFrame) -> None:
        cat = Catalog.build(events, items)
        x = dislike_matrix(events, cat)
        self._b = ease_weights(x, self.cfg.l2)
        self._catalog = cat
        self.no_signal = no_co_dislike(x)  # a reason, or None (conrec.eval.baselines.base.no_signal_reason)

    def item_scores(self, samples: pl.DataFrame) -> np.ndarray:
        cat = self.catalog()
        assert self._b is not None
        return np.asarray(dislike_history_matrix(samples, cat, binary=True) @ self._b)
