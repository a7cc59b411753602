"""The eval stage with tuning, bootstrap CIs, the context swap and the per-user protocol, on a
hand-built run directory (reuses test_report's builder)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from rich.console import Console

from conrec.config import load_config
from conrec.data.config import SplitConfig
from conrec.data.splits import build_samples, per_user_fit_events
from conrec.errors import ConfigError, StageInputError
from conrec.eval import stage as eval_stage
from conrec.eval.baselines import REGISTRY, make_baseline
from conrec.eval.config import BASELINE_NAMES, EvalConfig
from conrec.eval.tuning import tune_baseline
from conrec.io import read_json, write_json, write_parquet
from conrec.runs import RunDir
from conrec.stages import STAGE_REGISTRY

from builders import eval_run_dir

DAY = 86_400


def _cfg(root: Path, protocol: str = "global_time", **eval_overrides: object):
    section = {
        "baselines": ["popularity", "category", "ease"],
        "ks": [2, 5],
        "horizons": [1, 3],
        "tune": True,
        "tune_k": 5,
        "popularity": {"grid": {"half_life_days": [None, 1.0]}},
        "category": {"grid": {"recency_decay": [0.5, 1.0]}},
        "ease": {"grid": {"l2": [1.0, 100.0]}},
        "bootstrap": {"resamples": 200},
        **eval_overrides,
    }
    return load_config(
        None,
        {"run_dir": str(root), "data": {"split": {"horizon_days": 3, "max_horizon_days": 10, "protocol": protocol}}, "eval": section},
    )


def test_registry_and_budget() -> None:
    assert tuple(REGISTRY) == BASELINE_NAMES
    for name in BASELINE_NAMES:
        assert make_baseline(name).name == name
    with pytest.raises(ValueError, match="tune_budget"):
        EvalConfig(ease={"grid": {"l2": [1, 2, 3]}}, tune_budget=2)
    with pytest.raises(ValueError, match="unknown setting"):
        EvalConfig(ease={"grid": {"lambda": [1.0]}})
    # "the same budget for all" holds by default: every baseline's own grid fills the budget (SASRec,
    # the per-user protocol's best baseline, had 4 points against the others' 6)
    defaults = EvalConfig()
    assert {name: len(getattr(defaults, name).grid_points()) for name in BASELINE_NAMES} == dict.fromkeys(BASELINE_NAMES, defaults.tune_budget)


def test_tuning_picks_the_best_valid_point_and_never_sees_test(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run, test_cut = eval_run_dir(tmp_path / "run")
    stats = read_json(run.data / "stats.json")
    seen: list[tuple[str, int]] = []
    real = eval_stage.tune_baseline

    def spy(name, ecfg, fit_events, items, valid_samples, k, **kwargs):
        seen.append((name, int(fit_events["ts"].max())))
        assert set(valid_samples["split"].unique()) == {"valid"}
        return real(name, ecfg, fit_events, items, valid_samples, k, **kwargs)

    monkeypatch.setattr(eval_stage, "tune_baseline", spy)
    console = Console(record=True, width=160)
    metrics = STAGE_REGISTRY["eval"].call(_cfg(run.root, context_swap=True, models=[]), console=console)
    assert [n for n, _ in seen] == ["popularity", "category", "ease"]
    assert all(ts < stats["valid_cutoff_ts"] for _, ts in seen)  # tuned on events before the valid period
    tuning = read_json(run.eval / "tuning.json")
    for name in ("popularity", "category", "ease"):
        tried = tuning[name]["tried"]
        assert len(tried) == 2
        best = max(tried, key=lambda e: e["valid_fhr"])  # first wins ties, as max() does
        assert tuning[name]["chosen"] == best["params"] and tuning[name]["valid_fhr"] == best["valid_fhr"]
    saved = json.loads((run.eval / "metrics.json").read_text())
    for row in saved.values():
        lo, hi = row["FHR@5_ci"]
        assert lo <= row["FHR@5"] <= hi
        assert 0.0 <= row["swap_FHR@5"] <= 1.0 and 0.0 <= row["swap_overlap@5"] <= 1.0
        # another user's history changes a history-reading baseline's top-5 (measured 0.25-0.34 here): a control
        # that scored the own histories again (overlap 1) passed the range check above
        assert row["swap_overlap@5"] < 0.9
    ref = [n for n in saved if "FHR@5_diff" not in saved[n]]
    assert len(ref) == 1 and saved[ref[0]]["FHR@5"] == max(r["FHR@5"] for r in saved.values())
    report = run.report.read_text()
    assert "Baseline tuning (valid split)" in report and "Context swap" in report and "95% CI" in report
    assert "| bootstrap | 200 resamples of the points," in report  # one point per user: the points, as before
    assert "Δ" in console.export_text()
    row = saved["popularity"]
    assert 0 < row["n_samples_LUF"] <= row["n_samples"] and 0 <= row["n_samples_LIF"] <= row["n_samples"]
    assert "Points in the long-tail populations: LUF over" in report
    assert metrics["popularity"]["n_samples"] > 0


def test_content_baseline_reads_the_sid_stage_text_vectors(tmp_path: Path) -> None:
    run, _ = eval_run_dir(tmp_path / "run")
    cfg = _cfg(run.root, baselines=["popularity", "content"], models=[])
    with pytest.raises(StageInputError, match=rf"^the content baseline needs {run.text_vectors}: rerun `conrec sid` \(or drop `content` from eval\.baselines\)$"):
        STAGE_REGISTRY["eval"].call(cfg, console=Console(quiet=True))
    categories = [j % 3 for j in range(15)]  # i{j} is in category c{j % 3}: text vectors by category
    vectors = np.eye(3)[categories] + 0.01 * np.arange(15)[:, None]
    run.sid.mkdir(parents=True, exist_ok=True)
    np.save(run.embeddings, vectors)  # a run tokenised before text_vectors.npy: its embeddings are the text...
    write_json({"encoder": {"dim": 3}}, run.sid / "stats.json")
    STAGE_REGISTRY["eval"].call(cfg, console=Console(quiet=True))
    write_json({"encoder": {"dim": 3, "collab_dims": 2}}, run.sid / "stats.json")  # ...unless they add a collaborative part
    with pytest.raises(StageInputError, match="text_vectors.npy: rerun"):
        STAGE_REGISTRY["eval"].call(cfg, console=Console(quiet=True))
    np.save(run.text_vectors, vectors)
    STAGE_REGISTRY["eval"].call(cfg, console=Console(quiet=True))
    tuning = read_json(run.eval / "tuning.json")
    assert len(tuning["content"]["tried"]) == 6  # its default grid, within the shared budget
    assert "content" in json.loads((run.eval / "metrics.json").read_text())


def test_the_refusal_without_text_vectors_is_worded_in_the_number_of_baselines_that_read_them() -> None:
    """Found in review: the refusal had a plural sentence of its own for several baselines reading the sid stage, which
    only ``content`` does; one sentence now takes its number from the baselines it names."""
    from conrec.eval.baselines import REGISTRY, sid_readers
    from conrec.eval.stage import missing_text_vectors

    path = Path("run/sid/text_vectors.npy")
    readers = sid_readers(REGISTRY)
    assert readers == ["content"]
    assert missing_text_vectors(readers, path) == f"the content baseline needs {path}: rerun `conrec sid` (or drop `content` from eval.baselines)"
    assert missing_text_vectors(["content", "other"], path) == (
        f"the content and other baselines need {path}: rerun `conrec sid` (or drop `content` and `other` from eval.baselines)")


def test_tune_baseline_records_every_grid_point() -> None:
    rng = np.random.default_rng(0)
    rows = [(f"u{u}", f"i{int(rng.integers(12))}", int(t), int(rng.choice([-1, 1]))) for u in range(20) for t in sorted(rng.integers(0, 30 * DAY, 12))]
    ev = pl.DataFrame(rows, schema={"user_id": pl.String, "item_id": pl.String, "ts": pl.Int64, "feedback": pl.Int8}, orient="row")
    items = pl.DataFrame({"item_id": [f"i{j}" for j in range(12)], "category": [f"c{j % 3}" for j in range(12)]})
    samples = build_samples(ev, SplitConfig(valid_frac=0.3, test_frac=0.2))
    valid = samples.filter(pl.col("split") == "valid")
    cfg = EvalConfig(ease={"grid": {"l2": [0.5, 5.0, 50.0]}})
    new_cfg, result = tune_baseline("ease", cfg, ev.filter(pl.col("ts") < int(valid["ts"].min())), items, valid, 5)
    assert [p["l2"] for p, _ in result.tried] == [0.5, 5.0, 50.0]
    assert new_cfg.ease.l2 == result.chosen["l2"] and result.best_score == max(s for _, s in result.tried)
    calls: list[tuple[int, int]] = []
    tune_baseline("ease", cfg, ev.filter(pl.col("ts") < int(valid["ts"].min())), items, valid, 5,
                  on_point=lambda i, n: calls.append((i, n)))
    assert calls == [(1, 3), (2, 3), (3, 3)]  # before each grid point's fit: the eval bar shows it


def _bar_descriptions(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every description a rich progress bar is given from now on, in order (the eval stage's baseline bar)."""
    from rich.progress import Progress

    shown: list[str] = []
    real_update = Progress.update

    def update(self, task_id, **kwargs):
        if "description" in kwargs:
            shown.append(kwargs["description"])
        return real_update(self, task_id, **kwargs)

    monkeypatch.setattr(Progress, "update", update)
    return shown


