"""The inspector page, ``GET /ui``: pick a user, see what each model expects them to dislike and
why, and score a slate, all in a browser.

No build step: ``ui/index.html``, ``ui/app.js`` and ``ui/app.css`` are static files; the page
fetches JSON from ``/ui/api/...`` (read-only views of the run, below) and from the API itself
(``/v1/dislikes`` for the served LM's list, ``/v1/score`` for slates), so its numbers are the API's.

Safety, by construction: the JavaScript writes data only through ``textContent`` (never
``innerHTML``) and binds events with ``addEventListener``, and the Content-Security-Policy forbids
inline scripts, inline handlers and other origins, so a title such as ``<script>alert(1)</script>``
is shown as text. The page shell and its two assets carry no data and are open (a browser cannot
attach a header to a page load); every data call sends the API key the user typed (same key, same
check, :class:`conrec.serve.limits.ApiKeyAuth`), and the API's limits apply (``max_history``,
``max_k``, ``max_candidates``, body size); searches return at most :data:`MAX_SEARCH` rows.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from importlib import resources
from typing import Any

import polars as pl
from fastapi import APIRouter, FastAPI, HTTPException, Query, Request
from fastapi.responses import Response

from conrec.config import PipelineConfig
from conrec.errors import ConrecError, DataValidationError
from conrec.runs import RunDir
from conrec.serve.catalog import History, SidCatalog
from conrec.serve.config import ServeConfig
from conrec.serve.inspect_data import EvalPoint, Inspector, ItemInfo, ModelList, iso_date
from conrec.serve.limits import quote
from conrec.serve.popular import PopularDislikePredictor
from conrec.serve.schemas import DislikeRequest, Reason

log = logging.getLogger("conrec.serve")
UI_PATH = "/ui"
ASSETS = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
# The shell and assets hold no data, so they load without the API key (see the module docstring).
PUBLIC_PATHS = frozenset({UI_PATH, *(f"{UI_PATH}/assets/{name}" for name in ASSETS)})
MAX_SEARCH = 50  # rows a catalogue or user search returns at most
MAX_QUERY_CHARS = 200
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

# Why the page asks the API nothing on a point without a prior event: /v1/dislikes and /v1/score refuse an empty
# history (422, "history is empty"), and the page showed that error as the served model's list.
NO_HISTORY = (
    "no event before this point, and the API answers a history of at least one event: the served model is not asked, "
    "and a slate cannot be scored here"
)
Explain = Callable[[str, History], Reason]
HistoryOf = Callable[[DislikeRequest, str], History]  # the API's: limits, unknown ids and users -> 4xx
Shown = tuple[list[ModelList], str | None, str | None]  # the eval lists a view shows, why none (or None), what to run then
# Why the page leaves out lists the eval stage still holds current: they are the lists it read at start-up, and the
# stage (or one it reads) ran again since. Said when the run is current again by then: only a restart reads the new ones.
RELOAD_NEEDED = (
    "the run's data, SID or eval stage ran again after this server started, so the lists it read then are an earlier "
    "evaluation's",
    "restart conrec serve to show the current evaluation's lists",
)


def _asset(name: str) -> bytes:
    return (resources.files("conrec.serve") / "ui" / name).read_bytes()


def _served(request: Request) -> tuple[SidCatalog, HistoryOf, Explain]:
    """The app's own catalogue, history check and explanations (``create_app`` puts them on ``app.state``)."""
    state = request.app.state
    return state.catalog, state.history_of, state.explain


def stale_now(run: RunDir, cfg: PipelineConfig) -> tuple[str, str]:
    """Why the eval stage's lists read at start-up are no longer shown, and what to run: as at start-up
    (:meth:`RunDir.stale_message`, :meth:`RunDir.rerun_hint`), or :data:`RELOAD_NEEDED` when the eval stage is current
    again (its new lists are not the ones in memory). The hint's probe of the run's lock (:meth:`RunDir.busy_note`,
    up to 0.2 s while a stage runs) is asked only for a view made while the lists are left out, at most once a second."""
    try:
        why = run.stale_message(cfg, "eval")
        return RELOAD_NEEDED if why is None else (why, run.rerun_hint(cfg, "eval"))
    except ConrecError as exc:  # e.g. a record being rewritten: the view still answers, without the lists
        return f"it cannot be checked now ({exc})", "see the server's log, or restart conrec serve"


