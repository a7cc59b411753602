"""Progressive GRPO: schedule, rollout groups, a real 2-stage TRL run on a tiny model, and resume."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from rich.console import Console

from conrec.config import load_config
from conrec.io import read_json
from conrec.llm.config import GrpoConfig, GrpoStageConfig, PromptConfig
from conrec.llm.inference.prompt_ids import prompt_token_ids
from conrec.llm.inference.prompts import NEG_CLOSE, NEG_OPEN, POS_CLOSE, POS_OPEN
from conrec.llm.model.toy import toy_tables, write_toy_run
from conrec.llm.training.rewards import COMPONENTS
from conrec.sid.sid_map import SidMap
from conrec.stages import STAGE_REGISTRY

from builders import finished_run, grpo_run_dir, run_files, tiny_policy, trainer_warnings

torch.set_num_threads(2)


# --------------------------------------------------------------------------- schedule
def _segment(prompt: str, open_: str, close: str) -> str:
    m = re.search(re.escape(open_) + "(.*?)" + re.escape(close), prompt)
    return m.group(1) if m else ""


def test_stage_prompts_respect_budgets_and_shares() -> None:
    from conrec.llm.training.grpo import stage_records

    _, samples, sid_map = toy_tables(n_items=32, n_users=20, samples_per_user=4)
    prompt_cfg = PromptConfig(max_neg_items=3, max_pos_items=30)
    stage = GrpoStageConfig(name="some", steps=1, max_pos_items=2, positive_share=0.25)
    recs = stage_records(samples, stage, stage_seed=1, sid_of=sid_map.sid_lookup(), prompt_cfg=prompt_cfg)
    assert len(recs) == samples.height
    n_pos_items = [_segment(r["prompt"], POS_OPEN, POS_CLOSE).count("<a_") for r in recs]
    n_neg_items = [_segment(r["prompt"], NEG_OPEN, NEG_CLOSE).count("<a_") for r in recs]
    assert max(n_pos_items) == 2 and max(n_neg_items) <= 3
    with_pos = [r["pos_budget"] > 0 for r in recs]
    assert sum(with_pos) == round(0.25 * samples.height)  # every toy sample has positives
    assert all((n > 0) == w for n, w in zip(n_pos_items, with_pos))
    # targets travel as columns; liked items are the history positives
    row = samples.row(0, named=True)
    assert recs[0]["future_negs"] == row["future_negs"] and recs[0]["next_neg"] == row["next_neg"]
    assert set(recs[0]["liked_items"]) == {i for i, f in zip(row["hist_items"], row["hist_feedback"]) if f > 0}
    # the negative-only stage never shows positives; a different stage seed picks different samples
    none = stage_records(samples, stage.model_copy(update={"positive_share": 0.0}), 1, sid_map.sid_lookup(), prompt_cfg)
    assert all(_segment(r["prompt"], POS_OPEN, POS_CLOSE) == "" for r in none)
    other = stage_records(samples, stage, stage_seed=2, sid_of=sid_map.sid_lookup(), prompt_cfg=prompt_cfg)
    assert [r["pos_budget"] for r in other] != [r["pos_budget"] for r in recs]


def test_n_with_positives_counts_the_prompts_that_show_one() -> None:
    """Found by probing: stats.json's n_with_positives counted the prompts given a positive budget, so a neg_only
    layout, or a world without positives, reported every prompt (64 of 64) as showing positives."""
    import polars as pl

    from conrec.llm.inference.prompts import LIKE_TAG
    from conrec.llm.training.grpo import n_with_positives, stage_records

    _, samples, sid_map = toy_tables(n_items=32, n_users=6, samples_per_user=3)
    sid_of = sid_map.sid_lookup()
    full = GrpoStageConfig(name="full", steps=1, max_pos_items=30, positive_share=1.0)
    assert n_with_positives(stage_records(samples, full, 1, sid_of, PromptConfig(variant="neg_only"))) == 0
    no_likes = samples.with_columns(pl.col("hist_feedback").list.eval(-pl.element().abs()))
    for variant in ("segmented", "merged", "timeline", "neg_timeline"):
        assert n_with_positives(stage_records(no_likes, full, 1, sid_of, PromptConfig(variant=variant))) == 0, variant
    half = stage_records(samples, full.model_copy(update={"positive_share": 0.5}), 1, sid_of, PromptConfig())
    assert n_with_positives(half) == sum(_segment(r["prompt"], POS_OPEN, POS_CLOSE) != "" for r in half) == round(0.5 * samples.height)
    timeline = stage_records(samples, full, 1, sid_of, PromptConfig(variant="timeline"))
    assert 0 < n_with_positives(timeline) == sum(LIKE_TAG in r["prompt"] for r in timeline)


def test_plan_stages_progressive_and_full_context_ablation() -> None:
    from conrec.llm.training.grpo import plan_stages

    grpo = GrpoConfig()
    prog = plan_stages(grpo, progressive=True)
    assert [s.name for s in prog] == ["neg_only", "some_pos", "full"]
    assert [s.max_pos_items for s in prog] == [0, 10, None]  # context grows, to the SFT prompt's own
    flat = plan_stages(grpo, progressive=False)
    assert len(flat) == 1 and flat[0].steps == sum(s.steps for s in grpo.stages)
    assert flat[0].max_pos_items is None and flat[0].positive_share == 1.0
    with pytest.raises(ValueError, match="unique"):
        GrpoConfig(stages=[GrpoStageConfig(name="a", steps=1), GrpoStageConfig(name="a", steps=1)])


@pytest.mark.parametrize("variant", ["timeline", "neg_timeline", "segmented", "merged", "neg_only"])
def test_the_full_context_stage_shows_the_prompt_eval_shows(variant: str) -> None:
    """Found by probing: with a timeline layout the presets' last stage and ``progressive: false`` capped the
    positives at sft.prompt.max_pos_items, which the timeline SFT windows and the eval and serving prompts never
    cap: GRPO trained on prompts the model never meets (114 of 208 with the demo preset). The full-context stage
    now shows what eval shows for the same sample (Predictor.prompt: build_prompt with max_pos_items None)."""
    from conrec.config import load_config, preset_path
    from conrec.llm.inference.prompts import LIKE_TAG, build_prompt
    from conrec.llm.training.grpo import plan_stages, stage_records

    _, samples, sid_map = toy_tables(n_items=32, n_users=6, samples_per_user=3)
    sid_of = sid_map.sid_lookup()
    cfg = load_config(None, {"sft": {"prompt": {"variant": variant, "max_pos_items": 2, "max_neg_items": 3}}})
    demo = load_config(preset_path("demo"))
    prompt_cfg = cfg.sft.prompt
    shown = [build_prompt(h, fb, sid_of, prompt_cfg, max_pos_items=None) for h, fb in samples.select("hist_items", "hist_feedback").iter_rows()]
    if prompt_cfg.is_timeline:
        assert max(p.count(LIKE_TAG) for p in shown) > 2  # more positives than the budget: the cap would show
    for stage in (cfg.grpo.stages[-1], plan_stages(cfg.grpo, progressive=False)[0], demo.grpo.stages[-1]):
        recs = stage_records(samples, stage, 1, sid_of, prompt_cfg)
        assert [r["prompt"] for r in recs] == shown, stage.name
        assert all(r["pos_budget"] >= 0 for r in recs)


def test_fingerprint_follows_what_changes_the_reward(tmp_path: Path) -> None:
    """A resumed GRPO run must not reuse stages trained under another reward (e.g. exclude_history)."""
    from conrec.llm.training.grpo import fingerprint

    def fp(overrides: dict[str, Any] | None = None, sft_dir: Path = tmp_path) -> str:
        cfg = load_config(None, overrides)
        return fingerprint(STAGE_REGISTRY["grpo"].section_of(cfg), tmp_path, sft_dir)

    base = fp()
    assert fp({"decode": {"exclude_history": False}}) != base
    assert fp({"grpo": {"reward": {"w_hit": 2.0}}}) != base
    assert fp({"grpo": {"reward": {"mode": "next_neg"}}}) != base
    assert fp({"grpo": {"progressive": False}}) != base
    assert fp({"sft": {"prompt": {"max_pos_items": 3}}}) != base  # the prompts GRPO builds
    assert fp({"eval": {"ks": [1]}}) == base  # downstream settings do not restart GRPO
    (tmp_path / "sft").mkdir()
    (tmp_path / "sft" / "config.json").write_text("{}")
    assert fp(sft_dir=tmp_path / "sft") != base  # other SFT weights


# --------------------------------------------------------------------------- rollout
@pytest.mark.parametrize("mode", ["beam", "sample"])
def test_rollout_groups_are_distinct_valid_items_across_processes(mode: str) -> None:
    from accelerate import PartialState

    from conrec.llm.training.grpo import build_rollout
    from conrec.llm.training.rollout import group_members

    _, _, sid_map = toy_tables(n_items=32, n_users=2)
    model, tok, vocab = tiny_policy(sid_map)
    grpo = GrpoConfig(num_generations=4, batch_size=8, rollout=mode)
    rollout = build_rollout(grpo, tok, sid_map, vocab)
    prompts = ["Predict an item this user will dislike .\nAnswer:"] * 4 + ["Disliked (oldest first) :\nAnswer:"] * 4
    state = PartialState(cpu=True)
    autocast_entered: list[bool] = []

    @contextlib.contextmanager
    def autocast():  # the trainer's mixed-precision context (bf16/fp16 on a GPU): rollouts must decode under it
        autocast_entered.append(True)
        yield

    trainer = SimpleNamespace(
        accelerator=SimpleNamespace(process_index=0, unwrap_model=lambda m: m, state=state, autocast=autocast),
        model_wrapped=model,
        args=SimpleNamespace(ds3_gather_for_generation=True),
    )
    from unittest import mock

    with mock.patch("trl.models.unwrap_model_for_generation") as unwrap:
        unwrap.return_value.__enter__.return_value = model
        out = rollout(prompts, trainer)
    assert autocast_entered
    items = out["gen_item"]
    assert out["logprobs"] is None and len(out["completion_ids"]) == len(prompts) == len(out["prompt_ids"])
    for g in (items[:4], items[4:]):
        assert None not in g and len(set(g)) == 4  # G distinct valid items per group
    level_ids = torch.stack(vocab.level_ids, 0)
    for c, item in zip(out["completion_ids"], items):
        codes = sid_map.codes_of([item])[0]
        assert c == [int(level_ids[lvl, codes[lvl]]) for lvl in range(sid_map.levels)] + [tok.eos_token_id]
    assert out["prompt_ids"][0] == prompt_token_ids(tok, prompts[:1])[0]
    assert rollout.stats.invalid == 0 and rollout.stats.duplicates == 0
    # process 1 of 2 with 6 local completions per process: its slice starts in the middle of a group
    member, group = group_members(6, 1, 4)
    assert member.tolist() == [2, 3, 0, 1, 2, 3] and group.tolist() == [0, 0, 1, 1, 1, 1]


def test_a_group_split_across_processes_is_checked_whole_for_duplicates() -> None:
    """Found by probing: with rollout: sample on 2 processes, a group split between them was drawn twice,
    independently, and held an item twice, while stats.json's duplicate_items stayed 0 (each process counted its
    own half). Duplicates are now counted on the gathered batch, and that layout is refused (test_config_strict)."""
    from conrec.llm.training.rollout import ConstrainedRollout

    from builders import tiny_word_tokenizer

    n_items, g = 16, 4
    rollout = ConstrainedRollout(tiny_word_tokenizer(), lambda m, p, k: None, [f"i{j}" for j in range(n_items)],
                                 torch.zeros((n_items, 2), dtype=torch.long), 0, g)
    # process 0 of 2 holds group 0 and the first half of group 1 (6 completions each, G = 4); its draw of group 1
    # is [4, 5, 6, 7] (it keeps members 0-1), process 1's own draw of group 1 gave its members 2-3 the items 4 and 10
    rollout._generate = lambda trainer, texts: torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]])  # type: ignore[method-assign]
    other = torch.tensor([4, 10, 11, 12, 13, 14])
    acc = SimpleNamespace(process_index=0, num_processes=2, device=torch.device("cpu"), gather=lambda t: torch.cat([t.cpu(), other]))
    out = rollout(["a"] * 4 + ["b"] * 2, SimpleNamespace(accelerator=acc))
    assert out["gen_item"] == ["i0", "i1", "i2", "i3", "i4", "i5"]  # no repeat in this process's slice
    assert rollout.stats.duplicates == 1  # group 1 is [4, 5, 4, 10]


# --------------------------------------------------------------------------- end to end + resume
def test_grpo_two_stages_log_model_and_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from rich.console import Console
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import conrec.llm.training.grpo as grpo_mod
    from conrec.llm.model.vocab import assert_model_fits

    cfg, run = grpo_run_dir(tmp_path / "run")
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200)  # off a terminal: the bars' plain lines
    built: list[str] = []
    trainers: list[Any] = []
    starts: list[dict[str, torch.Tensor]] = []  # each stage's policy weights when its trainer is built
    real_make = grpo_mod._make_trainer

    def counting_make(spec: Any) -> Any:
        built.append(spec.stage.name)
        starts.append({k: v.detach().clone() for k, v in spec.policy.state_dict().items()})
        trainers.append(real_make(spec))
        return trainers[-1]

    monkeypatch.setattr(grpo_mod, "_make_trainer", counting_make)
    real_on_log = grpo_mod.GrpoLogCallback.on_log
    crashing_on_log = _crash_in_stage_1_at_step_2(real_on_log)

    # 1) crash in stage 1 after its step-1 checkpoint
    monkeypatch.setattr(grpo_mod.GrpoLogCallback, "on_log", crashing_on_log)
    with pytest.raises(RuntimeError, match="simulated crash"):
        STAGE_REGISTRY["grpo"].call(cfg, console=console)
    assert (run.grpo / "stage_0" / "_done.json").exists() and not (run.grpo / "stage_1" / "_done.json").exists()
    assert (run.grpo / "stage_1" / "checkpoints" / "checkpoint-1").is_dir()
    assert not run.is_done("grpo") and built == ["neg", "pos"]
    # a kill while checkpoint-2 was being written (issue 13.2): weights there, trainer state not yet
    ckpts = run.grpo / "stage_1" / "checkpoints"
    (ckpts / "checkpoint-2").mkdir()
    shutil.copy(ckpts / "checkpoint-1" / "model.safetensors", ckpts / "checkpoint-2")

    # 2) resume: stage 0 skipped, stage 1 continues from checkpoint-1
    monkeypatch.setattr(grpo_mod.GrpoLogCallback, "on_log", real_on_log)
    result = STAGE_REGISTRY["grpo"].call(cfg, console=console)
    assert built == ["neg", "pos", "pos"]
    assert result["stages"][1]["resumed_from"] == "checkpoint-1" and result["steps"] == 4
    assert result["steps_this_run"] == 2  # stage 1's steps 2 and 3 only: its step 1 ran before the crash
    assert result["num_processes"] == 1 and [s["num_processes"] for s in result["stages"]] == [1, 1]
    log = read_json(run.grpo / "reward_log.json")
    assert [(e["stage"], e["step"]) for e in log] == [("neg", 1), ("pos", 2), ("pos", 3), ("pos", 4)]
    for e in log:
        assert set(e["components"]) == set(COMPONENTS)  # sim / pos_sim logged too when the run has item vectors
        assert 0.0 <= e["zero_adv_share"] <= 1.0 and e["invalid_rate"] == 0.0
        assert np.isfinite(e["reward"])
    assert result["stages"][1]["invalid_rate"] == 0.0 and result["stages"][1]["duplicate_items"] == 0
    # the discernment accuracy on held-out users is measured after every stage (forgetting)
    for st in result["stages"]:
        d = st["discernment"]
        assert d["n_questions"] > 0 and 0.0 <= d["accuracy"] <= 1.0 and d["chance"] == 0.25
    assert run.is_done("grpo")
    for i, name in enumerate(("neg", "pos")):  # each stage's check says how many questions, and counts them
        n = result["stages"][i]["discernment"]["n_questions"]
        assert f"GRPO stage {i} ({name}): discernment check on {n} held-out four-choice questions" in out.getvalue()
        assert f"GRPO stage {i} ({name}) discernment: {n}/{n} (100%)" in out.getvalue()

    # the final model is a plain HF dir with the SID vocabulary of the run
    model = AutoModelForCausalLM.from_pretrained(run.grpo_model)
    tok = AutoTokenizer.from_pretrained(run.grpo_model)
    assert_model_fits(run.grpo_model, SidMap.from_parquet(run.sid_map))
    ids = tok("Answer: <a_1><b_2>", add_special_tokens=False, return_tensors="pt")["input_ids"]
    assert torch.isfinite(model(ids).logits).all()
    sft = AutoModelForCausalLM.from_pretrained(run.sft_model)
    assert any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(), sft.state_dict().values()))
    # the KL reference is the SFT model in every stage, also in a later stage whose policy starts from the
    # previous stage's weights (TRL builds it from the policy's _name_or_path: this guards a TRL upgrade)
    sft_state = sft.state_dict()
    for trainer in trainers:
        ref = trainer.ref_model.state_dict()
        assert sft_state.keys() == ref.keys() and all(torch.equal(sft_state[k], ref[k]) for k in sft_state)
    assert any(not torch.equal(starts[-1][k], sft_state[k]) for k in sft_state)  # stage 1's policy started from stage 0's weights

    # the final model is the last stage's, its files shared (hard links), not a second copy of the weights
    assert _shares_files(run.grpo_model, run.grpo / "stage_1" / "model")

    # 3) everything finished: a rerun trains nothing, and publishes the kept last stage's model again
    STAGE_REGISTRY["grpo"].call(cfg, console=console)
    assert built == ["neg", "pos", "pos"]
    assert run.is_done("grpo") and _shares_files(run.grpo_model, run.grpo / "stage_1" / "model")


def test_a_skipped_or_resumed_stage_is_said_by_the_main_process_only(tmp_path: Path) -> None:
    """Under torchrun each process printed "finished earlier, skipped" and "resuming from checkpoint-N"."""
    import conrec.llm.training.grpo as grpo_mod
    from conrec.llm.model.checkpoints import COMPLETE_FILE

    (tmp_path / "stage_0").mkdir()
    (tmp_path / "stage_0" / "_done.json").write_text(json.dumps({"stage": "neg", "steps": 2}))
    ckpt = tmp_path / "stage_1" / "checkpoints" / "checkpoint-1"
    ckpt.mkdir(parents=True)
    (ckpt / COMPLETE_FILE).write_text("{}")
    (ckpt / "trainer_state.json").write_text("{}")
    log = SimpleNamespace(keep_until=lambda *a: None)
    for is_main in (False, True):
        out = io.StringIO()
        job = SimpleNamespace(work=tmp_path, is_main=is_main, resume=True, console=Console(file=out, width=200),
                              state=SimpleNamespace(wait_for_everyone=lambda: None, num_processes=1))
        assert grpo_mod._finished_earlier(job, 0, SimpleNamespace(name="neg")) == {"stage": "neg", "steps": 2}
        assert grpo_mod._finished_earlier(job, 1, SimpleNamespace(name="pos")) is None
        assert grpo_mod._resume_point(job, log, 1, SimpleNamespace(name="pos"), ckpt.parent) == ckpt
        said = ["GRPO stage 0 (neg): finished earlier, skipped", "GRPO stage 1 (pos): resuming from checkpoint-1"] if is_main else []
        assert out.getvalue().splitlines() == said


def test_a_stage_whose_only_checkpoint_is_incomplete_says_it_starts_from_step_0(tmp_path: Path) -> None:
    """Found by probing (SIGKILL while a GRPO stage saved its first checkpoint): the rerun deleted the half-written
    checkpoint and trained the stage from step 0 without a word, where a resume says "resuming from checkpoint-N"."""
    import conrec.llm.training.grpo as grpo_mod

    ckpts = tmp_path / "stage_1" / "checkpoints"
    (ckpts / "checkpoint-2").mkdir(parents=True)
    (ckpts / "checkpoint-2" / "trainer_state.json").write_text("{}")  # no _complete.json: cut short while saving
    log = SimpleNamespace(keep_until=lambda *a: None)
    for is_main in (False, True):
        out = io.StringIO()
        job = SimpleNamespace(work=tmp_path, is_main=is_main, resume=True, console=Console(file=out, width=80),
                              state=SimpleNamespace(wait_for_everyone=lambda: None, num_processes=1))
        assert grpo_mod._resume_point(job, log, 1, SimpleNamespace(name="pos"), ckpts) is None
        said = ["GRPO stage 1 (pos): the earlier run's checkpoint-2 was not completely written (the run was stopped during a save) "
                "and cannot be resumed: training starts from step 0"] if is_main else []
        assert out.getvalue().splitlines() == said  # one line, also in an 80-column log
    assert not (ckpts / "checkpoint-2").exists()
    out = io.StringIO()
    job = SimpleNamespace(work=tmp_path, is_main=True, resume=True, console=Console(file=out),
                          state=SimpleNamespace(wait_for_everyone=lambda: None, num_processes=1))
    assert grpo_mod._resume_point(job, log, 1, SimpleNamespace(name="pos"), ckpts) is None
    assert out.getvalue() == ""  # no checkpoint at all: a first run, nothing to say


def test_a_stage_checkpoint_made_with_another_number_of_processes_is_refused_not_resumed(tmp_path: Path) -> None:
    """Found by a scale-out probe (SFT was fixed the same day): grpo.batch_size is per process, and a GRPO stage
    interrupted under torchrun with 2 processes was resumed by a 1-process launch without a word."""
    import conrec.llm.training.grpo as grpo_mod
    from conrec.errors import StageInputError
    from conrec.llm.model.checkpoints import COMPLETE_FILE, OWNER_FILE

    ckpts = tmp_path / "stage_1" / "checkpoints"
    (ckpts / "checkpoint-1").mkdir(parents=True)
    (ckpts / "checkpoint-1" / COMPLETE_FILE).write_text("{}")
    (ckpts / "checkpoint-1" / "trainer_state.json").write_text("{}")
    log = SimpleNamespace(keep_until=lambda *a: None)

    def job(n: int) -> SimpleNamespace:
        return SimpleNamespace(work=tmp_path, is_main=True, resume=True, console=Console(file=io.StringIO()),
                               state=SimpleNamespace(wait_for_everyone=lambda: None, num_processes=n))

    stage = SimpleNamespace(name="pos")
    assert grpo_mod._resume_point(job(1), log, 1, stage, ckpts) == ckpts / "checkpoint-1"  # no record: made by 1
    assert json.loads((ckpts / OWNER_FILE).read_text()) == {"num_processes": 1}
    with pytest.raises(StageInputError, match=r"stage 1 \(pos\): .*trained with 1 process\(es\), this launch has 2.*--no-resume"):
        grpo_mod._resume_point(job(2), log, 1, stage, ckpts)
    assert (ckpts / "checkpoint-1").is_dir()  # kept for a launch with the right count
    (ckpts / OWNER_FILE).write_text(json.dumps({"num_processes": 2}))
    assert grpo_mod._resume_point(job(2), log, 1, stage, ckpts) == ckpts / "checkpoint-1"
    no_resume = SimpleNamespace(**{**vars(job(1)), "resume": False})
    assert grpo_mod._resume_point(no_resume, log, 1, stage, ckpts) is None  # --no-resume: any count starts over


def _shares_files(a: Path, b: Path) -> bool:
    """Whether the two model dirs hold the same file names, each one file under two names (a hard link)."""
    names = sorted(p.name for p in a.iterdir())
    return names == sorted(p.name for p in b.iterdir()) and "model.safetensors" in names and all(
        (a / n).samefile(b / n) for n in names
    )


def test_publish_model_copies_where_links_are_refused_and_never_leaves_a_half_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found on the real Gemma path: grpo/model was a full copy of grpo/stage_<last>/model (1 GB more per
    Gemma run); it is now hard links, a copy where the filesystem refuses links (another device), and still whole or
    absent: a failure half-way leaves the earlier grpo/model as it was."""
    import errno
    import os

    import conrec.llm.training.grpo as grpo_mod

    last = tmp_path / "stage_1" / "model"
    last.mkdir(parents=True)
    for name, data in (("config.json", b"{}"), ("model.safetensors", b"w" * 64), ("tokenizer.json", b"{}")):
        (last / name).write_bytes(data)
    out = tmp_path / "model"
    grpo_mod.publish_model(last, out)
    assert all((out / p.name).samefile(p) for p in last.iterdir())

    def refused(src: str, dst: str) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", refused)
    grpo_mod.publish_model(last, out)
    assert all((out / p.name).read_bytes() == p.read_bytes() and not (out / p.name).samefile(p) for p in last.iterdir())

    before = {p.name: p.read_bytes() for p in out.iterdir()}
    calls: list[str] = []
    real = grpo_mod.link_or_copy

    def dies_on_the_second_file(src: str, dst: str) -> str:
        calls.append(src)
        if len(calls) == 2:
            raise RuntimeError("killed")
        return real(src, dst)

    monkeypatch.setattr(grpo_mod, "link_or_copy", dies_on_the_second_file)
    with pytest.raises(RuntimeError, match="killed"):
        grpo_mod.publish_model(last, out)
    assert len(calls) == 2 and {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "stage_1"]  # no temporary dir left


