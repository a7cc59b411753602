"""End to end: simulator -> SIDs -> SFT -> progressive GRPO -> eval, a skipping rerun, and a real server.

One small run (60 users, 150 items, a tiny Llama over the real all-MiniLM-L6-v2 item vectors) is
built once per module; the tests then check what each stage promises in the run directory, that a
rerun with the same config does no work, and that ``conrec serve`` answers from the GRPO model.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
import yaml
from rich.console import Console

from conrec.config import PipelineConfig, load_config
from conrec.io import read_json, read_parquet
from conrec.pipeline import run_pipeline
from conrec.runs import STAGES, RunDir
from conrec.serve.local import local_server

for _var, _val in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"), ("TOKENIZERS_PARALLELISM", "false")):
    os.environ.setdefault(_var, _val)

KS = [1, 5]
LM_MODELS = ["sft", "grpo"]
GRPO_STAGES = ["neg_only", "with_pos"]


def _config(run_dir: Path, cache_dir: Path) -> PipelineConfig:
    return load_config(
        None,
        {
            "run_dir": str(run_dir),
            "seed": 0,
            "data": {
                "source": "simulator",
                "simulator": {"n_users": 60, "n_items": 150, "n_categories": 6, "days": 30, "events_per_user_per_day": 8},
                "split": {"max_history": 50, "max_train_samples_per_user": 5},
            },
            "sid": {
                # the real default encoder (150 short texts: a few seconds); cache kept inside tmp
                "encoder": {"cache_dir": str(cache_dir)},
                "quantizer": {"kind": "rkmeans", "levels": 3, "kmeans_iters": 10},
            },
            "sft": {
                "model": {"tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64}},
                "prompt": {"max_neg_items": 8, "max_pos_items": 4},
                "train": {"max_steps": 3, "batch_size": 4, "max_length": 256, "logging_steps": 1, "save_steps": 100},
                "max_samples": 32,
            },
            # with the popularity prior on, so eval, predict and serve all load the run's item prior
            "decode": {"top_k": 5, "num_beams": 5, "batch_size": 10, "popularity_prior": 0.5},
            "grpo": {
                "stages": [
                    {"name": GRPO_STAGES[0], "steps": 1, "max_pos_items": 0, "positive_share": 0.0},
                    {"name": GRPO_STAGES[1], "steps": 1, "max_pos_items": 4, "positive_share": 1.0},
                ],
                "num_generations": 2,
                "batch_size": 2,
                "max_samples": 4,
            },
            "eval": {"ks": KS, "baselines": ["popularity"], "models": LM_MODELS, "max_samples": 10, "horizons": [1, 7]},
            "serve": {"model": "grpo", "default_k": 5, "max_k": 10, "log_level": "warning", "access_log": False},
        },
    )


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    import torch

    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("e2e")
    cfg = _config(root / "run", root / "emb_cache")
    results = run_pipeline(cfg, console=Console(quiet=True))
    return {"cfg": cfg, "run": RunDir(cfg.run_dir), "results": results}


def test_every_stage_ran_and_wrote_its_outputs(e2e: dict[str, Any]) -> None:
    run: RunDir = e2e["run"]
    assert set(e2e["results"]) == set(STAGES)
    timings = read_json(run.root / "timings.json")
    assert set(timings) == set(STAGES)
    for stage in STAGES:
        assert run.is_done(stage), stage
        assert (run.stage_dir(stage) / "_fingerprint.json").exists(), stage
    assert (run.root / "config.yaml").exists()

    # data
    events, items, samples = read_parquet(run.events), read_parquet(run.items), read_parquet(run.samples)
    assert items.height == 150 and events["user_id"].n_unique() <= 60
    assert {"user_id", "item_id", "ts", "feedback"} <= set(events.columns)
    assert set(events["feedback"].unique().to_list()) <= {-1, 1} and (events["feedback"] == -1).any()
    assert {"train", "test"} <= set(samples["split"].unique().to_list())
    assert (run.data / "stats.json").exists()

    # sid: one distinct SID per catalogue item
    sid_map = read_parquet(run.sid_map)
    assert sorted(sid_map["item_id"].to_list()) == sorted(items["item_id"].cast(pl.String).to_list())
    assert sid_map["sid"].n_unique() == 150
    assert run.embeddings.exists() and run.quantizer.exists()

    # sft / grpo: loadable HF model dirs with a tokenizer
    for model_dir in (run.sft_model, run.grpo_model):
        assert (model_dir / "config.json").exists(), model_dir
        assert any(model_dir.glob("*.safetensors")), model_dir
        assert any(model_dir.glob("tokenizer*")), model_dir
    reward_log = read_json(run.grpo / "reward_log.json")
    assert [e["stage"] for e in reward_log] == GRPO_STAGES  # one logged step per stage
    assert [e["stage_index"] for e in reward_log] == [0, 1]
    for e in reward_log:
        assert e["reward"] == e["reward"] and e["invalid_rate"] == 0.0  # not NaN; rollouts all real items
    assert e2e["results"]["grpo"]["steps"] == 2

    # eval
    report = run.report.read_text()
    assert all(name in report for name in ("popularity", *LM_MODELS)) and "skipped" not in report
    taste = report.split("## Taste check (simulator ground truth)", 1)[1].split("\n## ", 1)[0]  # a simulated world
    assert all(f"| {name} | " in taste for name in ("popularity", *LM_MODELS)), taste
    pngs = {p.name for p in run.eval.glob("*.png")}
    assert {"metrics.png", "fhr_vs_horizon.png", "grpo_rewards.png"} <= pngs
    for name in pngs:
        assert (run.eval / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = read_json(run.eval / "metrics.json")
    assert set(metrics) == {"popularity", *LM_MODELS}
    for model, row in metrics.items():
        for k in KS:
            for key in (f"FHR@{k}", f"HR@{k}", f"NDCG@{k}"):
                assert key in row, (model, key)
                assert 0.0 <= row[key] <= 1.0, (model, key, row[key])


def _eval_sample_histories(run: RunDir) -> dict[int, list[str]]:
    samples = read_parquet(run.samples)
    return dict(zip(samples["sample_id"].to_list(), samples["hist_items"].to_list()))


def test_lm_predictions_are_new_real_items(e2e: dict[str, Any]) -> None:
    run: RunDir = e2e["run"]
    catalogue = set(read_parquet(run.sid_map)["item_id"].to_list())
    history = _eval_sample_histories(run)
    for model in LM_MODELS:
        preds = read_parquet(run.predictions / f"{model}.parquet")
        assert preds.height == 10, model
        assert {"sample_id", "items", "scores", "n_invalid"} <= set(preds.columns), model
        for sample_id, items in zip(preds["sample_id"].to_list(), preds["items"].to_list()):
            assert 0 < len(items) <= max(KS), (model, sample_id)
            assert len(set(items)) == len(items), (model, sample_id)
            assert set(items) <= catalogue, (model, sample_id)
            assert not set(items) & set(history[sample_id]), (model, sample_id, "history item recommended")


def test_lm_predictions_fill_top_k_with_no_invalid_beams(e2e: dict[str, Any]) -> None:
    run: RunDir = e2e["run"]
    for model in LM_MODELS:
        preds = read_parquet(run.predictions / f"{model}.parquet")
        assert preds["n_invalid"].to_list() == [0] * preds.height, model
        assert preds["items"].list.len().to_list() == [max(KS)] * preds.height, model


def test_predict_split_equals_the_evals_own_predictions(e2e: dict[str, Any], tmp_path: Path) -> None:
    """Found by the inference audit of 7 December 2026: `conrec predict --split test` excluded only each point's
    `data.split.max_history` window while the eval excludes every item rated before the point, so its lists held
    items the eval's never could (19 of 254 demo points differed). Users here have about 240 events, max_history 50."""
    from conrec.eval.seen import SEEN_COLUMN, with_seen_items
    from conrec.llm.inference import predict as predict_mod

    cfg: PipelineConfig = e2e["cfg"]
    run: RunDir = e2e["run"]
    evald = read_parquet(run.predictions / "grpo.parquet").select("sample_id", "items")
    test = read_parquet(run.samples).filter(pl.col("sample_id").is_in(evald["sample_id"].to_list()))
    seen = with_seen_items(test, read_parquet(run.events))
    earlier = seen.select((pl.col(SEEN_COLUMN).list.len() - pl.col("hist_items").list.unique().list.len()).sum()).item()
    assert earlier > 0  # items rated before the window exist: the old rule could return them
    out = tmp_path / "split.parquet"
    predict_mod.run(cfg, history=None, split="test", out=out, model="grpo", k=max(KS), console=Console(quiet=True))
    got = read_parquet(out).select("sample_id", "items").join(evald, on="sample_id", suffix="_eval")
    assert got.height == evald.height
    assert got["items"].to_list() == got["items_eval"].to_list()


