"""The HTTP service: ``POST /v1/dislikes`` -> the top-K items a user is likely to dislike.

Concurrency choice: the endpoints are plain ``def`` functions, so FastAPI runs them in its thread
pool and the event loop stays free for ``/healthz`` and for parsing while a model call runs. The
model calls themselves pass an admission gate (:class:`conrec.serve.limits.AdmissionGate`):
``serve.inference_workers`` run at once (default 1: a torch CPU generate already uses every core),
``serve.max_queue`` wait, and the next one gets 503 + Retry-After at once. Throughput comes from
batching: concurrent single requests are micro-batched (:mod:`conrec.serve.batching`), and
``POST /v1/dislikes/batch`` answers many histories at once; either way each history is decoded with
its own ``k``, so batching never changes an answer beyond float32 rounding. Body size, API key and message length limits:
see :mod:`conrec.serve.limits`.

Errors: every bad input is a 4xx whose ``detail`` names the problem (field, item ids, user); the
predictor's own :class:`~conrec.errors.ConrecError` becomes a 4xx too; anything else is logged
with its traceback and answered with 500. No error stops the server.

Abandoned requests: a request whose client disconnects before its model call is not computed (the check is a flag
read just before the call, and while it waits for one; see :class:`conrec.serve.limits.Admission`), is counted in the
log, and gives its admission place up; a model pass already running is finished.
"""

from __future__ import annotations

import importlib.metadata
import logging
import math
import os
import sys
import threading
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

import polars as pl
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline

import conrec
from conrec.config import PipelineConfig
from conrec.errors import ConfigError, ConrecError, DataValidationError, ModelOutputError, StageInputError
from conrec.explain import Explainer, explanation_events
from conrec.runs import RunDir
from conrec.serve.batching import MicroBatcher, run_grouped
from conrec.serve.catalog import History, KnownFormTwins, SidCatalog, user_histories
from conrec.serve.config import ServeConfig, check_max_k
from conrec.serve.limits import (
    NO_STORE_HEADERS,
    Admission,
    AdmissionGate,
    ApiKeyAuth,
    BodySizeLimit,
    ClientGone,
    Gone,
    HostCheck,
    NoStoreHeaders,
    client_gone,
    clip,
    exposure_warning,
    resolve_api_key,
    trusted_hosts,
)
from conrec.serve.protocol import set_read_timeout
from conrec.serve.schemas import (
    DislikeBatchRequest,
    DislikeBatchResponse,
    DislikeItem,
    DislikeRequest,
    DislikeResponse,
    ErrorBody,
    Evidence,
    Health,
    Limits,
    Reason,
    ScoreBatchRequest,
    ScoreBatchResponse,
    ScoreItem,
    ScoreRequest,
    ScoreResponse,
)
from conrec.slate import decide, rank_scores
from conrec.stages import MODEL_STAGES

log = logging.getLogger("conrec.serve")
_MAX_ERRORS = 10  # validation errors listed in a 422 (a body can produce millions)
# the API pages' scripts, styles and icon (fastapi-offline's files, ~2.7 MB) under a URL that names the package's
# version, so the browser may keep them for good (NoStoreHeaders' immutable_under): an upgrade changes the URL
DOCS_ASSETS_URL = f"/static-offline-docs/{importlib.metadata.version('fastapi-offline')}"

Recommendations = list[list[tuple[str, float]]]
_DISLIKES, _SCORE = "dislikes", "score"  # micro-batch group keys: (_DISLIKES, k) and _SCORE


def require_usable_scores(scores: Sequence[float]) -> None:
    """422 instead of an empty or null-filled success when the model's scores are NaN or +inf.

    Why 422: the weights were checked finite at load time (:func:`conrec.llm.inference.predict.check_finite_weights`),
    so a non-finite score comes from this input (e.g. an overflow on it); -inf stays a valid
    "impossible" log-probability and is sent as null.
    """
    bad = sum(1 for x in scores if math.isnan(x) or x == math.inf)
    if bad:
        raise HTTPException(422, f"the model produced {bad} non-finite score(s) (NaN or +inf) for this history; no answer can be given")


class DislikePredictor(Protocol):
    """What the app needs from a model: :class:`conrec.llm.inference.predict.Predictor` satisfies it."""

    def recommend(self, histories: list[History], k: int, exclude: Sequence[Iterable[str]] | None = None) -> Recommendations:
        """For each (item ids oldest first, feedback -1/+1) history, up to k (item id, score), best first, none of its
        items or its ``exclude`` list's. The app passes ``exclude`` only when a request gave one, so a predictor
        without the parameter still answers every other request."""
        ...


class SlateScorer(Protocol):
    """What ``/v1/score`` needs: :class:`conrec.llm.inference.predict.Predictor` and the popular predictor satisfy it."""

    def score(self, histories: list[History], candidates: list[list[str]]) -> list[list[float]]:
        """For each history, one dislike score per candidate (aligned; higher = more likely disliked)."""
        ...


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "the model rejected the input"},
    404: {"model": ErrorBody, "description": "unknown user_id"},
    401: {"model": ErrorBody, "description": "API key missing or wrong (only when the server has one)"},
    413: {"model": ErrorBody, "description": "body over max_body_bytes, history over max_history, batch over max_batch, or slate over max_candidates"},
    501: {"model": ErrorBody, "description": "the served model cannot score slates"},
    422: {"model": ErrorBody, "description": "malformed body, no history, k out of range, or unknown item ids"},
    500: {"model": ErrorBody, "description": "unexpected model failure (logged with traceback)"},
    503: {"model": ErrorBody, "description": "every worker busy and the queue full (max_queue); see Retry-After"},
}