def test_the_baseline_bar_names_the_fit_running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 12-minute SASRec tuning printed ``baseline sasrec: tune on 2094 valid samples: 3/8 (38%)`` every 30 s:
    the bar counts baselines, so 1 of 7 fits could not be told from 6 of 7. The description now counts them."""
    from conrec.eval.stage import fit_label

    assert fit_label("baseline ease: fit + top-5", 3, 3) == "baseline ease: fit + top-5, fit 3/3"
    assert fit_label("baseline ease: fit + top-5", 1, 1) == "baseline ease: fit + top-5"  # one fit: nothing to count
    shown = _bar_descriptions(monkeypatch)
    run, _ = eval_run_dir(tmp_path / "run")
    STAGE_REGISTRY["eval"].call(_cfg(run.root, baselines=["popularity", "ease"], models=[]), console=Console(quiet=True))
    ease = [d for d in shown if d.startswith("baseline ease")]
    assert ease == [
        "baseline ease: tune on 21 valid samples",
        "baseline ease: tune on 21 valid samples, fit 1/3",
        "baseline ease: tune on 21 valid samples, fit 2/3",
        "baseline ease: fit + top-5, fit 3/3",
    ], ease


def test_the_baseline_bar_counts_sasrec_epochs_in_each_fit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by probing: one SASRec fit of 30-60 epochs left the bar's line (and the plain lines off a terminal,
    every 30 s) unchanged for minutes; each epoch is now shown with its mean loss, in the tuning and the refit."""
    shown = _bar_descriptions(monkeypatch)
    run, _ = eval_run_dir(tmp_path / "run")
    sasrec = {"epochs": 2, "hidden": 16, "layers": 1, "grid": {"epochs": [1, 2]}}
    STAGE_REGISTRY["eval"].call(_cfg(run.root, baselines=["sasrec"], models=[], sasrec=sasrec), console=Console(quiet=True))
    steps = [re.sub(r"loss \d+\.\d{3}$", "loss L", d) for d in shown if d.startswith("baseline sasrec")]
    chosen = read_json(run.eval / "tuning.json")["sasrec"]["chosen"]["epochs"]  # the refit trains the chosen epochs
    assert steps == [
        "baseline sasrec: tune on 21 valid samples",
        "baseline sasrec: tune on 21 valid samples, fit 1/3",
        "baseline sasrec: tune on 21 valid samples, fit 1/3, epoch 1/1, loss L",
        "baseline sasrec: tune on 21 valid samples, fit 2/3",
        "baseline sasrec: tune on 21 valid samples, fit 2/3, epoch 1/2, loss L",
        "baseline sasrec: tune on 21 valid samples, fit 2/3, epoch 2/2, loss L",
        "baseline sasrec: fit + top-5, fit 3/3",
        *[f"baseline sasrec: fit + top-5, fit 3/3, epoch {e}/{chosen}, loss L" for e in range(1, chosen + 1)],
    ], steps


