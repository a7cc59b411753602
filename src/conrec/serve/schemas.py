"""Request and response bodies of the HTTP API (pydantic; they also make the OpenAPI schema).

Static shape rules (types, feedback in {-1, +1}, exactly one history source, k >= 1) live here so
FastAPI rejects them with 422 before any work. Limits that come from the server config (max_k,
max_history, max_batch) and checks against the catalogue (unknown items or users) are done by the
app, because they depend on what was loaded at start-up.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

from conrec.history import events_from_lists, non_empty_id, repeated_ids
from conrec.slate import LM_SCORE


def _encodable(text: str) -> str:
    # JSON's "\ud800" escape decodes to a lone surrogate, which no UTF-8 response can carry back: echoed as a
    # skipped item it became a 500 after the model work was done
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"must be valid Unicode text: {text.encode('utf-8', 'backslashreplace').decode('ascii')} holds a lone surrogate") from None
    return text


Text = Annotated[str, AfterValidator(_encodable)]  # an id a response may echo back


ItemId = Annotated[Text, AfterValidator(non_empty_id)]  # "" was accepted in negative/positive and refused as a history event's item_id


class _Strict(BaseModel):
    # Unknown keys are errors: a typo such as "negatives" must not silently mean "no history".
    # Strict types: "k": true is not 1 and "k": "5" is not 5 (a client bug must not pass silently).
    model_config = ConfigDict(extra="forbid", strict=True)


class HistoryEvent(_Strict):
    item_id: ItemId = Field(..., description="an item id of the catalogue (items.parquet)")
    feedback: Literal[-1, 1] = Field(..., description="-1 = explicit dislike, +1 = positive")

    @field_validator("feedback", mode="before")
    @classmethod
    def _not_a_bool(cls, v: object) -> object:
        # Literal[1] compares by ==, and True == 1 == 1.0: strict mode alone would take `true` or 1.0 as +1
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"feedback must be the integer -1 or 1, not {type(v).__name__} {v!r}")
        return v


class DislikeRequest(_Strict):
    """One history to score. Give exactly one of: ``user_id``, ``history``, or ``negative``/``positive``."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {"user_id": "u42", "k": 10},
                {"negative": ["i17", "i3"], "positive": ["i8", "i99", "i5"], "k": 5},
                {"history": [{"item_id": "i8", "feedback": 1}, {"item_id": "i17", "feedback": -1}], "k": 5},
            ]
        },
    )

    user_id: Text | None = Field(
        None, min_length=1, description="a user of the training events; their most recent events are the history"
    )
    # `neg`/`pos` are accepted too: the names older `conrec predict --history` files used.
    negative: list[ItemId] | None = Field(
        None, validation_alias=AliasChoices("negative", "neg"), description="disliked item ids, oldest first (alias: neg)"
    )
    positive: list[ItemId] | None = Field(
        None, validation_alias=AliasChoices("positive", "pos"), description="positively rated item ids, oldest first (alias: pos)"
    )
    history: list[HistoryEvent] | None = Field(
        None, description="the full history, oldest first (keeps the interleaving of dislikes and positives)"
    )
    k: int | None = Field(
        None, ge=1, description="how many items to return, 1..max_k (see GET /healthz); default: the server's default_k"
    )
    explain: bool = Field(
        False, description="attach a short reason to each item: the user's past dislikes it resembles (SID prefix, co-dislikes)"
    )
    exclude: list[ItemId] | None = Field(
        None,
        description="item ids never to return, besides the history's (left out always: decode.exclude_history, when off, "
        "keeps only the history's own items eligible), e.g. what the user rated before the history given; at most "
        "n_items distinct ids (see GET /healthz); unknown ids as in the history (serve.unknown_items)",
    )

    @model_validator(mode="after")
    def _one_non_empty_source(self) -> DislikeRequest:
        lists_given = self.negative is not None or self.positive is not None
        sources = [name for name, given in
                   (("user_id", self.user_id is not None), ("history", self.history is not None),
                    ("negative/positive", lists_given)) if given]
        if not sources:
            raise ValueError("no history: give one of user_id, history, or negative/positive")
        if len(sources) > 1:
            raise ValueError(f"give only one history source, got {' and '.join(sources)}")
        if self.history is not None and not self.history:
            raise ValueError("history is empty: give at least one event")
        if lists_given and not (self.negative or self.positive):
            raise ValueError("negative and positive are both empty: give at least one item id")
        return self

    def events(self) -> tuple[list[str], list[int]] | None:
        """The explicit history as (item ids, feedback), oldest first; None for a ``user_id`` request.

        Without ``history`` the relative order of dislikes and positives is unknown: the same rule as
        ``conrec predict --history`` (:func:`conrec.history.events_from_lists`) applies.
        """
        if self.history is not None:
            return [e.item_id for e in self.history], [int(e.feedback) for e in self.history]
        if self.user_id is not None:
            return None
        return events_from_lists(self.negative or [], self.positive or [])


