"""What the inspector page (``/ui``) shows, read once from the run directory the server loaded.

Why a module of its own: the page needs more than the API's look-ups (dates, categories, the
evaluation points with their held-out futures, and what the eval stage's other models predicted
for them), and all of it is plain table work that can be tested without a browser or a model.
The LM's own list and every slate score are *not* computed here: the page asks ``/v1/dislikes``
and ``/v1/score`` for them, so they are the API's numbers by construction.
"""

from __future__ import annotations

import math
import random
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

import polars as pl

from conrec.config import PipelineConfig
from conrec.errors import DataValidationError, require_columns
from conrec.eval.baselines import REGISTRY as BASELINE_REGISTRY
from conrec.eval.seen import SEEN_COLUMN, with_seen_items
from conrec.io import read_json, read_parquet
from conrec.runs import RunDir
from conrec.serve.catalog import History
from conrec.stages import MODEL_STAGES

LM_MODELS = tuple(reversed(MODEL_STAGES))  # LM rows first, newest training stage first ("grpo", "sft")
PREFERRED_BASELINES = ("popularity", "sasrec")  # always shown when evaluated; plus the best-scoring one
MAX_BASELINES = 3


def fold(text: str) -> str:
    """``text`` as the title search compares it: NFKC-normalised and case-folded, so that a title stored
    decomposed (e + combining accent) and one typed precomposed match, as do "ﬁ" and "fi", full-width
    and plain letters, "Straße" and "STRASSE"."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())


@dataclass(frozen=True)
class ItemInfo:
    """Title and category of every item of the items table (the page's only source of names)."""

    title: dict[str, str]
    category: dict[str, str]
    folded: dict[str, str] = field(init=False, repr=False)  # fold(title), made once for the searches

    def __post_init__(self) -> None:
        object.__setattr__(self, "folded", {i: fold(t) for i, t in self.title.items()})

    @classmethod
    def build(cls, items: pl.DataFrame) -> ItemInfo:
        require_columns(items, ("item_id", "title"), "items table")
        ids = items["item_id"].cast(pl.String).to_list()
        titles = items["title"].cast(pl.String).fill_null("").to_list()
        cats = items["category"].cast(pl.String).fill_null("").to_list() if "category" in items.columns else [""] * len(ids)
        return cls(title=dict(zip(ids, titles)), category=dict(zip(ids, cats)))

    def row(self, item_id: str) -> dict[str, str]:
        return {"item_id": item_id, "title": self.title.get(item_id, ""), "category": self.category.get(item_id, "")}

    def search(self, query: str, limit: int, allowed: Mapping[str, object]) -> tuple[list[dict[str, str]], int]:
        """Items of ``allowed`` whose title contains ``query`` (any case, Unicode-normalised: :func:`fold`) or whose id starts with it;
        title-prefix matches first, then the rest in catalogue order, at most ``limit``; and how many
        matched in all (the page says "first 50 of 120")."""
        q = fold(query.strip())
        if not q:
            return [], 0
        starts: list[str] = []
        contains: list[str] = []
        for item_id, t in self.folded.items():
            if item_id not in allowed:
                continue
            if t.startswith(q) or item_id.casefold() == q:
                starts.append(item_id)
            elif q in t or item_id.casefold().startswith(q):
                contains.append(item_id)
        return [self.row(i) for i in (starts + contains)[:limit]], len(starts) + len(contains)


@dataclass(frozen=True)
class EvalPoint:
    """One evaluation point: a user's history before time ``ts`` and the dislikes that followed."""

    sample_id: int
    user_id: str
    ts: int
    hist_items: list[str]
    hist_feedback: list[int]
    hist_ts: list[int]
    future_negs: list[str]
    n_before: int  # the user's events before the point, all of them (hist_items holds the newest data.split.max_history)
    n_dislikes_before: int  # the dislikes among them (the samples' hist_negatives)

    def history(self, max_history: int) -> History:
        """The most recent ``max_history`` events, oldest first: what the API is asked with."""
        return self.hist_items[-max_history:], self.hist_feedback[-max_history:]


@dataclass(frozen=True)
class ModelList:
    """A model's precomputed top-K for the evaluated points (``eval/predictions/<name>.parquet``)."""

    name: str
    kind: str  # "lm" or "baseline"
    items: dict[int, list[str]]
    scores: dict[int, list[float]] = field(default_factory=dict)


def iso_date(ts: int | None) -> str:
    """A timestamp in seconds as ``YYYY-MM-DD`` (UTC); empty when unknown."""
    if ts is None:
        return ""
    try:
        return datetime.fromtimestamp(int(ts), tz=timezone.utc).strftime("%Y-%m-%d")
    except (OverflowError, OSError, ValueError):
        return str(ts)


def events_earlier(points: pl.DataFrame, events: pl.DataFrame) -> list[int]:
    """Per point of ``points`` (in its order), how many of its user's ``events`` have an earlier ``ts``."""
    if points.height == 0:
        return []
    ev = (
        events.select(pl.col("user_id").cast(pl.String), pl.col("ts").cast(pl.Int64))
        .sort("user_id", "ts")
        .with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int64).over("user_id").alias("_earlier"))
        .sort("ts", "_earlier")  # among a user's events at one second the asof match takes the last: the largest count
    )
    pts = points.select(pl.int_range(pl.len(), dtype=pl.Int64).alias("_p"), pl.col("user_id").cast(pl.String), pl.col("ts").cast(pl.Int64))
    joined = pts.sort("ts").join_asof(ev, on="ts", by="user_id", strategy="backward", allow_exact_matches=False, check_sortedness=False)
    return [int(n) for n in joined.sort("_p")["_earlier"].fill_null(0).to_list()]