def test_grpo_requires_sft_model(tmp_path: Path) -> None:
    from conrec.errors import ConfigError, StageInputError

    cfg = load_config(None, {"run_dir": str(tmp_path / "run")})
    write_toy_run(tmp_path / "run")
    with pytest.raises(StageInputError, match="SFT model"):
        STAGE_REGISTRY["grpo"].call(cfg)
    with pytest.raises(ConfigError, match="grpo.reward.mode"):
        load_config(None, {"grpo": {"reward": {"mode": "bogus"}}})


_QUIET = Console(quiet=True)


def _uninterrupted_run_a_and_a_copy_b(tmp_path: Path) -> Any:
    """Toy GRPO inputs in ``a`` and an identical copy in ``b``; GRPO runs uninterrupted in ``a``.
    Returns ``b``'s config, for a run that crashes and resumes."""
    cfg, _ = grpo_run_dir(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    STAGE_REGISTRY["grpo"].call(cfg, console=_QUIET)
    return cfg.model_copy(update={"run_dir": tmp_path / "b"})


def _same_grpo_weights(a: Path, b: Path) -> bool:
    from safetensors.torch import load_file

    wa, wb = (load_file(str(root / "grpo" / "model" / "model.safetensors")) for root in (a, b))
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_grpo_resumed_after_a_crash_ends_with_the_uninterrupted_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Resume restores optimizer, scheduler, RNG and data position: bit-identical final weights."""
    import conrec.llm.training.grpo as grpo_mod

    cfg_b = _uninterrupted_run_a_and_a_copy_b(tmp_path)
    real_on_log = grpo_mod.GrpoLogCallback.on_log
    crashing_on_log = _crash_in_stage_1_at_step_2(real_on_log)

    monkeypatch.setattr(grpo_mod.GrpoLogCallback, "on_log", crashing_on_log)
    with pytest.raises(RuntimeError):
        STAGE_REGISTRY["grpo"].call(cfg_b, console=_QUIET)
    monkeypatch.setattr(grpo_mod.GrpoLogCallback, "on_log", real_on_log)
    with trainer_warnings() as warned:
        assert STAGE_REGISTRY["grpo"].call(cfg_b, console=_QUIET)["stages"][1]["resumed_from"] == "checkpoint-1"
    assert not [w for w in warned if "missing keys" in w], warned  # the tied head is no missing key (test_checkpoints.py)
    assert _same_grpo_weights(tmp_path / "a", tmp_path / "b")


def test_grpo_crash_after_the_last_step_resumes_without_an_extra_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash once stage 1 has trained all its steps, before it is marked done: the rerun must not
    train a step past the budget (resuming from a checkpoint of the last step did, at GRPO's
    constant learning rate), so its weights equal the uninterrupted run's."""
    import conrec.llm.training.grpo as grpo_mod

    cfg_b = _uninterrupted_run_a_and_a_copy_b(tmp_path)
    real_measure = grpo_mod.measure_discernment

    def crash_in_stage_1(model_dir: Path, *args: Any, **kwargs: Any) -> Any:
        if model_dir.parent.name == "stage_1":
            raise RuntimeError("simulated crash after the last step")
        return real_measure(model_dir, *args, **kwargs)

    monkeypatch.setattr(grpo_mod, "measure_discernment", crash_in_stage_1)
    with pytest.raises(RuntimeError, match="after the last step"):
        STAGE_REGISTRY["grpo"].call(cfg_b, console=_QUIET)
    monkeypatch.undo()
    stages = STAGE_REGISTRY["grpo"].call(cfg_b, console=_QUIET)["stages"]
    assert [s["steps"] for s in stages] == [1, 3]
    assert stages[1]["resumed_from"] == "checkpoint-2"  # no checkpoint of the step that ends training
    assert _same_grpo_weights(tmp_path / "a", tmp_path / "b")


def _crash_in_stage_1_at_step_2(real_on_log: Any) -> Any:
    """A GrpoLogCallback.on_log that logs as usual, then raises in stage 1 at step 2 (after its
    step-1 checkpoint): a crash the next ``grpo.run`` must resume from."""

    def crashing_on_log(self: Any, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> Any:
        real_on_log(self, args, state, control, logs=logs, **kw)
        if self.stage_index == 1 and state.global_step == 2:
            raise RuntimeError("simulated crash")

    return crashing_on_log


def test_grpo_similarity_reward_end_to_end(tmp_path: Path) -> None:
    """The similarity reward runs through TRL: item vectors from sid/embeddings.npy (no quantizer.pt in
    the toy run), Swing co-negatives, the future-positive column; its components reach the log."""
    from rich.console import Console


    cfg, run = grpo_run_dir(tmp_path / "run")
    n_items = len(SidMap.from_parquet(run.sid_map))
    run.sid.mkdir(parents=True, exist_ok=True)
    np.save(run.sid / "embeddings.npy", np.random.default_rng(0).normal(size=(n_items, 8)).astype(np.float32))
    reward = cfg.grpo.reward.model_copy(update={"mode": "similarity", "gamma": 0.5, "co_negatives": 2})
    stages = [GrpoStageConfig(name="only", steps=1)]
    cfg = cfg.model_copy(update={"grpo": cfg.grpo.model_copy(update={"reward": reward, "stages": stages})})
    result = STAGE_REGISTRY["grpo"].call(cfg, console=Console(quiet=True))
    assert result["reward_mode"] == "similarity"
    assert read_json(run.grpo / "plan.json")["item_vectors"] == "encoder"
    log = read_json(run.grpo / "reward_log.json")
    comps = log[0]["components"]
    assert 0.0 < comps["sim"] <= 1.0 and comps["pos_sim"] <= 0.0
    assert log[0]["reward"] == pytest.approx(comps["sim"] + 0.5 * comps["pos_sim"], abs=1e-5)


# --------------------------------------------------------------------------- stage presets (issue 15)
def test_paper_stage_preset_and_recency_limited_negatives() -> None:
    from conrec.llm.config import stage_preset
    from conrec.llm.inference.prompts import recent_negatives_only
    from conrec.llm.training.grpo import stage_records

    # by hand: t = 10 days; negatives n1 (day 2), n2 (day 8), positive p (day 1); 3-day limit keeps n2 and p
    day = 86_400
    kept = recent_negatives_only(["p", "n1", "n2"], [1, -1, -1], [1 * day, 2 * day, 8 * day], 10 * day, 3)
    assert kept == (["p", "n2"], [1, -1])
    assert recent_negatives_only(["n1"], [-1], [0], day, None) == (["n1"], [-1])

    paper = GrpoConfig(stages="paper").stages
    assert [(s.name, s.neg_recent_days, s.max_pos_items, s.positive_share) for s in paper] == [
        ("recent_neg", 3, 0, 0.0), ("all_neg", None, 0, 0.0), ("neg_pos", None, None, 1.0)
    ]  # fmt: skip
    assert GrpoConfig(stages={"preset": "paper", "steps": 4}).stages[2].steps == 4
    assert GrpoConfig().stages == stage_preset("positive_budget")  # today's default, unchanged
    with pytest.raises(ValueError, match="unknown GRPO stage preset"):
        GrpoConfig(stages="bogus")

    # a recency-limited stage (1 day here: the toy history's negatives are 0.5, 1.5 and 3 days old) shows
    # only the fresh negatives; the all-negatives stage shows every one
    _, samples, sid_map = toy_tables(n_items=32, n_users=2, samples_per_user=3)
    sid_of = sid_map.sid_lookup()
    prompt_cfg = PromptConfig(max_neg_items=20, max_pos_items=20)
    one_day = paper[0].model_copy(update={"neg_recent_days": 1})
    recent, everything = (stage_records(samples, st, 1, sid_of, prompt_cfg)[-1]["prompt"] for st in (one_day, paper[1]))
    row = samples.row(samples.height - 1, named=True)
    negs = [(i, s) for i, f, s in zip(row["hist_items"], row["hist_feedback"], row["hist_ts"]) if f < 0]
    fresh = [i for i, s in negs if s >= row["ts"] - 1 * day]
    assert 0 < len(fresh) < len(negs)  # the toy history spans more than 3 days
    neg_segment = lambda p: p.split(NEG_OPEN)[1].split(NEG_CLOSE)[0]  # noqa: E731
    assert neg_segment(recent) == "".join(sid_of(i) for i in fresh)
    assert neg_segment(everything) == "".join(sid_of(i) for i, _ in negs)


def test_grpo_continues_a_timeline_model_on_its_layout(tmp_path: Path) -> None:
    """GRPO prompts follow the SFT layout: a timeline model gets prompts ending in the dislike tag,
    and the constrained rollouts still generate real items after it (rewards logged)."""
    from rich.console import Console

    from conrec.llm.training.grpo import stage_records

    cfg, run = grpo_run_dir(tmp_path / "run")
    prompt = cfg.sft.prompt.model_copy(update={"variant": "neg_timeline", "max_timeline_events": 4})
    stages = [GrpoStageConfig(name="only", steps=1, max_pos_items=2, positive_share=1.0)]
    cfg = cfg.model_copy(
        update={"sft": cfg.sft.model_copy(update={"prompt": prompt}), "grpo": cfg.grpo.model_copy(update={"stages": stages})}
    )
    import polars as pl

    from conrec.io import read_parquet

    sid_of = SidMap.from_parquet(run.sid_map).sid_lookup()
    records = stage_records(read_parquet(run.samples).filter(pl.col("split") == "train"), stages[0], 0, sid_of, prompt)
    assert records and all(r["prompt"].endswith("<dis>") for r in records)
    result = STAGE_REGISTRY["grpo"].call(cfg, console=Console(quiet=True))
    log = read_json(run.grpo / "reward_log.json")
    assert result["stages"][0]["steps"] == 1 and np.isfinite(log[0]["reward"]) and 0.0 <= log[0]["zero_adv_share"] <= 1.0
    assert result["stages"][0]["n_with_positives"] == sum(r["shows_positive"] for r in records)  # what the prompts show


def test_reward_signals_see_the_baselines_fit_events_and_enough_prompts_for_a_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under the per-user protocol the co-dislike and Swing signals are fitted on each user's events
    before that user's valid start (the baselines' rule), not on a global cut-off that lets valid and
    test labels of short-lived users in; ``target: next`` gets no Swing extension; too few prompts for
    one step is a one-line error, not 0 steps saved as a finished model."""
    import polars as pl

    import conrec.llm.training.grpo as grpo_mod
    from conrec.data.splits import per_user_fit_events
    from conrec.errors import StageInputError
    from conrec.io import read_parquet, write_json
    from conrec.llm.training.collab import CoDislike
    from conrec.swing import Swing

    cfg, run = grpo_run_dir(tmp_path / "run")
    stats = read_json(run.data / "stats.json")
    write_json({**stats, "split_protocol": "per_user"}, run.data / "stats.json")
    split = cfg.data.split.model_copy(update={"protocol": "per_user"})
    reward = cfg.grpo.reward.model_copy(update={"mode": "similarity", "co_negatives": 2})
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"split": split}), "grpo": cfg.grpo.model_copy(update={"reward": reward})})
    np.save(run.sid / "embeddings.npy", np.eye(len(SidMap.from_parquet(run.sid_map)), dtype=np.float32))
    seen: dict[str, pl.DataFrame] = {}
    real_codislike, real_swing = CoDislike.fit, Swing.fit
    monkeypatch.setattr(CoDislike, "fit", classmethod(lambda cls, ev, **kw: (seen.__setitem__("codislike", ev), real_codislike(ev, **kw))[1]))
    monkeypatch.setattr(Swing, "fit", classmethod(lambda cls, ev, *a, **kw: (seen.__setitem__("swing", ev), real_swing(ev, *a, **kw))[1]))
    spec = STAGE_REGISTRY["grpo"]
    job = grpo_mod._prepare(spec.section_of(cfg), run.root, _QUIET, False, "similarity")
    expected = per_user_fit_events(read_parquet(run.events), split, "valid")
    for name in ("codislike", "swing"):
        assert seen[name].sort(["user_id", "ts", "item_id"]).equals(expected.sort(["user_id", "ts", "item_id"])), name
    assert "each user's events before" in job.fit_rule
    assert job.reward_funcs and read_parquet(run.events).height > expected.height  # the rule left events out

    seen.clear()
    nxt = cfg.grpo.model_copy(update={"reward": reward.model_copy(update={"target": "next"})})
    grpo_mod._prepare(spec.section_of(cfg.model_copy(update={"grpo": nxt})), run.root, _QUIET, False, "similarity")
    assert "swing" not in seen  # the conventional objective: the next negative alone

    few = cfg.grpo.model_copy(update={"max_samples": 1})  # one prompt; a step takes 8 / 4 = 2
    with pytest.raises(StageInputError, match=r"1 train prompt\(s\) but one step takes 2"):
        grpo_mod._prepare(spec.section_of(cfg.model_copy(update={"grpo": few})), run.root, _QUIET, False, "similarity")


# --------------------------------------------------------------------------- refusals leave a finished run as it was
@pytest.mark.parametrize(
    "grpo, match",
    [
        ({"batch_size": 6}, r"grpo.batch_size \(6\) x processes \(1\) must be a multiple of grpo.num_generations \(4\)"),
        ({"num_generations": 64, "batch_size": 64}, r"grpo.num_generations \(64\) exceeds the catalogue size \(32\)"),
        ({"max_samples": 1}, r"1 train prompt\(s\) but one step takes 2"),
        (None, r"grpo cannot train a model with a copy bias"),  # None: the SFT model has one
    ],
)
def test_a_refused_grpo_leaves_a_finished_run_as_it_was(tmp_path: Path, grpo: dict[str, Any] | None, match: str) -> None:
    """Found by probing: `conrec grpo` with a batch that splits a group (or too few prompts, or groups larger
    than the catalogue) refused in one line, after the pipeline had rewritten config.yaml and deleted the grpo
    and eval markers, and GRPO's plan step had deleted its stage outputs and reward log."""
    from conrec.errors import ConrecError
    from conrec.pipeline import run_stage

    cfg, run = finished_run(tmp_path / "run", copy_bias=grpo is None)
    before = run_files(run.root)
    bad = cfg.model_copy(update={"grpo": cfg.grpo.model_copy(update=grpo or {"beta": 0.1})})
    with pytest.raises(ConrecError, match=match):
        run_stage(bad, "grpo", console=_QUIET)
    assert run_files(run.root) == before
    assert run.is_done("grpo") and run.is_done("eval")
    with pytest.raises(ConrecError, match=match):  # a direct call of the runner is refused alike, before its plan
        STAGE_REGISTRY["grpo"].call(bad, console=_QUIET)
    assert run_files(run.root) == before


def test_a_similarity_reward_without_item_vectors_leaves_a_finished_run_as_it_was(tmp_path: Path) -> None:
    """Found by probing: the similarity reward's missing (or mis-sized) item vectors were found in GRPO's
    preparation, after the pipeline had rewritten config.yaml and deleted the grpo and eval markers."""
    from conrec.errors import ConrecError
    from conrec.pipeline import run_stage

    cfg, run = finished_run(tmp_path / "run")  # its sid/embeddings.npy has 1 row for 32 items
    before = run_files(run.root)
    bad = cfg.model_copy(update={"grpo": cfg.grpo.model_copy(update={"reward": cfg.grpo.reward.model_copy(update={"mode": "similarity"})})})
    with pytest.raises(ConrecError, match=r"has 1 rows for 32 items in the SID map"):
        run_stage(bad, "grpo", console=_QUIET)
    assert run_files(run.root) == before
    assert run.is_done("grpo") and run.is_done("eval")


def test_a_fresh_plan_says_why_it_discards_the_earlier_stages() -> None:
    """Found by probing: `conrec grpo --no-resume` emptied grpo/stage_* without a word (SFT says it discards)."""
    from conrec.llm.training.grpo import discard_note

    assert discard_note(had_plan=True, resume=False, earlier_stages=True) is not None
    assert "--no-resume or --force" in (discard_note(had_plan=False, resume=False, earlier_stages=True) or "")
    assert discard_note(had_plan=True, resume=False, earlier_stages=False) is None  # nothing there to discard
    assert discard_note(had_plan=True, resume=True, earlier_stages=True) == (
        "GRPO config or SFT model changed since the last run: starting from scratch"
    )
    assert discard_note(had_plan=False, resume=True, earlier_stages=False) is None
    # a plan without the prefix record but no stage with files: nothing is discarded, and it is no config change
    assert discard_note(had_plan=True, resume=True, earlier_stages=False, unprefixed=True) is None
    assert "does not record" in (discard_note(had_plan=True, resume=True, earlier_stages=True, unprefixed=True) or "")


def test_a_plan_trained_without_the_prompt_prefix_is_not_resumed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by probing the docs: in a run whose tokenizer puts a BOS before a text, a GRPO stage an older conrec made
    (its rollout prompts without the BOS) is stale, but `conrec demo` and `conrec grpo` found the same plan fingerprint
    (the prefix is not hashed) and kept every finished stage: the rerun trained nothing and was recorded as current.
    Such a plan now starts from scratch; a plan that records the prefix is still resumed."""
    import io

    from transformers import AutoTokenizer

    import conrec.llm.training.grpo as grpo_mod
    from conrec.runs import PROMPT_PREFIX_KEY

    from builders import with_bos

    cfg, run = grpo_run_dir(tmp_path / "run")
    built: list[str] = []
    real_make = grpo_mod._make_trainer
    monkeypatch.setattr(grpo_mod, "_make_trainer", lambda spec: (built.append(spec.stage.name), real_make(spec))[1])
    STAGE_REGISTRY["grpo"].call(cfg, console=_QUIET)
    assert built == ["neg", "pos"] and read_json(run.grpo / "plan.json")[PROMPT_PREFIX_KEY] is True
    tok = AutoTokenizer.from_pretrained(run.sft_model)
    tok.bos_token = tok.eos_token  # the toy tokenizer has none
    with_bos(tok).save_pretrained(run.sft_model)  # its config.json and weights untouched: the same plan fingerprint
    STAGE_REGISTRY["grpo"].call(cfg, console=_QUIET)
    assert built == ["neg", "pos"]  # made with the prefix: its finished stages are kept
    plan = read_json(run.grpo / "plan.json")
    del plan[PROMPT_PREFIX_KEY]  # as an older conrec wrote it
    (run.grpo / "plan.json").write_text(json.dumps(plan))
    out = io.StringIO()
    STAGE_REGISTRY["grpo"].call(cfg, console=Console(file=out, width=300))
    assert built == ["neg", "pos", "neg", "pos"]
    assert "does not record that its stages saw the tokenizer's special prefix" in out.getvalue()
    assert read_json(run.grpo / "plan.json")[PROMPT_PREFIX_KEY] is True