_DESCRIPTION = """\
Top-K items a user is likely to **dislike**, from a causal LM over semantic item IDs (CoNRec).

Give a history as a known `user_id`, as `negative`/`positive` item-id lists, or as a chronological
`history` of `{item_id, feedback}` events. `POST /v1/score` scores a slate of `candidates` about to
be shown (each item's dislike score, rank, and keep/filter decision when `threshold` is given).
`explain: true` attaches to each item the user's past dislikes it resembles; `exclude` lists more items never to
return (e.g. what the user rated before the history given). Limits (`max_k`, `max_history`, `max_batch`) are shown
by `GET /healthz`. Errors are JSON `{"detail": "..."}` naming the offending field, item or user.
"""


def create_app(
    predictor: DislikePredictor,
    items: pl.DataFrame,
    sid_map: pl.DataFrame,
    events: pl.DataFrame | None,
    cfg: ServeConfig,
    model_name: str | None = None,
    model_current: Callable[[], bool] | None = None,
    model_build: str | None = None,
    requested_model: str | None = None,
    explain_events: Callable[[], pl.DataFrame | None] | None = None,
    loaded_current: Callable[[], bool] | None = None,
) -> FastAPI:
    """Build the app around an already-loaded predictor and the run's tables (looked up in memory).

    ``events`` gives the known users' histories (None: ``user_id`` requests get 404); ``explain_events``
    the events co-dislike reasons are counted on, read on the first explanation (None: ``events``; a run's
    app passes its training events, :func:`loaded_explanation_events`).
    ``model_name`` is what responses report (default ``cfg.model``). ``model_current`` says whether the
    loaded model is still the run's (``/healthz``; None: not served from a run), ``model_build`` which build of it
    is served (``<model>@<identity>``, :func:`served_identity`), ``requested_model`` the one the config asks for
    (``serve.model``; default: the one served), ``loaded_current`` whether the stages its tables, explanations and
    inspector lists came from are still the run's (``/healthz``; None: not served from a run).
    """
    catalog = SidCatalog.build(items, sid_map)
    known_users = user_histories(events, cfg.max_history) if events is not None else {}
    user_twins = KnownFormTwins(known_users)  # an unknown user_id that is a known one in another Unicode normalisation says so
    model = model_name or cfg.model
    gate = AdmissionGate(cfg.inference_workers, cfg.max_queue)
    explainer_box: list[Explainer] = []
    explainer_lock = threading.Lock()

    def explainer() -> Explainer:
        """Built on first use (co-dislikes over the loaded events), then shared by every request."""
        with explainer_lock:
            if not explainer_box:
                try:
                    counted = events if explain_events is None else explain_events()
                except ConrecError as exc:  # e.g. samples of another split protocol: SID evidence only, said once
                    log.warning("explanations cite no co-dislikes: the run's training events cannot be read (%s)", exc)
                    counted = None
                limit = getattr(predictor, "history_limit", None)  # a reason cites only what the model read
                explainer_box.append(Explainer.build(catalog.sid, catalog.title, counted, top_n=cfg.explain_top_n, history_limit=limit))
            return explainer_box[0]

    def reason_of(item: str, history: History) -> Reason:
        r = explainer().explain(item, *history)
        cite = lambda evs: [Evidence(**vars(e)) for e in evs]  # noqa: E731
        return Reason(similar_dislikes=cite(r.similar_dislikes), co_disliked_with=cite(r.co_disliked_with), text=r.text)

    # the API pages (/docs, /redoc) with their scripts and styles served from the package, not a CDN: FastAPI's own
    # pages fetch them from cdn.jsdelivr.net and were blank on an offline machine
    app = FastAPIOffline(title="conrec", version=conrec.__version__, description=_DESCRIPTION, static_url=DOCS_ASSETS_URL)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _server_error)

    async def abandoned(request: Request, exc: Exception) -> JSONResponse:
        """A request skipped because its client had gone: counted and logged (the server sends no response to a
        closed connection, so the access log has no line for it); the 499 goes nowhere."""
        log.info("skipped the model call of %s: its client disconnected first (%d so far)", request.url.path, gate.count_abandoned())
        return JSONResponse(status_code=499, content={"detail": "the client disconnected before the model call"})

    app.add_exception_handler(ClientGone, abandoned)
    app.state.admission = gate  # observable (tests, metrics)
    # added last = outermost: response headers, Host check, size limit, then API key, then admission, then routing and parsing
    app.add_middleware(Admission, gate=gate, retry_after_s=cfg.retry_after_s)
    api_key = resolve_api_key(cfg.api_key)
    if api_key is not None:
        app.add_middleware(ApiKeyAuth, api_key=api_key)
    app.add_middleware(BodySizeLimit, max_bytes=cfg.max_body_bytes)
    hosts = trusted_hosts(cfg.host, cfg.allowed_hosts)
    if hosts is not None:  # a rebinding page learns nothing, not even whether a key is needed
        app.add_middleware(HostCheck, allowed=hosts)
    app.add_middleware(NoStoreHeaders, immutable_under=DOCS_ASSETS_URL)  # outermost: on every response, the refusals above included

    def k_of(req: DislikeRequest, where: str) -> int:
        k = cfg.default_k if req.k is None else req.k
        if k > cfg.max_k:
            raise HTTPException(422, f"{where}k = {k} is out of range: must be 1..{cfg.max_k}")
        return k

    skip_unknown = cfg.unknown_items == "skip"

    def unknown_items_error(unknown: list[str], where: str, what: str) -> HTTPException:
        shown = ", ".join(catalog.twins.shown(i, "catalogue id", "the catalogue's") for i in unknown[:20]) + (f" and {len(unknown) - 20} more" if len(unknown) > 20 else "")
        newer = any(catalog.normalisation_twin(i) is None for i in unknown)  # else each is a catalogue id that looks the same
        hint = "" if skip_unknown or not newer else " (items newer than the model? serve.unknown_items: skip leaves them out)"
        return HTTPException(422, f"{where}unknown {what}item id(s): {shown}{hint}")

    def history_and_skipped(req: DislikeRequest, where: str) -> tuple[History, list[str]]:
        """The request's history and the unknown item ids left out of it (``serve.unknown_items: skip``)."""
        explicit = req.events()
        if explicit is None:
            assert req.user_id is not None
            if req.user_id not in known_users:
                raise HTTPException(404, f"{where}unknown user_id {user_twins.shown(req.user_id, 'known user_id', 'the known one')}")
            return known_users[req.user_id], []  # already cut to max_history
        items_, feedback = explicit
        if len(items_) > cfg.max_history:
            raise HTTPException(
                413, f"{where}history has {len(items_)} events; the limit is max_history = {cfg.max_history}"
            )
        unknown = catalog.unknown(items_)
        if not unknown:
            return explicit, []
        if not skip_unknown:
            raise unknown_items_error(unknown, where, "")
        if len(unknown) == len(set(items_)):  # skipping every event would answer for an empty history: no silent guess
            raise HTTPException(422, f"{where}no item of the history is known to the model ({len(unknown)} unknown): nothing to read")
        kept = [(i, f) for i, f in zip(items_, feedback) if i in catalog.sid]
        return ([i for i, _ in kept], [f for _, f in kept]), unknown

    def history_of(req: DislikeRequest, where: str) -> History:
        return history_and_skipped(req, where)[0]

    def exclude_and_skipped(req: DislikeRequest, where: str) -> tuple[tuple[str, ...], list[str]]:
        """The request's ``exclude`` ids the model knows, and the unknown ones left out (``serve.unknown_items: skip``).

        Bounded by the catalogue's size, not ``max_history``: a user's items rated before the history can outnumber
        the history's limit (the inspector's user 13: 608 items before t, serve.max_history 500), but never the
        catalogue's items. Distinct ids are counted (the body size bounds repeats): the catalogue plus one repeat, as
        a client concatenating lists sends, was refused as over the catalogue's size."""
        ids = list(dict.fromkeys(req.exclude or []))  # each id once, first-seen order
        if len(ids) > len(catalog):
            raise HTTPException(413, f"{where}exclude has {len(ids)} distinct ids; the limit is the catalogue's size, n_items = {len(catalog)}")
        unknown = catalog.unknown(ids)
        if unknown and not skip_unknown:
            raise unknown_items_error(unknown, where, "exclude ")
        return tuple(i for i in ids if i in catalog.sid), unknown

    def dislike_request(req: DislikeRequest, where: str) -> tuple[History, tuple[str, ...], list[str]]:
        """(history, exclude ids, every unknown id left out, each once) of a ``/v1/dislikes`` request."""
        history, skipped = history_and_skipped(req, where)
        exclude, unknown = exclude_and_skipped(req, where)
        return history, exclude, list(dict.fromkeys([*skipped, *unknown]))

    def call_model(what: str, n: int, fn: Callable[[], Any]) -> Any:
        """The predictor's errors as HTTP errors: its input checks 422/400, anything else a logged 500."""
        try:
            return fn()
        except (DataValidationError, ModelOutputError) as exc:
            raise HTTPException(422, str(exc)) from exc
        except ConrecError as exc:
            raise HTTPException(400, str(exc)) from exc
        except Exception as exc:
            log.exception("predictor failed to %s for %d history(ies)", what, n)
            raise HTTPException(500, f"model failure ({type(exc).__name__}); see the server log") from exc

    def recommend_group(payloads: list[tuple[History, tuple[str, ...]]], k: int) -> Recommendations:
        """One model call for (history, exclude ids) that all ask for the same ``k`` (checked: one answer each, finite
        scores). ``exclude`` goes to the predictor only when one is given (see :class:`DislikePredictor`)."""
        histories = [h for h, _ in payloads]
        exclude = [ex for _, ex in payloads]
        ask = (lambda: predictor.recommend(histories, k, exclude=exclude)) if any(exclude) else (lambda: predictor.recommend(histories, k))
        recs = call_model(f"recommend k={k}", len(histories), ask)
        if len(recs) != len(histories):
            log.error("predictor returned %d results for %d histories", len(recs), len(histories))
            raise HTTPException(500, "model failure (wrong number of results); see the server log")
        for rec in recs:
            require_usable_scores([s for _, s in rec])
        return list(recs)

    def score_group(histories: list[History], slates: list[list[str]]) -> list[list[float]]:
        """One model call scoring one slate per history (checked: aligned, finite scores)."""
        scorer = getattr(predictor, "score", None)
        if scorer is None:
            raise HTTPException(501, f"the served model {model!r} cannot score slates")
        scores = call_model("score slates", len(slates), lambda: scorer(histories, slates))
        if len(scores) != len(slates) or any(len(s) != len(c) for s, c in zip(scores, slates)):
            log.error("predictor returned scores not aligned with the %d slate(s)", len(slates))
            raise HTTPException(500, "model failure (scores not aligned with the candidates); see the server log")
        for sc in scores:
            require_usable_scores(sc)
        return [[float(x) for x in sc] for sc in scores]

    def unless_gone(gone: Gone) -> Callable[[Hashable, list[Any]], Sequence[Any]]:
        """:func:`run_group` that first checks ``gone`` (a batch of several ``k`` makes one model call each)."""
        def run(key: Hashable, payloads: list[Any]) -> Sequence[Any]:
            if gone():
                raise ClientGone
            return run_group(key, payloads)

        return run

    def run_group(key: Hashable, payloads: list[Any]) -> Sequence[Any]:
        """The micro-batcher's model call for one group of same-question jobs (see :mod:`conrec.serve.batching`)."""
        if key == _SCORE:
            return score_group([h for h, _ in payloads], [sl for _, sl in payloads])
        assert isinstance(key, tuple) and key[0] == _DISLIKES
        return recommend_group(payloads, int(key[1]))

    # Single requests are micro-batched; the batch endpoints call run_grouped directly (already a batch).
    batcher = MicroBatcher(
        run_group,
        max_size=cfg.batch_max_size,
        window_s=cfg.batch_window_ms / 1000,
        workers=cfg.inference_workers,
        waiting=lambda: gate.pending,
        slot=gate.model_slot,
    )
    app.state.batcher = batcher  # observable (tests, metrics)
    gate.on_client_left.append(batcher.wake)  # a queued job whose client went leaves at once

    def infer(payloads: list[tuple[History, tuple[str, ...]]], ks: list[int], gone: Gone) -> Recommendations:
        """Each (history, exclude ids) decoded with its own k (one model call per distinct k): batching changes no
        answer beyond float32 rounding; :class:`ClientGone` instead when the client has gone before a model call."""
        with gate.model_slot(gone):  # admitted already (Admission middleware): wait for a worker
            recs: Recommendations = run_grouped(unless_gone(gone), [(_DISLIKES, k) for k in ks], payloads)
        return recs

    def infer_scores(histories: list[History], slates: list[list[str]], gone: Gone) -> list[list[float]]:
        with gate.model_slot(gone):  # admitted already (Admission middleware): wait for a worker, unless the client went
            return score_group(histories, slates)

    def response(
        recs: list[tuple[str, float]], k: int, history: History | None = None, skipped: list[str] | None = None
    ) -> DislikeResponse:
        return DislikeResponse(
            items=[
                DislikeItem(
                    item_id=i,
                    sid=catalog.sid.get(i, ""),
                    title=catalog.title.get(i, ""),
                    score=float(s) if math.isfinite(s) else None,  # JSON has no inf/nan
                    rank=r,
                    reason=reason_of(i, history) if history is not None else None,
                )
                for r, (i, s) in enumerate(recs[:k], start=1)
            ],
            model=model,
            k=k,
            skipped_items=skipped or None,
        )

    def slate_of(req: ScoreRequest, where: str) -> list[str]:
        """The candidates the model scores: all of them, or (``unknown_items: skip``) the known ones."""
        n = len(req.candidates)
        if n > cfg.max_candidates:
            raise HTTPException(413, f"{where}slate has {n} candidates; the limit is max_candidates = {cfg.max_candidates}")
        unknown = catalog.unknown(req.candidates)
        if unknown and not skip_unknown:
            raise unknown_items_error(unknown, where, "candidate ")
        return [c for c in req.candidates if c in catalog.sid]

    def score_many(histories: list[History], slates: list[list[str]], one: bool, gone: Gone) -> list[list[float]]:
        """Scores of each slate's known candidates (a slate with none needs no model call)."""
        todo = [j for j, s in enumerate(slates) if s]
        out: list[list[float]] = [[] for _ in slates]
        if todo and one:
            out[todo[0]] = batcher.submit(_SCORE, (histories[todo[0]], slates[todo[0]]), gone)
        elif todo:
            for j, sc in zip(todo, infer_scores([histories[j] for j in todo], [slates[j] for j in todo], gone)):
                out[j] = sc
        return out

    def score_response(req: ScoreRequest, slate: list[str], scores: list[float], history: History, skipped: list[str]) -> ScoreResponse:
        """Items in the request's order: the scored ones with score, rank and decision, skipped ones with nulls."""
        scores = [float(x) for x in scores]
        decisions = decide(scores, req.threshold)
        scored = dict(zip(slate, zip(scores, rank_scores(scores), decisions)))
        items = []
        for i in req.candidates:
            s, r, d = scored.get(i, (math.nan, None, None))
            items.append(ScoreItem(
                item_id=i,
                sid=catalog.sid.get(i, ""),
                title=catalog.title.get(i, ""),
                score=s if math.isfinite(s) else None,
                rank=r,
                decision=d,
                reason=reason_of(i, history) if req.explain and i in scored else None,
            ))
        n_filtered = sum(d == "filter" for d in decisions) if req.threshold is not None else None
        return ScoreResponse(
            items=items, model=model, threshold=req.threshold, n_filtered=n_filtered,
            skipped_items=list(dict.fromkeys([*skipped, *catalog.unknown(req.candidates)])) or None,  # once each
        )

    # shared with the inspector page (serve/ui.py): the same catalogue, history checks and explanations
    app.state.catalog, app.state.history_of, app.state.explain = catalog, history_of, reason_of
    app.state.history_and_skipped = history_and_skipped  # the pasted history's view lists what skip left out

    # HEAD too (headers only): load balancers and uptime probes often check liveness without a body
    @app.head("/healthz", include_in_schema=False)
    @app.get("/healthz", response_model=Health, summary="liveness, served model and request limits")
    def healthz() -> Health:
        limits = Limits(
            max_k=cfg.max_k, default_k=cfg.default_k, max_history=cfg.max_history, max_batch=cfg.max_batch,
            max_candidates=cfg.max_candidates, unknown_items=cfg.unknown_items,
        )
        return Health(
            model=model, n_items=len(catalog), n_users=len(known_users), limits=limits, process=os.getpid(),
            model_current=None if model_current is None else model_current(), model_build=model_build,
            loaded_current=None if loaded_current is None else loaded_current(),
            requested_model=requested_model or model, fallback=(requested_model or model) != model,
        )

    def check_batch_size(n: int) -> None:
        if n > cfg.max_batch:
            raise HTTPException(413, f"batch has {n} requests; the limit is max_batch = {cfg.max_batch}")

    @app.post("/v1/dislikes", response_model=DislikeResponse, responses=_ERRORS, summary="top-K likely dislikes")
    def dislikes(req: DislikeRequest, request: Request) -> DislikeResponse:
        k = k_of(req, "")
        history, exclude, skipped = dislike_request(req, "")
        recs = batcher.submit((_DISLIKES, k), (history, exclude), client_gone(request.scope))
        return response(recs, k, history if req.explain else None, skipped)

    @app.post(
        "/v1/dislikes/batch",
        response_model=DislikeBatchResponse,
        responses=_ERRORS,
        summary="top-K likely dislikes for many histories in one model call",
    )
    def dislikes_batch(batch: DislikeBatchRequest, request: Request) -> DislikeBatchResponse:
        check_batch_size(len(batch.requests))
        ks = [k_of(r, f"requests[{j}]: ") for j, r in enumerate(batch.requests)]
        read = [dislike_request(r, f"requests[{j}]: ") for j, r in enumerate(batch.requests)]
        recs = infer([(h, ex) for h, ex, _ in read], ks, client_gone(request.scope))
        results = [response(r, k, h if q.explain else None, sk) for r, k, (h, _, sk), q in zip(recs, ks, read, batch.requests)]
        return DislikeBatchResponse(results=results, model=model)

    @app.post(
        "/v1/score",
        response_model=ScoreResponse,
        responses=_ERRORS,
        summary="dislike score, rank and keep/filter decision of each candidate of a slate",
    )
    def score(req: ScoreRequest, request: Request) -> ScoreResponse:
        history, skipped = history_and_skipped(req, "")
        slate = slate_of(req, "")
        return score_response(req, slate, score_many([history], [slate], True, client_gone(request.scope))[0], history, skipped)

    @app.post(
        "/v1/score/batch",
        response_model=ScoreBatchResponse,
        responses=_ERRORS,
        summary="score many slates (one per history) in one model call",
    )
    def score_batch(batch: ScoreBatchRequest, request: Request) -> ScoreBatchResponse:
        check_batch_size(len(batch.requests))
        read = [history_and_skipped(r, f"requests[{j}]: ") for j, r in enumerate(batch.requests)]
        slates = [slate_of(r, f"requests[{j}]: ") for j, r in enumerate(batch.requests)]
        scores = score_many([h for h, _ in read], slates, False, client_gone(request.scope))
        results = [score_response(r, sl, sc, h, sk) for r, sl, sc, (h, sk) in zip(batch.requests, slates, scores, read)]
        return ScoreBatchResponse(results=results, model=model)

    return app


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    """HTTP errors as ``{"detail": ...}``, the detail cut to a bounded length (it may quote input)."""
    assert isinstance(exc, HTTPException)
    detail = clip(exc.detail) if isinstance(exc.detail, str) else exc.detail
    return JSONResponse(status_code=exc.status_code, content={"detail": detail}, headers=exc.headers)


