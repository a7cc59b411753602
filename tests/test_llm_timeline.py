"""The dense timeline task: windows, the layout shared with inference, no leakage, the weighted loss."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from conrec.data.config import SplitConfig
from conrec.data.samples import DAY
from conrec.data.splits import build_samples, time_cutoffs
from conrec.io import write_json, write_parquet
from conrec.llm.config import PromptConfig, SftConfig, TaskMix
from conrec.llm.inference.prompts import DISLIKE_TAG, build_prompt
from conrec.llm.training.losses import TargetWeights, level_softmax_loss, target_weights
from conrec.llm.training.sft import timeline_training_windows
from conrec.llm.training.timeline import UserTimeline, timeline_examples, user_timelines, window_bounds
from conrec.runs import RunDir
from conrec.sid.sid_map import SidMap
from conrec.stages import SftSections

from builders import record_current


def sid(item: str) -> str:
    return f"<a_{item}>"


@pytest.mark.parametrize("n,window,stride", [(0, 4, 4), (3, 4, 4), (10, 4, 4), (10, 4, 2), (11, 5, 1)])
def test_windows_make_every_event_a_target_once_with_bounded_context(n, window, stride):
    bounds = list(window_bounds(n, window, stride))
    targets = [i for _, first, end in bounds for i in range(first, end)]
    assert targets == list(range(n))
    for start, first, end in bounds:
        assert 0 <= start <= first < end <= n and end - start <= window and end - first <= stride
        assert start == max(0, end - window)


def test_window_stride_must_fit_the_window():
    with pytest.raises(ValueError, match="stride"):
        list(window_bounds(5, 3, 4))


@pytest.mark.parametrize("variant", ["timeline", "neg_timeline"])
def test_a_training_window_is_the_inference_prompt_continued(variant):
    """prompt + completion + <dis> of the window ending at e == the prompt at a point after event e-1:
    the model is trained on exactly the strings it is asked at inference."""
    items = [str(i) for i in range(12)]
    fb = [-1, 1, 1, -1, 1, 1, 1, -1, 1, -1, 1, 1]
    cfg = PromptConfig(variant=variant, max_timeline_events=4, max_neg_items=2)
    examples = timeline_examples([UserTimeline("u", items, fb)], sid, cfg, stride=2)
    assert len(examples) == 6
    for (_start, first, end), ex in zip(window_bounds(12, 4, 2), examples):
        assert ex["prompt"] + ex["completion"] + DISLIKE_TAG == build_prompt(items[:end], fb[:end], sid, cfg)
        assert ex["completion"].count("<a_") == end - first  # targets: the new events only
        assert ex["task"] == "timeline" and ex["source"] == "u"
    last = examples[-1]
    if variant == "neg_timeline":  # dislikes older than the window (events 0..7) as a segment, newest 2
        assert "<neg><a_3><a_7></neg>" in last["prompt"]
    else:
        assert "<neg>" not in last["prompt"]


@pytest.mark.parametrize("max_history,stride", [(3, 2), (6, 2), (9, 2), (40, 2), (3, 4)])
def test_a_window_shows_what_a_point_with_max_history_events_shows(max_history, stride):
    """An evaluated point's history holds the newest ``data.split.max_history`` events, and the predictor
    cuts longer ones: a training window is that prompt continued, not one whose older-dislike segment
    reaches back over the whole history (a heavy user's 20 older dislikes in training, 1 at inference)."""
    from conrec.llm.inference.predict import Predictor

    items = [str(i) for i in range(30)]
    fb = [-1 if i % 3 == 0 else 1 for i in range(30)]
    cfg = PromptConfig(variant="neg_timeline", max_timeline_events=4, max_neg_items=5)
    examples = timeline_examples([UserTimeline("u", items, fb)], sid, cfg, stride=stride, max_history=max_history)
    predictor = Predictor.__new__(Predictor)  # only its prompt: no model needed
    predictor.history_limit, predictor._sid_of, predictor.prompt_cfg = max_history, sid, cfg
    used = min(stride, max_history)  # a stride over max_history would give targets more context than any prompt has
    for (_start, _first, end), ex in zip(window_bounds(30, 4, used), examples, strict=True):
        assert ex["prompt"] + ex["completion"] + DISLIKE_TAG == predictor.prompt(items[:end], fb[:end])
    if max_history < 30 and stride == 2:  # the last window: dislikes 26-max_history..25 only, not the whole history's
        older = [i for i in range(30 - max_history, 26) if fb[i] < 0][-5:]
        assert "<neg>" + "".join(sid(str(i)) for i in older) + "</neg>" in examples[-1]["prompt"]


def test_timeline_task_needs_a_timeline_layout():
    with pytest.raises(ValueError, match="timeline prompt layout"):
        timeline_examples([UserTimeline("u", ["1"], [-1])], sid, PromptConfig(variant="segmented"), stride=1)


def test_user_timelines_order_by_time_then_row():
    events = pl.DataFrame({"user_id": ["b", "a", "a", "a"], "item_id": ["x", "3", "1", "2"], "ts": [5, 9, 1, 1], "feedback": [1, -1, 1, -1]})
    tl = user_timelines(events)
    assert [(t.user_id, t.items, t.feedback) for t in tl] == [("a", ["1", "2", "3"], [1, -1, -1]), ("b", ["x"], [1])]


# --------------------------------------------------------------------------- no leakage
def _unique_item_run(tmp_path, protocol: str, train_until: str) -> tuple[RunDir, pl.DataFrame, SftSections, SidMap, pl.DataFrame]:
    """A run dir whose every event has its own item (so a window's SIDs name their events)."""
    rng = np.random.default_rng(3)
    rows = []
    for u in range(8):
        for k in range(40):
            day = k * 1.5 + rng.uniform(0, 1) + u * 0.1
            rows.append((f"u{u}", f"u{u}_{k}", int(day * DAY), -1 if rng.random() < 0.3 else 1))
    events = pl.DataFrame(rows, schema={"user_id": pl.String, "item_id": pl.String, "ts": pl.Int64, "feedback": pl.Int8}, orient="row")
    split = SplitConfig(protocol=protocol, train_until=train_until, horizon_days=3, max_horizon_days=3)
    samples = build_samples(events, split)
    rd = RunDir(tmp_path / f"{protocol}_{train_until}")
    write_parquet(events, rd.events)
    write_parquet(samples, rd.samples)
    cuts = time_cutoffs(events, split)
    write_json({"split_protocol": protocol, "valid_cutoff_ts": cuts.valid, "test_cutoff_ts": cuts.test}, rd.data / "stats.json")
    ids = events["item_id"].to_list()
    sid_map = SidMap(ids, np.array([[i] for i in range(len(ids))], dtype=np.int64), [len(ids)])
    sft = SftConfig(prompt=PromptConfig(variant="neg_timeline", max_timeline_events=8, max_neg_items=3), tasks=TaskMix(timeline=1.0))
    from conrec.llm.config import DecodeConfig
    from conrec.llm.model.precision import ComputeConfig

    return rd, samples, SftSections(sft=sft, seed=0, split=split, decode=DecodeConfig(), compute=ComputeConfig()), sid_map, events


@pytest.mark.parametrize("protocol", ["global_time", "per_user"])
@pytest.mark.parametrize("train_until", ["valid", "test"])
def test_no_event_at_or_after_a_point_reaches_its_training_windows(tmp_path, protocol, train_until):
    rd, samples, sections, sid_map, events = _unique_item_run(tmp_path, protocol, train_until)
    windows = timeline_training_windows(rd, sections, samples, sid_map)
    code_item = dict(zip((f"<a_{c}>" for c in range(len(sid_map.items))), sid_map.items))
    ts_of = dict(zip(events["item_id"].to_list(), events["ts"].to_list()))
    user_of = dict(zip(events["item_id"].to_list(), events["user_id"].to_list()))
    import re

    trained = [code_item[t] for w in windows for t in re.findall(r"<a_\d+>", w["prompt"] + w["completion"])]
    assert trained, "the run must train on something"
    latest: dict[str, int] = {}
    for item in trained:
        latest[user_of[item]] = max(latest.get(user_of[item], -1), ts_of[item])
    points = samples.filter(pl.col("split") == train_until)
    assert points.height > 0
    for user, t in points.select("user_id", "ts").iter_rows():
        assert latest.get(user, -1) < t, f"{user}: a training event at {latest[user]} is not before the {train_until} point at {t}"
    if protocol == "global_time":  # and nothing of anybody at or after the cut-off
        cut = time_cutoffs(events, sections.split).valid if train_until == "valid" else time_cutoffs(events, sections.split).test
        assert max(ts_of[i] for i in trained) < cut
    # every event before the first point of a user with points is trained (dense: nothing dropped)
    first_point = dict(points.group_by("user_id").agg(pl.col("ts").min()).iter_rows())
    for user, t in first_point.items():
        before = events.filter((pl.col("user_id") == user) & (pl.col("ts") < t)).height
        assert sum(1 for i in trained if user_of[i] == user) >= before


# --------------------------------------------------------------------------- the weighted loss
DIS, LIKE = 90, 91


def test_target_weights_follow_the_latest_supervised_feedback_tag():
    w = TargetWeights(DIS, LIKE, dislike=2.0, positive=0.5, feedback=0.1)
    targets = torch.tensor([[-100, DIS, 5, 6, LIKE, 7, 8, DIS, 9], [-100, -100, 5, 6, -100, 7, -100, -100, -100]])
    got = target_weights(targets, w)
    assert got[0].tolist() == pytest.approx([0, 0.1, 2, 2, 0.1, 0.5, 0.5, 0.1, 2])
    assert got[1].tolist() == pytest.approx([0, 0, 1, 1, 0, 1, 0, 0, 0])  # no tag: another task's target, weight 1
    # the end-of-sequence token TRL appends: no target after a timeline's last event, still one after another task's answer
    eos = TargetWeights(DIS, LIKE, dislike=2.0, positive=0.5, feedback=0.1, eos_id=2)
    got = target_weights(torch.tensor([[-100, DIS, 5, LIKE, 6, 2], [-100, -100, 5, 6, 2, -100]]), eos)
    assert got.flatten().tolist() == pytest.approx([0, 0.1, 2, 0.1, 0.5, 0] + [0, 0, 1, 1, 1, 0])


def test_level_softmax_loss_equals_masked_vocabulary_cross_entropy():
    torch.manual_seed(0)
    vocab, hid = 100, 8
    level = torch.full((vocab,), -1)
    level[10:20], level[20:30] = 0, 1  # two SID levels; tags 90/91 and the rest are text
    head = torch.randn(vocab, hid)
    hidden = torch.randn(2, 6, hid)
    targets = torch.tensor([[-100, DIS, 12, 25, LIKE, 3], [-100, -100, 11, 29, -100, -100]])
    w = TargetWeights(DIS, LIKE, dislike=2.0, positive=1.0, feedback=0.5)
    got = level_softmax_loss(hidden, targets, head, level, w)
    logits = hidden @ head.T
    expected = torch.tensor(0.0)
    weights = target_weights(targets, w)
    for b in range(2):
        for t in range(6):
            y = int(targets[b, t])
            if y == -100:
                continue
            row = logits[b, t].clone()
            if level[y] >= 0:
                row[level != level[y]] = float("-inf")
            elif y in (DIS, LIKE):
                keep = torch.zeros(vocab, dtype=torch.bool)
                keep[[DIS, LIKE]] = True
                row[~keep] = float("-inf")
            expected = expected + weights[b, t] * torch.nn.functional.cross_entropy(row.unsqueeze(0), torch.tensor([y]))
    assert float(got) == pytest.approx(float(expected), rel=1e-5)


# --------------------------------------------------------------------------- the SFT stage, end to end
@pytest.mark.slow
def test_sft_trains_the_timeline_task_with_early_stopping_and_predicts_in_its_layout(tmp_path):
    from conrec.config import load_config
    from conrec.eval.report import load_learning_curve
    from conrec.llm.inference.predict import Predictor
    from conrec.llm.model.toy import write_toy_events, write_toy_run
    from conrec.stages import STAGE_REGISTRY

    run = write_toy_run(tmp_path, n_items=32, n_users=12)
    write_toy_events(run)
    cfg = load_config(
        None,
        {
            "run_dir": str(tmp_path),
            "sft": {
                "model": {"tiny": {"seed": 3}},
                "prompt": {"variant": "neg_timeline", "max_timeline_events": 6, "max_neg_items": 3},
                "tasks": {"next_negative": 0, "future_negative": 0, "sid_to_title": 0.2, "title_to_sid": 0, "sid_to_category": 0, "timeline": 2.0},
                "timeline": {"stride": 3, "positive_weight": 0.5},
                "train": {"max_steps": 6, "batch_size": 4, "logging_steps": 1, "save_steps": 100, "dropout": 0.2,
                          "early_stopping": {"eval_steps": 2, "patience": 5, "max_points": 4, "search": "exhaustive"}},
                "discernment_eval": 0,
            },
            "decode": {"search": "exhaustive", "top_k": 5, "batch_size": 4},
        },
    )
    stats = STAGE_REGISTRY["sft"].call(cfg)
    record_current(cfg, "sft")  # what the pipeline records after a runner: only a current model is loaded
    assert stats["examples_per_task"]["timeline"] > 0 and np.isfinite(stats["train_loss"])
    curve = stats["early_stopping"]
    assert [p["step"] for p in curve["learning_curve"]] == [2, 4, 6]
    assert curve["best_step"] in (2, 4, 6) and 0 <= curve["best_valid_FHR@20"] <= 1
    assert load_learning_curve(run.sft / "stats.json") == curve  # what the report plots
    # the curve's scoring inside the loop is part of the trainer's time, and taken out of the throughput
    assert 0 < stats["valid_scoring_seconds"] < stats["train_seconds"]
    predictor = Predictor.from_run(cfg, "sft")
    assert predictor.prompt(["i0", "i1"], [1, -1]).endswith("<dis>")
    recs = predictor.recommend([(["i0", "i1"], [1, -1])], k=5)
    assert len(recs[0]) == 5 and not {"i0", "i1"} & {i for i, _ in recs[0]}


def test_settings_that_would_train_nothing_are_refused_in_one_line(tmp_path):
    """Found by probing: every example cut to nothing by max_length was torch's "num_samples=0" traceback;
    all three timeline weights at 0 trained "mean loss 0.000" and wrote the untrained model; max_steps 0
    trained one step and -5 meant "run epochs"."""
    from conrec.config import load_config
    from conrec.errors import ConfigError
    from conrec.llm.model.toy import write_toy_events, write_toy_run
    from conrec.stages import STAGE_REGISTRY

    run = write_toy_run(tmp_path, n_items=16, n_users=6)
    write_toy_events(run)
    timeline = {"prompt": {"variant": "neg_timeline", "max_timeline_events": 6},
                "tasks": {"next_negative": 0, "future_negative": 0, "sid_to_title": 0, "title_to_sid": 0, "sid_to_category": 0, "timeline": 1.0}}
    cfg = load_config(None, {"run_dir": str(tmp_path), "sft": {"model": {"tiny": {"seed": 3}}, **timeline,
                                                               "train": {"max_steps": 1, "max_length": 16}, "discernment_eval": 0}})
    with pytest.raises(ConfigError, match=r"sft.train.max_length \(16 tokens\) leaves no answer token"):
        STAGE_REGISTRY["sft"].call(cfg)
    assert not (run.sft / "model").exists()
    with pytest.raises(ConfigError, match="trains nothing"):
        load_config(None, {"sft": {**timeline, "timeline": {"dislike_weight": 0, "positive_weight": 0, "feedback_weight": 0}}})
    for steps in (0, -5):
        with pytest.raises(ConfigError, match="max_steps"):
            load_config(None, {"sft": {"train": {"max_steps": steps}}})


def test_early_stopping_refuses_a_run_trained_up_to_test(tmp_path):
    from conrec.config import load_config
    from conrec.errors import ConfigError
    from conrec.llm.model.toy import write_toy_events, write_toy_run
    from conrec.stages import STAGE_REGISTRY

    run = write_toy_run(tmp_path, n_items=16, n_users=6)
    write_toy_events(run)
    settings = {"run_dir": str(tmp_path), "data": {"split": {"train_until": "test"}},
                "sft": {"model": {"tiny": {"seed": 3}}, "train": {"max_steps": 1, "early_stopping": {"eval_steps": 1}}}}
    with pytest.raises(ConfigError, match="train_until: valid"):  # the config is refused (`conrec config` too)
        load_config(None, settings)
    cfg = load_config(None, {**settings, "data": {"split": {"train_until": "valid"}}})
    test_split = cfg.data.split.model_copy(update={"train_until": "test"})
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"split": test_split})})  # no validator runs here
    with pytest.raises(ConfigError, match="train_until: valid"):  # and so is a config built around the validators
        STAGE_REGISTRY["sft"].call(cfg)


