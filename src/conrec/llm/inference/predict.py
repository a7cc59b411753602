"""Inference: top-K likely dislikes from a trained checkpoint (SFT or GRPO), for users or a whole split.

:class:`Predictor` holds one model in memory and answers ``recommend(histories, k)`` (the contract
of :class:`conrec.serve.app.DislikePredictor`) and ``predict_samples(samples, k)`` (the eval stage's
predictions table). Prompts come from :func:`conrec.llm.inference.prompts.build_prompt` with the run's
``cfg.sft.prompt`` (the layout the model was trained on); items come from constrained beam search
(:func:`conrec.llm.inference.constrained.generate_topk`, or with ``decode.search: exhaustive`` the exact top-K of
:func:`conrec.llm.inference.exhaustive.exhaustive_topk`), so every returned item is a real catalogue item.
Scores (higher = more likely disliked) are ``log p(SID | prompt) + w * log prior(item)``, w =
``decode.popularity_prior``: the model's log-probability of the item's SID given the prompt only when w = 0
(the demo and full presets set w = 1; :data:`conrec.slate.LM_SCORE`).
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import polars as pl
import torch
from rich.console import Console
from rich.table import Table
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from conrec.config import PipelineConfig, validated
from conrec.console_text import shown
from conrec.data.config import SplitConfig
from conrec.data.fit_events import training_events
from conrec.errors import ConfigError, DataValidationError, ModelOutputError, StageInputError, require_columns
from conrec.eval.seen import exclusion_sets, with_seen_items
from conrec.history import (  # noqa: F401  (read_history_json: public API)
    History,
    check_history_shape,
    exclusion_lists,
    is_feedback_value,
    newest_events,
    read_history_json,
)
from conrec.io import read_parquet, write_parquet
from conrec.llm.config import DecodeConfig, PromptConfig
from conrec.llm.inference.constrained import generate_topk
from conrec.llm.inference.exhaustive import exhaustive_topk
from conrec.llm.inference.item_prior import TriePrior, dislike_log_prior
from conrec.llm.inference.packed_prefill import enable_packed_prefill
from conrec.llm.inference.predict_request import MODELS, check_model_dir, check_predict_request, check_unchanged, model_dir_of  # noqa: F401
from conrec.llm.inference.prompts import build_prompt
from conrec.llm.inference.scoring import sid_log_probs
from conrec.llm.model.backbone import load_causal_lm, load_model_tokenizer
from conrec.llm.model.copy_bias import load_into as load_copy_bias
from conrec.llm.model.precision import inference_dtype
from conrec.llm.model.vocab import SidVocab, assert_item_tokens_match, assert_model_fits
from conrec.progress import stage_progress
from conrec.runs import RunDir
from conrec.runtime import quieted
from conrec.sid.sid_map import SidMap
from conrec.slate import check_slates, lm_score_column, lm_score_note


def decode_device(decode_cfg: DecodeConfig) -> torch.device:
    """The configured decoding device; ``cuda`` without a GPU is a clear error, not a silent CPU run."""
    if decode_cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("decode.device is cuda but torch sees no GPU (set it to auto or cpu)")
    if decode_cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(decode_cfg.device)


def check_finite_weights(model: torch.nn.Module, model_dir: Path) -> None:
    """Refuse a model whose weights hold NaN or inf (:class:`StageInputError` naming the first tensor).

    Why at load time: a model file overwritten with NaN keeps its size and header, so the file checks
    pass, and every answer is then silently empty or null. One pass over the weights costs a fraction
    of loading them.
    """
    for name, tensor in (*model.named_parameters(), *model.named_buffers()):
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise StageInputError(
                f"model {model_dir} has {bad:,} non-finite weight(s) (NaN or inf) in {name}; "
                "it cannot give meaningful scores: retrain it (rerun the stage that wrote it)"
            )


def is_count(n: Any) -> bool:
    """An integer >= 1 (not True, 2.5 or "5", which failed deep inside the search with a TypeError)."""
    return isinstance(n, numbers.Integral) and not isinstance(n, bool) and int(n) >= 1


def check_finite_answers(recs: Sequence[Sequence[tuple[str, float]]], expected: Sequence[int]) -> None:
    """:class:`ModelOutputError` when a history's scores are NaN/+inf or it got no item although
    ``expected`` says the catalogue has some for it: never an empty or null answer as a success."""
    for n, (rec, want) in enumerate(zip(recs, expected)):
        if any(s != s or s == float("inf") for _, s in rec):
            raise ModelOutputError(f"history #{n}: the model's scores are not finite (NaN or +inf)")
        if want > 0 and not rec:
            raise ModelOutputError(f"history #{n}: the model produced no valid item of {want} possible (non-finite scores?)")


def run_item_prior(run_dir: Path, split_cfg: SplitConfig, sid_map: SidMap, decode_cfg: DecodeConfig) -> torch.Tensor | None:
    """The item prior of ``decode.popularity_prior`` for a run's model (None when the weight is 0):
    the dislikes of the events the model trained on (``data.split.train_until``), nothing later."""
    if decode_cfg.popularity_prior <= 0:
        return None
    return dislike_log_prior(training_events(run_dir, split_cfg), sid_map.items)


class Predictor:
    """One loaded checkpoint + the SID map it was trained on: histories in, top-K dislikes out."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        sid_map: SidMap,
        prompt_cfg: PromptConfig,
        decode_cfg: DecodeConfig,
        item_log_prior: torch.Tensor | None = None,
        history_limit: int | None = None,
    ) -> None:
        """``history_limit``: prompts read only a history's newest events, as many as the samples the model
        was trained and evaluated on hold (``data.split.max_history``; :meth:`from_run` sets it). Why: a
        server takes longer histories (``serve.max_history``), and the older events then reached a
        prompt's dislike segment, which no training prompt or evaluated point ever showed."""
        self.history_limit = history_limit
        self.model_dir: Path | None = None  # where it was loaded from (from_dir); the run and model (from_run): repr
        self.run_dir: Path | None = None
        self.model_name: str | None = None
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.sid_map = sid_map
        self.prompt_cfg = prompt_cfg
        self.decode_cfg = decode_cfg
        self.trie = sid_map.trie()
        self.items = sid_map.items
        self._row_of = sid_map.row_index  # the trie row of each item (exclusion masks), the SID map's own index
        n_embeddings = int(model.get_input_embeddings().weight.shape[0])  # type: ignore[index]  # torch types weight as Tensor | Module
        self.vocab = SidVocab.from_tokenizer(tokenizer, sid_map.codebook_sizes, n_embeddings)
        assert_item_tokens_match(tokenizer, sid_map, prompt_cfg.item_id_tokens)
        self._sid_of = sid_map.sid_lookup()
        codes = torch.as_tensor(sid_map.codes, dtype=torch.long)
        # (n_items, L) SID token ids per SID-map row: the teacher-forced targets of slate scoring
        self._sid_token_ids = self.vocab.token_ids(codes)
        # the last recommend()'s search counts: n_generated, n_invalid (ints), invalid_per_prompt (a list of ints)
        self.last_stats: dict[str, Any] = {}
        # decode.popularity_prior: w x log prior(item), in SID-map row order (item_prior module)
        self.prior: TriePrior | None = None
        if decode_cfg.popularity_prior > 0:
            if item_log_prior is None:
                raise ConfigError("decode.popularity_prior > 0 needs the item prior: load the model with Predictor.from_run")
            self.prior = TriePrior(self.trie, item_log_prior, decode_cfg.popularity_prior)

    @classmethod
    def from_dir(
        cls,
        model_dir: Path,
        sid_map: SidMap,
        prompt_cfg: PromptConfig,
        decode_cfg: DecodeConfig,
        item_log_prior: torch.Tensor | None = None,
        history_limit: int | None = None,
    ) -> Predictor:
        """Load a model dir written by the SFT/GRPO stage, after checking it fits ``sid_map``."""
        model_dir = Path(model_dir)
        if not model_dir.exists():
            raise StageInputError(f"model dir not found: {model_dir.absolute()}")
        assert_model_fits(model_dir, sid_map)
        with quieted():  # no "Loading weights" bar in predict / serve output; a library caller's settings come back
            tokenizer = load_model_tokenizer(model_dir)
            model = load_causal_lm(model_dir)
        load_copy_bias(model, model_dir, tokenizer, sid_map.codebook_sizes)
        check_finite_weights(model, model_dir)
        enable_packed_prefill(model)  # this model is for inference only: batches of prompts skip their padding
        device = decode_device(decode_cfg)
        # in place (transformers' typed .to wrapper hides the overloads); on a GPU the precision the model was trained in
        torch.nn.Module.to(model, device=device, dtype=inference_dtype(model_dir, device))
        predictor = cls(model, tokenizer, sid_map, prompt_cfg, decode_cfg, item_log_prior, history_limit)
        predictor.model_dir = model_dir
        return predictor

    @classmethod
    def from_run(cls, cfg: PipelineConfig, model: str = "grpo") -> Predictor:
        """The run's ``sft`` or ``grpo`` checkpoint (no silent fallback to the other one)."""
        cfg = validated(cfg)  # a config object edited after loading is checked as a file is
        model_dir = check_model_dir(cfg, model)
        sid_map = SidMap.from_parquet(RunDir(cfg.run_dir).sid_map)
        prior = run_item_prior(Path(cfg.run_dir), cfg.data.split, sid_map, cfg.decode)
        predictor = cls.from_dir(model_dir, sid_map, cfg.sft.prompt, cfg.decode, prior, cfg.data.split.max_history)
        predictor.run_dir, predictor.model_name = Path(cfg.run_dir), model
        return predictor

    def __repr__(self) -> str:
        """``Predictor(run_dir='runs/demo', model='grpo', items=1682, device='cpu', search='beam')``; the model
        directory, or the model's class, where it was not loaded from a run.

        Why: a notebook showed ``<conrec.llm.inference.predict.Predictor object at 0x...>``, which said neither which
        run's model answers nor on what device. It never raises, and shows ``?`` for what a half-built object
        lacks (made with ``__new__``, or its ``__init__`` failed): a debugger, a traceback with locals or a log line
        describing the object would otherwise fail while describing an error."""
        run_dir, model_dir = getattr(self, "run_dir", None), getattr(self, "model_dir", None)
        model = getattr(self, "model", None)
        if run_dir is not None:
            where = f"run_dir={str(run_dir)!r}, model={getattr(self, 'model_name', '?')!r}"
        elif model_dir is not None:
            where = f"model_dir={str(model_dir)!r}"
        else:
            where = f"model={'?' if model is None else type(model).__name__}"
        items = getattr(self, "items", None)
        n_items = "?" if items is None else str(len(items))
        device = getattr(model, "device", None)
        search = getattr(getattr(self, "decode_cfg", None), "search", "?")
        return (f"{type(self).__name__}({where}, items={n_items}, device={'?' if device is None else repr(str(device))}, "
                f"search={search!r})")

    # --- input checks and prompts
    def validate(self, histories: Sequence[History]) -> None:
        """Clear errors for malformed histories: mismatched lengths, bad feedback, empty, unknown items."""
        unknown: list[str] = []
        for n, hist in enumerate(histories):
            if not isinstance(hist, (tuple, list)) or len(hist) != 2:
                raise DataValidationError(f"history #{n} must be a pair (item ids, feedback), got {type(hist).__name__}")
            items, feedback = hist
            check_history_shape(items, feedback, f"history #{n}")
            unknown.extend(str(i) for i in items if str(i) not in self.sid_map)
        if unknown:
            uniq = sorted(set(unknown))
            raise DataValidationError(f"{len(uniq)} unknown item id(s) (not in the SID map): {uniq[:10]}")

    def prompt(self, items: Sequence[str], feedback: Sequence[int], max_pos_items: int | None = None) -> str:
        items, feedback = newest_events(items, feedback, self.history_limit)
        return build_prompt([str(i) for i in items], [int(f) for f in feedback], self._sid_of, self.prompt_cfg, max_pos_items)

    # --- inference
    def recommend(
        self, histories: Sequence[History], k: int, exclude: Sequence[Iterable[str]] | None = None
    ) -> list[list[tuple[str, float]]]:
        """For each (item ids oldest first, feedback -1/+1) history, up to ``k`` (item id, score), best first.

        score: ``log p(SID | prompt) + w * log prior(item)``, w = ``decode.popularity_prior`` (a log-probability
        only when w = 0; the demo and full presets set w = 1).

        ``exclude``: per history, more item ids never to return, left out with the history's own
        (:func:`conrec.history.exclusion_lists`; e.g. an evaluation point's items rated before its window, which the
        eval leaves out). They are left out even under ``decode.exclude_history: false``, which keeps the history's
        own items eligible. Fewer than ``k`` only when the catalogue minus those has fewer than ``k`` items.
        """
        if not is_count(k):
            raise DataValidationError(f"k must be an integer >= 1, got {k!r}")
        self.validate(histories)
        exclude_sets = exclusion_lists(histories, exclude, self.sid_map, with_history=self.decode_cfg.exclude_history)
        prompts = [self.prompt(items, fb) for items, fb in histories]
        stats: dict[str, Any] = {}
        k_eff = min(k, len(self.items))
        with torch.inference_mode():
            recs = self._topk(prompts, k_eff, exclude_sets, stats)
        self.last_stats = stats
        # histories and exclude lists were validated: every item is in the catalogue, so an excluded set removes len(ex) items
        check_finite_answers(recs, [min(k_eff, len(self.items) - len(ex)) for ex in exclude_sets])
        return recs

    def _topk(self, prompts: list[str], k: int, exclude: list[set[str]], stats: dict[str, Any]) -> list[list[tuple[str, float]]]:
        """Top-``k`` real items per prompt by ``decode.search``: constrained beam search or the exact
        exhaustive search (:mod:`conrec.llm.inference.exhaustive`; it cannot produce an invalid item).

        ``exclude``: the items each prompt may not return, already decided by the caller (``decode.exclude_history``
        chooses whether the history's own items are among them); every one is masked."""
        masked = exclude if any(exclude) else None  # nothing to mask: the searches skip building a mask
        if self.decode_cfg.search == "beam":
            return generate_topk(
                self.model, self.tokenizer, prompts, self.trie, self.items, k, self.decode_cfg,
                exclude=masked, vocab=self.vocab, stats=stats, prior=self.prior, row_of=self._row_of,
            )
        recs = exhaustive_topk(
            self.model, self.tokenizer, prompts, self._sid_token_ids, self.vocab.level_ids, self.items, k,
            exclude=masked, max_rows=self.decode_cfg.max_rows,
            bonus=self.prior.item_bonus(torch.arange(len(self.items))) if self.prior is not None else None,
        )
        stats["n_generated"] = stats.get("n_generated", 0) + sum(len(r) for r in recs)
        stats["n_invalid"] = stats.get("n_invalid", 0)
        stats["invalid_per_prompt"] = stats.get("invalid_per_prompt", []) + [0] * len(recs)
        return recs

    def validate_candidates(self, candidates: Sequence[Sequence[str]], n_histories: int) -> None:
        """One non-empty slate of distinct, known item ids per history; errors name the slate and ids."""
        check_slates(candidates, n_histories)  # the baselines' slate reader checks the same (candidate_scores)
        for n, slate in enumerate(candidates):
            unknown = sorted({str(i) for i in slate if str(i) not in self.sid_map})
            if unknown:
                raise DataValidationError(f"candidate slate #{n}: {len(unknown)} unknown item id(s) (not in the SID map): {unknown[:10]}")

    def score(
        self, histories: Sequence[History], candidates: Sequence[Sequence[str]], max_pos_items: int | None = None
    ) -> list[list[float]]:
        """Dislike score of every candidate, aligned with ``candidates``: ``log p(SID | prompt) + w * log prior(item)``,
        w = ``decode.popularity_prior`` (a log-probability only when w = 0), as :meth:`recommend` ranks by.

        One teacher-forced pass per batch of ``decode.batch_size`` histories, all candidates of a
        history sharing its prompt's KV cache (:func:`conrec.llm.inference.scoring.sid_log_probs`). Higher =
        more likely disliked; a score does not depend on the slate's other items or their order.
        """
        if max_pos_items is not None and not (is_count(max_pos_items) or max_pos_items == 0):
            raise DataValidationError(f"max_pos_items must be an integer >= 0 or None, got {max_pos_items!r}")
        self.validate(histories)
        return finite_scores(self.score_prompts([self.prompt(items, fb, max_pos_items) for items, fb in histories], candidates), "history #")

    def score_samples(self, samples: pl.DataFrame, candidates: Sequence[Sequence[str]]) -> list[list[float]]:
        """:meth:`score` for the rows of a samples table (the eval's exposure-controlled slates).

        Why not :meth:`score`: an evaluation point may have an empty history (``data.split.min_history: 0``),
        which every layout renders and :meth:`predict_samples` decodes, while a history a user sends must not be
        empty. The slates of such points are scored as they are decoded."""
        ids, histories = self._sample_histories(samples)
        scores = self.score_prompts([self.prompt(h, fb) for h, fb in histories], candidates)
        return finite_scores(scores, "samples: the point of sample_id ", ids)

    def score_prompts(self, prompts: Sequence[str], candidates: Sequence[Sequence[str]]) -> list[list[float]]:
        """:meth:`score` for ready-made prompts (e.g. the discernment task's four-choice questions)."""
        self.validate_candidates(candidates, len(prompts))
        rows = [torch.as_tensor(self.sid_map.rows_of(map(str, c))) for c in candidates]
        slates = [self._sid_token_ids[r] for r in rows]
        out: list[list[float]] = []
        chunk = max(1, self.decode_cfg.batch_size)
        with torch.inference_mode():
            for start in range(0, len(prompts), chunk):
                scores = sid_log_probs(
                    self.model, self.tokenizer, prompts[start : start + chunk], slates[start : start + chunk], self.vocab.level_ids
                )
                if self.prior is not None:
                    scores = [sc + self.prior.item_bonus(r) for sc, r in zip(scores, rows[start : start + chunk])]
                out.extend(s.tolist() for s in scores)
        return out

    def _sample_histories(self, samples: pl.DataFrame) -> tuple[list[Any], list[History]]:
        """(sample ids, histories) of a samples table, checked as :meth:`validate` checks a history, but empty is
        allowed: an evaluation point may have none."""
        require_columns(samples, ("sample_id", "hist_items", "hist_feedback"), "samples")
        rows = samples.select("sample_id", "hist_items", "hist_feedback").rows()
        for sid, h, fb in rows:
            if len(h or []) != len(fb or []) or not all(is_feedback_value(f) for f in fb or []):
                check_history_shape(h or [], fb or [], f"samples: sample_id {sid}")
        histories: list[History] = [(list(map(str, h or [])), [int(f) for f in (fb or [])]) for _, h, fb in rows]
        unknown = sorted({i for h, _ in histories for i in h if i not in self.sid_map})
        if unknown:
            raise DataValidationError(f"samples: {len(unknown)} history item id(s) not in the SID map, e.g. {unknown[:10]}")
        return [r[0] for r in rows], histories

    def predict_samples(self, samples: pl.DataFrame, k: int, console: Console | None = None) -> pl.DataFrame:
        """Predictions for every row of a samples table (see :mod:`conrec.data.samples`).

        Returns ``sample_id`` (Int64), ``items`` (List[String]), ``scores`` (List[Float64]),
        ``n_invalid`` (Int64: generated beams that were not a new real item; 0 by construction).
        """
        if not is_count(k):  # as recommend: k=2.5 was a TypeError from a slice, k=0 a bare ValueError from the search
            raise DataValidationError(f"k must be an integer >= 1, got {k!r}")
        ids, histories = self._sample_histories(samples)
        prompts = [self.prompt(h, fb) for h, fb in histories]
        k_eff = min(k, len(self.items))
        out_items: list[list[str]] = []
        out_scores: list[list[float]] = []
        invalid: list[int] = []
        chunk = max(1, self.decode_cfg.batch_size)
        console = console or Console(quiet=True)
        with stage_progress(console=console, label="[bold]predict") as progress, torch.inference_mode():
            task = progress.add_task("predict", total=len(prompts))
            for start in range(0, len(prompts), chunk):
                stats: dict[str, Any] = {}
                # hist_items, or all of the user's items before t where eval attached them: string sets built per
                # batch, not for the whole frame at once (100k points x 400 earlier items held GBs of them)
                batch = samples.slice(start, chunk)
                exclude = exclusion_sets(batch) if self.decode_cfg.exclude_history else [set() for _ in range(batch.height)]
                recs = self._topk(prompts[start : start + chunk], k_eff, exclude, stats)
                out_items.extend([i for i, _ in r] for r in recs)
                out_scores.extend([s for _, s in r] for r in recs)
                invalid.extend(stats["invalid_per_prompt"])
                progress.update(task, advance=len(recs))
        return pl.DataFrame(
            {
                "sample_id": pl.Series(ids, dtype=pl.Int64),
                "items": pl.Series(out_items, dtype=pl.List(pl.String)),
                "scores": pl.Series(out_scores, dtype=pl.List(pl.Float64)),
                "n_invalid": pl.Series(invalid, dtype=pl.Int64),
            }
        )


