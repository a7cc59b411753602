"""The data stage writes the run directory's data files; analyze reads them back."""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

import polars as pl
import pytest
from rich.console import Console

from conrec.config import load_config
from conrec.data import analyze, stage
from conrec.data.analyze import coverage_by_horizon
from conrec.data.config import DataConfig
from conrec.data.samples import DAY, SAMPLE_COLUMNS
from conrec.errors import ConfigError, DataValidationError, StageInputError
from conrec.runs import RunDir


def _run_data(cfg: Any) -> dict[str, Any]:
    """The data stage as the pipeline calls it: its own section and the run directory."""
    return stage.run(cfg.data, cfg.run_dir, console=_quiet())


def _quiet() -> Console:
    return Console(quiet=True)


def _sim_cfg(tmp_path, **split):
    return load_config(
        None,
        {
            "run_dir": str(tmp_path / "run"),
            "data": {"source": "simulator", "simulator": {"n_users": 40, "n_items": 120, "days": 20}, "split": split},
        },
    )


def test_stage_writes_canonical_outputs_and_stats(tmp_path):
    cfg = _sim_cfg(tmp_path)
    stats = _run_data(cfg)
    rd = RunDir(cfg.run_dir)
    assert rd.is_done("data")
    events, items, samples = (pl.read_parquet(p) for p in (rd.events, rd.items, rd.samples))
    assert tuple(samples.columns) == SAMPLE_COLUMNS
    assert set(samples["next_neg"]) <= set(items["item_id"])
    written = json.loads((rd.data / "stats.json").read_text())
    assert written == json.loads(json.dumps(stats))
    assert stats["events"] == events.height and stats["dislikes"] == int((events["feedback"] == -1).sum())
    assert stats["samples"] == {s: int((samples["split"] == s).sum()) for s in ("train", "valid", "test")}
    assert stats["valid_cutoff_ts"] <= stats["test_cutoff_ts"]
    facets = pl.read_parquet(rd.data / "user_facets.parquet")
    assert facets.columns == ["user_id", "axis", "value"] and facets["user_id"].n_unique() == 40


def test_stage_from_a_table_source(tmp_path):
    ev = tmp_path / "ev.csv"
    rows = ["user_id,item_id,ts,feedback"] + [f"u{u},i{k % 7},{k * 3600 + u},{-1 if k % 4 == 0 else 1}" for u in range(3) for k in range(40)]
    ev.write_text("\n".join(rows) + "\n")
    cfg = load_config(None, {"run_dir": str(tmp_path / "run"), "data": {"source": "table", "events_path": str(ev)}})
    rd = RunDir(cfg.run_dir)
    rd.data.mkdir(parents=True)
    pl.DataFrame({"user_id": ["u0"], "axis": ["tone"], "value": ["dark"]}).write_parquet(rd.data / "user_facets.parquet")  # a simulated world's
    stats = _run_data(cfg)
    assert stats["users"] == 3 and stats["events"] == 120 and stats["samples"]["test"] == 3
    assert not (rd.data / "user_facets.parquet").exists()  # or the report's taste check reads another world's truth


