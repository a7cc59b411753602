"""Report files and the eval stage end to end on a hand-built run directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from rich.console import Console

from conrec.config import load_config
from conrec.errors import StageInputError
from conrec.eval import stage as eval_stage
from conrec.eval.metrics import horizon_key
from conrec.eval.report import write_report
from conrec.eval.summary import summary_table
from conrec.io import write_json, write_parquet
from conrec.runs import RunDir
from conrec.stages import STAGE_REGISTRY

from builders import eval_run_dir

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _metrics() -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for n, model in enumerate(["popularity", "itemknn", "grpo"]):
        row: dict[str, float] = {"invalid_rate": 0.01 * n, "n_samples": 10.0}
        for k in (5, 10):
            row.update({f"FHR@{k}": 0.1 * (n + 1) / k, f"HR@{k}": 0.3 - 0.1 * n, f"NDCG@{k}": 0.05 * (n + 1)})
            row[f"Coverage@{k}"] = 0.2
            for h in (1.0, 7.0):
                row[horizon_key("FHR", k, h)] = 0.01 * h * (n + 1)
        out[model] = row
    return out


def test_report_has_every_model_row_best_in_bold_and_plots(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    log = [
        {"stage": "neg_only", "stage_index": 0, "step": s, "reward": 0.1 * s, "components": {"future": 0.05 * s}}
        for s in range(4)
    ] + [{"stage": "with_pos", "stage_index": 1, "step": s, "reward": 0.5 + 0.1 * s, "components": {}} for s in range(3)]
    write_json(log, run.grpo / "reward_log.json")
    path = write_report(run.root, _metrics(), {"users": 12, "dislike_share": 0.123456}, extra_sections=["## Extra\n\nhello"])

    assert path == run.report
    text = path.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| popularity") or line.startswith("| itemknn") or line.startswith("| grpo")]
    assert len(rows) == 6  # main table + FHR-vs-N table
    assert "**0.0600**" in text  # best FHR@5 (grpo: 0.3 / 5)
    assert "**0.3000**" in text  # best HR@5 (popularity)
    assert "**0.0000**" in text  # lowest invalid rate is best
    assert "| users | 12 |" in text and "0.1235" in text
    assert "## Extra" in text and "hello" in text
    for name in ("metrics.png", "fhr_vs_horizon.png", "grpo_rewards.png"):
        assert (run.eval / name).read_bytes()[:8] == PNG_MAGIC
        assert f"]({name})" in text


def test_report_without_reward_log_or_horizons(tmp_path: Path) -> None:
    metrics = {"popularity": {"FHR@20": 0.1, "HR@20": 0.2, "NDCG@20": 0.1, "Coverage@20": 0.3, "invalid_rate": 0.0}}
    write_report(tmp_path, metrics, {})
    assert (tmp_path / "eval" / "metrics.png").exists()
    assert not (tmp_path / "eval" / "grpo_rewards.png").exists()
    assert not (tmp_path / "eval" / "fhr_vs_horizon.png").exists()


def test_bad_reward_log_is_a_clear_error(tmp_path: Path) -> None:
    write_json([{"stage": "a", "step": 1}], tmp_path / "grpo" / "reward_log.json")
    with pytest.raises(StageInputError, match="entry 0"):
        write_report(tmp_path, _metrics(), {})


def test_summary_table_lists_models_and_the_headline_metrics() -> None:
    console = Console(record=True, width=100)
    console.print(summary_table(_metrics(), [5, 10]))
    out = console.export_text()
    for token in ("popularity", "itemknn", "grpo", "FHR@10", "HR@10", "Cand. Acc@1", "report.md"):
        assert token in out


def test_a_narrow_terminal_gets_every_value_of_the_summary_on_wrapped_lines() -> None:
    """At 40 columns rich cut the table's cells to ``…`` and dropped whole columns (model names, the
    difference, HR): a summary that fits is a table, one that does not is one wrapped line per model."""
    metrics = _metrics()
    wide = Console(record=True, width=120)
    wide.print(summary_table(metrics, [5, 10]))
    narrow = Console(record=True, width=40)
    narrow.print(summary_table(metrics, [5, 10]))
    table_text, lines_text = wide.export_text(), " ".join(narrow.export_text().split())
    assert "…" not in table_text and "─" in table_text and "…" not in lines_text and "─" not in lines_text
    for model, row in metrics.items():
        assert f"{model}: FHR@10 [95% CI] {row['FHR@10']:.3f}" in lines_text
        assert f"HR@10 {row['HR@10']:.3f}" in lines_text
        assert model in table_text
    assert "Δ vs best –, HR@10" in lines_text and "Δ: paired FHR difference" in lines_text


# --- the stage ------------------------------------------------------------------------------------

def _cfg(root: Path, **eval_overrides: object):
    section = {
        "baselines": ["popularity", "itemknn", "category", "sasrec"],
        "ks": [2, 5],
        "horizons": [1, 3, 30],
        "sasrec": {"epochs": 1, "hidden": 16, "layers": 1},
        "tune": False,
        **eval_overrides,
    }
    return load_config(None, {"run_dir": str(root), "data": {"split": {"horizon_days": 3, "max_horizon_days": 10}}, "eval": section})


def test_stage_end_to_end_with_a_fake_lm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run, test_cut = eval_run_dir(tmp_path / "run")
    run.sft_model.mkdir(parents=True)  # an "sft" checkpoint exists, "grpo" does not

    calls: dict[str, object] = {}

    def predict_samples(sections, run_dir, model: str, samples: pl.DataFrame, k: int, console: Console) -> pl.DataFrame:
        calls.update(model=model, n=samples.height, k=k)
        ids = samples["sample_id"].to_list()[:-1]  # the last sample gets no prediction: must count as misses
        return pl.DataFrame(
            {"sample_id": ids, "items": [["i0", "i1"]] * len(ids), "scores": [[0.0, -1.0]] * len(ids), "n_invalid": [1] * len(ids)},
            schema={"sample_id": pl.Int64, "items": pl.List(pl.String), "scores": pl.List(pl.Float64), "n_invalid": pl.Int64},
        )

    fitted_max_ts: list[int] = []
    real_make = eval_stage.make_baseline

    def spy_make(name, cfg):
        model = real_make(name, cfg)
        fit = model.fit

        def fit_spy(events: pl.DataFrame, items: pl.DataFrame) -> None:
            fitted_max_ts.append(int(events["ts"].max()))
            fit(events, items)

        model.fit = fit_spy  # type: ignore[method-assign]
        return model

    monkeypatch.setattr(eval_stage, "make_baseline", spy_make)
    console = Console(record=True, width=120)
    cfg = _cfg(run.root)
    cfg.decode.exclude_history = False  # the LM may rank history items: its top-K is not the baselines' kind
    metrics = STAGE_REGISTRY["eval"].call(cfg, console=console, load_lm=lambda sections, rd, model: (
        lambda samples, k, console: predict_samples(sections, rd, model, samples, k, console)))

    n_test = pl.read_parquet(run.samples).filter(pl.col("split") == "test").height
    assert list(metrics) == ["popularity", "itemknn", "category", "sasrec", "sft"]
    assert calls == {"model": "sft", "n": n_test, "k": 5}
    assert len(fitted_max_ts) == 4 and max(fitted_max_ts) < test_cut  # no event from the test period
    for name, row in metrics.items():
        assert row["n_samples"] == n_test
        assert horizon_key("FHR", 5, 1) in row and horizon_key("FHR", 2, 3) in row
        assert horizon_key("FHR", 5, 30) not in row  # beyond max_horizon_days
        preds = pl.read_parquet(run.predictions / f"{name}.parquet")
        assert preds["sample_id"].n_unique() == preds.height
    assert metrics["sft"]["invalid_rate"] == pytest.approx(1 / 3)  # 1 invalid per 2 returned items
    assert metrics["popularity"]["invalid_rate"] == 0.0
    saved = json.loads((run.eval / "metrics.json").read_text())
    assert saved["sft"]["FHR@5"] == pytest.approx(metrics["sft"]["FHR@5"])
    report = run.report.read_text()
    for name in metrics:
        assert f"| {name} |" in report
    assert "`grpo` skipped" in report and "max_horizon_days" in report
    # the LM trained up to the valid cut-off (the default train_until) is scored against baselines fitted up to test's
    assert "the LM saw less data than they did" in report
    assert "decode.exclude_history is off" in report
    assert "cut short by the end of the log" in report  # test points of the last days: their 3-day windows run past it
    assert run.is_done("eval")
    assert "FHR@5" in console.export_text()


def test_stage_caps_samples_deterministically_and_derives_missing_cutoff(tmp_path: Path) -> None:
    run, _ = eval_run_dir(tmp_path / "run", with_stats=False)
    cfg = _cfg(run.root, baselines=["popularity"], models=[], max_samples=5, split="valid")
    first = STAGE_REGISTRY["eval"].call(cfg, console=Console(width=120))
    ids_first = pl.read_parquet(run.predictions / "popularity.parquet")["sample_id"].to_list()
    STAGE_REGISTRY["eval"].call(cfg, console=Console(width=120))
    assert pl.read_parquet(run.predictions / "popularity.parquet")["sample_id"].to_list() == ids_first
    assert first["popularity"]["n_samples"] == 5
    assert "min ts of the valid samples" in run.report.read_text()


def test_stage_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(StageInputError, match="events"):
        STAGE_REGISTRY["eval"].call(_cfg(tmp_path / "empty"), console=Console())
    run, _ = eval_run_dir(tmp_path / "run")
    samples = pl.read_parquet(run.samples).filter(pl.col("split") != "test")
    write_parquet(samples, run.samples)
    with pytest.raises(StageInputError, match="no samples in split 'test'"):
        STAGE_REGISTRY["eval"].call(_cfg(run.root), console=Console())


def test_an_earlier_evals_optional_outputs_are_not_left_for_later_tables(tmp_path: Path) -> None:
    """Slates off now, on before: the old slate_metrics.json was shown as this run's Cand. Acc."""
    run, _ = eval_run_dir(tmp_path / "run")
    run.eval.mkdir(parents=True, exist_ok=True)
    earlier = ("slate_metrics.json", "slates.parquet", "tuning.json", "grpo_rewards.png")
    for name in earlier:
        (run.eval / name).write_text("{}")
    # a GRPO not evaluated now (here: none is; in the field, one trained from an earlier SFT model): its
    # discernment stages and rewards were reported as this run's forgetting
    run.grpo.mkdir(parents=True, exist_ok=True)
    (run.grpo / "stats.json").write_text('{"stages": [{"stage": "neg_only", "discernment": {"accuracy": 0.357}}]}')
    (run.grpo / "reward_log.json").write_text('[{"stage": "neg_only", "stage_index": 0, "step": 1, "reward": 0.5, "components": {}}]')
    # an earlier eval's predictions of models not evaluated now: the inspector listed them beside this eval's
    # (found by probing); `conrec predict`'s own files (<model>_<split>.parquet) stay
    run.predictions.mkdir(parents=True, exist_ok=True)
    for name in ("sft", "grpo", "itemknn", "ease"):
        write_parquet(pl.DataFrame({"sample_id": [0], "items": [["i0"]]}), run.predictions / f"{name}.parquet")
    write_parquet(pl.DataFrame({"sample_id": [0], "items": [["i0"]]}), run.predictions / "sft_test.parquet")
    cfg = _cfg(run.root, baselines=["popularity"], slates={"enabled": False}, models=[])
    STAGE_REGISTRY["eval"].call(cfg, console=Console(quiet=True))
    assert (run.eval / "metrics.json").exists()
    assert not any((run.eval / n).exists() for n in earlier)
    assert "GRPO stage" not in (run.eval / "report.md").read_text()
    assert sorted(p.name for p in run.predictions.iterdir()) == ["popularity.parquet", "sft_test.parquet"]


