"""One user's history in the one format the CLI, the Python API and the HTTP server share.

A history is given as ``{"negative": [item ids], "positive": [item ids]}`` (each list oldest
first; the older names ``neg``/``pos`` are accepted as aliases) or, to keep the true interleaving
of dislikes and positives, as ``{"history": [{"item_id": ..., "feedback": -1 | 1}, ...]}``. The
same JSON is a valid body for ``POST /v1/dislikes`` and a valid ``conrec predict --history`` file
(see ``examples/history.json``).

Why a module without torch: ``conrec predict`` checks the file and its item ids against the run's
SID map *before* importing and loading any model, so a typo fails in a second, not after the
~10 s it takes to import transformers and load a checkpoint.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Container, Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import polars as pl
from pydantic import AfterValidator, AliasChoices, BaseModel, ConfigDict, Field, ValidationError, model_validator

from conrec.errors import DataValidationError, StageInputError
from conrec.runs import RunDir

History = tuple[list[str], list[int]]
"""(item ids oldest first, feedback -1 dislike / +1 positive), aligned: the Predictor's input."""


def non_empty_id(item_id: str) -> str:
    """An item id that is not the empty string (a pydantic after-validator): the one rule and message for every form
    that takes ids (history lists and events, request bodies, slates); "" was accepted in some and refused in others."""
    if not item_id:
        raise ValueError("an item id must not be empty")
    return item_id


ItemIdText = Annotated[str, AfterValidator(non_empty_id)]


def repeated_ids(ids: Iterable[str]) -> list[str]:
    """The ids that occur more than once, sorted (a slate scores each candidate once): one linear pass, shared by
    the CLI's batch rows, the Predictor and the HTTP schema."""
    return sorted(i for i, n in Counter(ids).items() if n > 1)


class HistoryEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item_id: ItemIdText
    feedback: Literal[-1, 1]