def test_rerun_with_same_config_skips_every_stage(e2e: dict[str, Any]) -> None:
    cfg: PipelineConfig = e2e["cfg"]
    run: RunDir = e2e["run"]
    markers = {s: (run.stage_dir(s) / "_done.json").read_text() for s in STAGES}
    timings_before = (run.root / "timings.json").read_text()
    model_mtime = (run.grpo_model / "config.json").stat().st_mtime_ns

    console = Console(record=True, width=200, file=io.StringIO())
    assert run_pipeline(cfg, console=console) == {}
    out = console.export_text()
    for stage in STAGES:
        assert f"{stage}: finished earlier with this config, skipped" in out
    assert {s: (run.stage_dir(s) / "_done.json").read_text() for s in STAGES} == markers
    assert (run.root / "timings.json").read_text() == timings_before
    assert (run.grpo_model / "config.json").stat().st_mtime_ns == model_mtime


def test_serve_real_lm_over_http(e2e: dict[str, Any]) -> None:
    cfg: PipelineConfig = e2e["cfg"]
    run: RunDir = e2e["run"]
    sid_map = read_parquet(run.sid_map)
    sid_of = dict(zip(sid_map["item_id"].to_list(), sid_map["sid"].to_list()))
    items = read_parquet(run.items)
    title_of = dict(zip(items["item_id"].cast(pl.String).to_list(), items["title"].to_list()))
    events = read_parquet(run.events)
    dislikes = events.filter(pl.col("feedback") == -1)["item_id"].unique(maintain_order=True).to_list()
    likes = events.filter(pl.col("feedback") == 1)["item_id"].unique(maintain_order=True).to_list()
    negative = dislikes[:3]
    positive = [i for i in likes if i not in negative][:2]

    from conrec.llm.inference.predict import Predictor

    expected = Predictor.from_run(cfg, "grpo").recommend([(positive + negative, [1] * len(positive) + [-1] * len(negative))], 5)[0]
    assert expected

    with local_server(cfg, startup_timeout=90) as server:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            health = client.get("/healthz")
            assert health.status_code == 200, health.text
            h = health.json()
            assert h["status"] == "ok" and h["model"] == "grpo" and h["n_items"] == 150
            assert h["limits"]["max_k"] == 10 and h["limits"]["default_k"] == 5

            r = client.post("/v1/dislikes", json={"negative": negative, "positive": positive, "k": 5})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["model"] == "grpo" and body["k"] == 5
            got = body["items"]
            # the served answer is the GRPO checkpoint's own answer (positives first, as the API documents)
            assert [it["item_id"] for it in got] == [i for i, _ in expected]
            assert [it["score"] for it in got] == pytest.approx([s for _, s in expected], rel=1e-4, abs=1e-4)
            assert 0 < len(got) <= 5 and [it["rank"] for it in got] == list(range(1, len(got) + 1))
            ids = [it["item_id"] for it in got]
            assert len(set(ids)) == len(ids) and set(ids) <= set(sid_of)
            assert not set(ids) & set(negative + positive)
            for it in got:
                assert it["sid"] == sid_of[it["item_id"]] and it["sid"].startswith("<")
                assert it["title"] == title_of[it["item_id"]] and it["title"]
            scores = [it["score"] for it in got]
            assert all(s is not None for s in scores) and scores == sorted(scores, reverse=True)

            bad = client.post("/v1/dislikes", json={"negative": [negative[0], "no-such-item"], "k": 3})
            assert 400 <= bad.status_code < 500
            assert bad.status_code == 422 and "unknown item id" in bad.json()["detail"]
            assert "no-such-item" in bad.json()["detail"] and negative[0] not in bad.json()["detail"]
            assert client.post("/v1/dislikes", json={"negative": negative, "k": 11}).status_code == 422

            assert client.get("/healthz").status_code == 200  # still serving after the errors
        assert server.process.poll() is None
    assert server.process.returncode is not None  # stopped with the block