def test_per_user_protocol_end_to_end(tmp_path: Path) -> None:
    run, _ = eval_run_dir(tmp_path / "run")
    events = pl.read_parquet(run.events)
    scfg = SplitConfig(valid_frac=0.2, test_frac=0.2, horizon_days=3, max_horizon_days=10, protocol="per_user")
    samples = build_samples(events, scfg)
    write_parquet(samples, run.samples)
    # the stats say global_time: the stage must refuse to mix protocols
    with pytest.raises(StageInputError, match="protocol"):
        STAGE_REGISTRY["eval"].call(_cfg(run.root, protocol="per_user", models=[]), console=Console(width=160))
    stats = read_json(run.data / "stats.json")
    write_json({**stats, "split_protocol": "per_user"}, run.data / "stats.json")
    metrics = STAGE_REGISTRY["eval"].call(_cfg(run.root, protocol="per_user", models=[], tune=False), console=Console(width=160))
    n_test = samples.filter(pl.col("split") == "test").height
    assert n_test > 30  # several test points per user
    assert metrics["popularity"]["n_samples"] == n_test
    fit = per_user_fit_events(events, scfg, "test")
    report = RunDir(run.root).report.read_text()
    assert "each user's events before that user's test start" in report
    assert f"| events used to fit baselines | {fit.height} |" in report
    # several points per user: the intervals resample users (a point bootstrap was 2.3 to 2.9 times too narrow)
    assert "| bootstrap | 200 resamples of the users, 95% percentile CI, seed 0 |" in report


