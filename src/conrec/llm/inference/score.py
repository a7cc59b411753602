"""``conrec score``: the dislike score of each item of a slate, for one request (JSON) or a batch (Parquet).

One request is the body of ``POST /v1/score`` (validated by the same
:class:`conrec.serve.schemas.ScoreRequest`): a history (``user_id`` of the run's events,
``negative``/``positive`` lists or a chronological ``history``), ``candidates``, optional
``threshold`` and ``explain``. It prints a table and returns it as a DataFrame.

A batch is a Parquet table with a ``candidates`` list column and the histories either as
``hist_items``/``hist_feedback`` (the samples layout), as ``negative``/``positive`` lists, or, as
``/v1/score`` takes them, as a ``user_id`` of the run's events alone; the output keeps the batch's
other columns (ids such as ``sample_id``, ``user_id``, ``request_id``, in row order) and adds
``scores``, ``ranks`` and, with ``--threshold``, ``decisions`` (lists aligned with ``candidates``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import polars as pl
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from conrec.console_text import shown
from conrec.errors import ConfigError, DataValidationError, require_columns
from conrec.history import check_history_limit
from conrec.io import check_output_file, read_parquet, write_parquet
from conrec.runs import RunDir
from conrec.slate import decide, lm_score_column, lm_score_note, rank_scores

if TYPE_CHECKING:
    from conrec.config import PipelineConfig
    from conrec.explain import Explainer
    from conrec.llm.inference.predict import Predictor
    from conrec.serve.schemas import DislikeRequest

History = tuple[list[str], list[int]]
_HISTORY_COLUMNS = ("hist_items", "hist_feedback", "negative", "positive")
Body = TypeVar("Body", bound="DislikeRequest")  # a serve request schema (ScoreRequest is one too)


def read_score_request(path: Path, run: RunDir, max_history: int) -> tuple[History, list[str], float | None, bool]:
    """(history, candidates, threshold, explain) from a ``/v1/score`` JSON body in ``path``; a ``user_id``'s
    history is its newest ``max_history`` events, as the server cuts it (``serve.max_history``)."""
    from conrec.history import read_request_text
    from conrec.serve.schemas import ScoreRequest

    p = Path(path)
    req, history = request_body(read_request_text(p, "score request"), ScoreRequest, f"score request {p}", run, max_history)
    return history, list(req.candidates), req.threshold, req.explain


def request_body(text: str, schema: type[Body], source: str, run: RunDir, max_history: int) -> tuple[Body, History]:
    """A serve request body (JSON ``text``) validated as the server validates it, and its history: the lists it
    gives (refused over ``max_history`` events, as the server refuses them), or its ``user_id``'s newest
    ``max_history`` events. What ``score --request`` and ``predict
    --history`` both read; an error names ``source`` and the field."""
    try:
        # decoded first, then validated: the server's path (FastAPI validates the decoded body). Validating the
        # JSON text directly kept only one of `negative` and its alias `neg` when both were given (the server: 422)
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataValidationError(f"{source} is not valid JSON: {exc}") from None
    try:
        req = schema.model_validate(obj)
    except ValidationError as exc:
        lines = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
        raise DataValidationError(f"{source}: {lines}") from None
    history = req.events()
    if history is not None:
        check_history_limit(history, max_history, source)  # the server's 413: the CLI answers the histories it answers
    else:
        known = run_histories(run, source, max_history)
        if req.user_id not in known:
            raise DataValidationError(f"{source}: unknown user_id {req.user_id!r} (not in the run's events)")
        history = known[req.user_id]
    return req, history


def run_histories(run: RunDir, where: str, max_history: int) -> dict[str, History]:
    """Every user's history in the run's events, as ``/v1/score`` reads a ``user_id``: the newest
    ``max_history`` events (pass ``serve.max_history``, so that the CLI and the server read the same
    history and give the same scores and explanations)."""
    from conrec.serve.catalog import user_histories

    if not run.events.exists():
        raise DataValidationError(f"{where}: user_id given but the run has no events table ({run.events})")
    return user_histories(read_parquet(run.events, what="events"), max_history)


def batch_histories(df: pl.DataFrame, where: str, known: dict[str, History] | None = None) -> list[History]:
    """Histories of a batch table: ``hist_items``/``hist_feedback``, ``negative``/``positive`` lists, or
    a ``user_id`` alone, looked up in ``known`` (the run's events: :func:`run_histories`)."""
    for column in [c for c in ("hist_items", "hist_feedback", "negative", "positive") if c in df.columns]:
        require_list_column(df, column, where)
    if "hist_items" in df.columns and "hist_feedback" in df.columns:
        histories = [
            (list(map(str, h or [])), list(fb or []))  # feedback checked with every history (check_history_shape)
            for h, fb in zip(df["hist_items"].to_list(), df["hist_feedback"].to_list())
        ]
        refuse_unread_user_ids(df, histories, where, "hist_items/hist_feedback")
        return histories
    if "negative" in df.columns or "positive" in df.columns:
        neg = df["negative"].to_list() if "negative" in df.columns else [[]] * df.height
        pos = df["positive"].to_list() if "positive" in df.columns else [[]] * df.height
        histories = [
            ([str(i) for i in (p or [])] + [str(i) for i in (n or [])], [1] * len(p or []) + [-1] * len(n or []))
            for n, p in zip(neg, pos)
        ]
        refuse_unread_user_ids(df, histories, where, "negative/positive")
        return histories
    if "user_id" in df.columns and known is not None:
        if missing := [n for n, u in enumerate(df["user_id"].to_list()) if u is None]:
            raise DataValidationError(f"{where}: {len(missing)} row(s) without a user_id, e.g. row {missing[0]}")
        users = [str(u) for u in df["user_id"].to_list()]
        unknown = sorted({u for u in users if u not in known})
        if unknown:
            raise DataValidationError(f"{where}: {len(unknown)} user_id(s) not in the run's events, e.g. {unknown[:5]}")
        return [known[u] for u in users]
    raise DataValidationError(
        f"{where}: needs hist_items/hist_feedback or negative/positive columns, or user_id of the run's events; have {df.columns}"
    )


def refuse_unread_user_ids(df: pl.DataFrame, histories: list[History], where: str, columns: str) -> None:
    """One line for the first row whose history ``columns`` are empty while it has a ``user_id``.

    Why: a table with history columns takes every row's history from them, so its ``user_id`` column is kept as an
    id and never read as a history (a ``user_id`` is read only from a table without history columns, as
    docs/serving.md says). A mixed table's user_id rows were refused as "the history is empty", which said nothing
    of the user_id the row has."""
    if "user_id" not in df.columns:
        return
    for n, ((items, _), user) in enumerate(zip(histories, df["user_id"].to_list())):
        if not items and user is not None:
            raise DataValidationError(
                f"{where}{row_label(n, df.height)}: the history is empty and its user_id {str(user)!r} is not read: a table "
                f"with {columns} columns takes every row's history from them; score the user_id rows in a table of "
                "their own (user_id and candidates, no history columns)"
            )


def require_list_column(df: pl.DataFrame, column: str, where: str) -> None:
    """A batch column of lists (of item ids, or of feedback values): a text "P1,P2" was split into its characters."""
    if not isinstance(df.schema[column], (pl.List, pl.Array, pl.Null)):  # Null: every row empty (an all-None column)
        raise DataValidationError(f"{where}: {column!r} must be a list column (a list per row), got {df.schema[column]}")


def score_batch(
    predictor: Predictor, df: pl.DataFrame, threshold: float | None, where: str = "batch", known: dict[str, History] | None = None,
    explainer: Explainer | None = None, parsed: tuple[list[History], list[list[str]]] | None = None,
) -> pl.DataFrame:
    """The batch table's other columns + ``candidates``, ``scores``, ``ranks`` (+ ``decisions``; + ``reasons``,
    one sentence per candidate, with an ``explainer``); ``known``: the histories of ``user_id`` rows (see
    :func:`batch_histories`); ``parsed``: :func:`batch_slates` of ``df`` when the caller has it already."""
    histories, slates = parsed if parsed is not None else batch_slates(df, where, known)
    scores = predictor.score(histories, slates)
    kept = [c for c in df.columns if c not in (*_HISTORY_COLUMNS, "candidates", "scores", "ranks", "decisions", "reasons")]
    out = pl.DataFrame(
        [df[c] for c in kept]
        + [
            pl.Series("candidates", slates, dtype=pl.List(pl.String)),
            pl.Series("scores", scores, dtype=pl.List(pl.Float64)),
            pl.Series("ranks", [rank_scores(s) for s in scores], dtype=pl.List(pl.Int64)),
        ]
    )
    if threshold is not None:
        out = out.with_columns(pl.Series("decisions", [decide(s, threshold) for s in scores], dtype=pl.List(pl.String)))
    if explainer is not None:
        reasons = [[explainer.explain(c, *h).text for c in slate] for h, slate in zip(histories, slates)]
        out = out.with_columns(pl.Series("reasons", reasons, dtype=pl.List(pl.String)))
    return out


def batch_slates(df: pl.DataFrame, where: str, known: dict[str, History] | None = None) -> tuple[list[History], list[list[str]]]:
    """(histories, candidate slates) of a batch table, checked for a ``candidates`` column and rows."""
    require_columns(df, ("candidates",), f"{where} (a list of item ids per row in 'candidates')")
    if df.height == 0:
        raise DataValidationError(f"{where}: no rows to score")
    require_list_column(df, "candidates", where)
    raw = df["candidates"].to_list()
    for n, s in enumerate(raw):
        if s is not None and any(c is None for c in s):  # str(None) read as an unknown item id 'None'
            row = row_label(n, len(raw))
            raise DataValidationError(f"{where}{row}: the candidates hold a null (missing) item id; give an item id for each")
    slates = [[str(c) for c in (s or [])] for s in raw]
    return batch_histories(df, where, known), slates


def row_label(n: int, rows: int) -> str:
    """`` row N`` naming row ``n`` of a batch of ``rows``, or "" for a batch of one (pure): the one label of this
    module's row messages ("score batch b.parquet row 1: ..."; a one-row batch said "row 0" in one of them)."""
    return f" row {n}" if rows > 1 else ""


def check_item_ids(histories: list[History], slates: list[list[str]], known: set[str], where: str) -> None:
    """Every history and candidate id in the run's SID map, checked before a model loads (it took seconds
    to load one only to refuse an unknown id); the message names the row and whether it is a history or
    a candidate."""
    from conrec.history import check_history_shape, check_known_items, repeated_ids

    for n, (history, slate) in enumerate(zip(histories, slates)):
        row = row_label(n, len(slates))
        # the predictor's own check, said here with the file's name, before seconds of model loading
        check_history_shape(*history, f"{where}{row}: the history")
        if not slate:
            raise DataValidationError(f"{where}{row}: the candidate slate is empty; give at least one item id to score")
        repeated = repeated_ids(slate)  # the predictor's check too, but after the model loads
        if repeated:
            raise DataValidationError(f"{where}{row}: the candidates repeat item id(s) {repeated[:10]}; give each candidate once")
        check_known_items(history, known, source=f"{where}{row}: history")
        check_known_items((slate, [0] * len(slate)), known, source=f"{where}{row}: candidates")


def run(
    cfg: PipelineConfig,
    request: Path | None,
    batch: Path | None,
    out: Path | None,
    model: str,
    threshold: float | None,
    explain: bool,
    console: Console | None = None,
) -> pl.DataFrame:
    """``conrec score``: one JSON request (printed as a table) or a Parquet batch (written to ``out``)."""
    from conrec.explain import Explainer
    from conrec.history import known_item_ids
    from conrec.llm.inference.predict_request import check_model_dir, check_unchanged

    console = console or Console()
    if (request is None) == (batch is None):
        raise ConfigError("give exactly one of --request (one JSON request) or --batch (a Parquet table of slates)")
    if threshold is not None and not math.isfinite(threshold):  # nan kept every candidate; a request's "NaN" is refused
        raise ConfigError(f"--threshold must be a finite number, got {threshold}")
    if out is not None:
        check_output_file(out, "--out", suffix=".parquet")
    run_dir = RunDir(cfg.run_dir)
    check_model_dir(cfg, model)  # a wrong name or a stale model fails before torch is imported
    before = run_dir.build_identities(model)  # the model, titles and reasons must come from these stage runs
    if batch is not None:
        target = out or run_dir.eval / "predictions" / f"{model}_scores.parquet"
        if out is None:  # the run's own file: checked before the batch is scored, not at its write
            check_output_file(target, "the scores file", hint="; pass -o FILE to write it elsewhere")
        df = read_parquet(batch, what="score batch")
        where = f"score batch {batch}"
        has_history = any(c in df.columns for c in _HISTORY_COLUMNS)
        known = run_histories(run_dir, where, cfg.serve.max_history) if "user_id" in df.columns and not has_history else None
        parsed = batch_slates(df, where, known)
        for n, hist in enumerate(parsed[0]):  # each row as the server takes one history (a user_id's is cut already)
            check_history_limit(hist, cfg.serve.max_history, f"{where}{row_label(n, len(parsed[0]))}")
        check_item_ids(*parsed, known_item_ids(run_dir), where)
        predictor = _load_predictor(cfg, model)
        explainer = Explainer.for_run(run_dir, predictor.sid_map, cfg.serve.explain_top_n, cfg.data.split, predictor.history_limit) if explain else None
        result = score_batch(predictor, df, threshold, where, known, explainer, parsed)
        check_unchanged(run_dir, model, before)
        write_parquet(result, target)
        console.print(f"{result.height} slates scored ({model} model) -> {shown(target)}", soft_wrap=True)
        return result
    assert request is not None
    history, slate, req_threshold, req_explain = read_score_request(request, run_dir, cfg.serve.max_history)
    check_item_ids([history], [slate], known_item_ids(run_dir), f"score request {request}")
    threshold = threshold if threshold is not None else req_threshold
    explain = explain or req_explain
    predictor = _load_predictor(cfg, model)
    explainer = Explainer.for_run(run_dir, predictor.sid_map, cfg.serve.explain_top_n, cfg.data.split, predictor.history_limit) if explain else None
    titles: dict[str, str] = {}
    if run_dir.items.exists():
        items = read_parquet(run_dir.items, what="items table")
        titles = dict(zip(items["item_id"].cast(pl.String).to_list(), items["title"].cast(pl.String).to_list()))
    scores = predictor.score([history], [slate])[0]
    check_unchanged(run_dir, model, before)
    ranks, decisions = rank_scores(scores), decide(scores, threshold)
    reasons = [explainer.explain(i, *history).text for i in slate] if explainer is not None else [None] * len(slate)
    table = Table(title=f"dislike scores of {len(slate)} candidates ({model} model)" + (f", threshold {threshold:g}" if threshold is not None else ""))
    score_col = lm_score_column(cfg.decode.popularity_prior)  # "log-prob" only when it is one
    cols = ["rank", "item_id", "SID", "title", score_col] + (["decision"] if threshold is not None else []) + (["reason"] if explain else [])
    for col in cols:
        table.add_column(col, justify="right" if col in ("rank", score_col) else "left")
    for j in sorted(range(len(slate)), key=lambda j: ranks[j]):
        row = [str(ranks[j]), shown(slate[j]), predictor.sid_map.sid_of(slate[j]), shown(titles.get(slate[j], "")), f"{scores[j]:.3f}"]
        row += [decisions[j] or ""] if threshold is not None else []
        row += [shown(reasons[j] or "")] if explain else []
        table.add_row(*row)
    console.print(table)
    note = lm_score_note(cfg.decode.popularity_prior)
    if note:
        console.print(note, highlight=False, soft_wrap=True)
    result = pl.DataFrame(
        {"item_id": slate, "score": scores, "rank": ranks, "decision": decisions, "reason": reasons},
        schema={"item_id": pl.String, "score": pl.Float64, "rank": pl.Int64, "decision": pl.String, "reason": pl.String},
    )
    if out is not None:  # the printed table as a file too (it was ignored without a word)
        write_parquet(result, out)
        console.print(f"-> {shown(out)}", soft_wrap=True)
    return result


def _load_predictor(cfg: PipelineConfig, model: str) -> Predictor:
    from conrec.llm.inference.predict import Predictor

    return Predictor.from_run(cfg, model)