def finite_scores(scores: list[list[float]], subject: str, names: Sequence[Any] | None = None) -> list[list[float]]:
    """``scores`` unchanged, or one line naming the first row (``subject`` + its position or name) with a NaN or +inf."""
    for n, row in enumerate(scores):
        if any(x != x or x == float("inf") for x in row):
            raise ModelOutputError(f"{subject}{n if names is None else names[n]}: the model's scores are not finite (NaN or +inf)")
    return scores


def predict_samples(cfg: PipelineConfig, model: str, samples: pl.DataFrame, k: int, console: Console | None = None) -> pl.DataFrame:
    """Predictions of the run's ``model`` checkpoint for ``samples`` (used by the eval stage)."""
    return Predictor.from_run(cfg, model).predict_samples(samples, k, console=console)


def split_samples_seen(run_dir: RunDir, samples: pl.DataFrame) -> pl.DataFrame:
    """``samples`` (a split's points) with every item each user rated before the point attached
    (:func:`conrec.eval.seen.with_seen_items`, read from the run's events), so that no such item is predicted.

    Why: the eval stage excludes them from every model's top-K (they are certain misses where nobody rates an item
    twice), and ``conrec predict --split`` excluded only the points' ``hist_items`` window (``data.split.max_history``
    events). On preset:demo its top-20 lists differed from ``eval/predictions/grpo.parquet`` on 19 of 254 test points
    (143 slots held items rated before the window) and scored a lower FHR@20 from the same model
    (the inference audit of 7 December 2026); now the file equals the eval's on the points both hold.

    Only the points' users' events are read: a point's seen set depends on its own user's alone, and SFT early stopping
    attaches it for a few hundred points (on 20M events the whole table took 15 s and 3.5 GB, these users' 2.6 s)."""
    users = samples["user_id"].cast(pl.String).unique().implode()
    events = read_parquet(run_dir.events, what="events (data stage output)", columns=["user_id", "item_id", "ts"],
                          where=pl.col("user_id").cast(pl.String).is_in(users))
    return with_seen_items(samples, events)