@pytest.mark.slow
def test_early_stopping_scores_the_valid_fhr_the_eval_scores(tmp_path):
    """Found by the SFT audit of 7 December 2026: the early-stopping points excluded only their ``hist_items`` (the
    ``max_history`` window), while the eval excludes every item rated before the point, so the curve that chose the
    checkpoint was another metric than the eval's valid FHR@K of the same weights. Here each valid point reads a
    one-event window and its future set holds an item the user rated before it (and, for two of the three, an item
    never rated); K is the whole catalogue, so any weights rank every eligible item: the eval scores 2/3, and the
    curve scored 1 at every step before the fix."""
    from conrec.config import load_config
    from conrec.eval.metrics import fhr_at_k
    from conrec.eval.seen import with_seen_items_each
    from conrec.llm.inference.predict import Predictor
    from conrec.llm.model.toy import write_toy_events, write_toy_run
    from conrec.llm.training.early_stopping import valid_points
    from conrec.stages import STAGE_REGISTRY

    n_items = 16
    run = write_toy_run(tmp_path, n_items=n_items, n_users=6)
    events = write_toy_events(run)
    samples = pl.read_parquet(run.samples)
    rated = events.group_by("user_id").agg(pl.col("item_id"))
    rated_by = dict(zip(rated["user_id"].to_list(), rated["item_id"].to_list()))
    futures = []
    for n, (user, hist) in enumerate(samples.filter(pl.col("split") == "valid").select("user_id", "hist_items").rows()):
        old, fresh = hist[0], next(f"i{j}" for j in range(n_items) if f"i{j}" not in rated_by[user])
        assert old != hist[-1]  # rated before the one-event window
        futures.append([old] if n == 0 else [old, fresh])
    valid = pl.col("split") == "valid"
    one_event = samples.with_columns(
        *(pl.when(valid).then(pl.col(c).list.tail(1)).otherwise(pl.col(c)).alias(c) for c in ("hist_items", "hist_feedback", "hist_ts")),
    )
    ids = one_event.filter(valid)["sample_id"].to_list()
    future_of = pl.DataFrame({"sample_id": ids, "_f": futures}, schema={"sample_id": pl.Int64, "_f": pl.List(pl.String)})
    one_event = one_event.join(future_of, on="sample_id", how="left").with_columns(
        pl.coalesce("_f", "future_negs").alias("future_negs")
    ).drop("_f")
    write_parquet(one_event, run.samples)
    stopping = {"eval_steps": 1, "patience": 5, "max_points": 8, "k": n_items, "search": "exhaustive"}
    cfg = load_config(None, {
        "run_dir": str(tmp_path),
        "sft": {"model": {"tiny": {"seed": 3}}, "max_samples": 48, "discernment_eval": 0,
                "train": {"max_steps": 2, "batch_size": 4, "logging_steps": 1, "save_steps": 100, "early_stopping": stopping}},
        "decode": {"search": "exhaustive", "top_k": 5, "batch_size": 4},
    })
    curve = STAGE_REGISTRY["sft"].call(cfg)["early_stopping"]
    record_current(cfg, "sft")
    # the eval's valid FHR@K of the saved model on the same points, excluding what the eval stage excludes
    points = valid_points(one_event, stopping["max_points"], cfg.seed)
    (seen,) = with_seen_items_each([points], events)
    preds = Predictor.from_run(cfg, "sft").predict_samples(seen, n_items)
    fut = dict(zip(points["sample_id"].to_list(), points["future_negs"].to_list()))
    eval_fhr = float(np.mean([fhr_at_k(r, fut[s], n_items) for s, r in preds.select("sample_id", "items").rows()]))
    assert eval_fhr == pytest.approx(2 / 3)
    assert [p[f"FHR@{n_items}"] for p in curve["learning_curve"]] == [pytest.approx(eval_fhr)] * 2
    assert curve[f"best_valid_FHR@{n_items}"] == pytest.approx(eval_fhr)