def test_lm_on_valid_after_a_refit_on_the_valid_period_is_refused(tmp_path: Path) -> None:
    """train_until: test trains the LM on the valid period's labels: scoring it on valid would leak."""
    from conrec.errors import ConfigError

    run, _ = eval_run_dir(tmp_path / "run")
    (run.sft_model).mkdir(parents=True)  # an SFT checkpoint exists in the run
    cfg = load_config(
        None,
        {"run_dir": str(run.root), "data": {"split": {"horizon_days": 3, "max_horizon_days": 10, "train_until": "test"}},
         "eval": {"split": "valid", "baselines": ["popularity"], "models": ["sft"], "tune": False, "ks": [2]}},
    )
    with pytest.raises(ConfigError, match="train_until is test"):
        STAGE_REGISTRY["eval"].call(cfg, console=Console(width=160))


def test_a_baseline_without_a_grid_reads_in_the_tuning_table() -> None:
    """``grid: {}`` printed ``| popularity | (no grid) | 0.8570 | : 0.857 |`` (an empty setting before the colon)."""
    from conrec.eval.report import tuning_section

    table = tuning_section({"popularity": {"k": 20, "chosen": {}, "valid_fhr": 0.857, "tried": [{"params": {}, "valid_fhr": 0.857}]}})
    assert "| popularity | (no grid) | 0.8570 | the settings: 0.857 |" in table


def test_tune_budget_counts_only_the_grids_that_are_tried() -> None:
    # found by probing: a budget of 2 for popularity alone was refused over itemknn's grid, which is never tried
    cfg = EvalConfig(baselines=["popularity"], tune_budget=2, popularity={"grid": {"half_life_days": [None, 7]}})
    assert len(cfg.popularity.grid_points()) == 2
    with pytest.raises(ValueError, match=r"eval.popularity.grid has 3 combinations, over eval.tune_budget=2"):
        EvalConfig(baselines=["popularity"], tune_budget=2, popularity={"grid": {"half_life_days": [None, 7, 30]}})
    EvalConfig(tune=False, tune_budget=1)  # nothing is tuned: no grid is over budget
    # the facet rule joins the baselines on simulated data after the eval section was validated: its grid counts too
    with pytest.raises(ConfigError, match=r"eval.facet_rule.grid has 6 combinations, over eval.tune_budget=2"):
        load_config(None, {"data": {"source": "simulator"}, "eval": {"tune_budget": 2, **{
            n: {"grid": {}} for n in BASELINE_NAMES if n != "facet_rule"}}})


def _one_fit_dislike_per_user(run: RunDir, test_cut: int) -> None:
    """:func:`eval_run_dir`'s run with every user's dislikes before the test cut-off but the last turned into likes:
    no user has the 2 fit dislikes SASRec's training windows need, for the test period or the valid one."""
    events = pl.read_parquet(run.events).sort("user_id", "ts")
    before = (pl.col("ts") < test_cut) & (pl.col("feedback") == -1)
    nth = pl.col("feedback").cum_count(reverse=True).over("user_id", (pl.col("ts") < test_cut) & (pl.col("feedback") == -1))
    events = events.with_columns(pl.when(before & (nth > 1)).then(1).otherwise(pl.col("feedback")).cast(pl.Int8).alias("feedback"))
    write_parquet(events, run.events)
    write_parquet(build_samples(events, SplitConfig(valid_frac=0.2, test_frac=0.2, horizon_days=3, max_horizon_days=10)), run.samples)