@pytest.mark.parametrize("what", ["prompts", "grpo"])
def test_ablation_tables_train_each_variant_and_evaluate_it_like_eval(e2e: dict[str, Any], what: str) -> None:
    from conrec.ablation import run as ablate
    from conrec.experiments import parent_of

    cfg: PipelineConfig = e2e["cfg"]
    run: RunDir = e2e["run"]
    console = Console(record=True, width=100)
    metrics = ablate(cfg, what=what, console=console)
    # the summary shows the baselines' Candidate Acc. from the run's eval (it showed "–")
    slate_metrics = read_json(run.eval / "slate_metrics.json")["metrics"]
    lines = console.export_text().splitlines()
    row = next(line for line in lines if line.strip().startswith("popularity"))
    assert row.rstrip().endswith(f"{slate_metrics['popularity']['CandAcc@1']:.3f}"), row
    expect = {"prompts": ["sft_neg_only", "sft_segmented", "sft_merged", "sft_timeline", "sft_neg_timeline"],
              "grpo": ["sft", "grpo_next_neg", "grpo_future", "grpo_progressive"]}[what]
    if what == "grpo":  # the row that is the run's own GRPO shows the run's Candidate Acc. too (it showed "–")
        row = next(line for line in lines if line.strip().startswith("grpo_progressive"))
        assert row.rstrip().endswith(f"{slate_metrics['grpo']['CandAcc@1']:.3f}"), row
    assert list(metrics) == ["popularity", *expect]
    eval_metrics = read_json(run.eval / "metrics.json")
    # rows for the run's own models equal what `conrec eval` measured (same samples, same decoding)
    same = {"prompts": {"sft_segmented": "sft"}, "grpo": {"sft": "sft", "grpo_progressive": "grpo"}}[what]
    for row, own in same.items():
        assert metrics[row]["FHR@5"] == pytest.approx(eval_metrics[own]["FHR@5"])
        # and the paired difference to the best baseline too (a child evaluates its LM alone: none of its own)
        assert metrics[row]["FHR@5_vs"] == eval_metrics[own]["FHR@5_vs"] == "popularity"
        assert [metrics[row]["FHR@5_diff"], *metrics[row]["FHR@5_diff_ci"]] == pytest.approx(
            [eval_metrics[own]["FHR@5_diff"], *eval_metrics[own]["FHR@5_diff_ci"]])
    for name in expect:
        assert metrics[name]["invalid_rate"] == 0.0
        assert metrics[name]["FHR@5_vs"] == "popularity"  # compared, not shown as the reference
    table = (run.root / "ablations" / f"{what}.md").read_text()
    assert all(f"| {name} |" in table for name in expect)
    trained = [v for v in expect if v not in same]
    for v in expect:  # every row is a child run: unchanged stages linked to the run's own, the rest run there
        model = "grpo" if v.startswith("grpo") else "sft"
        child = run.root / "ablations" / what / v.removeprefix("sft_")
        assert (child / "data").is_symlink() and (child / "sid").is_symlink()
        assert (child / model / "model" / "config.json").exists()
        assert (child / model).is_symlink() == (v not in trained)  # the run's own model is reused, not retrained
        assert parent_of(child).resolve() == run.root.resolve()
    # a second call reuses the trained variants (same fingerprints): nothing retrained, same numbers
    again = ablate(cfg, what=what, console=Console(quiet=True))
    assert again == metrics


