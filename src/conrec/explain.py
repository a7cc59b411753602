"""Short reasons for a predicted dislike, from the user's own past dislikes.

Why these two signals: they are what the model itself builds on, and both can be checked by a
person. (1) Semantic IDs are hierarchical: items sharing a longer SID prefix sit in the same
semantic cluster (same genre, tone...), so the past dislikes with the longest shared prefix are the
"it is like these" evidence. (2) Co-dislike similarity (:class:`conrec.llm.training.collab.CoDislike`, the
collaborative part of the GRPO reward): items other users disliked together with it. Only the
user's *past dislikes* are cited, never positives, and titles are attached so the reason reads
as text.

Explanations are opt-in (an ``explain`` flag in the API and CLI): they cost a few lookups per
item, not model calls.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import polars as pl

from conrec.history import newest_events
from conrec.llm.training.collab import CoDislike

if TYPE_CHECKING:
    from conrec.data.config import SplitConfig
    from conrec.runs import RunDir
    from conrec.sid.sid_map import SidMap

_TOKEN = re.compile(r"<[^<>]+>")


@dataclass(frozen=True)
class Evidence:
    """One cited past dislike: how much SID prefix it shares, or how strongly it is co-disliked."""

    item_id: str
    title: str
    shared_sid_levels: int | None = None
    similarity: float | None = None


@dataclass(frozen=True)
class Reason:
    similar_dislikes: list[Evidence] = field(default_factory=list)
    co_disliked_with: list[Evidence] = field(default_factory=list)
    text: str = ""


def shared_prefix(a: Sequence[str], b: Sequence[str]) -> int:
    """Number of leading SID tokens two items share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def explanation_events(run: RunDir, split: SplitConfig) -> pl.DataFrame | None:
    """The events co-dislike reasons are counted on: those the run's models were trained on (``train_until``,
    :func:`conrec.data.fit_events.training_events`), not the whole log. Why: an evaluation point's own future
    dislikes are in the log, and a reason counted on them explained a hit by its label (the inspector shows
    test points). None when the run has no events."""
    from conrec.data.fit_events import training_events

    if not run.events.exists():
        return None
    return training_events(run.root, split)


class Explainer:
    """Builds :class:`Reason` s from SIDs, titles and a co-dislike model fitted once at start-up."""

    def __init__(
        self, sid: Mapping[str, str], title: Mapping[str, str], co_dislike: CoDislike | None, max_cited: int = 3,
        history_limit: int | None = None,
    ) -> None:
        self._tokens = {i: _TOKEN.findall(s) for i, s in sid.items()}
        self._title = dict(title)
        self._co = co_dislike
        self.max_cited = max_cited
        self.history_limit = history_limit  # the predictor's: a reason cites only the events the model read

    @classmethod
    def build(
        cls, sid: Mapping[str, str], title: Mapping[str, str], events: pl.DataFrame | None, top_n: int = 50, max_cited: int = 3,
        history_limit: int | None = None,
    ) -> Explainer:
        """Fit co-dislikes on ``events`` (None: SID evidence only) over the catalogue ``sid`` keys."""
        co = None
        if events is not None and events.height:
            known = events.filter(pl.col("item_id").cast(pl.String).is_in(list(sid)))
            co = CoDislike.fit(known, top_n=top_n, items=list(sid))
        return cls(sid, title, co, max_cited, history_limit)

    @classmethod
    def for_run(cls, run: RunDir, sid_map: SidMap, top_n: int, split: SplitConfig, history_limit: int | None = None) -> Explainer:
        """An explainer over a run's SIDs (``sid_map``: the served model's), item titles and training events
        (:func:`explanation_events`); ``top_n``: co-dislike neighbours kept per item (``serve.explain_top_n``, as
        the server keeps); ``history_limit``: the predictor's."""
        from conrec.io import read_parquet

        sid_of = sid_map.sid_lookup()
        sids = {i: sid_of(i) for i in sid_map.items}
        titles: dict[str, str] = {}
        if run.items.exists():
            items = read_parquet(run.items, what="items table")
            titles = dict(zip(items["item_id"].cast(pl.String).to_list(), items["title"].cast(pl.String).to_list()))
        return cls.build(sids, titles, explanation_events(run, split), top_n=top_n, history_limit=history_limit)

    def title_of(self, item: str) -> str:
        return self._title.get(item, "")

    def explain(self, item: str, history_items: Sequence[str], history_feedback: Sequence[int]) -> Reason:
        """Why ``item`` may be disliked by a user with this history (oldest first, feedback -1/+1); of a history
        longer than ``history_limit``, its newest events (what the model's prompt holds)."""
        history_items, history_feedback = newest_events(history_items, history_feedback, self.history_limit)
        dislikes = [i for i, f in zip(reversed(history_items), reversed(history_feedback)) if f < 0 and i != item]
        dislikes = [i for i in dict.fromkeys(dislikes) if i in self._tokens]  # most recent first, distinct
        if not dislikes:
            return Reason(text="No past dislike to compare with.")
        if item not in self._tokens:
            return Reason(text="Unknown item: nothing to compare.")
        mine = self._tokens[item]
        prefix = {d: shared_prefix(mine, self._tokens[d]) for d in dislikes}
        best = max(prefix.values())
        similar = [Evidence(d, self._title.get(d, ""), shared_sid_levels=best) for d in dislikes if best and prefix[d] == best]
        co: list[Evidence] = []
        if self._co is not None:
            sims = self._co.similarity_to_sets([item] * len(dislikes), [[d] for d in dislikes])
            ranked = sorted((-float(s), n) for n, s in enumerate(sims) if s > 0)
            co = [Evidence(dislikes[n], self._title.get(dislikes[n], ""), similarity=round(-s, 4)) for s, n in ranked]
        similar, co = similar[: self.max_cited], co[: self.max_cited]
        return Reason(similar, co, _text(similar, co, mine[:best]))


def _text(similar: list[Evidence], co: list[Evidence], cluster: list[str]) -> str:
    parts = []
    if similar:
        names = ", ".join(f"'{e.title or e.item_id}'" for e in similar)
        parts.append(f"Same semantic cluster {''.join(cluster)} as your past dislike(s) {names}.")
    if co:
        names = ", ".join(f"'{e.title or e.item_id}' ({e.similarity:.2f})" for e in co)
        parts.append(f"Often disliked together with {names}.")
    return " ".join(parts) or "No close match among your past dislikes."