def shown_lists(inspector: Inspector, run: RunDir, cfg: PipelineConfig, loaded_current: Callable[[], bool] | None) -> Callable[[], Shown]:
    """What the views show of the eval stage's lists, asked per view: the lists read at start-up while
    ``loaded_current`` (``/healthz``'s: the data, SID and eval stages the server read are the run's still) holds, else
    none and :func:`stale_now`'s reason and hint (both reused for :data:`~conrec.serve.app.CURRENT_TTL_S`); the
    server logs it once. Without ``loaded_current`` (not served from a run), or with the lists left out at start-up,
    the start-up answer.

    Why: the check ran at start-up only, so 25 s into an SFT retrain of the served run ``/healthz`` said
    ``loaded_current: false`` while the page still showed the old SFT model's lists as the eval stage's."""
    from conrec.serve.app import CURRENT_TTL_S, cached_for  # here: conrec.serve.app imports this module on use

    at_start: Shown = (inspector.lists, inspector.stale, inspector.stale_hint)
    if loaded_current is None or not inspector.lists:
        return lambda: at_start
    why_now = cached_for(CURRENT_TTL_S, lambda: stale_now(run, cfg))
    warned: list[bool] = []

    def shown() -> Shown:
        if loaded_current():
            return at_start
        why, hint = why_now()
        if not warned:
            warned.append(True)
            log.warning("inspector page: the eval stage's lists are no longer shown: it is not current (%s); %s", why, hint)
        return [], why, hint

    return shown


