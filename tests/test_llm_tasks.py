"""SFT tasks: mixing ratios, train split only, no example leaks its answer into its prompt."""

from __future__ import annotations

import polars as pl
import pytest

from conrec.errors import DataValidationError
from conrec.llm.config import SftConfig, TaskMix
from conrec.llm.model.toy import toy_tables
from conrec.llm.training.tasks import TASKS, build_examples, task_counts


@pytest.fixture(scope="module")
def tables():
    items, samples, sid_map = toy_tables(n_items=48, n_users=30, samples_per_user=4, seed=3)
    # a user who re-dislikes an item already in the history: that example must be skipped, not leak
    leaky = samples.filter(pl.col("split") == "train").head(1).with_columns(
        pl.col("hist_items").list.first().alias("next_neg"), pl.lit(999, dtype=pl.Int64).alias("sample_id")
    )
    leaky = leaky.with_columns(pl.concat_list(pl.col("next_neg")).alias("future_negs"))
    return items, pl.concat([samples, leaky]), sid_map


def test_task_counts_follow_weights_and_cap():
    w = {"next_negative": 1.0, "future_negative": 2.0, "sid_to_title": 0.5, "title_to_sid": 0.5, "sid_to_category": 0.0}
    c = task_counts(w, 100, None)
    assert c == {
        "next_negative": 100, "future_negative": 200, "sid_to_title": 50, "title_to_sid": 50, "sid_to_category": 0, "discernment": 0, "timeline": 0,
    }
    capped = task_counts(w, 100, 80)
    assert sum(capped.values()) == 80
    assert capped["future_negative"] == 2 * capped["next_negative"] and capped["sid_to_category"] == 0


def test_timeline_weight_counts_windows_not_samples():
    c = task_counts({"next_negative": 1.0, "timeline": 2.0}, 100, None, n_windows=30)
    assert c["next_negative"] == 100 and c["timeline"] == 60


def test_every_task_weight_has_a_builder_and_a_weight_without_one_is_refused(tables):
    """A task added to TaskMix without a builder was dropped from the counts (a mix of only that task built no
    example), and one added to TASKS without a branch was built as title -> SID examples: now one mapping, kept
    equal to TaskMix's fields, and a weight naming no builder stops the build."""
    assert set(TASKS) == set(TaskMix.model_fields)
    with pytest.raises(ValueError, match=r"no SFT example builder for \['sid_to_text'\]"):
        task_counts({"next_negative": 1.0, "sid_to_text": 0.05}, 100, None)

    class WithNewTask(TaskMix):  # a contributor's new weight, before its builder exists
        sid_to_text: float = 0.0

    only_new = WithNewTask(next_negative=0, future_negative=0, sid_to_title=0, title_to_sid=0, sid_to_category=0, sid_to_text=1.0)
    items, samples, sid_map = tables
    with pytest.raises(ValueError, match="sid_to_text"):
        build_examples(samples, items, sid_map, SftConfig().model_copy(update={"tasks": only_new}), seed=0)


def test_examples_mix_by_ratio_and_are_seeded(tables):
    items, samples, sid_map = tables
    cfg = SftConfig(tasks=TaskMix(next_negative=1, future_negative=1, sid_to_title=0.5, title_to_sid=0.5, sid_to_category=0.25))
    ex = build_examples(samples, items, sid_map, cfg, seed=7)
    n_train = samples.filter(pl.col("split") == "train").height
    counts = {t: sum(e["task"] == t for e in ex) for t in TASKS}
    assert counts["sid_to_title"] == counts["title_to_sid"] == round(0.5 * n_train)
    assert counts["sid_to_category"] == round(0.25 * n_train)
    # history tasks lose at most the leaking sample
    assert round(n_train) - 1 <= counts["next_negative"] <= n_train
    assert ex == build_examples(samples, items, sid_map, cfg, seed=7)
    assert ex != build_examples(samples, items, sid_map, cfg, seed=8)
    assert {"prompt", "completion", "task", "source"} <= set(ex[0])


def test_only_train_samples_are_used(tables):
    items, samples, sid_map = tables
    ex = build_examples(samples, items, sid_map, SftConfig(), seed=0)
    train_ids = set(map(str, samples.filter(pl.col("split") == "train")["sample_id"].to_list()))
    hist = [e for e in ex if e["task"] in ("next_negative", "future_negative")]
    assert hist and {e["source"] for e in hist} <= train_ids
    with pytest.raises(DataValidationError, match="train"):
        build_examples(samples.filter(pl.col("split") != "train"), items, sid_map, SftConfig())