class DislikeBatchRequest(_Strict):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"requests": [{"user_id": "u42", "k": 3}, {"negative": ["i17"], "k": 3}]}]},
    )

    requests: list[DislikeRequest] = Field(
        ..., min_length=1, description="at most max_batch requests (see GET /healthz), answered in one model call"
    )


class Evidence(BaseModel):
    item_id: str = Field(..., description="one of the user's past dislikes")
    title: str
    shared_sid_levels: int | None = Field(None, description="leading SID tokens shared with the item (same semantic cluster)")
    similarity: float | None = Field(None, description="co-dislike cosine similarity with the item (other users disliked both)")


class Reason(BaseModel):
    similar_dislikes: list[Evidence] = Field(..., description="past dislikes sharing the item's longest SID prefix")
    co_disliked_with: list[Evidence] = Field(..., description="past dislikes most often co-disliked with the item")
    text: str = Field(..., description="the same, as one sentence")


class DislikeItem(BaseModel):
    item_id: str
    sid: str = Field(..., description="the item's semantic ID (the tokens the model generates)")
    title: str
    score: float | None = Field(
        ...,
        description="model score; higher = more likely disliked (comparable within a response); an LM's is "
        f"{LM_SCORE}; null if not finite (e.g. -inf: the model rules the item out)",
    )
    rank: int = Field(..., ge=1, description="1 = most likely disliked")
    reason: Reason | None = Field(None, description="only when the request set explain: true")


_SKIPPED = "ids of the request unknown to the model, left out, each once (serve.unknown_items: skip); null when none"


class DislikeResponse(BaseModel):
    items: list[DislikeItem] = Field(..., description="best first; fewer than k if the catalogue has fewer candidates")
    model: str = Field(..., description="which model answered (grpo, sft, popular...)")
    k: int
    skipped_items: list[str] | None = Field(None, description=_SKIPPED)


class DislikeBatchResponse(BaseModel):
    results: list[DislikeResponse] = Field(..., description="one per request, in request order")
    model: str