class HistoryInput(BaseModel):
    """A history file / request body: ``negative``/``positive`` lists, or chronological ``history``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    # non-empty ids, as a history event's item_id: "" was accepted in these lists and refused in `history`
    negative: list[ItemIdText] | None = Field(None, validation_alias=AliasChoices("negative", "neg"))
    positive: list[ItemIdText] | None = Field(None, validation_alias=AliasChoices("positive", "pos"))
    history: list[HistoryEvent] | None = None

    @model_validator(mode="after")
    def _one_non_empty_source(self) -> HistoryInput:
        lists_given = self.negative is not None or self.positive is not None
        if lists_given and self.history is not None:
            raise ValueError("give either negative/positive or history, not both")
        if not lists_given and self.history is None:
            raise ValueError("no history: give negative/positive item-id lists or history events")
        if not (self.negative or self.positive or self.history):
            raise ValueError("the history is empty: give at least one item id")
        return self

    def events(self) -> History:
        if self.history is not None:
            return [e.item_id for e in self.history], [int(e.feedback) for e in self.history]
        return events_from_lists(self.negative or [], self.positive or [])


def newest_events(items: Sequence[Any], feedback: Sequence[Any], limit: int | None) -> tuple[Sequence[Any], Sequence[Any]]:
    """A history's newest ``limit`` events (all when ``limit`` is None): what a model's prompt reads of a longer
    one, and so all an explanation of its answer may cite."""
    if limit is None or len(items) <= limit:
        return items, feedback
    return items[len(items) - limit :], feedback[len(feedback) - limit :]


def events_from_lists(negative: list[str], positive: list[str]) -> History:
    """Negative and positive item-id lists (each oldest first) as one aligned history.

    The order *between* the lists is unknown: positives go first, dislikes last. The segmented
    and neg-only prompts never interleave the two, so this is exact for them; the merged and
    timeline prompts (the presets' ``neg_timeline``) read the events in order and need ``history``
    events to see the true order. The server uses the same rule.
    """
    pos, neg = [str(i) for i in positive], [str(i) for i in negative]
    return pos + neg, [1] * len(pos) + [-1] * len(neg)


def parse_history(obj: Any, source: str = "history") -> History:
    """Validate a decoded JSON object as a history; errors name ``source`` and the bad field."""
    if isinstance(obj, dict) and ("items" in obj or "feedback" in obj):
        raise DataValidationError(
            f"{source}: 'items'/'feedback' lists are no longer accepted; write "
            '{"history": [{"item_id": "...", "feedback": -1}, ...]} or {"negative": [...], "positive": [...]}'
        )
    try:
        return HistoryInput.model_validate(obj).events()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()
        )
        raise DataValidationError(
            f'{source}: {problems} (expected {{"negative": [item ids], "positive": [item ids]}} '
            'or {"history": [{"item_id": ..., "feedback": -1 or 1}]})'
        ) from None


def read_request_text(path: str | Path, what: str) -> str:
    """The text of a request file (a history, a score request), or one line naming what is wrong:
    missing, a directory or not UTF-8 (these were tracebacks). A UTF-8 byte-order mark (Windows editors
    write one) is dropped, as the YAML config reader drops it: json.loads refused the file."""
    from conrec.data.sources.common import existing_file

    p = existing_file(path, what)
    try:
        return p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataValidationError(f"{what} file {p} is not UTF-8 text (byte {exc.start}: {exc.reason}); is it a JSON file?") from None


def read_history_json(path: str | Path) -> History:
    """One user's history from a JSON file (see the module docstring for the format)."""
    p = Path(path)
    return parse_history_text(read_request_text(p, "history"), f"history file {p}")


def parse_history_text(text: str, source: str) -> History:
    """One user's history from the JSON text of a history file named ``source`` (e.g. ``history file h.json``).

    Why apart from :func:`read_history_json`: a caller that has already read the file (``conrec predict
    --history`` reads it once to tell a request body from a history) parses that text; reading the path again
    gets nothing from a pipe (``/dev/stdin``, ``<(...)``)."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataValidationError(f"{source} is not valid JSON: {exc}") from exc
    if isinstance(obj, dict):  # a saved POST /v1/dislikes body: its request fields are not part of the history
        if "user_id" in obj:
            raise DataValidationError(
                f"{source}: a user_id is looked up in a run's events; give the file to `conrec predict --history` "
                "(or POST it), or write the history itself (negative/positive or history)"
            )
        obj = {key: value for key, value in obj.items() if key not in ("k", "explain")}
    return parse_history(obj, source=source)


def known_item_ids(run: RunDir) -> set[str]:
    """Item ids the run's models can read and generate: the SID map's ``item_id`` column.

    Reads one Parquet column (no torch, no model), so inputs can be checked before a model loads.
    """
    p = run.sid_map
    if not p.exists():
        raise StageInputError(f"SID map not found: {p.absolute()} (run `conrec sid` first)")
    try:
        return set(pl.read_parquet(p, columns=["item_id"])["item_id"].cast(pl.String).to_list())
    except Exception as exc:  # polars raises several types for corrupt files
        raise StageInputError(f"SID map at {p.absolute()} is not a readable Parquet file: {exc}") from exc


def check_history_shape(items: Sequence[Any], feedback: Sequence[Any], subject: str) -> None:
    """Fail with one line naming ``subject`` if a history's lists do not align, it is empty, or a
    feedback value is not -1 (dislike) or +1 (positive). Pure and cheap: callers check before a model loads."""
    if isinstance(items, (str, bytes)) or isinstance(feedback, (str, bytes)):  # read as characters, it misled
        raise DataValidationError(
            f"{subject}: item ids and feedback must each be a list, got a string (one history? pass a list of histories)"
        )
    if len(items) != len(feedback):
        raise DataValidationError(f"{subject}: {len(items)} item id(s) but {len(feedback)} feedback value(s); they must align")
    if not items:
        raise DataValidationError(f"{subject} is empty: give at least one disliked or liked item (the model conditions on it)")
    bad = list(dict.fromkeys(repr(f) for f in feedback if not is_feedback_value(f)))
    if bad:
        raise DataValidationError(f"{subject}: feedback must be -1 (dislike) or +1 (positive), got [{', '.join(bad[:5])}]")


def check_history_limit(history: History, max_history: int, source: str) -> None:
    """One line naming ``source`` when a history a user gives is longer than ``serve.max_history``.

    Why: the server answers such a history 413 (:mod:`conrec.serve.app`), and the CLI (``conrec predict
    --history``, ``conrec score --request``/``--batch``) must answer the same histories it does: both read only the
    newest ``data.split.max_history`` events for the prompt, but every event is left out of the ranking, so an
    answer to a longer one had no server answer to compare with."""
    n = len(history[0])
    if n > max_history:
        raise DataValidationError(f"{source}: history has {n} events; the limit is serve.max_history = {max_history}")


def is_feedback_value(f: Any) -> bool:
    """-1 or +1 as a number of any kind (-1.0, numpy, a 0-d tensor); not a bool, None, "-1" or -1.5 (which int()
    cut to -1)."""
    if f is None or isinstance(f, (bool, np.bool_, str, bytes)):
        return False
    try:
        return float(f) in (-1.0, 1.0)
    except (TypeError, ValueError):
        return False


def check_known_items(history: History, known: set[str], source: str = "history") -> None:
    """Fail with the unknown ids (at most 10 shown) if any history item is outside ``known``."""
    unknown = sorted({i for i in history[0] if i not in known})
    if unknown:
        more = f" (and {len(unknown) - 10} more)" if len(unknown) > 10 else ""
        raise DataValidationError(
            f"{source}: {len(unknown)} unknown item id(s), not in the run's SID map: {unknown[:10]}{more}"
        )


def exclusion_lists(
    histories: Sequence[History], exclude: Sequence[Iterable[str]] | None, known: Container[str], with_history: bool = True
) -> list[set[str]]:
    """Per history, the item ids a top-K leaves out: its own items (when ``with_history``) plus its ``exclude`` list
    (None: none more).

    ``with_history`` is the LM's ``decode.exclude_history``; the ``exclude`` list applies either way. Why: it is an
    explicit request ("never return these"), which the LM ignored without a word under ``exclude_history: false``
    while the popular predictor honoured it.

    Why a second list: a history is what the model reads, but the items never to return can be more, e.g. every
    item the user rated before the point when the history is only its newest ``data.split.max_history`` events (what
    the eval leaves out, :mod:`conrec.eval.seen`; the inspector page asks ``/v1/dislikes`` so). An ``exclude`` id
    outside ``known`` is an error, as a history's is: a typo must not pass as "excluded". A string where a list of
    ids is expected is refused: ``exclude=["121"]`` (one flat list for one history) read as the ids "1" and "2"."""
    if isinstance(exclude, (str, bytes)) or any(isinstance(extra, (str, bytes)) for extra in exclude or []):
        raise DataValidationError('exclude must be one list of item ids per history (e.g. [["121"]]), not a string where a list is expected')
    if exclude is not None and len(exclude) != len(histories):
        raise DataValidationError(f"{len(exclude)} exclude list(s) for {len(histories)} history(ies)")
    out = [set(map(str, items)) if with_history else set() for items, _ in histories]
    for n, extra in enumerate(exclude or []):
        ids = [str(i) for i in extra]
        unknown = sorted({i for i in ids if i not in known})
        if unknown:
            raise DataValidationError(f"exclude #{n}: {len(unknown)} unknown item id(s) (not in the catalogue): {unknown[:10]}")
        out[n].update(ids)
    return out