def test_the_report_notes_cut_short_headline_windows_and_a_skipped_slate_evaluation(tmp_path: Path) -> None:
    """Found by probing: with eval.horizons [1] the note on windows cut by the end of the log left out the
    headline FHR@K's own window (data.split.horizon_days, 3 here) although every point's ran past it; a skipped
    exposure-controlled evaluation was said on the console only."""
    run, _ = eval_run_dir(tmp_path / "run")
    assert not run.exposures.exists()
    cfg = _cfg(run.root, baselines=["popularity"], models=[], horizons=[0.0001])
    STAGE_REGISTRY["eval"].call(cfg, console=Console(quiet=True))
    report = " ".join(run.report.read_text().split())
    assert "cut short by the end of the log" in report and "of the points at 3 d" in report
    assert "exposure-controlled evaluation skipped (rerun `conrec data`)" in report


def test_valid_windows_are_counted_cut_at_the_test_cut_off_as_conrec_analyze_counts_them(tmp_path: Path) -> None:
    """Found by a leakage audit: with eval.split: valid the note measured every window against the end of the
    log only, so it said 2.5% of the points at 7 d where the test start cut 88.7%; `conrec analyze` counted the
    valid points' own stops (the test cut-off; per user, the user's first test dislike)."""
    from conrec.data.windows import DAY, utc_minute

    run, test_cut = eval_run_dir(tmp_path / "run")
    cfg = _cfg(run.root, baselines=["popularity"], models=[], horizons=[1, 3], split="valid")
    STAGE_REGISTRY["eval"].call(cfg, console=Console(quiet=True))
    report = " ".join(run.report.read_text().split())
    ts = pl.read_parquet(run.samples).filter(pl.col("split") == "valid")["ts"].to_numpy()
    share = float(((ts + 3 * DAY) > test_cut).mean())
    assert share > 0.5  # the valid period (4 days) is barely longer than the 3-day window
    assert f"cut short by the test cut-off ({utc_minute(test_cut)})" in report
    assert f"{share:.1%} of the points at 3 d" in report