def test_paper_ladder_rows_are_child_runs_scored_by_the_eval_stage(e2e: dict[str, Any], tmp_path: Path) -> None:
    """`--what paper`: SFT rows are children of the run, GRPO rows children of the alignment row
    (they start from its SFT model, linked, not retrained); every row scored on the same points."""
    import shutil

    from conrec.ablation import PAPER_FHR20
    from conrec.ablation import run as ablate

    shutil.copytree(e2e["run"].root, tmp_path / "run")
    cfg: PipelineConfig = e2e["cfg"].model_copy(update={"run_dir": tmp_path / "run"})
    parent_files = [tmp_path / "run" / p for p in ("eval/_done.json", "eval/metrics.json")]
    before = [p.read_bytes() for p in parent_files]
    metrics = ablate(cfg, what="paper", console=Console(quiet=True))
    # the baselines were evaluated in a child run: the run's config and its eval (LM rows included) are untouched
    assert [p.read_bytes() for p in parent_files] == before
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["eval"]["models"] == list(cfg.eval.models)
    assert read_json(tmp_path / "run" / "ablations" / "paper" / "baselines" / "parent.json")["linked"] == ["data", "sid"]
    assert list(metrics) == ["popularity", *PAPER_FHR20]
    root = tmp_path / "run" / "ablations" / "paper"
    for row in ("sid_title", "alignment"):
        assert (root / row / "data").is_symlink() and not (root / row / "sft").is_symlink()
        assert read_json(root / row / "parent.json")["linked"] == ["data", "sid"]
    for row in ("progressive", "future_reward", "pos_penalty"):
        assert (root / row / "sft").resolve() == (root / "alignment" / "sft").resolve()
        assert (root / row / "grpo" / "model" / "config.json").exists() and not (root / row / "grpo").is_symlink()
        assert read_json(root / row / "parent.json")["parent"] == "../alignment"
    n = {len(read_parquet(root / row / "eval" / "predictions" / f"{'grpo' if row in ('progressive', 'future_reward', 'pos_penalty') else 'sft'}.parquet"))
         for row in PAPER_FHR20}
    assert len(n) == 1  # the same evaluation points for every row
    table = (tmp_path / "run" / "ablations" / "paper.md").read_text()
    assert all(f"| {row} |" in table for row in PAPER_FHR20)
    assert ablate(cfg, what="paper", console=Console(quiet=True)) == metrics  # rows current: reused, same numbers
