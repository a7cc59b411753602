"""Evaluation that scales with the catalogue (issue 22): each baseline declares its cost, eval says
how long a long step will take before it starts, and a dense-item baseline past
``eval.max_dense_items`` is skipped with a one-line reason instead of running for hours."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from rich.console import Console

from conrec.config import load_config
from conrec.eval.baselines import REGISTRY
from conrec.eval.config import EvalConfig
from conrec.eval.cost import ANNOUNCE_AFTER_S, Cost, Workload, announcement, human_seconds, skip_reason
from conrec.stages import STAGE_REGISTRY

from builders import eval_run_dir


def test_every_baseline_declares_a_cost_and_only_ease_needs_a_dense_item_matrix() -> None:
    costs = {name: spec.cost(EvalConfig()) for name, spec in REGISTRY.items()}
    assert all(isinstance(c, Cost) and c.what for c in costs.values())
    assert [n for n, c in costs.items() if c.dense_items] == ["ease"]


def test_ease_cost_grows_cubically_and_dominates_on_a_large_catalogue() -> None:
    ease = REGISTRY["ease"].cost(EvalConfig())
    assert ease.seconds(Workload(10_000, 0, 0)) / ease.seconds(Workload(1_000, 0, 0)) == pytest.approx(1_000)  # n^3
    large = Workload(10_000, 10**5, 3_000)
    pop = REGISTRY["popularity"].cost(EvalConfig())
    assert ease.seconds(large) > 50 * pop.seconds(large)


def test_skip_reason_is_one_line_naming_the_setting() -> None:
    ease = REGISTRY["ease"].cost(EvalConfig())
    assert skip_reason("ease", ease, Workload(9_066, 10**5, 3_000), max_dense_items=20_000) is None
    reason = skip_reason("ease", ease, Workload(100_000, 10**6, 3_000), max_dense_items=20_000)
    assert reason is not None and "\n" not in reason
    assert "100,000 items > eval.max_dense_items=20,000" in reason and "80.1 GB" in reason  # the matrix + a score chunk
    small = skip_reason("ease", ease, Workload(1_682, 10**5, 200), max_dense_items=1_000)  # MovieLens-100K's catalogue
    assert small is not None and "156.9 MB" in small and "0.0 GB" not in small and "~0 s" not in small, small
    pop = REGISTRY["popularity"].cost(EvalConfig())
    assert skip_reason("popularity", pop, Workload(100_000, 10**6, 3_000), max_dense_items=20_000) is None


def test_long_steps_are_announced_and_short_ones_are_not() -> None:
    ease = REGISTRY["ease"].cost(EvalConfig())
    assert announcement("ease", ease, Workload(200, 5_000, 100), fits=7) is None
    text = announcement("ease", ease, Workload(9_066, 100_000, 3_500), fits=7)
    assert text is not None and text.startswith("baseline ease: expected ~") and "7 fits on 9,066 items" in text
    assert ease.seconds(Workload(9_066, 100_000, 3_500)) * 7 >= ANNOUNCE_AFTER_S


def test_human_seconds() -> None:
    assert [human_seconds(s) for s in (12, 600, 4 * 3600)] == ["12 s", "10 min", "4.0 h"]


def test_eval_skips_ease_past_the_limit_and_says_why(tmp_path: Path) -> None:
    run, _ = eval_run_dir(tmp_path / "run")  # 15 items
    section = {"baselines": ["popularity", "ease"], "models": [], "ks": [2, 5], "horizons": [1], "tune": False, "max_dense_items": 10}
    cfg = load_config(None, {"run_dir": str(run.root), "data": {"split": {"horizon_days": 3, "max_horizon_days": 10}}, "eval": section})
    console = Console(record=True, width=200)
    metrics = STAGE_REGISTRY["eval"].call(cfg, console=console)
    assert list(metrics) == ["popularity"]
    out = console.export_text()
    assert "baseline ease skipped: 15 items > eval.max_dense_items=10" in out
    assert "baseline ease skipped" in run.report.read_text()
    assert not (run.predictions / "ease.parquet").exists() and pl.read_parquet(run.predictions / "popularity.parquet").height


def test_the_report_line_keeps_its_path_whole(tmp_path: Path) -> None:
    """`report: <path>` was broken at the console width (a newline inside the path)."""
    run, _ = eval_run_dir(tmp_path / ("a_rather_long_directory_name_" * 2) / "run")
    section = {"baselines": ["popularity"], "models": [], "ks": [2, 5], "horizons": [1], "tune": False}
    cfg = load_config(None, {"run_dir": str(run.root), "data": {"split": {"horizon_days": 3, "max_horizon_days": 10}}, "eval": section})
    console = Console(record=True, width=60)
    STAGE_REGISTRY["eval"].call(cfg, console=console)
    assert f"report: {run.report}" in console.export_text().splitlines()


def _eval_offterminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, baselines: list[str],
                      max_dense_items: int = 10) -> tuple[str, str]:
    """(console output, report) of the eval stage on the 15-item run, its console not a terminal (the plain lines)."""
    import io

    monkeypatch.setenv("CONREC_PROGRESS_SECONDS", "3600")  # the final line per bar only
    run, _ = eval_run_dir(tmp_path / "run")
    section = {"baselines": baselines, "models": [], "ks": [2, 5], "horizons": [1], "tune": False,
               "max_dense_items": max_dense_items}
    cfg = load_config(None, {"run_dir": str(run.root), "data": {"split": {"horizon_days": 3, "max_horizon_days": 10}}, "eval": section})
    buf = io.StringIO()
    STAGE_REGISTRY["eval"].call(cfg, console=Console(file=buf, force_terminal=False, width=200))
    return buf.getvalue(), run.report.read_text()


def test_the_baseline_bar_ends_on_the_count_and_names_no_skipped_baseline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ease (last, skipped) ended the bar as 'baseline popularity: fit + top-5: 2/2 (100%)'."""
    out, report = _eval_offterminal(tmp_path, monkeypatch, ["popularity", "ease"])
    bar = [ln for ln in out.splitlines() if "2/2 (100%)" in ln]
    assert len(bar) == 1 and bar[0].startswith("baselines on ") and "popularity" not in bar[0], out
    assert "Baselines fitted on" in report