def test_sasrec_with_nothing_to_train_on_is_popularity_and_the_report_says_so(tmp_path: Path) -> None:
    # found by probing: an untrained SASRec ranked by its random initialisation, the same at every grid point, and
    # became the best baseline every other row was compared with; nothing said it was never trained
    run, test_cut = eval_run_dir(tmp_path / "run")
    _one_fit_dislike_per_user(run, test_cut)
    fit = pl.read_parquet(run.events).filter((pl.col("ts") < test_cut) & (pl.col("feedback") == -1))
    assert fit.group_by("user_id").len()["len"].max() == 1
    console = Console(record=True, width=400)
    cfg = _cfg(run.root, baselines=["popularity", "sasrec"], models=[], popularity={"grid": {}},
               sasrec={"hidden": 8, "layers": 1, "heads": 1, "grid": {"epochs": [1, 2]}})
    STAGE_REGISTRY["eval"].call(cfg, console=console)
    preds = {n: pl.read_parquet(run.predictions / f"{n}.parquet")["items"].to_list() for n in ("popularity", "sasrec")}
    assert preds["sasrec"] == preds["popularity"]  # no score of its own: the popularity fill-up
    note = "sasrec: no user has 2 dislikes in the fit events (its shortest training sequence): not trained; its row is dislike popularity"
    assert note in run.report.read_text() and note in console.export_text().replace("\n", " ")


def test_facet_baselines_with_no_facet_value_are_noted_as_popularity(tmp_path: Path) -> None:
    # found by probing: with every category empty the three facet rows were popularity's lists under other names
    run, _ = eval_run_dir(tmp_path / "run")
    items = pl.read_parquet(run.items)
    write_parquet(items.with_columns(pl.lit("").alias("category")), run.items)
    names = ["popularity", "category", "facet_rule", "taste_exposure"]
    console = Console(record=True, width=400)
    STAGE_REGISTRY["eval"].call(_cfg(run.root, baselines=names, models=[], tune=False), console=console)
    preds = {n: pl.read_parquet(run.predictions / f"{n}.parquet")["items"].to_list() for n in names}
    assert all(preds[n] == preds["popularity"] for n in names)
    note = ("category, facet_rule, taste_exposure: no item has a value in eval.category.columns ['category']: no facet to "
            "score; these rows are dislike popularity")
    assert note in run.report.read_text() and note in console.export_text().replace("\n", " ")


def test_a_k_at_the_catalogue_size_is_noted_and_tuning_there_is_a_tie(tmp_path: Path) -> None:
    # found by probing: on a 10-item catalogue with K = 20 every row was the same, every grid point of every baseline
    # tied, and tuning.json and the report still showed a "chosen" setting (the first point), with no word on it
    run, _ = eval_run_dir(tmp_path / "run")  # 15 items
    console = Console(record=True, width=400)
    STAGE_REGISTRY["eval"].call(_cfg(run.root, ks=[2, 15, 20], tune_k=15, models=[]), console=console)
    saved = json.loads((run.eval / "metrics.json").read_text())
    assert len({row["FHR@15"] for row in saved.values()}) == 1
    text = console.export_text().replace("\n", " ")
    report = run.report.read_text()
    samples = pl.read_parquet(run.samples)
    reach = {split: 15 - samples.filter(pl.col("split") == split)["hist_items"].list.n_unique().min() for split in ("test", "valid")}
    for note in (f"K = 15, 20 (eval.ks) is at or above every evaluated point's catalogue less its history (at most {reach['test']} "
                 "of 15 items): every model returns that whole remainder",
                 f"eval.tune_k = 15 is at or above every valid point's catalogue less its history (at most {reach['valid']} of 15 "
                 "items): every grid point returns that whole remainder, so valid FHR@15 ties everywhere"):
        assert note in report and note in text
    assert "K = 2" not in report
    tuning = read_json(run.eval / "tuning.json")
    assert all(t["tied"] for t in tuning.values())
    assert "| popularity | tie, first point kept: half_life_days=None |" in report
    # a K below every remainder gets no note, and a grid whose points differ is a choice
    STAGE_REGISTRY["eval"].call(_cfg(run.root, ks=[2], tune_k=2, models=[]), console=Console(quiet=True))
    assert "is at or above every" not in run.report.read_text()
    assert not all(t["tied"] for t in read_json(run.eval / "tuning.json").values())


def test_few_evaluation_points_get_the_small_n_caveat(tmp_path: Path) -> None:
    from conrec.eval.compare import SMALL_N

    run, _ = eval_run_dir(tmp_path / "run")
    console = Console(record=True, width=400)
    STAGE_REGISTRY["eval"].call(_cfg(run.root, baselines=["popularity", "category"], models=[], tune=False, max_samples=3), console=console)
    note = f"3 evaluation points: intervals and paired differences on fewer than {SMALL_N} points are rough"
    assert note in run.report.read_text() and note in console.export_text().replace("\n", " ")
    assert any("FHR@5_diff_ci" in row for row in json.loads((run.eval / "metrics.json").read_text()).values())  # still computed