def _samples_for_coverage() -> tuple[pl.DataFrame, pl.DataFrame]:
    items = pl.DataFrame({"item_id": ["a", "b", "c", "d"], "category": ["x", "x", "y", "z"]})
    samples = pl.DataFrame(
        {
            "sample_id": [0, 1, 2],
            "split": ["test", "test", "valid"],
            "ts": [0, 0, 0],
            "next_neg": ["a", "c", "d"],
            "later_negs": [["a", "b", "c"], ["c"], ["d", "d"]],
            "later_neg_ts": [[0, DAY // 2, 5 * DAY], [0], [0, DAY]],
        }
    )
    return samples, items


def test_coverage_by_horizon_on_known_samples():
    samples, items = _samples_for_coverage()
    cov = coverage_by_horizon(samples, items, [1, 7])
    test1 = cov.filter((pl.col("split") == "test") & (pl.col("horizon_days") == 1)).row(0, named=True)
    # sample 0 at 1 day: {a, b}, both category x -> item 1/2, category 1/1; sample 1: {c} -> 1, 1
    assert test1["samples"] == 2 and test1["mean_future_items"] == pytest.approx(1.5)
    assert test1["item_coverage"] == pytest.approx((0.5 + 1) / 2)
    assert test1["category_coverage"] == pytest.approx(1.0)
    test7 = cov.filter((pl.col("split") == "test") & (pl.col("horizon_days") == 7)).row(0, named=True)
    # sample 0 at 7 days: {a, b, c}, categories {x, y} -> item 1/3, category 1/2
    assert test7["item_coverage"] == pytest.approx((1 / 3 + 1) / 2)
    assert test7["category_coverage"] == pytest.approx((0.5 + 1) / 2)
    valid7 = cov.filter((pl.col("split") == "valid") & (pl.col("horizon_days") == 7)).row(0, named=True)
    assert valid7["mean_future_items"] == 1.0  # a repeated dislike is one item
    assert cov["split"].to_list() == ["valid", "valid", "test", "test"]


def test_category_coverage_splits_multi_valued_categories_and_skips_empty_ones():
    """'X|Y' and 'Y|X' were two categories that were neither X nor Y, and a missing category was one more."""
    samples, _ = _samples_for_coverage()
    items = pl.DataFrame({"item_id": ["a", "b", "c", "d"], "category": ["x|y", "y | x", "", None]})
    test = coverage_by_horizon(samples, items, [1, 7]).filter(pl.col("split") == "test")
    # sample 0: {a, b} then {a, b, c}: categories {x, y}, all a's own; sample 1: {c}, no category (left out)
    assert test["mean_future_categories"].to_list() == [2.0, 2.0]
    assert test["category_coverage"].to_list() == [1.0, 1.0]
    valid = coverage_by_horizon(samples, items, [1]).filter(pl.col("split") == "valid").row(0, named=True)
    assert valid["mean_future_categories"] is None and valid["category_coverage"] is None  # {d}: no category
    assert analyze.category_note(items) == (
        "note: items without a category: 2 of 4; the category columns count only the labelled items of each future set"
    )
    assert analyze.category_note(_samples_for_coverage()[1]) is None


def test_analyze_splits_categories_without_the_eval_package():
    """Found in review: item_categories imported conrec.eval.baselines.category (scipy, a facets x items matrix
    thrown away): the data package depended on eval. The splitting rule is now conrec.data.categories', shared."""
    import subprocess
    import sys

    code = (
        "import sys, polars as pl\nfrom conrec.data import analyze\n"
        "t = analyze.item_categories(pl.DataFrame({'item_id': ['a', 'b'], 'category': ['x| y', None]}))\n"
        "print(sorted(t['category']), 'conrec.eval.baselines.category' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    assert out.strip() == "['x', 'y'] False"


def test_no_categories_read_n_a_not_one_category_fully_covered():
    samples, _ = _samples_for_coverage()
    items = pl.DataFrame({"item_id": ["a", "b", "c", "d"], "category": [""] * 4})  # a table source with no items file
    cov = coverage_by_horizon(samples, items, [1, 7])
    assert cov["mean_future_categories"].is_null().all() and cov["category_coverage"].is_null().all()
    assert cov["item_coverage"].is_not_null().all()
    import io

    out = io.StringIO()
    Console(file=out, width=120).print(analyze.render_table(cov))
    assert "n/a" in out.getvalue() and "100.0%" in out.getvalue()  # the item columns still read
    assert "the items have no categories" in (analyze.category_note(items) or "")


def test_coverage_rejects_bad_horizons():
    samples, items = _samples_for_coverage()
    with pytest.raises(ConfigError):
        coverage_by_horizon(samples, items, [])
    with pytest.raises(ConfigError):
        coverage_by_horizon(samples, items, [0])
    # under a second the window [t, t) is empty (times are whole seconds): it read as 1 item, 100% covered
    with pytest.raises(ConfigError, match="at least one second"):
        coverage_by_horizon(samples, items, [1e-9])


@pytest.mark.parametrize("text", ["1e-9", "1,0.000001"])
def test_parse_horizons_refuses_sub_second_horizons(text):
    with pytest.raises(ConfigError, match="is under one second"):
        analyze.parse_horizons(text)
    assert analyze.parse_horizons("0.00002") == [0.00002]  # 1.7 s: a window of whole seconds


def test_analyze_reads_the_stage_outputs(tmp_path, monkeypatch):
    cfg = _sim_cfg(tmp_path)
    with pytest.raises(StageInputError, match="run `conrec data` first"):
        analyze.run(cfg, horizons=[1, 3], console=_quiet())
    _run_data(cfg)
    labelled, real = [], analyze.item_categories
    monkeypatch.setattr(analyze, "item_categories", lambda *a, **k: labelled.append(a) or real(*a, **k))
    table = analyze.run(cfg, horizons=[1, 3, 7, 14], console=_quiet())
    assert len(labelled) == 1, "the items' labels are split once (a Python loop over every item), for the table and the note"
    assert table.height == 8 and table["item_coverage"].is_between(0, 1).all()
    # Longer windows hold at least as many future dislikes.
    test = table.filter(pl.col("split") == "test")["mean_future_items"].to_list()
    assert test == sorted(test)
    with pytest.raises(ConfigError, match="^Horizons \\[60\\] exceed data.split.max_horizon_days"):  # said "horizons: Horizons"
        analyze.run(cfg, horizons=[60], console=_quiet())
    # --horizons: a word or a nan was a traceback and "give at least one horizon"; each is named in one line
    assert analyze.parse_horizons("1, 3,,7") == [1.0, 3.0, 7.0]
    for text, message in [("1,abc", "'abc' is not a number of days"), ("nan", "'nan' is not a positive, finite"),
                          ("0", "'0' is not a positive"), (" , ", "no horizon in")]:
        with pytest.raises(ConfigError, match=message):
            analyze.parse_horizons(text)
    from typer.testing import CliRunner

    from conrec.cli import app

    r = CliRunner().invoke(app, ["analyze", "-r", str(cfg.run_dir), "--horizons", "1,abc"])
    assert r.exit_code == 2 and "'abc' is not a number of days" in r.output and "Traceback" not in r.output
    _assert_cut_shares_named(cfg, [0.5, 1, 3, 7, 14])

    # per-user protocol: the global valid/test spans play no part (they gave notes about windows no point has)
    pu = _sim_cfg(tmp_path / "pu", protocol="per_user")
    _run_data(pu)
    notes = _assert_cut_shares_named(pu, [1, 3, 14])
    assert not any("window spans" in n for n in notes)


def test_analyze_says_when_a_split_has_no_point(tmp_path, monkeypatch):
    """A split with no point gave no row and no word (both empty: an empty table, exit 0), and its window note
    still showed (the global valid span, or the per-user valid rule)."""
    cfg = _sim_cfg(tmp_path)
    _run_data(cfg)
    rd = RunDir(cfg.run_dir)
    samples = pl.read_parquet(rd.samples)
    read = analyze.read_parquet

    def without(*splits: str) -> None:
        kept = samples.filter(~pl.col("split").is_in(list(splits)))
        monkeypatch.setattr(analyze, "read_parquet", lambda path, what: kept if path == rd.samples else read(path, what))

    without("valid")
    out = Console(record=True, width=300)
    table = analyze.run(cfg, horizons=[1, 14], console=out)
    text = out.export_text()
    assert table["split"].unique().to_list() == ["test"]
    assert "note: no valid point in this run, so no valid rows" in text and "note: valid points" not in text
    without("valid", "test")
    with pytest.raises(StageInputError, match="has no valid and no test point: nothing to measure"):
        analyze.run(cfg, horizons=[1], console=_quiet())


def test_window_stops_follow_the_labels_rule():
    samples = pl.DataFrame(
        {"user_id": ["u", "u", "u", "w"], "split": ["valid", "test", "test", "valid"], "ts": [10, 50, 40, 20]}
    )
    per_user = analyze.window_stops(samples, log_end=100, test_cutoff=None)
    assert per_user["valid"][1].tolist() == [40, 100]  # u: its earliest test point; w: no test share, the log's end
    assert per_user["test"][1].tolist() == [100, 100]
    assert analyze.window_stops(samples, log_end=100, test_cutoff=30)["valid"][1].tolist() == [30, 30]
    note = analyze.study_cut_window_note("valid", {1.0: 0.0, 3.0: 0.25}, "the test cut-off")
    assert note is not None and note.startswith("note: valid points whose window is cut short by the test cut-off: 25.0% of the points at 3 d.")
    assert analyze.study_cut_window_note("test", {1.0: 0.0}, "the end of the log") is None


def _assert_cut_shares_named(cfg: Any, horizons: list[float]) -> list[str]:
    """analyze's notes give, per split, the share of points whose window is cut at each horizon, computed here
    the plain way: past the test start (the global cut-off, or per user the user's earliest test point; a user
    with none runs to the log's end) for valid points, past the last event for all."""
    rd = RunDir(cfg.run_dir)
    samples = pl.read_parquet(rd.samples)
    stats = json.loads((rd.data / "stats.json").read_text())
    import datetime as dt

    log_end = int(dt.datetime.fromisoformat(stats["last_event"] + "+00:00").timestamp()) + 1
    per_user = stats.get("split_protocol") == "per_user"
    first_test: dict[str, int] = {}
    for u, t in samples.filter(pl.col("split") == "test").select("user_id", "ts").iter_rows():
        first_test[u] = min(t, first_test.get(u, t))
    notes = analyze._truncation_notes(rd, horizons, samples)
    cut_somewhere = False
    for split in ("valid", "test"):
        points = samples.filter(pl.col("split") == split).select("user_id", "ts").rows()
        if split == "test":
            stops = [log_end] * len(points)
        else:
            stops = [first_test.get(u, log_end) if per_user else stats["test_cutoff_ts"] for u, _ in points]
        shares = {h: sum(t + round(h * DAY) > e for (_, t), e in zip(points, stops)) / len(points) for h in horizons}
        expected = ", ".join(f"{s:.1%} of the points at {h:g} d" for h, s in shares.items() if s > 0)
        mine = [n for n in notes if n.startswith(f"note: {split} points")]
        assert (mine == []) == (expected == ""), (split, notes)
        if expected:
            assert f": {expected}. Their future sets" in mine[0], (split, expected, mine)
            cut_somewhere = cut_somewhere or any(0 < s < 1 for s in shares.values())
    assert cut_somewhere  # the case the whole-period spans missed: some points cut, not all
    assert not any("FHR" in n or "model" in n for n in notes)  # analyze measures no model
    return notes


# --- issue 13.2 / 13.4: edge cases fail before any file is written ---------------------------------


def _table_cfg(tmp_path, rows: list[str], on_invalid: str = "drop"):
    ev = tmp_path / "events.csv"
    ev.write_text("\n".join(["user_id,item_id,ts,feedback", *rows]) + "\n")
    data = {"source": "table", "events_path": str(ev), "on_invalid": on_invalid}
    return load_config(None, {"run_dir": str(tmp_path / "run"), "data": data})


def _rows(feedback: str = "{f}", ts_of=lambda k, u: k * 3600 + u) -> list[str]:
    return [
        f"u{u},i{k % 7},{ts_of(k, u)},{feedback.format(f=-1 if k % 4 == 0 else 1)}" for u in range(3) for k in range(40)
    ]


def test_float_feedback_as_written_by_a_csv_with_nans_is_accepted(tmp_path):
    stats = _run_data(_table_cfg(tmp_path, _rows("{f}.0")))
    events = pl.read_parquet(RunDir(tmp_path / "run").events)
    assert events["feedback"].dtype == pl.Int8 and stats["dislikes"] == 30


def test_fractional_feedback_is_rejected_under_on_invalid_error(tmp_path):
    from conrec.errors import DataValidationError

    rows = _rows()
    rows[0] = rows[0].rsplit(",", 1)[0] + ",0.5"
    with pytest.raises(DataValidationError, match="feedback.*0.5"):
        _run_data(_table_cfg(tmp_path, rows, on_invalid="error"))


def test_fractional_feedback_is_dropped_and_counted_by_default(tmp_path):
    rows = _rows()
    rows[0] = rows[0].rsplit(",", 1)[0] + ",0.5"
    stats = _run_data(_table_cfg(tmp_path, rows))
    assert stats["events"] == 119 and stats["invalid_rows"] == {"policy": "drop", "bad_feedback": 1}


def test_dataset_without_dislikes_fails_the_stage(tmp_path):
    from conrec.errors import DataValidationError

    with pytest.raises(DataValidationError, match="dislike"):
        _run_data(_table_cfg(tmp_path, _rows("1")))
    assert not RunDir(tmp_path / "run").events.exists()


def test_millisecond_timestamp_fails_before_any_file_is_written(tmp_path):
    from conrec.errors import DataValidationError

    rows = _rows()
    rows[-1] = "u2,i1,10000000000000,1"  # one timestamp of 10**13 among seconds
    with pytest.raises(DataValidationError, match="milliseconds"):
        _run_data(_table_cfg(tmp_path, rows))
    rd = RunDir(tmp_path / "run")
    assert not any(p.exists() for p in (rd.events, rd.items, rd.samples)) and not rd.is_done("data")


def test_a_log_whose_events_are_mostly_dislikes_is_flagged(tmp_path):
    """Most events dislikes means the mapping is off (a 'no rating' code read as a low rating, a flag
    read the wrong way round): the stage says so, and says nothing on ordinary shares."""
    from conrec.data.stage import dislike_share_warning

    assert dislike_share_warning({"dislike_share": 0.74}).startswith("74% of the events are dislikes")
    assert dislike_share_warning({"dislike_share": 0.24}) is None and dislike_share_warning({"dislike_share": 0.5}) is None
    ev = tmp_path / "ev.csv"
    ev.write_text("user_id,item_id,ts,feedback\n" + "".join(f"u{k % 4},i{k % 9},{100 + k * 3600},{1 if k % 5 == 0 else -1}\n" for k in range(200)))
    console = Console(record=True, width=300)
    stats = stage.run(DataConfig(source="table", events_path=ev, split={"min_history": 0}), tmp_path / "run", console=console)
    assert stats["dislike_share"] == 0.8 and "warning: 80% of the events are dislikes" in console.export_text()


def test_a_catalogue_mostly_without_events_is_noted_in_one_line(tmp_path):
    """A 50,000-item catalogue whose events touch 500 printed only "users / items 60 / 50,000": nothing said that the
    rest can be ranked only from their text, or that encoding them is most of the SID stage's time. One note now
    counts them, when over half of the catalogue has no event; an ordinary catalogue gets none."""
    from conrec.data.stage import unused_catalogue_note

    assert unused_catalogue_note({"items": 50_000, "items_with_events": 500}).startswith("49,500 of the 50,000 items (99%) appear in no event")
    assert unused_catalogue_note({"items": 100, "items_with_events": 50}) is None and unused_catalogue_note({"items": 0}) is None
    ev, it = tmp_path / "ev.csv", tmp_path / "items.csv"
    ev.write_text("user_id,item_id,ts,feedback\n" + "".join(f"u{k % 4},i{k % 9},{100 + k * 3600},{-1 if k % 5 == 0 else 1}\n" for k in range(200)))
    it.write_text("item_id,title\n" + "".join(f"i{k},title {k}\n" for k in range(40)))
    console = Console(record=True, width=400)
    stage.run(DataConfig(source="table", events_path=ev, items_path=it, split={"min_history": 0}), tmp_path / "run", console=console)
    notes = [ln for ln in console.export_text().splitlines() if ln.startswith("note:")]
    assert len(notes) == 1 and notes[0].startswith("note: 31 of the 40 items (78%) appear in no event: the model can rank them only"), notes


def test_cut_offs_on_one_tied_second_are_explained_with_the_real_test_share(tmp_path):
    """Found by the label audit of 7 December 2026: a log whose last second holds 40% of the events (a bulk import) put
    both quantile cut-offs on it; the valid split was empty and test held 40% of the events for test_frac 0.2, and the
    stage said only "no valid point". It now names the tied second, its share and the real test share."""
    ev = tmp_path / "ev.csv"
    end = 100 + 300 * 3600
    rows = [(f"u{k % 10}", f"i{k % 37}", end if k >= 180 else 100 + k * 3600, -1 if k % 3 == 0 else 1) for k in range(300)]
    ev.write_text("user_id,item_id,ts,feedback\n" + "".join(f"{u},{i},{t},{f}\n" for u, i, t, f in rows))
    console = Console(record=True, width=400)
    stats = stage.run(DataConfig(source="table", events_path=ev, split={"min_history": 0}), tmp_path / "run", console=console)
    assert stats["valid_cutoff_ts"] == stats["test_cutoff_ts"] == end and stats["samples"]["valid"] == 0
    out = console.export_text()
    assert "no valid point" in out
    assert f"the valid and test cut-offs fell on the same timestamp (1970-01-13 12:01:40 UTC, ts {end}) because 40.0% of the events share it" in out
    assert "the test split holds 40.0% of the events, not test_frac 20%" in out and "is above about 40.0%" in out
    console = Console(record=True, width=400)  # per user the global cut-offs play no part: nothing of the kind is said
    stage.run(DataConfig(source="table", events_path=ev, split={"min_history": 0, "protocol": "per_user"}), tmp_path / "pu", console=console)
    assert "cut-offs fell on the same timestamp" not in console.export_text()


def test_the_rows_dropped_are_shown_before_the_error_they_cause(tmp_path):
    """Every time but a few unreadable: "no training sample" was the only line, and the 114 rows dropped as
    bad timestamps, the reason, were counted in a warning block the refusal skipped."""
    from conrec.errors import DataValidationError

    rows = _rows(ts_of=lambda k, u: "n/a" if k > 1 else k * 3600 + u)
    console = Console(record=True, width=300)
    cfg = _table_cfg(tmp_path, rows)
    with pytest.raises(DataValidationError, match="no training sample"):
        stage.run(cfg.data, cfg.run_dir, console=console)
    out = console.export_text()
    assert "114 event(s) with a missing, unreadable, NaN, infinite or negative timestamp: dropped" in out
    assert "before the error below" in out and not RunDir(tmp_path / "run").events.exists()


def test_docs_motivation_study_names_its_config_and_the_options():
    """docs/data.md's motivation table named no config (the figures are the default config's, not preset:demo's)
    and --horizons appeared only in --help."""
    from pathlib import Path

    import typer

    from conrec.cli import app

    page = (Path(__file__).resolve().parents[1] / "docs" / "data.md").read_text()
    study = page[page.index("**Motivation study**") : page.index("## Invalid rows")]
    assert "default config" in study and "conrec data -c cfg.yaml && conrec analyze -c cfg.yaml" in study
    command = typer.main.get_command(app).commands["analyze"]  # type: ignore[attr-defined]
    options = {max(p.opts, key=len) for p in command.params} - {"--config", "--run-dir"}
    assert "--horizons" in options and all(o in study for o in options), options


def test_item_ids_equal_after_trimming_and_invisible_or_control_titles_are_warned_not_changed(tmp_path):
    """Found by probing: ids 'a1', 'a1 ' and ' a1' became three items, and a zero-width-only or control-character
    title was kept as a "title", all without a word; so were ids holding a newline, a tab or a zero-width space (the
    last shown as 'zwsp'). The data stays as it was (changing it would change every run's data): the stage warns with
    counts."""
    ev = tmp_path / "ev.csv"
    ev.write_text("user_id,item_id,ts,feedback\n" + "".join(f"u{k % 4},i{k % 9},{100 + k * 3600},{-1 if k % 5 == 0 else 1}\n" for k in range(200)))
    items = tmp_path / "items.csv"
    rows = [f"i{k},Title {k}" for k in range(9)] + ["a1,x", "a1 ,y", " a1,z", "z1,\u200b\u200b", "z2,bell\x07",
                                                    '"new\nline",n', "tab\tid,t", "zw\u200bsp,w"]
    items.write_text("item_id,title\n" + "\n".join(rows) + "\n", encoding="utf-8")
    console = Console(record=True, width=400)
    stage.run(DataConfig(source="table", events_path=ev, items_path=items, split={"min_history": 0}), tmp_path / "run", console=console)
    out = console.export_text()
    assert "warning: 3 item id(s) differ from another only by the spaces around them, e.g. ['a1', 'a1 ', ' a1']" in out
    assert "warning: 1 item title(s) have no visible character (zero-width, control or space characters only): kept as they are, e.g. items ['z1']" in out
    assert "warning: 1 item title(s) contain control characters (printed as \\x.. escapes): kept as they are, e.g. items ['z2']" in out
    assert ("warning: 3 item id(s) hold a control or invisible character (a line break, tab, zero-width space or bidi control), "
            "e.g. ['new\\nline', 'tab\\tid', 'zw\\u200bsp']: kept as they are, so a request must name them with it") in out
    written = pl.read_parquet(RunDir(tmp_path / "run").items)
    assert {"a1", "a1 ", " a1"} <= set(written["item_id"]) and "bell\x07" in written["title"].to_list()


def test_the_per_user_split_prints_its_rule_and_its_points_days_not_the_unused_global_cut_offs(tmp_path):
    """Under protocol: per_user the summary printed the global valid / test cut-offs (stats.json keeps them), which the
    split does not use: its test points began months before the printed test cut-off."""
    cfg = _sim_cfg(tmp_path, protocol="per_user")
    console = Console(record=True, width=200)
    stage.run(cfg.data, cfg.run_dir, console=console)
    out = console.export_text()
    samples = pl.read_parquet(RunDir(cfg.run_dir).samples).filter(pl.col("split") == "test")
    first, last = (dt.datetime.fromtimestamp(int(getattr(samples["ts"], f)()), tz=dt.timezone.utc).strftime("%Y-%m-%d") for f in ("min", "max"))
    assert "cut-off" not in out and "per user: 10% / last 20% of dislikes" in out
    stats = json.loads((RunDir(cfg.run_dir).data / "stats.json").read_text())
    realised = [f"{stats['samples'][s] / stats['dislikes']:.1%}" for s in ("valid", "test")]
    assert f"(realised as points: {realised[0]} / {realised[1]})" in out  # rounding per user moves them (docs/data.md)
    assert re.search(rf"test points\s*│\s*{first} \.\. {last}", out)
    glob = _sim_cfg(tmp_path / "global")
    console = Console(record=True, width=200)
    stage.run(glob.data, glob.run_dir, console=console)
    assert "valid / test cut-off" in console.export_text() and "per user" not in console.export_text()
    stats = {"dislikes": 3, "events": 9, "samples": {"train": 0}, "valid_cutoff": "2020-01-01 00:00:00", "split_protocol": "per_user"}
    with pytest.raises(DataValidationError, match=r"no training sample \(a dislike with history before its user's valid points\)"):
        stage.check_learnable(stats, "table")


def test_a_per_user_split_of_users_with_few_dislikes_warns_and_keeps_the_warning_for_the_report(tmp_path):
    """Found by probing a world with 2 dislikes per median user: `conrec data` printed "per user: 10% / last 20% of
    dislikes" while 15.7% of the dislikes were valid points, and the valid and test points came from mostly different
    users, with no word. Now the summary gives the realised shares, and a warning is printed and kept in stats.json's
    ``warnings``, which the eval report repeats as a note; a log with many dislikes per user has none."""
    from conrec.eval.stage import data_warning_notes

    def run(name: str, per_user: list[int]) -> tuple[str, dict[str, Any]]:
        ev = tmp_path / f"{name}.csv"
        rows = ["".join(f"u{u},liked{k},{u + k},1\n" for k in range(4)) + "".join(f"u{u},i{(u + d) % 13},{86_400 * (1 + d) + u},-1\n" for d in range(n))
                for u, n in enumerate(per_user)]
        ev.write_text("user_id,item_id,ts,feedback\n" + "".join(rows))
        console = Console(record=True, width=400)
        stage.run(DataConfig(source="table", events_path=ev, split={"protocol": "per_user"}), tmp_path / name, console=console)
        return " ".join(console.export_text().split()), json.loads((RunDir(tmp_path / name).data / "stats.json").read_text())

    out, stats = run("few", [2, 3, 4] * 10)
    assert "per user: 10% / last 20% of dislikes (realised as points: 11.1% / 22.2%)" in out  # 10 and 20 of 90 dislikes
    [warning] = stats["warnings"]
    assert warning.startswith("per-user split: the valid and the test points come from mostly different users: 0 of the 20 test")
    assert f"warning: {warning}" in out
    assert data_warning_notes(stats) == [f"Data stage warning: {warning}."]
    out, stats = run("many", [20, 25, 30] * 4)
    assert stats["warnings"] == [] and "mostly different users" not in out
    assert data_warning_notes(stats) == [] and data_warning_notes(None) == [] and data_warning_notes({"users": 3}) == []