def test_per_user_valid_windows_stop_at_their_users_first_test_dislike() -> None:
    from conrec.data.windows import DAY

    rows = [("a", "valid", 0), ("a", "valid", DAY), ("a", "test", 2 * DAY), ("a", "test", 9 * DAY), ("b", "valid", 0)]
    samples_all = pl.DataFrame(rows, schema={"user_id": pl.String, "split": pl.String, "ts": pl.Int64}, orient="row")
    evaluated = samples_all.filter(pl.col("split") == "valid")
    note = eval_stage.report_cut_window_note(evaluated, samples_all, "valid", "per_user", None, 10 * DAY, [1.0, 3.0])
    # a's windows stop at 2 d (a's first test dislike): at 3 d both are cut; b has no test point: the log's end
    assert note is not None and "cut short by their user's first test dislike: 66.7% of the points at 3 d." in note
    assert eval_stage.report_cut_window_note(evaluated, samples_all, "valid", "per_user", None, 10 * DAY, [1.0]) is None


def test_valid_windows_without_a_test_cut_off_are_said_cut_by_the_end_of_the_log() -> None:
    """Review: with no recorded test cut-off and no test point the valid windows stop at the end of the log, but the
    note called that stop "the test cut-off (<last event + 1 s>)"."""
    from conrec.data.windows import DAY, utc_minute

    samples_all = pl.DataFrame([("a", "valid", 0), ("b", "valid", 8 * DAY)], schema={"user_id": pl.String, "split": pl.String, "ts": pl.Int64},
                               orient="row")
    note = eval_stage.report_cut_window_note(samples_all, samples_all, "valid", "global", None, 10 * DAY, [1.0, 3.0])
    assert note is not None and f"cut short by the end of the log (last event {utc_minute(10 * DAY - 1)}): 50.0% of the points at 3 d." in note
    assert "test cut-off" not in note and "test period" not in note