def load_points(
    run: RunDir, split: str, evaluated: set[int] | None, events: pl.DataFrame | None = None, with_seen: bool = True
) -> tuple[list[EvalPoint], pl.Series | None]:
    """The split's evaluation points; only the evaluated ones when the eval stage ran (its
    predictions cover a seeded subset), so that every point shown has every model's list. With the run's
    ``events``, also each point's items rated before it (:func:`conrec.eval.seen.with_seen_items`: what the eval left
    out of every model's list; List[Enum], in the points' order) and its full count of earlier events; without, the
    count is its history's length and the items are None; ``with_seen=False`` (the eval leaves nothing out): the items
    are None too, and not built.

    Why: ``hist_items`` holds only the newest ``data.split.max_history`` events; the page asked the live model with
    those alone, so its list held items the eval's lists beside it never could (user 13's point 1275: 9 of 10), and
    it said "200 events before it (70 dislikes)" of a user who had 608 and 201 (the inference audit of 7 December 2026)."""
    if not run.samples.exists():
        return [], None
    cols = ("sample_id", "user_id", "split", "ts", "hist_items", "hist_feedback", "future_negs")
    samples = read_parquet(run.samples, what="samples (data stage output)")
    require_columns(samples, cols, "samples table")
    chosen = samples.filter(pl.col("split") == split)
    if evaluated:
        chosen = chosen.filter(pl.col("sample_id").is_in(sorted(evaluated)))
    chosen = chosen.sort("sample_id")
    seen = with_seen_items(chosen, events)[SEEN_COLUMN] if events is not None and with_seen else None
    earlier = events_earlier(chosen, events) if events is not None else [0] * chosen.height
    has_ts = "hist_ts" in chosen.columns
    points = []
    for row, n_earlier in zip(chosen.iter_rows(named=True), earlier):
        items = [str(i) for i in row["hist_items"] or []]
        feedback = [int(f) for f in row["hist_feedback"] or []]
        hist_ts = [int(t) for t in row["hist_ts"] or []] if has_ts else []
        ties = sum(1 for t in hist_ts if t == row["ts"])  # events at the point's second before it: in its history
        negatives = row.get("hist_negatives")
        points.append(
            EvalPoint(
                sample_id=int(row["sample_id"]),
                user_id=str(row["user_id"]),
                ts=int(row["ts"]),
                hist_items=items,
                hist_feedback=feedback,
                hist_ts=hist_ts,
                future_negs=[str(i) for i in row["future_negs"] or []],
                n_before=max(n_earlier + ties, len(items)),
                n_dislikes_before=int(negatives) if negatives is not None else sum(1 for f in feedback if f < 0),
            )
        )
    return points, seen