async def _server_error(request: Request, exc: Exception) -> JSONResponse:
    """An unhandled exception's 500: a generic JSON detail (no traceback, no message: it may quote data) with
    :data:`~conrec.serve.limits.NO_STORE_HEADERS`.

    Why: Starlette answers it from its ``ServerErrorMiddleware``, which sits outside every middleware the app adds,
    so :class:`~conrec.serve.limits.NoStoreHeaders` never sees it. Starlette re-raises the exception after this
    response, so the server still logs the traceback."""
    headers = {k.decode(): v.decode() for k, v in NO_STORE_HEADERS}
    return JSONResponse(status_code=500, content={"detail": "internal server error; see the server log"}, headers=headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """422 with one readable ``detail`` line (``body.requests.2.k: Input should be ...``) plus the errors."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    lines = []
    ctype = request.headers.get("content-type", "")
    if ctype and "json" not in ctype.lower() and any(tuple(e.get("loc", ())) == ("body",) for e in errors):
        # FastAPI reads a body of another type as no JSON at all ("a valid dictionary..."): say why
        lines.append(f"the body must be JSON, sent with content-type: application/json (got {clip(ctype, 100)!r})")
        errors = [e for e in errors if tuple(e.get("loc", ())) != ("body",)]
        shown_before = 1  # that line stands for the errors it replaced: not one of `errors`
    else:
        shown_before = 0
    for e in errors:
        loc = ".".join(str(x) for x in e.get("loc", ()))
        if e.get("type") == "missing" and tuple(e.get("loc", ())) == ("body",):
            lines.append("empty request body: send a JSON object (see /docs)")
        elif e.get("type") == "json_invalid":
            why = (e.get("ctx") or {}).get("error", "decode error")
            lines.append(f"request body is not valid JSON ({why} at character {e['loc'][-1]})")
        else:
            lines.append(f"{clip(loc, 200)}: {clip(str(e.get('msg', 'invalid')).removeprefix('Value error, '), 300)}")
        if len(lines) >= _MAX_ERRORS:
            break
    shown = len(lines) - shown_before
    more = f"; and {len(errors) - shown} more error(s)" if len(errors) > shown else ""
    # The raw errors minus "input" (echoing a whole oversized body back helps nobody), capped too.
    brief = [
        {"type": e.get("type"), "loc": [clip(str(x), 200) for x in e.get("loc", ())], "msg": clip(str(e.get("msg")), 300)}
        for e in errors[:_MAX_ERRORS]
    ]
    return JSONResponse(status_code=422, content={"detail": clip("; ".join(lines) + more), "errors": brief})


# (cfg, "sft" | "grpo") -> the predictor of that trained model
LmLoader = Callable[[PipelineConfig, str], DislikePredictor]


def load_lm(cfg: PipelineConfig, name: str) -> DislikePredictor:
    """The run's trained ``name`` model as a predictor (torch/transformers load only here)."""
    from conrec.llm.inference.predict import Predictor

    return Predictor.from_run(cfg, model=name)


def load_predictor(
    cfg: PipelineConfig, sid_map: pl.DataFrame, events: pl.DataFrame | None, load_lm: LmLoader = load_lm
) -> tuple[DislikePredictor, str]:
    """The predictor named by ``cfg.serve.model`` and the name it is served under.

    Only a model current for ``cfg`` is served (:meth:`conrec.runs.RunDir.model_problem`: finished,
    same configuration fingerprint, readable). ``grpo`` falls back to ``sft`` when the GRPO model is
    missing or stale (e.g. GRPO not run yet, or SFT retrained since), with a warning saying why, so
    a run that finished SFT can already be served; a stale model is never served.
    ``popular`` needs no model, but its counts are the data stage's events over the SID stage's
    catalogue, so both must be current for ``cfg`` as a model would (after a changed data setting
    they are another run's answers). ``load_lm`` loads an LM by name: a parameter so that tests
    serve a stand-in through this code.
    """
    name = cfg.serve.model
    chosen, why = servable_model(cfg)  # a one-line error when none is current
    if chosen == "popular":
        from conrec.serve.popular import PopularDislikePredictor

        return PopularDislikePredictor(events, sid_map["item_id"].cast(pl.String).to_list()), name
    warn_fallback(name, chosen, why)
    return load_lm(cfg, chosen), chosen


def warn_fallback(requested: str, chosen: str, why: str | None) -> None:
    """Log that ``requested`` (``serve.model``) is passed over for ``chosen``, and ``why``; nothing when they agree."""
    if chosen != requested:
        log.warning("not serving the %s model (%s); serving the %s model instead", requested, why, chosen)


POPULAR_STAGES = ("data", "sid")  # what ``serve.model: popular`` counts over: its choice, its currency and its identity


def servable_model(cfg: PipelineConfig) -> tuple[str, str | None]:
    """(the model ``conrec serve`` with ``cfg`` serves now, why ``serve.model`` was passed over or None); a one-line
    :class:`StageInputError` when none is current. Nothing is loaded: :func:`load_predictor` makes this choice,
    ``model_current`` (:func:`current_build`) the same one without the refusal's message."""
    from conrec.llm.inference.predict_request import newest_current_model

    if cfg.serve.model == "popular":
        from conrec.pipeline import require_current

        require_current(RunDir(cfg.run_dir), cfg, list(POPULAR_STAGES), who="serve.model: popular")
        return "popular", None
    return newest_current_model(cfg, cfg.serve.model)


def current_build(cfg: PipelineConfig) -> str | None:
    """The build (``<model>@<identity>``) a fresh ``conrec serve`` with ``cfg`` would serve now; None when none.

    Why: a served model is current while this equals its build. Comparing the served stage's identity alone
    missed every other reason a restart (or ``conrec predict``) refuses the model (an events file changed in place,
    a parent run's stage rebuilt) and a requested GRPO model finished after the server fell back to SFT.
    It makes the choice :func:`servable_model` makes without its refusal's message: that probes the run's lock
    (:meth:`conrec.runs.RunDir.busy_note`), which ``/healthz`` must not take every second while a stage starts."""
    from conrec.llm.inference.predict_request import choose_model

    run = RunDir(cfg.run_dir)
    try:
        if cfg.serve.model == "popular":
            current = run.root.is_dir() and all(run.stale_reason(cfg, s) is None for s in POPULAR_STAGES)
            name = "popular" if current else None
        else:
            name, _ = choose_model(cfg, cfg.serve.model)
    except ConrecError:
        return None
    return None if name is None else f"{name}@{served_identity(run, name)}"


CURRENT_TTL_S = 1.0  # how long a model_current answer is reused: it reads and hashes the run's records and source files


T = TypeVar("T")


def cached_for(seconds: float, fn: Callable[[], T], clock: Callable[[], float] | None = None) -> Callable[[], T]:
    """``fn`` whose answer is reused for ``seconds`` (``clock``: the monotonic clock), so that frequent health checks
    (and the inspector page's views, which ask the same ``loaded_current``) do not each read the run's records."""
    import time

    now = clock or time.monotonic
    lock = threading.Lock()
    last: list[tuple[float, T]] = []  # (when asked, the answer), once asked

    def cached() -> T:
        with lock:
            if not last or now() - last[0][0] >= seconds:
                answer = fn()
                last[:] = [(now(), answer)]
            return last[0][1]

    return cached


def create_app_from_run(cfg: PipelineConfig, load_lm: LmLoader = load_lm, pinned: str | None = None) -> FastAPI:
    """Load a run directory once (tables + model) and build the app on it (``load_lm``: see
    :func:`load_predictor`). ``pinned``: the model to load instead of ``cfg``'s choice (a restarted worker loads
    the one its parent serves); ``/healthz`` still compares it with what ``cfg`` asks for."""
    from conrec.io import read_parquet
    from conrec.serve.ui import mount_inspector

    run = RunDir(cfg.run_dir)
    require_served_run(run, pinned or cfg.serve.model)
    before = {m: served_identity(run, m) for m in ("popular", *MODEL_STAGES)}
    inputs = loaded_identities(run)
    items = read_parquet(run.items, what="items table")
    sid_map = read_parquet(run.sid_map, what="SID map")
    events = read_parquet(run.events, what="events") if run.events.exists() else None
    if events is None:
        log.warning("no events table at %s: user_id requests will get 404", run.events)
    loading = cfg if pinned is None else cfg.model_copy(update={"serve": cfg.serve.model_copy(update={"model": pinned})})
    predictor, name = load_predictor(loading, sid_map, events, load_lm)
    identity = served_identity(run, name)
    log.info("serving model %r from %s (%d items)", name, Path(cfg.run_dir), sid_map.height)
    build = f"{name}@{identity}"
    loaded_current = cached_for(CURRENT_TTL_S, lambda: loaded_identities(run) == inputs)
    app = create_app(
        predictor, items, sid_map, events, cfg.serve, model_name=name, model_current=cached_for(CURRENT_TTL_S, lambda: current_build(cfg) == build),
        model_build=build, requested_model=cfg.serve.model, explain_events=lambda: loaded_explanation_events(run, cfg, inputs["data"]),
        loaded_current=loaded_current,
    )
    app.state.served = build  # what a worker restarted later must load again (conrec.serve.workers)
    app.state.loaded = inputs  # and the stages it must read its tables from
    mount_inspector(app, cfg, items, events, loaded_current)  # GET /ui; its eval lists go when /healthz's loaded_current does
    # a stage finished while the tables and the model loaded: which ones are in memory is unknown
    if identity != before[name] or loaded_identities(run) != inputs:
        raise StageInputError(f"the {name} model or its data in {run.root} changed while loading (a stage reran); start again")
    return app


def require_served_run(run: RunDir, model: str) -> None:
    """A one-line :class:`StageInputError` when the run directory to serve ``model`` from does not exist."""
    from conrec.pipeline import require_run_dir

    last = "sid" if model == "popular" else model
    require_run_dir(run, "conrec serve reads its model and tables there", f"run `conrec data` and the stages after it up to {last} first")


def check_servable(cfg: PipelineConfig) -> tuple[str, dict[str, str | None]]:
    """(the build ``conrec serve`` with ``cfg`` serves, the identities of the other stages it reads): what the
    supervisor of ``serve.processes`` > 1 workers checks and hands to them (:func:`conrec.serve.workers.serve_processes`),
    loading no model and no table. A missing run directory or no current model is the usual one-line error, said once.

    Why not :func:`create_app_from_run`: the parent built the whole app to check the run, and could not free it
    (FastAPI's caches keep the endpoint closures, so the model, catalogue, users and explainer lived on): the server
    held one loaded copy more than it has workers, and the workers began loading only after the parent had. What
    only a load finds (non-finite weights, an unreadable table) a worker finds, and it stops the server with its
    one line (:func:`conrec.serve.workers.app_from_env`) rather than being restarted in a loop."""
    run = RunDir(cfg.run_dir)
    require_served_run(run, cfg.serve.model)
    inputs = loaded_identities(run)
    name, why = servable_model(cfg)
    warn_fallback(cfg.serve.model, name, why)
    return f"{name}@{served_identity(run, name)}", inputs


LOADED_STAGES = ("data", "sid", "eval")  # besides the model's: the tables, explanations and inspector lists come from them


def loaded_identities(run: RunDir) -> dict[str, str | None]:
    """The identities of the stages a server reads besides its model (:data:`LOADED_STAGES`).

    Why: the co-dislike reasons, titles, users and inspector lists are answers too; compared before
    and after loading (and by a restarted worker) so that no server mixes its model with data read later."""
    return {stage: run.stage_identity(stage) for stage in LOADED_STAGES}


def loaded_explanation_events(run: RunDir, cfg: PipelineConfig, data_identity: str | None) -> pl.DataFrame | None:
    """The training events co-dislike reasons are counted on (:func:`conrec.explain.explanation_events`), read at
    the first explanation, from the data stage the server loaded at start-up (``data_identity``): a
    :class:`StageInputError` (reasons then cite SIDs only, said once) when that stage has rerun since.

    Why: read at the first explanation from whatever data stage the run held then, two servers of one model gave
    different reasons for one request after `conrec data` reran. Reading them at start-up instead made every server
    process read the events and samples again and keep a copy for its lifetime, explanations asked or not. A
    ``conrec data`` rerun changes the stage's identity (its records), so comparing it before and after the read keeps
    the guarantee; files edited in place by hand, outside conrec, are not detected (as for the model's inputs)."""
    def unchanged() -> None:
        if run.stage_identity("data") != data_identity:
            raise StageInputError(
                f"the data stage in {run.root} has rerun since this server started, and co-dislikes are counted on the "
                "data it loaded: restart conrec serve for them"
            )

    unchanged()
    counted = explanation_events(run, cfg.data.split)
    unchanged()
    return counted


def served_identity(run: RunDir, name: str) -> str:
    """What a served model is: its stage's identity (:meth:`conrec.runs.RunDir.stage_identity`), for the
    ``popular`` model the data and SID stages' it counts over. It changes whenever they rerun."""
    return "+".join(str(run.stage_identity(stage)) for stage in (POPULAR_STAGES if name == "popular" else (name,)))


def check_can_listen(host: str, port: int) -> None:
    """One line when ``host:port`` cannot be listened on (an unknown host, a port in use), as uvicorn binds it
    (``SO_REUSEADDR``); the socket is closed again at once."""
    import errno
    import socket

    try:  # "" is every interface, as asyncio reads it
        addresses = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror} (serve.host / --host)") from None
    for family, kind, proto, _, address in addresses:  # each, as asyncio's create_server binds each
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # as asyncio: "::" beside 0.0.0.0
                sock.bind(address)
        except OSError as exc:
            hint = " (another server? serve.port / --port)" if exc.errno == errno.EADDRINUSE else ""
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}{hint}") from None


