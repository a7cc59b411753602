"""Everything ``conrec predict`` can check before a model is loaded (no torch, no transformers).

Why separate from :mod:`conrec.llm.inference.predict`: importing that module pulls in torch and transformers
(seconds) and loading a checkpoint takes more; a wrong model name, a missing checkpoint, a bad
history file, an unknown item id or an absent split must fail before any of that.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from conrec.config import PipelineConfig
from conrec.errors import ConfigError, DataValidationError, StageInputError, spoken_list
from conrec.history import History, check_history_limit, check_known_items, known_item_ids, parse_history_text, read_request_text
from conrec.io import check_output_file, read_parquet
from conrec.runs import RunDir
from conrec.stages import MODEL_STAGES

MODELS = MODEL_STAGES  # the servable models, from the stage registry


def model_dir_of(cfg: PipelineConfig, model: str) -> Path:
    """The model dir a name refers to: ``sft`` -> ``sft/model``, ``grpo`` -> ``grpo/model``."""
    return RunDir(cfg.run_dir).model_dir(model)


def check_model_dir(cfg: PipelineConfig, model: str) -> Path:
    """The run's ``model`` checkpoint dir if it is current for ``cfg``, or a clear error saying why not.

    Refuses rather than falls back (``conrec predict``/``score`` answer for the model they were
    asked for); the server's fallback is :func:`newest_current_model`.
    """
    from conrec.pipeline import require_run_dir

    run = RunDir(cfg.run_dir)
    model_dir = run.model_dir(model)
    require_run_dir(run, f"the {model} model is read from there", f"run `conrec data` and the stages after it up to {model} first")
    why = run.model_problem(cfg, model)
    if why is not None:
        earlier = [m for m in MODEL_STAGES[: MODEL_STAGES.index(model)] if run.model_problem(cfg, m) is None]
        raise StageInputError(
            f"the {model} model cannot be used with this config: {why}; {run.rerun_hint(cfg, model)}"
            + (f" or use the {earlier[-1]} model (--model {earlier[-1]})" if earlier else "")
        )
    return model_dir


def check_unchanged(run: RunDir, model: str, before: dict[str, str | None]) -> None:
    """A one-line error when ``model`` or a stage it is built on ran again since ``before``
    (:meth:`conrec.runs.RunDir.build_identities`, taken before the model, titles and explanation events are read;
    the request checks before it are covered by :func:`check_model_dir`, which ``Predictor.from_run`` asks again).

    Why: ``conrec predict``/``score`` read titles and explanation events beside the model; with a data stage
    rewritten meanwhile, the old model's ranking was printed with the new data's titles and reasons."""
    if run.build_identities(model) != before:
        raise StageInputError(f"the run {run.root} changed while the {model} model answered (a stage reran); run the command again")


def choose_model(cfg: PipelineConfig, requested: str) -> tuple[str | None, dict[str, str | None]]:
    """(``requested`` if it is current for ``cfg``, else the newest current model trained before it (GRPO -> SFT), or
    None; each candidate's problem). Builds no message: ``/healthz`` asks it every second (:func:`current_build`)."""
    run = RunDir(cfg.run_dir)
    candidates = list(reversed(MODEL_STAGES[: MODEL_STAGES.index(requested) + 1]))
    problems = {m: run.model_problem(cfg, m) for m in candidates}
    return next((m for m in candidates if problems[m] is None), None), problems


def newest_current_model(cfg: PipelineConfig, requested: str) -> tuple[str, str | None]:
    """(the model to serve, why ``requested`` was passed over or None): :func:`choose_model`, and when none is
    current a :class:`StageInputError` naming each one's problem and what to run."""
    chosen, problems = choose_model(cfg, requested)
    if chosen is None:
        run = RunDir(cfg.run_dir)
        listed = shared_problems(problems)
        raise StageInputError(
            f"no model in {run.root} is current for this config ({listed}); {run.rerun_hint(cfg, list(problems)[-1])}"
        )
    return chosen, problems[requested]


def shared_problems(problems: dict[str, str | None]) -> str:
    """Each model's problem, a cause several share said once (``grpo and sft: made with a different configuration
    (...)``), without the "rerun it" the refusal's hint says better. Why: the refusal said the same reason once per
    model, in one line of about 1,500 characters after an upgrade."""
    models: dict[str, list[str]] = {}
    for m, why in problems.items():
        models.setdefault(str(why).removesuffix("; rerun it"), []).append(m)
    return "; ".join(f"{spoken_list(ms)}: {why}" for why, ms in models.items())


@dataclass(frozen=True)
class PredictRequest:
    """A checked ``conrec predict`` request: one history, or the rows of one split."""

    model_dir: Path
    history: History | None = None
    samples: pl.DataFrame | None = None
    split: str | None = None
    k: int | None = None  # from the history file's body, as POST /v1/dislikes takes it (--k wins)
    explain: bool = False  # from the body too (--explain turns it on as well)
    exclude: list[str] | None = None  # from the body too: item ids never to return besides the history's


_REQUEST_ONLY = ("user_id", "k", "explain", "exclude")  # the /v1/dislikes body's fields beyond a history's


def read_dislike_body(path: Path, run: RunDir, max_history: int) -> tuple[History, int | None, bool, list[str] | None]:
    """(history, k, explain, exclude) from a JSON file holding a ``POST /v1/dislikes`` body.

    Why: ``--history`` takes "the same fields as a POST /v1/dislikes body", so a body saved from
    a client (with ``k``, ``explain`` or a ``user_id`` of the run's events) must work as is. A
    plain history (no such field) reads as before, with its message for the old list format; a
    ``user_id``'s history is its newest ``max_history`` events, as the server reads it, and a longer history
    given is refused, as the server refuses it."""
    import json

    from conrec.llm.inference.score import request_body
    from conrec.serve.schemas import DislikeRequest

    p = Path(path)
    text = read_request_text(p, "history")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        obj = None  # parse_history_text says what is wrong with the file
    if not (isinstance(obj, dict) and any(key in obj for key in _REQUEST_ONLY)):
        history = parse_history_text(text, f"history file {p}")  # the text read: a pipe reads once
        check_history_limit(history, max_history, f"history file {p}")
        return history, None, False, None
    req, history = request_body(text, DislikeRequest, f"history file {p}", run, max_history)
    return history, req.k, req.explain, req.exclude


def check_predict_request(
    cfg: PipelineConfig,
    history: Path | History | None,
    split: str | None,
    model: str,
    explain: bool = False,
    out: Path | None = None,
    exclude: list[str] | None = None,
) -> PredictRequest:
    """Validate a predict request against the run's files; the model itself is not touched.

    ``history`` is a JSON file path (see :mod:`conrec.history`) or an already parsed history.
    ``exclude`` (item ids never to return besides the history's) goes with a parsed history only: a file's body
    carries its own. Why a parameter: ``conrec predict`` checks the file first and passes on the parsed history, and
    the body's ``exclude`` was lost on the way (the excluded items came back at the top of the table).
    ``explain`` is for one history only: with a split it is refused (it was dropped without a word).
    ``out`` (a split's Parquet output) is checked here too, so that a wrong name fails before torch is imported.
    """
    if (history is None) == (split is None):
        raise ConfigError("give exactly one of --history (one user, JSON) or --split (a whole split, Parquet)")
    if out is not None:
        check_output_file(out, "--out", suffix=".parquet")
    if explain and split is not None:
        raise ConfigError(
            "--explain works with --history only, not --split; for a reasons column per row use `conrec score --batch --explain`"
        )
    if exclude is not None and (history is None or isinstance(history, (str, Path))):
        raise ConfigError("exclude goes with a parsed history only: a history file gives its own under \"exclude\"")
    model_dir = check_model_dir(cfg, model)
    run = RunDir(cfg.run_dir)
    if history is not None:
        if isinstance(history, (str, Path)):
            hist, k, explain, exclude = read_dislike_body(Path(history), run, cfg.serve.max_history)
            known = known_item_ids(run)
            check_known_items(hist, known, source=f"history file {history}")
            check_known_items((exclude or [], []), known, source=f"history file {history}: exclude")
            return PredictRequest(model_dir=model_dir, history=hist, k=k, explain=explain, exclude=exclude)
        check_history_limit(history, cfg.serve.max_history, "history")
        known = known_item_ids(run)
        check_known_items(history, known, source="history")
        check_known_items((exclude or [], []), known, source="exclude")
        return PredictRequest(model_dir=model_dir, history=history, exclude=exclude)
    if out is None:  # the run's own file: checked before the split is decoded (minutes), not at its write
        check_output_file(run.predictions / f"{model}_{split}.parquet", "the predictions file", hint="; pass -o FILE to write it elsewhere")
    samples = read_parquet(run.samples, what="samples table (run `conrec data` first)")
    chosen = samples.filter(pl.col("split") == split)
    if chosen.height == 0:
        have = sorted(samples["split"].unique().to_list())
        raise DataValidationError(f"no samples in split {split!r}; splits present: {have}")
    return PredictRequest(model_dir=model_dir, samples=chosen, split=split)