def pick_baselines(available: Sequence[str], metrics: Mapping[str, Mapping[str, object]] | None, headline: str | None) -> list[str]:
    """Popularity and SASRec when evaluated, then the other baselines by ``headline`` (e.g. FHR@10), best first
    (ties and the unscored by name, after the scored), at most :data:`MAX_BASELINES`.

    Why by score after the best: the filler was alphabetical, so with popularity and swing shown the third column
    was category, 5th of 6 baselines by FHR@20 (0.120, where taste x exposure had 0.198)."""
    preferred = [b for b in PREFERRED_BASELINES if b in available]
    others = [b for b in available if b not in preferred]
    scores: dict[str, float] = {}
    if metrics and headline:
        scores = {b: float(v) for b in others
                  if isinstance(v := (metrics.get(b) or {}).get(headline), (int, float)) and math.isfinite(v)}
    ranked = sorted(others, key=lambda b: (b not in scores, -scores.get(b, 0.0), b))
    return list(dict.fromkeys(preferred + ranked))[:MAX_BASELINES]


def load_model_lists(run: RunDir, ks: Sequence[int]) -> list[ModelList]:
    """The eval stage's predictions for the LMs and the chosen baselines (see :func:`pick_baselines`)."""
    folder = run.predictions
    if not folder.is_dir():
        return []
    lms = [m for m in LM_MODELS if (folder / f"{m}.parquet").is_file()]
    baselines = [b for b in BASELINE_REGISTRY if (folder / f"{b}.parquet").is_file()]
    metrics_path = run.eval / "metrics.json"
    metrics = read_json(metrics_path, what="eval metrics") if metrics_path.is_file() else None
    headline = f"FHR@{max(ks)}" if ks else None
    chosen = [(m, "lm") for m in lms] + [(b, "baseline") for b in pick_baselines(baselines, metrics, headline)]
    out = []
    for name, kind in chosen:
        preds = read_parquet(folder / f"{name}.parquet", what=f"{name} predictions")
        require_columns(preds, ("sample_id", "items"), f"{name} predictions")
        ids = [int(s) for s in preds["sample_id"].to_list()]
        lists = [[str(i) for i in (x or [])] for x in preds["items"].to_list()]
        scores = {}
        if "scores" in preds.columns:
            scores = {s: [float(v) for v in (x or [])] for s, x in zip(ids, preds["scores"].to_list())}
        out.append(ModelList(name=name, kind=kind, items=dict(zip(ids, lists)), scores=scores))
    return out


def live_list_unscored(served: str, saw_labels: bool) -> str | None:
    """Why the served model's live list (``/v1/dislikes``, asked by the page) must not be scored against the
    evaluation points' held-out futures, or None when it may be: when the served model saw them (``saw_labels``: the
    LM was trained on the points' labels, :meth:`conrec.data.config.SplitConfig.trains_on_labels_of`).

    Why: ``serve.model: popular`` counts every dislike of the log (a real request's answer should), so on a
    point it recommends what the point's own future made popular (27 of 30 test points hit, against 8 for the
    eval run's popularity fitted before the cut-off); an LM trained up to the test cut-off
    (``data.split.train_until: test``) learnt the valid points' futures as its targets, the comparison the
    eval stage refuses."""
    if served == "popular":
        return (
            "the served model (serve.model: popular) counts every dislike in the log, these points' held-out future "
            "dislikes included, so its hits on them are not marked; the eval run's lists were fitted without them"
        )
    if saw_labels:
        return (
            "the served LM was trained on the valid period's labels (eval.split: valid with data.split.train_until: "
            "test), so its hits on these valid points are not marked; the eval stage refuses this comparison"
        )
    return None