def test_tuning_without_valid_points_names_tuning_not_the_evaluated_split(tmp_path: Path) -> None:
    run, _ = eval_run_dir(tmp_path / "run")
    samples = pl.read_parquet(run.samples)
    samples.filter(pl.col("split") != "valid").write_parquet(run.samples)
    cfg = _cfg(run.root, baselines=["popularity"], slates={"enabled": False}, models=[], tune=True)
    with pytest.raises(StageInputError, match="eval.tune chooses each baseline's settings on the valid split, which has no samples"):
        STAGE_REGISTRY["eval"].call(cfg, console=Console(quiet=True))


def test_a_level_between_whole_percents_is_written_as_it_is(tmp_path: Path) -> None:
    """eval.bootstrap.level 0.975: the dataset table said "98% percentile CI" beside "97.5% CI" tables."""
    run, _ = eval_run_dir(tmp_path / "run")
    cfg = _cfg(run.root, baselines=["popularity"], slates={"enabled": False}, models=[], bootstrap={"level": 0.975, "resamples": 50})
    STAGE_REGISTRY["eval"].call(cfg, console=Console(quiet=True))
    report = (run.eval / "report.md").read_text()
    assert "97.5% percentile CI" in report and "98%" not in report


def test_grpo_evaluated_alone_still_reports_its_forgetting_against_sft(tmp_path: Path) -> None:
    """eval.models: [grpo] (every GRPO ablation child): the SFT accuracy it is measured against was dropped."""
    run = RunDir(tmp_path / "run")
    for stage, body in (("sft", {"discernment": {"accuracy": 0.8, "n_questions": 50}}),
                        ("grpo", {"stages": [{"stage": "full", "discernment": {"accuracy": 0.6}, "mean_zero_adv_share": 0.2}]})):
        run.stage_dir(stage).mkdir(parents=True)
        write_json(body, run.stage_dir(stage) / "stats.json")
    metrics: dict[str, dict[str, object]] = {"grpo": {}}
    summary = eval_stage._discernment(run, metrics)
    assert summary is not None and summary["sft"] == 0.8
    assert metrics["grpo"]["discern_forgetting"] == pytest.approx(0.25)