def test_no_baselines_no_bar_and_no_fitted_on_note(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """eval.baselines: [] printed a bar over nothing ('baselines on 50 test samples: 0') and said baselines were fitted."""
    out, report = _eval_offterminal(tmp_path, monkeypatch, [])
    assert "baselines on" not in out, out
    assert "Baselines fitted on" not in report


def test_taste_exposure_costs_its_item_item_matrix_up_to_the_limit() -> None:
    """Costed as linear, its tuning on 20,000 items (12 categories) took 35 s where 3.4 s were estimated, unannounced."""
    from conrec.eval.cost import ITEM_ITEM_MAX_ITEMS

    cfg = EvalConfig(tune=True)  # default grid: personal category and itemknn, 3 pop_weights each
    te = REGISTRY["taste_exposure"].cost(cfg)
    n = 20_000
    w = Workload(n, 3 * 10**5, 500, 5 * 10**4, facet_pairs=n**2 / 9)  # the simulator world's 12 values of unequal size
    assert announcement("taste_exposure", te, w, fits=7) is not None
    assert announcement("taste_exposure", REGISTRY["popularity"].cost(cfg), w, fits=7) is None
    assert te.seconds(w) > 3 * REGISTRY["popularity"].cost(cfg).seconds(w)
    beyond = Workload(ITEM_ITEM_MAX_ITEMS + 1, 3 * 10**5, 500, 5 * 10**4, facet_pairs=n**2 / 9)  # the facets' path
    assert te.seconds(beyond) == pytest.approx(REGISTRY["popularity"].cost(cfg).seconds(beyond))
    knn_only = EvalConfig(tune=False, taste_exposure={"personal": "itemknn"})
    assert REGISTRY["taste_exposure"].cost(knn_only).seconds(w) == pytest.approx(REGISTRY["popularity"].cost(cfg).seconds(w))


def test_category_share_counts_the_fits_on_the_item_item_path() -> None:
    from conrec.eval.baselines import category_share

    assert category_share(EvalConfig(tune=True)) == pytest.approx(4 / 7)  # 3 of 6 grid points and the refit
    assert category_share(EvalConfig(tune=False)) == 1.0  # personal: category
    assert category_share(EvalConfig(tune=True, taste_exposure={"grid": {"personal": ["itemknn"]}})) == 0.0


def test_facet_pairs_is_the_sum_of_squared_value_counts() -> None:
    from conrec.eval.baselines.category import facet_pairs
    from conrec.eval.config import CategoryConfig

    items = pl.DataFrame({"item_id": ["a", "b", "c", "d", "e"], "category": ["x", "x", "x|y", "y", ""]})
    assert facet_pairs(items, CategoryConfig(columns=["category"])) == 3**2 + 2**2  # x: a, b, c; y: c, d; e none


def test_an_announcement_says_it_assumes_idle_cores_and_warns_when_they_are_busy() -> None:
    """SASRec announced ~74 s took 15 min with 2 torch threads on cores other processes kept busy: the line says
    what it assumes, and that it may take several times longer when the cores are busy at the stage start."""
    sasrec = REGISTRY["sasrec"].cost(EvalConfig())
    w = Workload(1_682, 80_000, 250, 14_163)
    quiet = announcement("sasrec", sasrec, w, fits=7)
    assert quiet is not None and quiet.startswith("baseline sasrec: expected ~") and " on 2 idle cores (7 fits" in quiet
    assert "several times longer" not in quiet
    assert announcement("sasrec", sasrec, w, fits=7, busy=(0.2, 2)) == quiet  # a quiet machine's noise
    busy = announcement("sasrec", sasrec, w, fits=7, busy=(1.8, 2))
    assert busy is not None and busy.startswith(quiet) and "\n" not in busy
    assert "1.8 of 2 cores busy" in busy and "several times longer" in busy


def test_eval_samples_the_load_once_for_its_announcements(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import conrec.eval.cost as cost_mod
    from conrec.eval import stage as eval_stage

    monkeypatch.setattr(cost_mod, "ANNOUNCE_AFTER_S", 0.0)  # every step announced on the 15-item run
    calls: list[int] = []
    monkeypatch.setattr(eval_stage, "busy_cores", lambda: calls.append(1) or (1.5, 2))
    out, _ = _eval_offterminal(tmp_path, monkeypatch, ["popularity", "category"])
    lines = [ln for ln in out.splitlines() if ": expected ~" in ln]
    assert len(lines) == 2 and all("on 2 idle cores" in ln and "several times longer" in ln for ln in lines), out
    assert calls == [1]


def test_ease_memory_is_one_dense_matrix_and_a_score_chunk() -> None:
    """The docs said 3.2 GB at 20,000 items while one fit reached 12.7 GB of RSS (4 to 5 dense matrices): the
    estimate is what ease_weights holds now (tests/test_baselines_new.py counts it), and it grows as n^2."""
    ease = REGISTRY["ease"].cost(EvalConfig())
    assert ease.memory is not None
    assert 3.2e9 < ease.memory(Workload(20_000, 0, 0)) < 3.4e9
    assert ease.memory(Workload(40_000, 0, 0)) - ease.memory(Workload(20_000, 0, 0)) == pytest.approx(3 * 3.2e9)
    assert [n for n, spec in REGISTRY.items() if spec.cost(EvalConfig()).memory is not None] == ["ease"]


def test_a_baseline_is_skipped_when_its_memory_exceeds_the_share_available() -> None:
    from conrec.eval.cost import MEMORY_SHARE

    ease = REGISTRY["ease"].cost(EvalConfig())
    w = Workload(20_000, 10**5, 3_000)
    need = ease.memory(w) if ease.memory else 0.0
    assert skip_reason("ease", ease, w, max_dense_items=20_000, available=None) is None  # unknown: not checked
    assert skip_reason("ease", ease, w, max_dense_items=20_000, available=need / MEMORY_SHARE * 1.01) is None
    reason = skip_reason("ease", ease, w, max_dense_items=20_000, available=2e9)
    assert reason is not None and "\n" not in reason
    assert reason.startswith("baseline ease skipped: it needs ~3.3 GB on 20,000 items") and "80% of the 2.0 GB" in reason
    pop = REGISTRY["popularity"].cost(EvalConfig())
    assert skip_reason("popularity", pop, w, max_dense_items=20_000, available=1.0) is None  # no memory estimate


def test_the_announcement_names_the_memory_of_a_dense_baseline() -> None:
    text = announcement("ease", REGISTRY["ease"].cost(EvalConfig()), Workload(20_000, 10**5, 3_000), fits=7)
    assert text is not None and "~3.3 GB of memory" in text
    sasrec = announcement("sasrec", REGISTRY["sasrec"].cost(EvalConfig()), Workload(20_000, 10**5, 3_000, 10**5), fits=7)
    assert sasrec is not None and "memory" not in sasrec


def test_eval_skips_ease_when_memory_is_short_and_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 16 GB laptop at 20,000 items (under eval.max_dense_items) met an OOM or swap with no word on memory."""
    from conrec.eval import stage as eval_stage

    monkeypatch.setattr(eval_stage, "available_memory", lambda: 1000)  # 1 kB: the 15-item matrix and a chunk exceed it
    out, report = _eval_offterminal(tmp_path, monkeypatch, ["popularity", "ease"], max_dense_items=20_000)
    assert "baseline ease skipped: it needs ~" in out and "of memory available now" in out, out
    assert "baseline ease skipped: it needs ~" in report
    monkeypatch.setattr(eval_stage, "available_memory", lambda: None)  # unknown (not Linux): runs as before
    out, _ = _eval_offterminal(tmp_path / "again", monkeypatch, ["popularity", "ease"], max_dense_items=20_000)
    assert "baseline ease skipped" not in out and "ease" in out, out