SIGHUP_IGNORED = "SIGHUP ignored: the server keeps the model it loaded (there is no reload); restart conrec serve to serve a retrained one"


@contextmanager
def sighup_ignored() -> Iterator[None]:
    """Within the block, SIGHUP logs :data:`SIGHUP_IGNORED` instead of ending the process (main thread only, where
    signals can be handled; elsewhere nothing changes).

    Why: SIGHUP is the usual "reload" signal, and a closed terminal sends it. Its default action ended a
    single-process server at once (exit status 129, no line, requests in flight not answered), while with
    ``serve.processes`` > 1 it was ignored with this warning (:class:`conrec.serve.workers._Supervisor`):
    reloading would serve whatever model the run holds then, so a restart is the one way to change it."""
    import signal

    from conrec.runtime import signal_handlers

    if not hasattr(signal, "SIGHUP"):  # not on Windows
        yield
        return
    with signal_handlers({signal.SIGHUP: lambda signum, frame: log.warning(SIGHUP_IGNORED)}):
        yield


def run(cfg: PipelineConfig, host: str | None = None, port: int | None = None) -> None:
    """``conrec serve``: load the run, then serve with uvicorn: one process with the model in memory, or
    ``serve.processes`` worker processes with one copy each (:mod:`conrec.serve.workers`), the parent only checking
    the run (:func:`check_servable`)."""
    import uvicorn

    if port is not None and not 1 <= port <= 65535:  # before seconds of model loading (it was an OverflowError after)
        raise ConfigError(f"port {port} is out of range: must be 1..65535")
    check_max_k(cfg.serve)  # here, not at config load: other commands on the run never read it
    if not logging.getLogger().handlers:
        logging.basicConfig(level=cfg.serve.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    bind = host or cfg.serve.host
    port = cfg.serve.port if port is None else port
    # the address served, for the Host check of every process (serve.allowed_hosts)
    cfg = cfg.model_copy(update={"serve": cfg.serve.model_copy(update={"host": bind, "port": port})})
    check_can_listen(bind, port)  # before seconds of model loading; uvicorn said it after them, with exit 3
    warning = exposure_warning(bind, resolve_api_key(cfg.serve.api_key) is not None)
    if warning is not None and log.isEnabledFor(logging.WARNING):
        log.warning(warning)
    elif warning is not None:  # serve.log_level error/critical (a run directory's config may set it) must not hide it
        print(f"WARNING: {warning}", file=sys.stderr, flush=True)
    options: dict[str, Any] = dict(host=bind, port=port, log_level=cfg.serve.log_level, access_log=cfg.serve.access_log)
    options.update(set_read_timeout(cfg.serve.request_read_timeout_s))  # each request must arrive whole in time
    with sighup_ignored():  # from before the load (13-28 s for a real model): a closed terminal then ended it too
        if cfg.serve.processes == 1:
            uvicorn.run(create_app_from_run(cfg), **options)
            return
        from conrec.serve.workers import serve_processes, worker_threads

        served, loaded = check_servable(cfg)  # once, before any worker starts; the parent loads no copy of its own
        log.info("serving with %d worker processes, %d torch thread(s) each", cfg.serve.processes, worker_threads(cfg))
        serve_processes(cfg, options, served, loaded)