def test_an_lm_timing_is_its_decoding_and_its_loading_is_shown_apart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The report's Timings said "an LM's decoding only" but timed the imports, the checkpoint and the item prior too
    (SFT 5.48 s, GRPO 0.51 s on checkpoints of one size). A clock moved only by the fake loading and decoding: exact."""
    run, _ = eval_run_dir(tmp_path / "run")
    run.sft_model.mkdir(parents=True)
    clock = [100.0]
    monkeypatch.setattr(eval_stage.time, "perf_counter", lambda: clock[0])

    def load(sections, rd, model: str):
        clock[0] += 5.0  # imports, checkpoint, item prior

        def decode(samples: pl.DataFrame, k: int, console: Console) -> pl.DataFrame:
            clock[0] += 0.5
            ids = samples["sample_id"].to_list()
            return pl.DataFrame({"sample_id": ids, "items": [["i0", "i1"]] * len(ids), "n_invalid": [0] * len(ids)},
                                schema={"sample_id": pl.Int64, "items": pl.List(pl.String), "n_invalid": pl.Int64})

        return decode

    STAGE_REGISTRY["eval"].call(_cfg(run.root, baselines=[], models=["sft"]), console=Console(quiet=True), load_lm=load)
    timings = run.report.read_text().split("## Timings")[1]
    assert "decoding only" in timings and "- sft: 0.50 (loading: 5.00)" in timings, timings


def test_a_user_holding_a_large_share_of_the_evaluated_points_is_noted_with_the_share(tmp_path: Path) -> None:
    """Under per_user one user held 30 of 50 evaluated points, and the FHR and its point-bootstrap interval were mostly
    that user's with no note; points spread over users get none."""
    run = RunDir(tmp_path / "run")
    users = ["heavy"] * 6 + [f"u{k}" for k in range(14)]
    write_parquet(pl.DataFrame({"sample_id": list(range(20)), "user_id": users, "split": ["test"] * 20}), run.samples)
    write_parquet(pl.DataFrame({"sample_id": list(range(20))}), run.predictions / "popularity.parquet")
    metrics = {"popularity": {"FHR@20": 0.1, "HR@20": 0.2, "NDCG@20": 0.1, "Coverage@20": 0.3, "invalid_rate": 0.0}}
    text = write_report(run.root, metrics, {"users": 15}).read_text()
    assert "Note: One user ('heavy') holds 6 of the 20 evaluated points (30%)" in text
    write_parquet(pl.DataFrame({"sample_id": list(range(6, 20))}), run.predictions / "popularity.parquet")  # one point each
    assert "Note: One user" not in write_report(run.root, metrics, {"users": 15}).read_text()


HOSTILE_USERS = ["<img src=x onerror=alert(1)>", "u | `x` **b** [l](http://e) ~~s~~ _i_ \\* &amp;", "new\nline\u200b"]