class ScoreRequest(DislikeRequest):
    """A user's history (as for /v1/dislikes) and the slate of candidate items about to be shown."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"negative": ["i17", "i3"], "positive": ["i8"], "candidates": ["i5", "i17", "i42"], "threshold": -6.0},
                {"user_id": "u42", "candidates": ["i5", "i6"], "explain": True},
            ]
        },
    )

    k: int | None = Field(None, description="not used: every candidate is scored (leave it out; a value is refused)")
    candidates: list[ItemId] = Field(
        ..., description="item ids to score, 1..max_candidates (see GET /healthz), distinct, all in the catalogue"
    )
    threshold: float | None = Field(
        None,
        allow_inf_nan=False,  # -Infinity/NaN/1e400 parse, but no finite score compares sensibly with them
        description=f"filter an item when its score >= threshold (an LM's score is {LM_SCORE}); must be finite",
    )

    exclude: list[ItemId] | None = Field(None, description="not used: every candidate is scored (leave it out; a value is refused)")

    @model_validator(mode="after")
    def _slate(self) -> ScoreRequest:
        if self.k is not None:  # said "Input should be None"
            raise ValueError("k is not used by /v1/score: every candidate is scored and ranked; leave k out")
        if self.exclude is not None:  # a /v1/dislikes field: scoring a slate excludes nothing
            raise ValueError("exclude is not used by /v1/score: every candidate is scored; leave exclude out")
        if not self.candidates:
            raise ValueError("candidates is empty: give the item ids of the slate to score")
        dup = repeated_ids(self.candidates)
        if dup:
            raise ValueError(f"candidates repeat item id(s) {dup[:10]}: each item is scored once")
        return self


class ScoreBatchRequest(_Strict):
    requests: list[ScoreRequest] = Field(
        ..., min_length=1, description="at most max_batch slates (see GET /healthz), scored in one model call"
    )


class ScoreItem(BaseModel):
    item_id: str
    sid: str
    title: str
    score: float | None = Field(
        ..., description=f"dislike score, higher = more likely disliked (an LM's is {LM_SCORE}); null if not finite or the item is unknown (skipped)"
    )
    rank: int | None = Field(..., ge=1, description="1 = most likely disliked within this slate; null for a skipped item")
    decision: Literal["keep", "filter"] | None = Field(
        None, description="only with a threshold: filter when score >= threshold; null for a skipped item"
    )
    reason: Reason | None = Field(None, description="only when the request set explain: true")


class ScoreResponse(BaseModel):
    items: list[ScoreItem] = Field(..., description="one per candidate, in the request's order")
    model: str
    threshold: float | None = None
    n_filtered: int | None = Field(None, description="items with decision = filter (only with a threshold)")
    skipped_items: list[str] | None = Field(None, description=_SKIPPED)


class ScoreBatchResponse(BaseModel):
    results: list[ScoreResponse] = Field(..., description="one per request, in request order")
    model: str


class Limits(BaseModel):
    max_k: int
    default_k: int
    max_history: int
    max_batch: int
    max_candidates: int | None = None
    unknown_items: Literal["error", "skip"] = Field("error", description="serve.unknown_items: how unknown item ids are met")


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    model: str
    n_items: int = Field(..., description="items the model can recommend (the SID map)")
    n_users: int = Field(..., description="known users (user_id requests)")
    limits: Limits
    process: int = Field(..., description="id of the server process that answered (one of serve.processes workers)")
    requested_model: str | None = Field(None, description="the model the config asks for (serve.model)")
    fallback: bool = Field(
        False, description="true when another model than requested_model is served (it was not current at start-up: "
        "GRPO unfinished or stale, so SFT)",
    )
    model_current: bool | None = Field(
        None,
        description="true while a fresh conrec serve with this server's config would serve this same build (the rule "
        "conrec predict uses: finished, same settings, its stages and files unchanged). false once the model was "
        "retrained, removed or made stale, or once the requested model has become current while a fallback is "
        "served (it keeps serving what it loaded: restart conrec serve); null when not served from a run directory",
    )
    model_build: str | None = Field(
        None,
        description="which build of the model is served: <model>@<identity>, the identity changing with every run of its "
        "stage (two replicas serve the same build when these are equal); null when not served from a run directory",
    )
    loaded_current: bool | None = Field(
        None,
        description="true while the data, SID and eval stages this server read its tables, explanations and inspector "
        "lists from are still the run's. false once one has run again (a conrec eval rerun included, which leaves "
        "model_current true): it keeps answering from what it loaded, but with serve.processes > 1 a worker restarted "
        "after a crash stops the server rather than answer from other data than its siblings (restart conrec serve); "
        "null when not served from a run directory",
    )


class ErrorBody(BaseModel):
    detail: str = Field(..., description="what was wrong, naming the field, item ids or user")
    errors: list[dict[str, Any]] | None = Field(
        None, description="422 for a malformed body only: each problem's type, loc (the field's path) and msg"
    )