def run(
    cfg: PipelineConfig,
    history: Path | History | None,
    split: str | None,
    out: Path | None,
    model: str,
    k: int,
    console: Console | None = None,
    explain: bool = False,
    exclude: list[str] | None = None,
) -> pl.DataFrame:
    """``conrec predict``: one user (``--history`` JSON, printed as a table) or a split (``--split``, Parquet).

    The request is checked (model name, checkpoint present, history format, item ids, split)
    before the model is loaded. ``explain`` (one user only; refused with a split) adds a reason per item
    (:mod:`conrec.explain`). ``exclude``: with a parsed history, item ids never to return besides the history's (a
    history file's body gives its own; :func:`check_predict_request`).
    """
    console = console or Console()
    request = check_predict_request(cfg, history, split, model, explain=explain, out=out, exclude=exclude)
    run_dir = RunDir(cfg.run_dir)
    samples = None if request.samples is None else split_samples_seen(run_dir, request.samples)  # before the model loads
    before = run_dir.build_identities(model)  # the model, titles and reasons must come from these stage runs
    predictor = Predictor.from_run(cfg, model)
    if request.history is not None:
        from conrec.explain import Explainer

        explain = explain or request.explain
        titles: dict[str, str] = {}
        if run_dir.items.exists():
            items = read_parquet(run_dir.items, what="items table")
            titles = dict(zip(items["item_id"].cast(pl.String).to_list(), items["title"].to_list()))
        explainer = Explainer.for_run(run_dir, predictor.sid_map, cfg.serve.explain_top_n, cfg.data.split, predictor.history_limit) if explain else None
        recs = predictor.recommend([request.history], k, exclude=None if request.exclude is None else [request.exclude])[0]
        check_unchanged(run_dir, model, before)
        reasons: list[str | None] = [None] * len(recs)
        if explainer is not None:
            reasons = [explainer.explain(item, *request.history).text for item, _ in recs]
        if not recs:  # an empty "top-k" table said nothing about why
            if predictor.decode_cfg.exclude_history:
                where = ("the history or its exclude list" if request.exclude else "the history") + " (decode.exclude_history leaves them out)"
            else:  # the history's items stay eligible: only the request's exclude list can empty the catalogue
                where = "the request's exclude list"
            console.print(f"nothing to rank: every one of the {len(predictor.items):,} catalogue items is in {where}", highlight=False)
        table = Table(title=f"top-{k} likely dislikes ({model} model)")
        score_col = lm_score_column(cfg.decode.popularity_prior)  # "log-prob" only when it is one
        for col in ("rank", "item_id", "SID", "title", score_col) + (("reason",) if explain else ()):
            table.add_column(col, justify="right" if col in ("rank", score_col) else "left")
        for rank, ((item, score), reason) in enumerate(zip(recs, reasons), 1):
            row = [str(rank), shown(item), predictor.sid_map.sid_of(item), shown(titles.get(item, "")), f"{score:.3f}"]
            table.add_row(*row, *([shown(reason or "")] if explain else []))
        if recs:
            console.print(table)
            note = lm_score_note(cfg.decode.popularity_prior)
            if note:
                console.print(note, highlight=False, soft_wrap=True)
        result = pl.DataFrame(
            {"item_id": [i for i, _ in recs], "score": [s for _, s in recs], "reason": reasons},
            schema={"item_id": pl.String, "score": pl.Float64, "reason": pl.String},
        )
        if out is not None:  # the printed table as a file too, as conrec score writes it (it was ignored without a word)
            write_parquet(result, out)
            console.print(f"-> {shown(out)}", soft_wrap=True)
        return result
    assert samples is not None
    preds = predictor.predict_samples(samples, k, console=console)
    # who and when beside the run-internal sample id, so the file joins to the user's own tables
    keys = [c for c in ("sample_id", "user_id", "ts") if c in samples.columns]
    preds = samples.select(keys).join(preds, on="sample_id", how="right").select(*keys, pl.exclude(keys))
    target = out or run_dir.predictions / f"{model}_{split}.parquet"
    write_parquet(preds, target)
    n_invalid = int(preds["n_invalid"].sum())
    users = f" of {preds['user_id'].n_unique():,} users" if "user_id" in preds.columns else ""
    console.print(f"{preds.height:,} {split} points{users}, top-{k}, {n_invalid} invalid output(s) -> {shown(target)}", soft_wrap=True)
    return preds