def _rendered(markdown: str) -> list[str]:
    """``markdown`` as HTML by the renderers a report is read with: CommonMark with tables and raw HTML on
    (markdown-it, as rich ships it), and Python-Markdown with tables (mkdocs') where it is installed."""
    from markdown_it import MarkdownIt

    out = [MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"]).render(markdown)]
    try:
        import markdown as python_markdown
    except ImportError:
        return out
    return [*out, python_markdown.markdown(markdown, extensions=["tables"])]


@pytest.mark.parametrize("user", HOSTILE_USERS)
def test_a_heavy_users_id_is_written_as_text_that_no_renderer_reads_as_html_or_markdown(tmp_path: Path, user: str) -> None:
    """Found by probing: the heavy-user note wrote the id with ``repr``, so a rendered report of the user
    ``<img src=x onerror=alert(1)>`` held a live ``<img onerror>`` (the alert fired in Chromium) and an id holding
    backticks or ``**`` was restyled. Rendered, the note now shows the id's characters (a newline and a zero-width
    space as visible escapes) and nothing else: no tag, no code, no emphasis, no link; and so does a table cell holding it."""
    import html
    import re

    run = RunDir(tmp_path / "run")
    users = [user] * 6 + [f"u{k}" for k in range(14)]
    write_parquet(pl.DataFrame({"sample_id": list(range(20)), "user_id": users, "split": ["test"] * 20}), run.samples)
    write_parquet(pl.DataFrame({"sample_id": list(range(20))}), run.predictions / "popularity.parquet")
    metrics = {"popularity": {"FHR@20": 0.1, "HR@20": 0.2, "NDCG@20": 0.1, "Coverage@20": 0.3, "invalid_rate": 0.0}}
    note = next(line for line in write_report(run.root, metrics, {"users": 15}).read_text().splitlines() if line.startswith("Note: One user"))
    shown = user.replace("\n", "\\x0a").replace("\u200b", "\\u200b")
    for rendered in _rendered(note):
        assert re.findall(r"<(\w+)", rendered) == ["p"], rendered  # the paragraph, and no element of the id's
        assert f"One user ('{shown}') holds 6 of the 20" in html.unescape(re.sub(r"</?p>", "", rendered)), rendered
    from conrec.eval.report import markdown_text

    table = f"| user | points |\n|---|---:|\n| {markdown_text(user)} | 6 |\n"  # in a table cell too: one cell, the id
    for rendered in _rendered(table):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", rendered, flags=re.S)
        assert [html.unescape(c) for c in cells] == [shown, "6"], rendered


def test_an_id_reads_as_itself_in_the_raw_report_and_rendered() -> None:
    """Found in review: every "_" was written as a character reference, so the id ``user_42`` read ``user&#95;42`` in
    report.md opened in a terminal or grepped. The Markdown punctuation is now escaped with a backslash, which renders
    as the character alone; the HTML characters (and "~") stay references."""
    import html
    import re

    from conrec.eval.report import markdown_text

    assert markdown_text("user_42") == "user\\_42" and markdown_text("a|b*c") == "a\\|b\\*c"
    for rendered in _rendered(f"One user ('{markdown_text('my_user_42_x')}') holds 6"):
        assert re.findall(r"<(\w+)", rendered) == ["p"] and "('my_user_42_x')" in html.unescape(rendered), rendered


def test_a_title_given_as_a_facet_column_is_named_in_the_report_with_its_distinct_value_share(tmp_path: Path) -> None:
    """Found by probing: eval.category.columns naming a column with a distinct value per item (the title) was
    accepted silently; as the only facet column, the category rule's row was dislike popularity's with no word."""
    run, _ = eval_run_dir(tmp_path / "run")
    cfg = _cfg(run.root, baselines=["popularity", "category"], models=[], category={"columns": ["title"]})
    STAGE_REGISTRY["eval"].call(cfg, console=Console(quiet=True))
    report = " ".join(run.report.read_text().split())
    assert "`title` has 15 distinct values over the 15 items with a value (a distinct-value share of 1.00" in report
    assert "category: no value of eval.category.columns ['title'] is shared by two items" in report


def test_the_report_repeats_the_data_stages_warnings(tmp_path: Path) -> None:
    """Found by probing: the data stage's warning that the per-user valid and test points came from different users
    was printed by `conrec data` only, far from the figures it qualifies. The eval now repeats data/stats.json's
    ``warnings`` among the report's notes (a run whose stats.json predates the key: the next test)."""
    run, _ = eval_run_dir(tmp_path / "run")
    stats = json.loads((run.data / "stats.json").read_text())
    write_json({**stats, "warnings": ["per-user split: the valid and the test points come from mostly different users"]},
               run.data / "stats.json")
    console = Console(record=True, width=400)
    STAGE_REGISTRY["eval"].call(_cfg(run.root, baselines=["popularity"], models=[]), console=console)
    note = "Data stage warning: per-user split: the valid and the test points come from mostly different users."
    assert f"- {note}" in run.report.read_text() and note in " ".join(console.export_text().split())


def test_a_per_user_run_whose_data_stage_kept_no_warnings_gets_the_overlap_warning_from_its_samples(tmp_path: Path) -> None:
    """Found by review: the eval read the per-user overlap warning from data/stats.json's ``warnings``, which only data
    stages built since 2026-12-07 write; an older per-user run (current: its outputs did not change) never got it. The
    eval now works it out from the samples it loaded when the key is missing; a data stage that kept the key decided."""
    from conrec.data.splits import build_samples

    from builders import day_events

    rows = []
    for u, n in enumerate([2, 3, 4] * 10):  # few dislikes per user: 2 give a valid point only, 3 or 4 a test point only
        rows += [(f"u{u}", "i0", 0, 1)] + [(f"u{u}", f"i{1 + (u + d) % 14}", 1 + d + u / 100, -1) for d in range(n)]
    events = day_events(rows)
    split = {"protocol": "per_user", "valid_frac": 0.1, "test_frac": 0.2, "horizon_days": 3, "max_horizon_days": 10}
    cfg = load_config(None, {"run_dir": str(tmp_path / "run"), "data": {"split": split},
                             "eval": {"baselines": ["popularity"], "models": [], "tune": False, "ks": [2], "horizons": [3]}})
    run = RunDir(cfg.run_dir)
    write_parquet(events, run.events)
    write_parquet(pl.DataFrame({"item_id": [f"i{j}" for j in range(15)], "title": "t", "text": "", "category": "c"}), run.items)
    write_parquet(build_samples(events, cfg.data.split), run.samples)
    older = {"source": "hand-made", "users": 30, "split_protocol": "per_user", "median_negatives_per_user_with_any": 3.0}
    write_json(older, run.data / "stats.json")
    STAGE_REGISTRY["eval"].call(cfg, console=Console(quiet=True))
    note = ("- Data stage warning: per-user split: the valid and the test points come from mostly different users: 0 of the "
            "20 test points (0%) have a user who also holds a valid point")
    assert note in run.report.read_text()
    write_json({**older, "warnings": []}, run.data / "stats.json")  # a data stage that kept the key found nothing
    STAGE_REGISTRY["eval"].call(cfg, console=Console(quiet=True))
    assert "Data stage warning" not in run.report.read_text()


def test_the_report_notes_a_baseline_that_ranks_most_points_by_popularity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by probing: swing ranked 196 of 205 test points by dislike popularity (no disliked history item had a
    Swing neighbour) and the report gave it a row of its own with no word. Now the eval notes it (console and
    report), and the per-point count changes no metric: found by review, the check compared two runs that both
    counted, with slates off, so a count that touched a fitted model (kept for the slates) could not show; it now
    compares metrics.json and slate_metrics.json with and without the count, slates on."""
    import numpy as np

    run, _ = eval_run_dir(tmp_path / "run")
    events = pl.read_parquet(run.events)
    write_parquet(events.select("user_id", "item_id", "ts", pl.col("feedback").alias("outcome")), run.exposures)
    cfg = _cfg(run.root, baselines=["popularity", "itemknn", "swing"], models=[], slates={"enabled": True})
    real = eval_stage.recommend_noting_flat

    def measured() -> tuple[str, dict[str, Any]]:
        STAGE_REGISTRY["eval"].call(cfg, console=Console(quiet=True))
        return (run.eval / "metrics.json").read_text(), json.loads((run.eval / "slate_metrics.json").read_text())["metrics"]

    monkeypatch.setattr(eval_stage, "recommend_noting_flat", lambda model, points, k: (model.recommend(points, k), None))
    uncounted = measured()
    assert set(uncounted[1]) == {"popularity", "itemknn", "swing"}, uncounted[1]  # every fit scored slates after its top-K
    monkeypatch.setattr(eval_stage, "recommend_noting_flat", real)
    assert measured() == uncounted  # the count changes no metric

    samples = pl.read_parquet(run.samples).filter(pl.col("split") == "test")
    # swing ranks every point but its first by popularity; itemknn 2 of them, under half; popularity is not asked
    asked: list[str] = []

    def flat_swing(model: Any, points: pl.DataFrame, k: int) -> tuple[list[list[str]], np.ndarray]:
        asked.append(model.name)
        flat = np.zeros(points.height, dtype=bool)
        flat[slice(1, None) if model.name == "swing" else slice(0, 2)] = True
        return real(model, points, k)[0], flat

    monkeypatch.setattr(eval_stage, "recommend_noting_flat", flat_swing)
    console = Console(record=True, width=400)
    STAGE_REGISTRY["eval"].call(cfg, console=console)
    assert (run.eval / "metrics.json").read_text() == uncounted[0]  # notes only
    assert asked == ["itemknn", "swing"]
    n = samples.height
    no_dislike = sum(not any(f < 0 for f in fb) for fb in samples["hist_feedback"].to_list()[1:])
    blank = f"; at {no_dislike} of them the history holds no dislike" if no_dislike else ""
    note = (f"swing: no co-dislike signal (no disliked item of the history has a neighbour) at {n - 1} of the {n} test points "
            f"({(n - 1) / n:.0%}{blank}): its item scores are one value over every item it may recommend there, so there it "
            "ranks by dislike popularity (plain counts over the fit events, the order every baseline fills up with) and its "
            "slate scores all tie; its row is a model of its own at the other 1 point only.")
    report = run.report.read_text()
    assert f"- {note}" in report and "itemknn: no co-dislike" not in report
    assert note in " ".join(console.export_text().split())


def test_the_eval_scores_each_point_once_per_baseline_for_its_top_k_and_the_popularity_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by review: the per-point popularity count scored every evaluated point a second time for every baseline but
    popularity (itemknn at 30,000 items and 5,000 points: 1.8 s to rank, 2.7 s more to count), outside its timing.
    The count is now read off the top-K's pass: each baseline scores each point once (slates, tuning and the context
    swap off)."""
    run, _ = eval_run_dir(tmp_path / "run")
    cfg = _cfg(run.root, baselines=["popularity", "itemknn", "swing", "ease", "category"], models=[], slates={"enabled": False})
    scored: dict[str, int] = {}
    real_make = eval_stage.make_baseline

    def counting_make(name: str, bcfg: Any) -> Any:
        model = real_make(name, bcfg)
        scores = model.item_scores

        def counted(points: pl.DataFrame) -> Any:
            scored[name] = scored.get(name, 0) + points.height
            return scores(points)

        model.item_scores = counted
        return model

    monkeypatch.setattr(eval_stage, "make_baseline", counting_make)
    STAGE_REGISTRY["eval"].call(cfg, console=Console(quiet=True))
    n = pl.read_parquet(run.samples).filter(pl.col("split") == "test").height
    assert scored == dict.fromkeys(cfg.eval.baselines, n)


def test_popularity_point_notes_group_baselines_alike_and_start_at_half_the_points() -> None:
    """One note per (what they lacked, how many points); at half the points or more (POPULARITY_POINTS_SHARE); the
    points without a dislike in their history counted, as on MovieLens-100K's global test split (151 of 254)."""
    import numpy as np

    samples = pl.DataFrame({"hist_feedback": [[1, -1], [1], [], [-1]]}, schema={"hist_feedback": pl.List(pl.Int8)})
    co = "no co-dislike signal"
    flat = {"swing": (np.array([1, 1, 1, 0], bool), co), "itemknn": (np.array([1, 1, 1, 0], bool), co),
            "ease": (np.array([1, 0, 0, 0], bool), co), "sasrec": (np.array([1, 1, 1, 1], bool), "no signal from the history")}
    notes = eval_stage.popularity_points_notes(flat, samples, "test", slates=True)
    assert eval_stage.POPULARITY_POINTS_SHARE == 0.5 and len(notes) == 2  # ease: 1 of 4
    assert notes[0].startswith("swing, itemknn: no co-dislike signal at 3 of the 4 test points (75%; at 2 of them the "
                               "history holds no dislike): their item scores are one value")
    assert notes[0].endswith("and their slate scores all tie; these rows are models of their own at the other 1 point only.")
    assert notes[1].endswith("its row is dislike popularity at every point, not a model of its own.")
    half = {"ease": (np.array([1, 0, 1, 0], bool), co)}
    assert len(eval_stage.popularity_points_notes(half, samples, "test", slates=False)) == 1
    assert "slate" not in eval_stage.popularity_points_notes(half, samples, "test", slates=False)[0]