def test_no_example_leaks_its_answer(tables):
    items, samples, sid_map = tables
    cfg = SftConfig(tasks=TaskMix(next_negative=2, future_negative=2, sid_to_title=1, title_to_sid=1, sid_to_category=1))
    ex = build_examples(samples, items, sid_map, cfg, seed=1)
    title_of = dict(zip(items["item_id"], items["title"]))
    sid_to_item = dict(zip(sid_map.to_frame()["sid"], sid_map.items))
    by_id = {str(r["sample_id"]): r for r in samples.iter_rows(named=True)}
    assert "999" not in {e["source"] for e in ex}  # the re-disliked item's example was dropped
    for e in ex:
        if e["task"] in ("next_negative", "future_negative", "title_to_sid"):
            assert e["completion"] in sid_to_item, e  # the answer is exactly one real SID
            assert e["completion"] not in e["prompt"], e
        if e["task"] == "next_negative":
            assert sid_to_item[e["completion"]] == by_id[e["source"]]["next_neg"]
        if e["task"] == "future_negative":
            assert sid_to_item[e["completion"]] in by_id[e["source"]]["future_negs"]
        if e["task"] == "title_to_sid":
            assert title_of[e["source"]] in e["prompt"]
        if e["task"] == "sid_to_title":
            assert e["completion"] == " " + title_of[e["source"]]
            assert title_of[e["source"]] not in e["prompt"]
            assert sid_map.sid_of(e["source"]) in e["prompt"]


def test_future_negative_examples_walk_each_points_future_set(tables):
    """Weight w gives each train point w examples whose targets are *different* items of its future set
    (all of them when the set is no larger than w), not w independent draws that may repeat."""

    items, samples, sid_map = tables
    train = samples.filter((pl.col("split") == "train") & (pl.col("sample_id") != 999))
    w = 3
    cfg = SftConfig(tasks=TaskMix(next_negative=0, future_negative=w, sid_to_title=0, title_to_sid=0, sid_to_category=0))
    ex = build_examples(train, items, sid_map, cfg, seed=1)
    sid_of = sid_map.sid_lookup()
    by_point: dict[str, list[str]] = {}
    for e in ex:
        by_point.setdefault(e["source"], []).append(e["completion"])
    checked = 0
    for sid, hist, future in train.select("sample_id", "hist_items", "future_negs").rows():
        allowed = [sid_of(i) for i in dict.fromkeys(future) if i not in set(hist)]
        got = by_point.get(str(sid), [])
        if not allowed:
            assert got == []
            continue
        assert len(got) == w and set(got) <= set(allowed)
        assert len(set(got)) == min(w, len(allowed))  # distinct until the set is used up
        checked += 1
    assert checked > 20


# --------------------------------------------------------------------------- discernment (issue 15)
def test_discernment_question_by_hand():
    import numpy as np

    from conrec.llm.config import PromptConfig
    from conrec.llm.training.discernment import QUESTION, heldout_users, question

    sid_of = lambda i: f"<{i}>"  # noqa: E731
    cfg = PromptConfig(max_neg_items=10, max_pos_items=10)
    # dislikes n1, n2 (n2 twice: "repeatedly rejected"), likes p1..p4: the answer must be n2 and the
    # distractors three of p1..p4; no option appears in the prompt's history segments
    hist = ["n1", "p1", "n2", "p2", "p3", "n2", "p4"]
    fb = [-1, 1, -1, 1, 1, -1, 1]
    q = question(hist, fb, sid_of, cfg, np.random.default_rng(0))
    assert q is not None and q["answer"] == "n2" and q["completion"] == "<n2>"
    assert sorted(q["options"]) == sorted(["n2", *[o for o in q["options"] if o != "n2"]])
    assert set(q["options"]) - {"n2"} <= {"p1", "p2", "p3", "p4"} and len(set(q["options"])) == 4
    lines = q["prompt"].split("\n")
    assert lines[0] == QUESTION and lines[-1] == "Answer:"
    assert lines[-2] == "Options: " + " ".join(f"<{o}>" for o in q["options"])
    history_text = "\n".join(lines[1:-2])
    assert "<n1>" in history_text and not any(f"<{o}>" in history_text for o in q["options"])
    # not enough liked items, or no dislike: no question
    assert question(["n1", "p1", "p2"], [-1, 1, 1], sid_of, cfg, np.random.default_rng(0)) is None
    assert question(["p1", "p2", "p3"], [1, 1, 1], sid_of, cfg, np.random.default_rng(0)) is None
    # held-out users: a seeded share (10 users, 0.2 -> 2), stable for a seed
    users = [f"u{k}" for k in range(10)]
    assert len(heldout_users(users, 0.2, 0)) == 2 and heldout_users(users, 0.2, 0) == heldout_users(users[::-1], 0.2, 0)
    assert heldout_users(users, 0.0, 0) == set()