@dataclass
class Inspector:
    """Everything the page reads, built once at start-up (no Parquet read per request). Whether ``lists`` are still
    the eval stage's current ones is asked per view (:func:`conrec.serve.ui.shown_lists`)."""

    info: ItemInfo
    points: list[EvalPoint]
    lists: list[ModelList]
    split: str
    stale: str | None = None  # why the eval stage's lists are not shown (not current for the served config)
    stale_hint: str | None = None  # then: what to run to have them (RunDir.rerun_hint)
    live_unscored: str | None = None  # why the served model's live list is not scored on the points (live_list_unscored)
    seen: pl.Series | None = None  # per point (in ``points``' order), every item rated before it: load_points
    by_sample: dict[int, EvalPoint] = field(init=False)
    _row: dict[int, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.by_sample = {p.sample_id: p for p in self.points}
        self._row = {p.sample_id: n for n, p in enumerate(self.points)}

    def excluded(self, point: EvalPoint, history: History) -> list[str]:
        """The items the eval left out of every list for ``point`` beyond ``history`` (the items its user rated
        before the window, sorted): what the page asks ``/v1/dislikes`` to leave out too (its ``exclude``), so that
        the live list answers the question the eval's lists beside it answer. Empty under ``decode.exclude_history:
        false``, where the eval leaves out nothing and an ``exclude`` would still apply. Kept as one Enum list column,
        not a Python set per point (a heavy user's points hold hundreds each)."""
        if self.seen is None:
            return []
        shown = set(history[0])
        return [i for i in self.seen[self._row[point.sample_id]].cast(pl.String).to_list() if i not in shown]

    @classmethod
    def from_run(cls, run: RunDir, cfg: PipelineConfig, items: pl.DataFrame, events: pl.DataFrame | None = None) -> Inspector:
        """The page's data for ``cfg``'s run. The eval stage's lists are shown only when that stage is
        current for ``cfg`` (:meth:`conrec.runs.RunDir.stale_message`, as for a served model): after a
        retrained model or a rebuilt split they would be another model's lists, or another point's. The
        served model's live list is scored on the points only when it never saw their futures
        (:func:`live_list_unscored`). ``events`` (the run's): what each point's user rated before it
        (:func:`load_points`)."""
        split, ks = cfg.eval.split, cfg.eval.ks
        stale = run.stale_message(cfg, "eval") if run.predictions.is_dir() else None
        lists = [] if stale else load_model_lists(run, ks)
        evaluated = set().union(*(m.items for m in lists)) if lists else None
        hint = run.rerun_hint(cfg, "eval") if stale else None
        unscored = live_list_unscored(cfg.serve.model, cfg.data.split.trains_on_labels_of(split))
        # under exclude_history: false the eval leaves nothing out of the LM's lists, so neither may the page
        points, seen = load_points(run, split, evaluated, events, with_seen=cfg.decode.exclude_history)
        return cls(info=ItemInfo.build(items), points=points, lists=lists, split=split, stale=stale,
                   stale_hint=hint, live_unscored=unscored, seen=seen)

    def find_points(self, user_query: str, limit: int) -> list[EvalPoint]:
        """Points whose user id starts with ``user_query`` as typed or stripped of surrounding whitespace: exact matches
        first (as typed, then stripped), then the rest in order; at most ``limit``. A blank query finds every point.

        Why both: the query was stripped only, so a user id with a leading space (``" lead"``, kept as its own user by
        ``conrec data``) could not be found; a query pasted with a stray space still finds ``"lead"``."""
        queries = tuple(dict.fromkeys((user_query, user_query.strip())))
        rank = {q: n for n, q in enumerate(queries)}
        exact = sorted((p for p in self.points if p.user_id in rank), key=lambda p: rank[p.user_id])
        rest = [p for p in self.points if p.user_id not in rank and p.user_id.startswith(queries)]
        return (exact + rest)[:limit]

    def random_point(self, rng: random.Random) -> EvalPoint:
        if not self.points:
            raise DataValidationError(f"the run has no evaluation points in split {self.split!r} (run `conrec data` and `conrec eval`)")
        return rng.choice(self.points)

    def timeline(self, items: Sequence[str], feedback: Sequence[int], ts: Sequence[int] | None = None) -> list[dict[str, object]]:
        """History events newest first, with titles, categories and dates (blank when unknown)."""
        rows: list[dict[str, object]] = []
        for n in range(len(items) - 1, -1, -1):
            t = ts[n] if ts and n < len(ts) else None
            rows.append({**self.info.row(items[n]), "feedback": int(feedback[n]), "date": iso_date(t)})
        return rows
