"""The item <-> SID bijection every later stage uses (prompts, constrained decoding, rewards).

Stored as ``sid/sid_map.parquet`` with columns ``item_id`` (String), ``codes`` (List[Int64], one
entry per level) and ``sid`` (String, e.g. ``<a_12><b_7><c_200>``). The codebook sizes (which fix
the SID vocabulary, including codes no item uses) are kept in the Parquet schema metadata under
``conrec.codebook_sizes``, so the file is self-contained.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from conrec.errors import DataValidationError, StageInputError
from conrec.io import atomic_path
from conrec.sid.tokens import all_sid_tokens, codes_to_sid
from conrec.sid.trie import SidTrie

_META_KEY = b"conrec.codebook_sizes"


class SidMap:
    """A bijection between item ids and SID code tuples (validated on construction)."""

    def __init__(self, item_ids: Sequence[str], codes: np.ndarray, codebook_sizes: Sequence[int]) -> None:
        codes = np.asarray(codes)
        ids = [str(i) for i in item_ids]
        if codes.ndim != 2 or codes.shape[0] != len(ids):
            raise DataValidationError(
                f"SID map: codes must have shape ({len(ids)}, levels), got {tuple(codes.shape)}"
            )
        dups = [i for i, count in Counter(ids).items() if count > 1]
        if dups:
            raise DataValidationError(f"SID map: duplicate item id(s) {sorted(set(dups))[:5]}")
        self._trie = SidTrie(codes, codebook_sizes)  # validates ranges and uniqueness of codes
        self._ids = ids
        self._codes = codes.astype(np.int64)
        self._sizes = [int(s) for s in codebook_sizes]
        self._row = {item: i for i, item in enumerate(ids)}
        self._by_code = {tuple(c): item for c, item in zip(self._codes.tolist(), ids)}

    # --- persistence
    @classmethod
    def from_parquet(cls, path: str | os.PathLike[str]) -> SidMap:
        p = Path(path)
        if not p.exists():
            raise StageInputError(f"SID map not found: {p.absolute()} (run `conrec sid` first)")
        try:
            table = pq.read_table(p)
        except Exception as exc:
            raise StageInputError(f"SID map at {p} is not a readable Parquet file: {exc}") from exc
        meta = table.schema.metadata or {}
        if _META_KEY not in meta:
            raise StageInputError(f"SID map at {p} lacks the {_META_KEY.decode()} metadata (not written by SidMap)")
        missing = [c for c in ("item_id", "codes") if c not in table.column_names]
        if missing:
            raise StageInputError(f"SID map at {p}: missing column(s) {missing}")
        try:
            sizes = json.loads(meta[_META_KEY])
        except ValueError as exc:
            raise StageInputError(f"SID map at {p}: its {_META_KEY.decode()} metadata is not JSON ({exc}); rerun `conrec sid`") from exc
        df = pl.from_arrow(table)
        assert isinstance(df, pl.DataFrame)
        # a hand-edited map: a null id read as "None", a 0.5 code truncated to 0, a null code a TypeError
        if df["item_id"].null_count() or df.schema["item_id"] != pl.String:
            raise StageInputError(f"SID map at {p}: item_id must be text with no nulls; rerun `conrec sid`")
        codes_type = df.schema["codes"]
        if not (isinstance(codes_type, pl.List) and codes_type.inner.is_integer()) or df["codes"].explode().null_count():
            raise StageInputError(f"SID map at {p}: codes must be lists of integers with no nulls; rerun `conrec sid`")
        lens = df["codes"].list.len().unique().to_list()
        if lens != [len(sizes)]:
            raise StageInputError(f"SID map at {p}: code lengths {lens} do not match {len(sizes)} levels")
        codes = np.array(df["codes"].to_list(), dtype=np.int64).reshape(len(df), len(sizes))
        return cls(df["item_id"].to_list(), codes, sizes)

    def to_frame(self) -> pl.DataFrame:
        return pl.DataFrame(
            {
                "item_id": pl.Series(self._ids, dtype=pl.String),
                "codes": pl.Series(self._codes.tolist(), dtype=pl.List(pl.Int64)),
                "sid": pl.Series([codes_to_sid(c) for c in self._codes.tolist()], dtype=pl.String),
            }
        )

    def to_parquet(self, path: str | os.PathLike[str]) -> Path:
        table = self.to_frame().to_arrow()
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), _META_KEY: json.dumps(self._sizes)})
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)
        return Path(path)

    # --- lookups
    @property
    def codebook_sizes(self) -> list[int]:
        return list(self._sizes)

    @property
    def levels(self) -> int:
        return len(self._sizes)

    @property
    def items(self) -> list[str]:
        """Item ids in map order (the row order of :meth:`trie` and :meth:`codes`)."""
        return list(self._ids)

    @property
    def codes(self) -> np.ndarray:
        """(n_items, levels) codes in :attr:`items` order (a copy)."""
        return self._codes.copy()

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._row

    @property
    def row_index(self) -> Mapping[str, int]:
        """Item id -> row (the row order of :meth:`trie` and :attr:`items`): the map's own index, read-only (the
        decoder's exclusion masks look every history item up in it)."""
        return MappingProxyType(self._row)

    def rows_of(self, item_ids: Iterable[str]) -> np.ndarray:
        """Row index of each item id; raises naming the unknown ids."""
        ids = [str(i) for i in item_ids]
        unknown = [i for i in ids if i not in self._row]
        if unknown:
            raise DataValidationError(
                f"{len(unknown)} item id(s) not in the SID map, e.g. {sorted(set(unknown))[:5]}"
            )
        return np.array([self._row[i] for i in ids], dtype=np.int64)

    def codes_of(self, item_ids: Iterable[str]) -> np.ndarray:
        """(len(item_ids), levels) codes of the given items."""
        return self._codes[self.rows_of(item_ids)]

    def sid_of(self, item_id: str) -> str:
        return codes_to_sid(self.codes_of([item_id])[0].tolist())

    def sid_lookup(self) -> Callable[[str], str]:
        """A fast ``item_id -> SID string`` function (one dict built here) that raises
        :class:`DataValidationError` naming an unknown item: what prompts call once per event."""
        table = dict(zip(self._ids, self.to_frame()["sid"].to_list()))

        def sid_of(item_id: str) -> str:
            try:
                return table[item_id]
            except KeyError:
                raise DataValidationError(f"item id {item_id!r} is not in the SID map") from None

        return sid_of

    def item_of(self, codes: Sequence[int]) -> str | None:
        """The item with exactly these codes, or None (wrong length, unknown code)."""
        return self._by_code.get(tuple(int(c) for c in codes))

    def trie(self) -> SidTrie:
        """Prefix trie whose item rows are this map's rows (``items[trie.item_index(...)]``)."""
        return self._trie

    def tokens(self) -> list[str]:
        """The full SID vocabulary (every code of every level, used or not), level-major."""
        return all_sid_tokens(self._sizes)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, SidMap)
            and self._ids == other._ids
            and self._sizes == other._sizes
            and np.array_equal(self._codes, other._codes)
        )

    def __repr__(self) -> str:
        return f"SidMap({len(self)} items, codebook_sizes={self._sizes})"