def test_discernment_examples_skip_heldout_users(tables):
    from conrec.llm.training.discernment import heldout_users

    items, samples, sid_map = tables
    cfg = SftConfig(tasks=TaskMix(next_negative=0, future_negative=0, sid_to_title=0, title_to_sid=0, sid_to_category=0,
                                  discernment=1.0), discernment_holdout=0.3)
    ex = build_examples(samples, items, sid_map, cfg, seed=1, cfg_seed=5)
    assert ex and all(e["task"] == "discernment" for e in ex)
    train = samples.filter(pl.col("split") == "train")
    held = heldout_users(train["user_id"].to_list(), 0.3, 5)
    user_of = dict(zip(map(str, train["sample_id"].to_list()), train["user_id"].to_list()))
    assert held and not {user_of[e["source"]] for e in ex} & held
    assert all(e["completion"] in e["prompt"].split("\n")[-2] for e in ex)  # the answer is one of the options


def test_discernment_accuracy_by_hand():
    from types import SimpleNamespace

    from conrec.llm.training.discernment import accuracy

    qs = [{"prompt": "q1", "options": ["a", "b", "c", "d"], "answer": "b"},
          {"prompt": "q2", "options": ["e", "f", "g", "h"], "answer": "e"},
          {"prompt": "q3", "options": ["i", "j", "k", "l"], "answer": "l"}]  # fmt: skip
    # log-probabilities: q1 argmax b (hit), q2 argmax f (miss), q3 argmax l (hit) -> 2/3
    scores = {"q1": [-3.0, -1.0, -2.0, -5.0], "q2": [-2.0, -1.0, -3.0, -4.0], "q3": [-9.0, -8.0, -7.0, -0.5]}
    predictor = SimpleNamespace(score_prompts=lambda prompts, options: [scores[p] for p in prompts])
    assert accuracy(predictor, qs) == pytest.approx(2 / 3)
    assert accuracy(predictor, []) is None


def test_discernment_check_says_how_many_questions_and_counts_them_off_a_terminal(tables, monkeypatch, tmp_path):
    """Found on the real Gemma path: after the SFT bar (and each GRPO stage's) the discernment scoring printed nothing
    for minutes (334 s for 56 questions on a CPU). It now says how many questions it asks and counts them in a bar,
    whose plain lines appear off a terminal, scored in the decoder's batches (the same batches as one call)."""
    import io
    from types import SimpleNamespace

    from rich.console import Console

    from conrec.llm.config import DecodeConfig
    from conrec.llm.inference import predict
    from conrec.llm.training.discernment import measure

    _, samples, sid_map = tables
    batches: list[int] = []

    def score_prompts(prompts, options):
        batches.append(len(prompts))
        return [[0.0, -1.0, -1.0, -1.0] for _ in prompts]

    monkeypatch.setattr(predict.Predictor, "from_dir", classmethod(lambda cls, *a, **k: SimpleNamespace(score_prompts=score_prompts)))
    monkeypatch.setenv("CONREC_PROGRESS_SECONDS", "3600")  # the bar's last line only
    buf = io.StringIO()
    sft = SftConfig(discernment_holdout=0.5, discernment_eval=9)
    out = measure(tmp_path, sid_map, sft, DecodeConfig(batch_size=4), 5, samples,
                  console=Console(file=buf, force_terminal=False, width=200), who="SFT")
    n = out["n_questions"]
    assert n == 9 and batches == [4, 4, 1]
    lines = buf.getvalue().splitlines()
    assert lines[0] == "SFT: discernment check on 9 held-out four-choice questions (at most sft.discernment_eval = 9)"
    assert lines[1].startswith("SFT discernment: 9/9 (100%), ") and len(lines) == 2


def test_forgetting_summary_by_hand():
    from conrec.llm.training.discernment import markdown, summary

    sft = {"discernment": {"accuracy": 0.8, "n_questions": 50}}
    grpo = {"stages": [{"stage": "a", "discernment": {"accuracy": 0.7}}, {"stage": "b", "discernment": {"accuracy": 0.6}}]}
    s = summary(sft, grpo)
    # forgetting = (0.8 - 0.6) / 0.8 = 0.25 for the final model; stage a: 0.1 / 0.8 = 0.125
    assert s["grpo"] == 0.6 and s["forgetting"] == pytest.approx(0.25)
    assert s["stages"][0]["forgetting"] == pytest.approx(0.125)
    assert "| GRPO stage b | 0.600 | 25.0% |" in markdown(s) and "measure nothing" not in markdown(s)
    # SFT at chance (0.242 on 200 questions, as a MovieLens run had it): "0.0% forgetting" would read as a result
    at_chance = summary({"discernment": {"accuracy": 0.242, "n_questions": 200}}, {"stages": [{"stage": "a", "discernment": {"accuracy": 0.242}}]})
    assert "SFT is within chance on these 200 questions" in markdown(at_chance)
    assert summary(None, None) is None and summary({"discernment": None}, {"stages": []}) is None
    # a GRPO whose every group had zero advantage never moved off the SFT weights: no forgetting figure
    idle = {"stages": [{"stage": "a", "discernment": {"accuracy": 0.8}, "mean_zero_adv_share": 1.0},
                       {"stage": "b", "discernment": {"accuracy": 0.7}, "mean_zero_adv_share": 0.5}]}
    s = summary(sft, idle)
    assert s["stages"][0]["forgetting"] is None and s["stages"][0]["no_update"]
    assert s["stages"][1]["forgetting"] == pytest.approx(0.125) and s["forgetting"] == pytest.approx(0.125) and not s["no_update"]
    assert "| GRPO stage a | 0.800 | – (no update) |" in markdown(s) and "zero advantage" in markdown(s)
    assert summary(sft, {"stages": idle["stages"][:1]})["forgetting"] is None


