"""Builders of small hand-made tables and run directories shared by several test modules.

Why a module and not ``conftest.py``: these are plain functions that tests call with arguments
(often inside other helpers), and pytest advises against importing ``conftest.py``; shared
*fixtures* live in ``conftest.py``. Test modules import from here, never from each other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from conrec.config import PipelineConfig, load_config
from conrec.data.config import SplitConfig
from conrec.data.samples import DAY
from conrec.data.schema import validate_events
from conrec.data.splits import build_samples, time_cutoffs
from conrec.io import atomic_path, write_json, write_parquet
from conrec.llm.model.toy import write_toy_events, write_toy_run
from conrec.runs import RunDir
from conrec.sid.sid_map import SidMap


def day_events(rows: list[tuple[str, str, float, int]]) -> pl.DataFrame:
    """rows: (user, item, day, feedback); ts in whole seconds from day offsets."""
    return validate_events(
        pl.DataFrame(
            {
                "user_id": [r[0] for r in rows],
                "item_id": [r[1] for r in rows],
                "ts": [int(r[2] * DAY) for r in rows],
                "feedback": [r[3] for r in rows],
            }
        )
    )

BASELINE_ITEMS = ["h1", "h2", "h3", "c1", "c2", "c3", "d1", "d2"]
BASELINE_CATS = ["horror"] * 3 + ["comedy"] * 3 + ["drama"] * 2

# Dislike popularity: d1 x4, then h1, c2, d2 x2 (ties break in catalogue order: h1, c2, d2).
# h1 and c2 are always disliked together (u1, u2); d1 and d2 together (u3, u4).
BASELINE_EVENTS = [
    ("u1", "h1", 1, -1), ("u1", "c2", 2, -1),
    ("u2", "h1", 1, -1), ("u2", "c2", 2, -1),
    ("u3", "d1", 1, -1), ("u3", "d2", 2, -1),
    ("u4", "d1", 1, -1), ("u4", "d2", 2, -1),
    ("u5", "d1", 1, -1), ("u5", "h3", 2, 1),
    ("u6", "d1", 1, -1),
]  # fmt: skip


# Text vectors (the content baseline's): a genre direction each, h1 and h2 the closest pair, d2 half drama half comedy.
BASELINE_VECTORS = [
    [1.0, 0.0, 0.0], [0.95, 0.05, 0.0], [0.8, 0.2, 0.0],
    [0.0, 1.0, 0.0], [0.0, 1.0, 0.1], [0.1, 1.0, 0.0],
    [0.0, 0.0, 1.0], [0.0, 1.0, 1.0],
]  # fmt: skip


def baseline_items() -> pl.DataFrame:
    from conrec.eval.baselines.content import with_text_vectors

    items = pl.DataFrame({"item_id": BASELINE_ITEMS, "title": BASELINE_ITEMS, "text": [""] * 8, "category": BASELINE_CATS})
    return with_text_vectors(items, np.array(BASELINE_VECTORS))


def baseline_events() -> pl.DataFrame:
    u, i, t, f = zip(*BASELINE_EVENTS)
    return pl.DataFrame(
        {"user_id": u, "item_id": i, "ts": t, "feedback": f},
        schema={"user_id": pl.String, "item_id": pl.String, "ts": pl.Int64, "feedback": pl.Int8},
    )


def history_samples(histories: list[tuple[list[str], list[int]]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "sample_id": list(range(len(histories))),
            "hist_items": [h for h, _ in histories],
            "hist_feedback": [f for _, f in histories],
        },
        schema={"sample_id": pl.Int64, "hist_items": pl.List(pl.String), "hist_feedback": pl.List(pl.Int8)},
    )

# The serving tests' limits: small enough that every limit is reachable with the 12-item tables.
SERVE_TEST_LIMITS: dict[str, object] = {"max_k": 8, "default_k": 4, "max_history": 4, "max_batch": 3}
SERVE_N_ITEMS = 12
# Dislike counts make the popularity order i0 > i1 > i2 > i3 (others never disliked).
SERVE_DISLIKES = {"i0": 4, "i1": 3, "i2": 2, "i3": 1}


def serve_tables() -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    ids = [f"i{j}" for j in range(SERVE_N_ITEMS)]
    items = pl.DataFrame({"item_id": ids, "title": [f"Title {j}" for j in range(SERVE_N_ITEMS)]})
    sid_map = pl.DataFrame({"item_id": ids, "codes": [[j, j] for j in range(SERVE_N_ITEMS)], "sid": [f"<a_{j}><b_{j}>" for j in range(SERVE_N_ITEMS)]})
    rows: list[tuple[str, str, int, int]] = []
    for item, n in SERVE_DISLIKES.items():
        rows += [(f"d{u}", item, 100 + u, -1) for u in range(n)]
    # u_hist: 5 events with shuffled timestamps; a known user whose history is cut to max_history.
    rows += [("u_hist", "i5", 30, 1), ("u_hist", "i0", 10, -1), ("u_hist", "i6", 50, 1), ("u_hist", "i1", 20, -1), ("u_hist", "i7", 40, -1)]
    events = pl.DataFrame(rows, schema={"user_id": pl.String, "item_id": pl.String, "ts": pl.Int64, "feedback": pl.Int8}, orient="row")
    return items, sid_map, events


class RecordingPredictor:
    """Popularity predictor that records each call and can be told to fail."""

    def __init__(self, events: pl.DataFrame, item_ids: list[str]) -> None:
        from conrec.serve.popular import PopularDislikePredictor

        self.inner = PopularDislikePredictor(events, item_ids)
        self.calls: list[tuple[list[tuple[list[str], list[int]]], int]] = []
        self.excluded: list[Any] = []  # each call's exclude lists (None: the app passed none)
        self.fail_with: Exception | None = None

    def recommend(self, histories: list[tuple[list[str], list[int]]], k: int, exclude: Any = None) -> list[list[tuple[str, float]]]:
        self.calls.append((histories, k))
        self.excluded.append(exclude)
        if self.fail_with is not None:
            raise self.fail_with
        return self.inner.recommend(histories, k) if exclude is None else self.inner.recommend(histories, k, exclude)  # tests patch inner

def eval_run_dir(root: Path, with_stats: bool = True, max_history: int | None = None) -> tuple[RunDir, int]:
    """30 users, 15 items in 3 categories, 20 days of random feedback; data written as the data stage would
    (``max_history``: data.split.max_history, default the library's)."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(30):
        for t in sorted(rng.integers(0, 20 * DAY, size=14)):
            rows.append((f"u{u}", f"i{int(rng.integers(15))}", int(t) + 1_700_000_000, int(rng.choice([-1, 1]))))
    u, i, t, f = zip(*rows)
    events = pl.DataFrame(
        {"user_id": u, "item_id": i, "ts": t, "feedback": f},
        schema={"user_id": pl.String, "item_id": pl.String, "ts": pl.Int64, "feedback": pl.Int8},
    )
    items = pl.DataFrame(
        {"item_id": [f"i{j}" for j in range(15)], "title": [f"t{j}" for j in range(15)], "text": "", "category": [f"c{j % 3}" for j in range(15)]}
    )
    scfg = SplitConfig(valid_frac=0.2, test_frac=0.2, horizon_days=3, max_horizon_days=10, **({} if max_history is None else {"max_history": max_history}))
    run = RunDir(root)
    write_parquet(events, run.events)
    write_parquet(items, run.items)
    write_parquet(build_samples(events, scfg), run.samples)
    cuts = time_cutoffs(events, scfg)
    if with_stats:
        write_json({"source": "hand-made", "users": 30, "valid_cutoff_ts": cuts.valid, "test_cutoff_ts": cuts.test}, run.data / "stats.json")
    return run, cuts.test

def tiny_word_tokenizer():
    """A word-level tokenizer with a ~30-word vocabulary: keeps TRL's log-prob kernels cheap."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<eos>", "<unk>", "Predict", "an", "item", "this", "user", "will", "dislike", ".", "Disliked",
             "Liked", "(", "oldest", "first", ")", ":", "Answer", "items", "the", "disliked", "liked", "end", "of",
             "history", "s"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


def tiny_policy(sid_map: SidMap):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from conrec.llm.model.vocab import add_sid_vocabulary

    tok = tiny_word_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    vocab = add_sid_vocabulary(model, tok, sid_map)
    return model, tok, vocab




def grpo_run_dir(root: Path) -> tuple[PipelineConfig, RunDir]:
    """Toy data + SID map + a tiny 'SFT' model dir (random weights: GRPO mechanics, not quality)."""
    from conrec.llm.model.vocab import save_vocab_meta

    run = write_toy_run(root, n_items=32, n_users=8, samples_per_user=3)
    write_toy_events(run)
    sid_map = SidMap.from_parquet(run.sid_map)
    model, tok, _ = tiny_policy(sid_map)
    with atomic_path(run.sft_model) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        save_vocab_meta(tmp, sid_map)
    run.mark_done("sft")
    cfg = load_config(
        None,
        {
            "run_dir": str(root),
            "sft": {"prompt": {"max_neg_items": 5, "max_pos_items": 5}},
            "grpo": {
                "num_generations": 4,
                "batch_size": 8,
                "save_steps": 1,
                "learning_rate": 1e-3,
                "stages": [
                    {"name": "neg", "steps": 1, "max_pos_items": 0, "positive_share": 0.0},
                    {"name": "pos", "steps": 3, "max_pos_items": 3, "positive_share": 0.5},
                ],
            },
        },
    )
    return cfg, run


def write_fake_outputs(run: RunDir, stage: str) -> None:
    """The smallest files that pass each stage's cheap output check (RunDir.output_problem)."""
    import numpy as np
    import polars as pl
    import torch
    from safetensors.torch import save_file

    from conrec.io import write_json, write_parquet

    tiny = pl.DataFrame({"x": [1]})
    if stage == "data":
        for p in (run.events, run.items, run.samples):
            write_parquet(tiny, p)
    elif stage == "sid":
        write_parquet(tiny, run.sid_map)
        run.quantizer.write_bytes(b"q")
        np.save(run.embeddings, np.zeros((1, 2)))
        np.save(run.text_vectors, np.zeros((1, 2)))
    elif stage in ("sft", "grpo"):
        model = run.sft_model if stage == "sft" else run.grpo_model
        model.mkdir(parents=True, exist_ok=True)
        write_json({"model_type": "llama"}, model / "config.json")
        save_file({"w": torch.zeros(2)}, str(model / "model.safetensors"))
    else:
        write_json({}, run.eval / "metrics.json")
        run.report.write_text("report")
    if stage != "eval":
        write_json({}, run.stage_dir(stage) / "stats.json")


def record_current(cfg: PipelineConfig, *stages: str) -> None:
    """Record ``stages`` as finished with ``cfg`` (marker, fingerprint, run config), as :func:`conrec.pipeline.run_stage`
    does after a runner: for tests that call a runner directly and then load its model, which is only
    served while it is current (:meth:`RunDir.model_problem`)."""
    from conrec.config import dump_config
    from conrec.io import write_text
    from conrec.pipeline import record_finished

    run = RunDir(cfg.run_dir)
    write_text(dump_config(cfg), run.root / "config.yaml")  # what `--run-dir` commands load, as the pipeline leaves it
    for stage in stages:
        # the stages it is built on that a hand-made run has without a record (write_toy_run's data and SID stages,
        # tables written alone) finished and recorded first, as a pipeline that made the stage had them: a stage built on
        # one that is not current is not current either (RunDir.stale_reason); one recorded already is left as it is
        for up in run.reads_closure(cfg, stage)[:-1]:
            if run.fingerprint_record(up) is None:
                if not run.is_done(up):
                    run.mark_done(up)
                record_finished(cfg, up)
        if not run.is_done(stage):
            run.mark_done(stage)
        record_finished(cfg, stage)


def crash_sft_after_step(monkeypatch, step: int) -> None:
    """Make the SFT stage raise ``RuntimeError("simulated crash")`` once optimiser step ``step`` has ended.

    The crash comes before that step's checkpoint is written (``on_step_end`` runs before the Trainer
    saves), like a kill during the step: the run resumes from the checkpoint before it.
    ``monkeypatch.undo()`` restores normal training.
    """
    import conrec.llm.training.sft as sft_mod

    real = sft_mod.RichProgressCallback.on_step_end

    def crash(self, args, state, control, **kw):
        real(self, args, state, control, **kw)
        if state.global_step == step:
            raise RuntimeError("simulated crash")

    monkeypatch.setattr(sft_mod.RichProgressCallback, "on_step_end", crash)


def interrupt_sft(monkeypatch, step: int, train: Callable[[], object]) -> None:
    """Run ``train`` with SFT crashing once optimiser step ``step`` has ended (:func:`crash_sft_after_step`), check that
    it crashed, and restore normal training (``monkeypatch.undo()``): the run keeps the checkpoints before that step."""
    crash_sft_after_step(monkeypatch, step)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train()
    monkeypatch.undo()


@contextmanager
def trainer_warnings() -> Iterator[list[str]]:
    """The messages transformers' Trainer logs at WARNING or above inside the block, whatever verbosity an earlier
    test or the Trainer itself (it sets transformers' verbosity from its arguments) left."""
    import logging

    said: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            said.append(record.getMessage())

    logger = logging.getLogger("transformers.trainer")
    handler, level = Keep(logging.WARNING), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    try:
        yield said
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def distinct_sid_scores(model, vocab, seed: int = 0, scale: float = 4.0) -> None:
    """Give an untrained tiny model distinct SID token rows and sharper attention, in place.

    Why: without titles, ``add_sid_vocabulary`` starts every SID row from the same mean, so an
    untrained model gives every item the same score (log 1/codes per level). A ranking or scoring
    test on such a model compares ties, and a wrong cache, mask or position passes it.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() > 1:
                param.mul_(scale)
        rows = torch.cat(list(vocab.level_ids))
        emb = model.get_input_embeddings().weight
        emb[rows] = torch.randn(len(rows), emb.shape[1], generator=gen).to(emb.dtype)
        out = model.get_output_embeddings()
        if out is not None and out.weight.data_ptr() != emb.data_ptr():
            out.weight[rows] = emb[rows]


def sparse_sid_map(sizes: list[int], n_items: int, seed: int = 0) -> SidMap:
    """Items ``m0..m{n-1}`` on a seeded draw of ``n_items`` of the possible code tuples (sorted): a sparse
    catalogue, so an unconstrained or misaligned decoder would often produce a tuple that is no item."""
    import itertools

    rng = np.random.default_rng(seed)
    combos = np.array(list(itertools.product(*[range(s) for s in sizes])))
    codes = combos[np.sort(rng.choice(len(combos), size=n_items, replace=False))]
    return SidMap([f"m{j}" for j in range(n_items)], codes, sizes)


def inspector_run(
    root: Path, titles: dict[str, str] | None = None, current: bool = True, split_max_history: int | None = None, **serve: object
) -> tuple[PipelineConfig, pl.DataFrame]:
    """A run the inspector page can show without training: :func:`eval_run_dir`'s data (items
    retitled by ``titles``; histories cut to ``split_max_history`` events), a SID map, and eval predictions of
    popularity (with scores) and sft for six test points, recorded as made by an eval stage current for the config
    unless ``current`` is false; served with ``serve.model: popular``. Returns the config and those six points."""
    from conrec.io import read_parquet
    from conrec.serve.synthetic import record_serving_tables

    run, _ = eval_run_dir(root, max_history=split_max_history)
    items = read_parquet(run.items)
    if titles:
        items = items.with_columns(pl.col("item_id").replace_strict(titles, default=pl.col("title"), return_dtype=pl.String).alias("title"))
    write_parquet(items, run.items)
    ids = items["item_id"].to_list()
    write_parquet(pl.DataFrame({"item_id": ids, "codes": [[j % 3, j] for j in range(len(ids))], "sid": [f"<a_{j % 3}><b_{j}>" for j in range(len(ids))]}), run.sid_map)
    test = read_parquet(run.samples).filter(pl.col("split") == "test")
    chosen = test.head(6)["sample_id"].to_list()
    ranking = [f"i{j}" for j in range(12)]  # two-digit ranks where k allows
    write_parquet(
        pl.DataFrame({"sample_id": chosen, "items": [ranking] * len(chosen), "scores": [[round(0.5 - 0.1 * j, 1) for j in range(12)]] * len(chosen)}),
        run.predictions / "popularity.parquet",
    )
    write_parquet(pl.DataFrame({"sample_id": chosen, "items": [list(reversed(ranking))] * len(chosen)}), run.predictions / "sft.parquet")
    data = {} if split_max_history is None else {"data": {"split": {"max_history": split_max_history}}}
    cfg = PipelineConfig.model_validate({"run_dir": str(run.root), **data, "serve": {"model": "popular", "default_k": 3, "max_k": 5, **serve}})
    record_serving_tables(cfg)
    if current:  # the eval stage's other outputs, then its record
        write_json({}, run.eval / "metrics.json")
        run.report.write_text("report")
        record_current(cfg, "eval")
    return cfg, test.filter(pl.col("sample_id").is_in(chosen))


def finished_run(root: Path, copy_bias: bool = False) -> tuple[PipelineConfig, RunDir]:
    """A toy run recorded as finished up to eval with a real SFT model, SID map and samples (GRPO's inputs) and
    stand-in GRPO and eval outputs, including the GRPO plan, stage marker and reward log a refusal must keep;
    ``copy_bias``: the SFT model carries a copy bias (which GRPO cannot train)."""
    cfg, run = grpo_run_dir(root)
    run.quantizer.write_bytes(b"q")  # the sid stage's other outputs (GRPO reads the SID map only)
    np.save(run.embeddings, np.zeros((1, 2)))
    np.save(run.text_vectors, np.zeros((1, 2)))
    for stage in ("sid", "sft"):
        write_json({}, run.stage_dir(stage) / "stats.json")
    if copy_bias:
        from conrec.llm.model.copy_bias import COPY_BIAS_FILE

        write_json({"beta": [1.0]}, run.sft_model / COPY_BIAS_FILE)
    record_current(cfg, "data", "sid", "sft")
    for stage in ("grpo", "eval"):
        write_fake_outputs(run, stage)
    write_json({"fingerprint": "f"}, run.grpo / "plan.json")
    write_json({"stage": "neg"}, run.grpo / "stage_0" / "_done.json")
    write_json([{"stage_index": 0, "stage_step": 1}], run.grpo / "reward_log.json")
    record_current(cfg, "grpo", "eval")
    return cfg, run


def run_files(root: Path) -> dict[str, bytes]:
    """Every file of a run and its bytes (the run lock aside): a refused command must leave them as they were."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".conrec.lock"}


def with_bos(tok):  # type: ignore[no-untyped-def]
    """A copy of the tokenizer that puts its BOS token before every text, as Llama-3, Gemma and Mistral tokenizers do."""
    import copy

    from tokenizers.processors import TemplateProcessing

    bos = copy.deepcopy(tok)
    b = bos.bos_token
    bos._tokenizer.post_processor = TemplateProcessing(single=f"{b} $A", pair=f"{b} $A {b} $B", special_tokens=[(b, bos.bos_token_id)])
    assert bos("Answer:")["input_ids"][0] == bos.bos_token_id  # the post-processor is what __call__ applies
    return bos


def killed_atomic_write(target: Path, body: str) -> Path:
    """The temporary directory a SIGKILLed :func:`conrec.io.atomic_path` write of ``target`` leaves: a child process
    enters ``atomic_path(target) as tmp``, runs ``body`` (Python lines indented by 4, writing to ``tmp``), says where
    it writes and waits; it is killed there, as the OOM killer or a preempted job would kill a stage."""
    import os
    import signal
    import subprocess
    import sys

    code = ("import sys, time\nfrom conrec.io import atomic_path\nwith atomic_path(sys.argv[1]) as tmp:\n"
            f"{body}    print(tmp.parent.name, flush=True)\n    time.sleep(120)\n")
    writing = subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE, text=True)
    assert writing.stdout is not None
    left = target.parent / writing.stdout.readline().strip()
    os.kill(writing.pid, signal.SIGKILL)
    writing.wait()
    return left
