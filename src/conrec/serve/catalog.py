"""What the service looks up per request: item SIDs and titles, and known users' histories.

Built once at start-up from the run directory's tables so a request never touches Parquet files.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Container, Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import polars as pl

from conrec.errors import DataValidationError, require_columns
from conrec.serve.limits import quote

History = tuple[list[str], list[int]]
_Form = Literal["NFC", "NFKC"]


@dataclass(frozen=True)
class SidCatalog:
    """Item id -> (SID, title) for every item the model can generate (the SID map's items).

    Not the evaluation's :class:`conrec.eval.baselines.base.Catalog` (item index and dislike
    popularity for scoring): this one only answers what the service shows per item.
    """

    sid: dict[str, str]
    title: dict[str, str]

    @classmethod
    def build(cls, items: pl.DataFrame, sid_map: pl.DataFrame) -> SidCatalog:
        require_columns(items, ("item_id", "title"), "items table")
        require_columns(sid_map, ("item_id", "sid"), "sid_map table")
        if sid_map.height == 0:
            raise DataValidationError("sid_map table is empty: the model has no item to recommend")
        sids = sid_map["sid"]
        sid_text = sids.to_list() if sids.dtype == pl.String else [_sid_str(v) for v in sids.to_list()]
        ids = sid_map["item_id"].cast(pl.String).to_list()
        titles = dict(zip(items["item_id"].cast(pl.String).to_list(), items["title"].cast(pl.String).to_list()))
        return cls(sid=dict(zip(ids, sid_text)), title={i: titles.get(i) or "" for i in ids})

    def __len__(self) -> int:
        return len(self.sid)

    def unknown(self, item_ids: Iterable[str]) -> list[str]:
        """Ids the model cannot handle, deduplicated, in first-seen order."""
        return list(dict.fromkeys(i for i in item_ids if i not in self.sid))

    @cached_property
    def twins(self) -> IdTwins:
        """Unknown item ids' lookalikes among the catalogue's (:class:`IdTwins`)."""
        return IdTwins(self.sid)

    def normalisation_twin(self, item_id: str) -> str | None:
        """The catalogue id that the unknown ``item_id`` is canonically equivalent to; see :meth:`IdTwins.normalisation_twin`."""
        return self.twins.normalisation_twin(item_id)

    def compatibility_twin(self, item_id: str) -> str | None:
        """The catalogue id that the unknown ``item_id`` only resembles; see :meth:`IdTwins.compatibility_twin`."""
        return self.twins.compatibility_twin(item_id)


class IdTwins:
    """The known id an unknown one equals but for Unicode normalisation, or resembles (the same in NFKC).

    Why a class of its own: item ids (:class:`SidCatalog`) and user ids (the service's known users) are both matched
    exactly, and both are sent in another normalisation; one lookup serves both messages.
    """

    def __init__(self, ids: Iterable[str]) -> None:
        self._ids = ids

    @cached_property
    def _by_form(self) -> dict[_Form, dict[str, str]]:
        """NFC and NFKC form -> the first known id of that form; made on the first unknown id it is asked about."""
        by: dict[_Form, dict[str, str]] = {"NFC": {}, "NFKC": {}}
        for i in self._ids:
            for form, ids in by.items():
                ids.setdefault(unicodedata.normalize(form, i), i)
        return by

    def _twin(self, unknown: str, form: _Form) -> str | None:
        twin = self._by_form[form].get(unicodedata.normalize(form, unknown))
        return None if twin == unknown else twin

    def normalisation_twin(self, unknown: str) -> str | None:
        """The known id that ``unknown`` is canonically equivalent to (equal once both are NFC), or None.

        Why: ids are matched exactly, and one sent in another normalisation (``"u"`` + combining diaeresis for the
        known ``"ü"``) looks the same as the known one in an "unknown id" message. Only canonical
        equivalents look the same: NFKC also pairs ``"²"`` with ``"2"`` and fullwidth ``"ａ"`` with ``"a"``
        (:meth:`compatibility_twin`)."""
        return self._twin(unknown, "NFC")

    def compatibility_twin(self, unknown: str) -> str | None:
        """The known id that ``unknown`` equals only once both are NFKC (``"ａ²"`` for ``"a2"``, the
        ligature ``"ﬁ"`` for ``"fi"``), or None; None where :meth:`normalisation_twin` finds one.

        Why: such an id resembles the known one without looking the same, so it may as well be a new one:
        the message names the likeness and keeps its hints (for items: "items newer than the model?")."""
        return None if self.normalisation_twin(unknown) is not None else self._twin(unknown, "NFKC")

    def shown(self, unknown: str, known: str, owner: str) -> str:
        """``unknown`` quoted, with the known id it equals but for Unicode normalisation (else the two look the same),
        or that it resembles (the same in NFKC: ``"ａ²"`` for ``"a2"``). ``known`` names a known id ("catalogue id"),
        ``owner`` whose form it is ("the catalogue's")."""
        twin = self.normalisation_twin(unknown)
        if twin is None:
            like = self.compatibility_twin(unknown)
            return quote(unknown) + ("" if like is None else f" (resembles {known} {quote(like)}, its Unicode compatibility form; ids are matched exactly)")
        form = next((f for f in ("NFC", "NFD") if unicodedata.is_normalized(f, twin) and not unicodedata.is_normalized(f, unknown)), None)
        return f"{quote(unknown)} (differs from {known} {quote(twin)} only in Unicode normalisation" + (
            f": {owner} is {form}; ids are matched exactly)" if form else "; ids are matched exactly)")


class KnownFormTwins(IdTwins):
    """:class:`IdTwins` for a large set of known ids (the service's users): an unknown id's NFC and NFD forms
    (:meth:`normalisation_twin`), then NFKC and NFKD (:meth:`compatibility_twin`), are looked up in ``known`` directly.

    Why not the index :class:`IdTwins` builds: it normalises every known id on the first unknown one, on the request's
    thread, in each worker: seconds and hundreds of MB at millions of users, for any mistyped ``user_id``. Looking up
    four forms finds the same twin wherever the known id is stored in one of them (ids stored normalised); one in
    none of them (``"ａ²"`` known, ``"a2"`` sent) is not found and the 404 names no twin. Item ids keep the index: a
    catalogue is small, and its items' ids come as the source wrote them."""

    _FORMS: dict[_Form, tuple[Literal["NFC", "NFD", "NFKC", "NFKD"], ...]] = {"NFC": ("NFC", "NFD"), "NFKC": ("NFKC", "NFKD")}

    def __init__(self, known: Container[str]) -> None:
        super().__init__(())
        self._known = known

    def _twin(self, unknown: str, form: _Form) -> str | None:
        forms = (unicodedata.normalize(f, unknown) for f in self._FORMS[form])
        return next((twin for twin in forms if twin != unknown and twin in self._known), None)


def _sid_str(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return "".join(str(v) for v in value)
    return str(value)


def user_histories(events: pl.DataFrame, max_history: int) -> dict[str, History]:
    """Each user's most recent ``max_history`` events, oldest first, as (item ids, feedback).

    Ties in ``ts`` keep the table's order (canonical events are already sorted by user, ts).
    """
    require_columns(events, ("user_id", "item_id", "ts", "feedback"), "events table")
    grouped = (
        events.with_row_index("_row")
        .sort(["user_id", "ts", "_row"])
        .group_by("user_id", maintain_order=True)
        .agg(pl.col("item_id").cast(pl.String).tail(max_history), pl.col("feedback").cast(pl.Int64).tail(max_history))
    )
    return {
        str(u): (items, fb)
        for u, items, fb in zip(grouped["user_id"].to_list(), grouped["item_id"].to_list(), grouped["feedback"].to_list())
    }