def test_discernment_weight_gives_repeated_draws_per_sample(tables):
    items, samples, sid_map = tables
    mix = TaskMix(next_negative=0, future_negative=0, sid_to_title=0, title_to_sid=0, sid_to_category=0, discernment=3.0)
    ex = build_examples(samples, items, sid_map, SftConfig(tasks=mix, discernment_holdout=0.0), seed=1)
    n_train = samples.filter(pl.col("split") == "train").height
    # weight 3: three questions per train sample (every toy train sample can give one), with fresh draws
    assert len(ex) == 3 * n_train and len({e["prompt"] for e in ex}) > n_train


def test_item_text_never_becomes_a_control_token_in_the_alignment_tasks(tables):
    """Found by probing: a title '<a_3><b_1><c_2> Film' was tokenized as three SID tokens, so title_to_sid taught
    that another item's SID is this item's title; a category '<dis>' became the dislike marker."""
    from conrec.llm.inference.item_text import control_pattern, neutralise, tokenizer_control_tokens

    from builders import tiny_policy

    items, samples, sid_map = tables
    odd = sid_map.items[0]
    items = items.with_columns(
        title=pl.when(pl.col("item_id") == odd).then(pl.lit("<a_3><b_1><c_2> Film <eos>")).otherwise("title"),
        category=pl.when(pl.col("item_id") == odd).then(pl.lit("<dis>")).otherwise("category"),
    )
    _, tok, vocab = tiny_policy(sid_map)
    control = control_pattern(tokenizer_control_tokens(tok))
    assert tokenizer_control_tokens(tok) == sorted({"<eos>", "<pad>", "<unk>", *tok.get_added_vocab()})
    cfg = SftConfig(tasks=TaskMix(next_negative=0, future_negative=0, sid_to_title=3, title_to_sid=3, sid_to_category=3))
    ex = [e for e in build_examples(samples, items, sid_map, cfg, seed=1, control=control) if e["source"] == odd]
    texts = {e["task"]: e["prompt"] + e["completion"] for e in ex}
    assert "Item titled: < a_3>< b_1>< c_2> Film < eos>\nAnswer:" in texts["title_to_sid"]
    assert texts["sid_to_title"].endswith(" < a_3>< b_1>< c_2> Film < eos>") and texts["sid_to_category"].endswith(" < dis>")
    special = set((vocab.token_level >= 0).nonzero().flatten().tolist()) | {tok.convert_tokens_to_ids("<dis>"), tok.eos_token_id}
    assert special & set(tok("<a_3><b_1><c_2> Film <eos>", add_special_tokens=False)["input_ids"])  # unbroken: they match
    title_ids = tok(texts["title_to_sid"].split("\nAnswer:")[0], add_special_tokens=False)["input_ids"]
    assert not special & set(title_ids)
    # text without control-token text is unchanged: the prompts of existing runs stay the same
    plain = items["title"].to_list()[1:]
    assert [neutralise(t, control) for t in plain] == plain
    assert neutralise("a <b> c", control) == "a <b> c" and neutralise("<<a_1>>") == "<< a_1>>"


def test_the_report_says_a_timeline_models_questions_are_asked_in_the_segmented_layout():
    """Found by probing: a neg_timeline model's discernment accuracy was measured on segmented-layout questions
    (which it never trained on without sft.tasks.discernment) and reported without a word about it."""
    from conrec.llm.config import PromptConfig
    from conrec.llm.training.discernment import markdown, summary

    s = summary({"discernment": {"accuracy": 0.8, "n_questions": 50}}, None)
    for variant in ("timeline", "neg_timeline"):
        text = markdown(s, PromptConfig(variant=variant, max_pos_items=7))
        assert "asked in the segmented layout (a `<neg>` and a `<pos>` segment, up to sft.prompt.max_pos_items = 7" in text
        assert f"not in these models' {variant} layout" in text
    for variant in ("segmented", "merged", "neg_only"):
        assert "segmented layout" not in markdown(s, PromptConfig(variant=variant))
    assert "segmented layout" not in markdown(s)