def inspector_router(inspector: Inspector, events: pl.DataFrame | None, cfg: ServeConfig, shown: Callable[[], Shown] | None = None) -> APIRouter:
    """Routes of the page (``/ui``, its assets) and its read-only JSON views (``/ui/api/...``); ``shown``: the eval
    lists the views show (:func:`shown_lists`; None: the inspector's, as read at start-up)."""
    router = APIRouter(include_in_schema=False)
    lists_now = shown or (lambda: (inspector.lists, inspector.stale, inspector.stale_hint))
    popular_box: list[PopularDislikePredictor] = []

    def popular(catalog: SidCatalog) -> PopularDislikePredictor:
        """The popularity predictor for pasted histories, built on first use (as ``serve.model: popular``)."""
        if not popular_box:
            popular_box.append(PopularDislikePredictor(events, list(catalog.sid)))
        return popular_box[0]

    def k_of(k: int | None) -> int:
        k = cfg.default_k if k is None else k
        if not 1 <= k <= cfg.max_k:
            raise HTTPException(422, f"k = {k} is out of range: must be 1..{cfg.max_k}")
        return k

    def entry(item: str, rank: int, score: float | None, future: set[str], history: History, explain: Explain) -> dict[str, Any]:
        return {
            **inspector.info.row(item),
            "rank": rank,
            "score": score,
            "hit": item in future,
            "reason": explain(item, history).model_dump(),
        }

    def point_view(point: EvalPoint, k: int, explain: Explain) -> dict[str, Any]:
        history = point.history(cfg.max_history)
        n = len(history[0])
        future = set(point.future_negs)
        shown, stale, hint = lists_now()
        lists = []
        for m in shown:
            ranked = m.items.get(point.sample_id, [])[:k]
            scores = m.scores.get(point.sample_id, [])
            rows = [entry(i, r, scores[r - 1] if r <= len(scores) else None, future, history, explain) for r, i in enumerate(ranked, 1)]
            lists.append({"name": m.name, "kind": m.kind, "items": rows})
        return {
            "source": "point",
            "sample_id": point.sample_id,
            "user_id": point.user_id,
            "date": iso_date(point.ts),
            "history": [{"item_id": i, "feedback": f} for i, f in zip(*history)],
            "n_before": point.n_before,  # the user's events before the point: the history holds the newest of them
            "n_dislikes_before": point.n_dislikes_before,
            "exclude": inspector.excluded(point, history),  # the page's /v1/dislikes leaves these out too, as the eval did
            "timeline": inspector.timeline(*history, point.hist_ts[-n:] if point.hist_ts else None),
            "future": [inspector.info.row(i) for i in point.future_negs],
            "lists": lists,
            "precomputed_stale": stale,  # why the eval stage's lists are not among them (as in the overview), or null
            "precomputed_hint": hint,
            "live_unscored": inspector.live_unscored,  # why the page marks no hit in the served model's live list, or null
            "live_unasked": None if n else NO_HISTORY,  # why the page asks the API nothing on this point, or null
        }

    def page_response(body: bytes, media_type: str) -> Response:
        return Response(body, media_type=media_type, headers=SECURITY_HEADERS)

    @router.get(UI_PATH)
    def page() -> Response:
        return page_response(_asset("index.html"), "text/html; charset=utf-8")

    @router.get(UI_PATH + "/assets/{name}")
    def asset(name: str) -> Response:
        if name not in ASSETS:
            raise HTTPException(404, f"no asset {quote(name)}")
        return page_response(_asset(name), ASSETS[name])

    @router.get(UI_PATH + "/api/overview")
    def overview() -> dict[str, Any]:
        shown, stale, hint = lists_now()
        return {
            "split": inspector.split,
            "n_points": len(inspector.points),
            "n_users": len({p.user_id for p in inspector.points}),
            "precomputed": [{"name": m.name, "kind": m.kind} for m in shown],
            "precomputed_stale": stale,  # why the eval stage's lists are not shown, or null
            "precomputed_hint": hint,  # then what to run to have them (what the server logs)
            "live_unscored": inspector.live_unscored if inspector.points else None,  # the served model saw the points' futures
        }

    @router.get(UI_PATH + "/api/points")
    def points(user: str = Query("", max_length=MAX_QUERY_CHARS), limit: int = Query(MAX_SEARCH, ge=1, le=MAX_SEARCH)) -> dict[str, Any]:
        found = inspector.find_points(user, len(inspector.points))  # as typed: a user id may begin with a space
        rows = [
            {"sample_id": p.sample_id, "user_id": p.user_id, "date": iso_date(p.ts), "n_history": p.n_before, "n_future": len(p.future_negs)}
            for p in found[:limit]
        ]
        return {"split": inspector.split, "points": rows, "total": len(found)}  # total: all that matched

    @router.get(UI_PATH + "/api/points/random")
    def random_point(request: Request, k: int | None = None) -> dict[str, Any]:
        try:
            point = inspector.random_point(random.Random())
        except DataValidationError as exc:
            raise HTTPException(404, str(exc)) from exc
        return point_view(point, k_of(k), _served(request)[2])

    @router.get(UI_PATH + "/api/points/{sample_id}")
    def one_point(request: Request, sample_id: int, k: int | None = None) -> dict[str, Any]:
        point = inspector.by_sample.get(sample_id)
        if point is None:
            raise HTTPException(404, f"no evaluation point {sample_id} in split {inspector.split!r}")
        return point_view(point, k_of(k), _served(request)[2])

    @router.post(UI_PATH + "/api/history")
    def pasted(request: Request, body: DislikeRequest) -> dict[str, Any]:
        """A pasted history, read and checked exactly as ``/v1/dislikes`` reads its body."""
        catalog, _, explain = _served(request)
        if body.exclude is not None:  # the page never sends it; taken and ignored, it would be a list that is not this one
            raise HTTPException(422, "exclude is not used by a pasted history's view; leave it out")
        history, skipped = request.app.state.history_and_skipped(body, "")
        k = k_of(body.k)
        lists = []
        if cfg.model != "popular":  # else the page's live list (/v1/dislikes) is this very ranking
            ranked = popular(catalog).recommend([history], k)[0]
            rows = [entry(i, r, s, set(), history, explain) for r, (i, s) in enumerate(ranked, 1)]
            lists.append({"name": "popularity", "kind": "baseline_live", "items": rows})  # computed now, not read from eval
        return {
            "source": "pasted",
            "history": [{"item_id": i, "feedback": f} for i, f in zip(*history)],
            "timeline": inspector.timeline(*history),
            "future": [],
            "lists": lists,
            "skipped_items": skipped,  # unknown ids left out (serve.unknown_items: skip), shown under the history
        }

    @router.get(UI_PATH + "/api/items")
    def items(request: Request, q: str = Query(..., max_length=MAX_QUERY_CHARS), limit: int = Query(MAX_SEARCH, ge=1, le=MAX_SEARCH)) -> dict[str, Any]:
        rows, total = inspector.info.search(q, limit, _served(request)[0].sid)
        return {"items": rows, "total": total}  # total: all that matched

    return router


def mount_inspector(
    app: FastAPI, cfg: PipelineConfig, items: pl.DataFrame, events: pl.DataFrame | None, loaded_current: Callable[[], bool] | None = None
) -> None:
    """Add the page to an app built by :func:`conrec.serve.app.create_app` on ``cfg.run_dir``.

    The evaluation points are the eval stage's split (``eval.split``). A run whose samples or
    predictions cannot be read still serves the API; the page then offers pasted histories only.
    The eval stage's lists are left out, with a warning, unless that stage is current for ``cfg``; and from the
    first view after ``loaded_current`` (the app's ``/healthz`` check) turns false, until a restart (:func:`shown_lists`).
    """
    run = RunDir(cfg.run_dir)
    try:
        inspector = Inspector.from_run(run, cfg, items, events)
    except ConrecError as exc:
        log.warning("inspector page: no evaluation points (%s)", exc)
        inspector = Inspector(info=ItemInfo.build(items), points=[], lists=[], split=cfg.eval.split)
    if inspector.stale:
        log.warning("inspector page: the eval stage's lists are not shown: it is not current (%s); %s", inspector.stale, inspector.stale_hint)
    app.include_router(inspector_router(inspector, events, cfg.serve, shown_lists(inspector, run, cfg, loaded_current)))
