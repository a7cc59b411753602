"""What the tables of `conrec ablate` say, written by the real ablation code over fake stages and fake scores.

The stages are replaced by :func:`fake_stages`; the scores of each row by seeded per-point values (so the bootstrap,
the paired differences and the table layout are the real ones, without training a model).
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console

from conrec.config import PipelineConfig, load_config, preset_path
from conrec.runs import RunDir

N_POINTS = 60
K = 5


def _scores(seed_text: str) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """(metrics, per-point values) of one model, seeded by ``seed_text`` (a row's directory and model)."""
    rng = np.random.default_rng(zlib.crc32(seed_text.encode()))
    points = {f"FHR@{K}": rng.integers(0, 2, N_POINTS).astype(float), f"HR@{K}": rng.integers(0, 2, N_POINTS).astype(float)}
    return {key: float(v.mean()) for key, v in points.items()}, points


@pytest.fixture()
def fake_scores(monkeypatch: pytest.MonkeyPatch, fake_stages: list[str]) -> list[str]:
    """Every row's and baseline's scores made up (seeded), the stages faked: the ablation runs its real table code."""
    import conrec.ablation as ablation

    def points(rd: RunDir, name: str, e: dict[str, Any], horizons: list[float]) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        return _scores(f"{rd.root.name}/{name}")

    def baselines(cfg: PipelineConfig, rd: RunDir, e: dict[str, Any]) -> tuple[list[str], dict[str, Any], dict[str, Any]]:
        m, p = _scores("popularity")
        return ["popularity"], {"popularity": m}, {"popularity": p}

    monkeypatch.setattr(ablation, "_eval_inputs", lambda cfg: {"ks": [K], "horizons": [], "users": None})
    monkeypatch.setattr(ablation, "_points", points)
    monkeypatch.setattr(ablation, "_baseline_rows", baselines)
    return fake_stages


def _ablate(tmp_path: Path, what: str, **settings: Any) -> tuple[str, str]:
    """(the table file, the console) of `conrec ablate --what` on preset:tiny with ``settings``."""
    from conrec.ablation import run

    cfg = load_config(preset_path("tiny"), {"run_dir": str(tmp_path / "run"), "eval": {"ks": [K]}, **settings})
    console = Console(record=True, width=200)
    run(cfg, what, console=console)
    return (tmp_path / "run" / "ablations" / f"{what}.md").read_text(), console.export_text()


@pytest.mark.parametrize("what", ["grpo", "prompts", "paper"])
def test_each_table_says_which_split_it_scored_and_that_test_is_report_only(tmp_path: Path, fake_scores: list[str], what: str) -> None:
    """Found by the session-40 experiments: every shipped ablation config scores test, and the table said only
    "split `test`", though the tables exist to choose between components (chosen on valid, test scored once)."""
    table, shown = _ablate(tmp_path / "test", what, data={"split": {"train_until": "test"}})
    note = "Scored on the test split: a report, not a basis for choosing a setting; settings are chosen on valid"
    assert note in table and note in " ".join(shown.split())
    from conrec.ablation import split_note

    assert split_note(load_config(preset_path("tiny"))).startswith(note)
    table, shown = _ablate(tmp_path / "valid", what, eval={"ks": [K], "split": "valid"})
    assert "Scored on the valid split, where settings are chosen" in table and "report" not in table.split("\n\n")[2]


@pytest.mark.parametrize(("what", "variant", "reference", "rows"), [
    ("grpo", "timeline", "sft", {"grpo_next_neg": "grpo_next_neg/grpo", "grpo_future": "grpo_future/grpo"}),
    ("prompts", "segmented", "sft_segmented", {"sft_neg_only": "neg_only/sft", "sft_timeline": "timeline/sft"}),
    ("prompts", "timeline", "sft_timeline", {"sft_merged": "merged/sft", "sft_segmented": "segmented/sft"}),
])
def test_the_grpo_and_prompts_tables_give_each_row_a_paired_difference_to_their_reference_row(
    tmp_path: Path, fake_scores: list[str], what: str, variant: str, reference: str, rows: dict[str, str]
) -> None:
    """The grpo and prompts tables gave only "Δ vs best baseline": whether GRPO beat the SFT model it started from,
    or a layout the run's own, was left to two overlapping, unpaired CIs. Each row now has its paired difference to
    the reference row (the SFT row; the run's own layout), on the resampled points the CIs use, as the paper's Δ prev."""
    from conrec.eval.bootstrap import paired_diff_ci, resample_indices
    from conrec.io import read_json

    tasks = {"timeline": 1.0, "next_negative": 0.0, "future_negative": 0.0} if variant == "timeline" else {"timeline": 0.0}
    table, _ = _ablate(tmp_path, what, sft={"prompt": {"variant": variant}, "tasks": tasks})
    ref_dir = {"sft": "sft/sft", "sft_segmented": "segmented/sft", "sft_timeline": "timeline/sft"}[reference]
    ref_points = _scores(ref_dir)[1][f"FHR@{K}"]
    idx = resample_indices(N_POINTS, 1000, 0)
    assert f"| Δ vs {reference} [95% CI] | Δ vs best baseline [95% CI] |" in table
    assert f"| {reference} | " in table and "| (reference) |" in table
    saved = {r["variant"]: r for r in read_json(tmp_path / "run" / "ablations" / f"{what}.json")["variants"]}
    for row, seeded in rows.items():
        points = _scores(seeded)[1][f"FHR@{K}"]
        diff = points.mean() - ref_points.mean()
        lo, hi = paired_diff_ci(points, ref_points, idx, 0.95)
        line = [line for line in table.splitlines() if line.startswith(f"| {row} |")][-1]  # the variants table's
        assert f"| {diff:+.3f} [{lo:+.3f}, {hi:+.3f}] |" in line, line
        assert saved[row]["diff_ref"] == pytest.approx(diff) and saved[row]["diff_ref_ci"] == pytest.approx([lo, hi])


def test_the_paper_table_keeps_its_paired_difference_to_the_row_above(tmp_path: Path, fake_scores: list[str]) -> None:
    """The paper ladder's Δ prev now comes from the helper the other tables use: the same figures."""
    from conrec.eval.bootstrap import paired_diff_ci, resample_indices

    table, _ = _ablate(tmp_path, "paper")
    idx = resample_indices(N_POINTS, 1000, 0)
    ladder = [("sid_title", "sft"), ("alignment", "sft"), ("progressive", "grpo"), ("future_reward", "grpo"), ("pos_penalty", "grpo")]
    for (prev, prev_model), (row, model) in zip(ladder, ladder[1:]):
        a, p = _scores(f"{row}/{model}")[1][f"FHR@{K}"], _scores(f"{prev}/{prev_model}")[1][f"FHR@{K}"]
        lo, hi = paired_diff_ci(a, p, idx, 0.95)
        line = next(line for line in table.splitlines() if line.startswith(f"| {row} |"))
        assert f"| {a.mean() - p.mean():+.3f} [{lo:+.3f}, {hi:+.3f}] |" in line, line


@pytest.mark.parametrize("what", ["grpo", "paper"])
def test_the_seconds_columns_have_one_decimal_in_every_row(
    tmp_path: Path, fake_scores: list[str], monkeypatch: pytest.MonkeyPatch, what: str
) -> None:
    """Found by a live run: the "train s" and "eval s" columns read `9.9`, `5`, `3.1` (``{:g}`` drops a whole number's
    decimal). Every seconds cell, and the total, now has the one decimal the stages record."""
    import re

    import conrec.ablation as ablation

    recorded = {"sft": 15.0, "grpo": 64.9, "eval": 5.0}  # whole seconds among others, as recorded (rounded to 0.1)
    monkeypatch.setattr(ablation, "stage_seconds", lambda run_dir, stage: recorded[stage])
    table, _ = _ablate(tmp_path, what)
    lines = table.splitlines()
    header = next(line for line in lines if "| train s |" in line)
    names = [c.strip() for c in header.strip("|").split("|")]
    columns = [names.index(c) for c in ("train s", "eval s", "row s") if c in names]
    block = lines[lines.index(header) + 2:]
    rows = [line for line in block[:block.index("")] if not line.startswith("| (")]  # the variants, no baseline line
    assert rows and len(columns) == 2
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert all(re.fullmatch(r"\d+\.\d", cells[i]) for i in columns), line
    assert any(f"| {recorded['eval']:.1f} |" in line or f"| {recorded['sft']:.1f} |" in line for line in rows)
    assert re.search(r"^Total \d+\.\d s", table, re.M)


@pytest.mark.parametrize(("variant", "changed", "task", "run_task"), [
    ("neg_timeline", ["sft_neg_only", "sft_segmented", "sft_merged"], "next_negative 1, future_negative 1", "timeline 1"),
    ("segmented", ["sft_timeline", "sft_neg_timeline"], "timeline 1", "next_negative 1, future_negative 1"),
])
def test_the_prompts_table_says_which_rows_train_another_history_task(
    tmp_path: Path, fake_scores: list[str], variant: str, changed: list[str], task: str, run_task: str
) -> None:
    """Found by the session-40 experiments: on preset:demo (neg_timeline, the timeline task) the neg_only, segmented and
    merged rows train the next/future-negative tasks instead (4 settings differ from the run, not 1; under epochs, other
    step counts), and the table said only "SFT, neg_only prompt"."""
    tasks = {"timeline": 1.0, "next_negative": 0.0, "future_negative": 0.0} if variant == "neg_timeline" else {"timeline": 0.0}
    table, _ = _ablate(tmp_path, "prompts", sft={"prompt": {"variant": variant}, "tasks": tasks})
    rows = {line.split(" | ")[0].removeprefix("| "): line for line in table.splitlines() if line.startswith("| sft_") and "prompt" in line}
    assert len(rows) == 5
    for name, line in rows.items():
        label = f"| SFT, {name.removeprefix('sft_')} prompt, history task {task if name in changed else run_task}"
        assert label + (" (not the run's) |" if name in changed else " |") in line, line
    listed = ", ".join(changed[:-1]) + " and " + changed[-1]
    assert f"The {listed} rows train the history task {task} instead of the run's {run_task}: " in table


def test_a_table_is_marked_stale_once_a_stage_it_was_read_from_runs_again(tmp_path: Path, fake_scores: list[str]) -> None:
    """Found by the session-40 experiments: after `conrec demo` retrained the run with another GRPO learning rate, the
    old grpo.md stood as it was, with nothing to say its rows no longer matched the run. `conrec demo` now marks it."""
    from typer.testing import CliRunner

    from conrec.ablation_stale import STALE_MARK
    from conrec.cli import app
    from conrec.config import dump_config

    cfg = load_config(preset_path("tiny"), {"run_dir": str(tmp_path / "run"), "eval": {"ks": [K]}})
    path = tmp_path / "run.yaml"
    path.write_text(dump_config(cfg))
    table, _ = _ablate(tmp_path, "grpo")
    assert not table.startswith(STALE_MARK)
    out = CliRunner().invoke(app, ["demo", "-c", str(path)])  # every stage current: nothing ran again
    assert out.exit_code == 0, out.output
    assert (tmp_path / "run" / "ablations" / "grpo.md").read_text() == table and "is stale (" not in out.output

    path.write_text(dump_config(cfg.model_copy(update={"grpo": cfg.grpo.model_copy(update={"learning_rate": 2e-5})})))
    out = CliRunner().invoke(app, ["demo", "-c", str(path)])
    assert out.exit_code == 0, out.output
    marked = (tmp_path / "run" / "ablations" / "grpo.md").read_text()
    assert marked.startswith(f"{STALE_MARK} the grpo stage of the run was run again or removed after this table was written; ")
    assert "rerun `conrec ablate --what grpo` to rewrite it." in marked.splitlines()[0] and marked.endswith(table)
    assert "ablations/grpo.md is stale (the grpo stage of the run was run again" in " ".join(out.stdout.split())


def test_a_table_an_ablation_starts_to_rewrite_is_marked_until_it_is_rewritten(tmp_path: Path, fake_scores: list[str],
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """An ablation stopped halfway (Ctrl-C, SIGKILL, an error in a row) left the previous table as it was, though the
    rows it had rerun (another run config, another conrec) may no longer match it."""
    import conrec.ablation as ablation
    from conrec.ablation_stale import STALE_MARK

    table, _ = _ablate(tmp_path, "prompts")
    real = ablation._run_rows

    def stop(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(ablation, "_run_rows", stop)
    with pytest.raises(KeyboardInterrupt):
        _ablate(tmp_path, "prompts")
    marked = (tmp_path / "run" / "ablations" / "prompts.md").read_text()
    assert marked.startswith(f"{STALE_MARK} `conrec ablate --what prompts` was started again after this table was written and "
                             "has not finished; ") and marked.endswith(table)
    monkeypatch.setattr(ablation, "_run_rows", real)
    again, _ = _ablate(tmp_path, "prompts")  # rows current: rewritten, unmarked
    assert not again.startswith(STALE_MARK) and again.split("Total")[0] == table.split("Total")[0]


@pytest.mark.parametrize("stage", ["data", "sid", "sft", "grpo", "eval"])
def test_a_single_stage_command_marks_the_tables_it_invalidates(tmp_path: Path, fake_scores: list[str], stage: str) -> None:
    """Found by the session-41 probes: `conrec sft` (or grpo, eval, data, sid) run alone replaced a stage a table was
    read from and left the table unmarked; only `conrec demo` and `conrec ablate` marked it. Every stage run marks them
    now (conrec.pipeline, as it clears the stages it invalidates), whichever command started it."""
    from typer.testing import CliRunner

    from conrec.ablation_stale import STALE_MARK
    from conrec.cli import app
    from conrec.config import dump_config

    cfg = load_config(preset_path("tiny"), {"run_dir": str(tmp_path / "run"), "eval": {"ks": [K]}})
    path = tmp_path / "run.yaml"
    path.write_text(dump_config(cfg))
    table, _ = _ablate(tmp_path, "grpo")
    out = CliRunner().invoke(app, [stage, "-c", str(path)])
    assert out.exit_code == 0, out.output
    marked = (tmp_path / "run" / "ablations" / "grpo.md").read_text()
    assert marked.startswith(f"{STALE_MARK} the {stage} stage of the run was run again or removed after this table was written; ")
    assert marked.endswith(table)
    assert f"ablations/grpo.md is stale (the {stage} stage of the run was run again" in " ".join(out.stdout.split())