def test_early_stopping_needs_valid_points_and_ranks_them_with_its_own_search(tmp_path):
    """With no valid point every score was 0: training stopped after ``patience`` evaluations and kept the first
    weights, exit 0. And the search came from ``decode``, which SFT does not fingerprint: another beam width chose
    another checkpoint while the stage counted as current."""
    import polars as pl

    from conrec.config import load_config
    from conrec.errors import ConfigError
    from conrec.llm.config import DecodeConfig, EarlyStoppingConfig
    from conrec.llm.model.toy import write_toy_events, write_toy_run
    from conrec.llm.training.early_stopping import ValidFhrCallback
    from conrec.stages import STAGE_REGISTRY

    es = EarlyStoppingConfig(search="exhaustive", num_beams=7)
    decode = DecodeConfig(search="beam", num_beams=3, exclude_history=False, popularity_prior=1.0, batch_size=2)
    cb = ValidFhrCallback(es, pl.DataFrame({"future_negs": [["i1"]]}), None, None, None, decode)  # type: ignore[arg-type]
    assert (cb.decode_cfg.search, cb.decode_cfg.num_beams, cb.decode_cfg.exclude_history) == ("exhaustive", 7, True)
    assert cb.decode_cfg.popularity_prior == 0.0 and cb.decode_cfg.batch_size == 2  # placement still from decode

    run = write_toy_run(tmp_path, n_items=16, n_users=6)
    write_toy_events(run)
    samples = pl.read_parquet(run.samples)
    samples.filter(pl.col("split") != "valid").write_parquet(run.samples)
    cfg = load_config(None, {"run_dir": str(tmp_path),
                             "sft": {"model": {"tiny": {"seed": 3}}, "train": {"max_steps": 1, "early_stopping": {"eval_steps": 1}}}})
    with pytest.raises(ConfigError, match="early_stopping has no valid point to score"):
        STAGE_REGISTRY["sft"].call(cfg)
