"""A copied or moved own-data project's run, addressed with ``-r``, reads the copy's input files (conrec.run_home).

Found by an upgrade probe: after ``cp -a proj proj3`` and an edit of ``proj3/events.csv``, ``-r proj3/runs/my``
read the run's config.yaml, whose absolute paths named ``proj/events.csv``: every stage was "current" and the model
trained on the original data was served for the copy, while ``-c proj3/small.yaml`` refused it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from conrec.cli import _load, app
from conrec.config import load_config
from conrec.errors import ConfigError
from conrec.pipeline import run_pipeline
from conrec.run_home import follow_copy, written_in
from conrec.runs import RunDir

ROWS = [f"u{u},i{k % 7},{k * 3600 + u},{-1 if k % 4 == 0 else 1}" for u in range(3) for k in range(40)]


def _project(root: Path) -> Path:
    """An own-data project (events.csv, a config with a relative events_path) whose data stage has run in
    ``root/runs/my``, made from inside the project as `conrec init` tells a user; returns the run directory."""
    root.mkdir()
    (root / "events.csv").write_text("\n".join(["user_id,item_id,ts,feedback", *ROWS]) + "\n")
    (root / "my.yaml").write_text("data:\n  source: table\n  events_path: events.csv\n")
    cfg = load_config(root / "my.yaml", {"run_dir": str(root / "runs" / "my")})
    run_pipeline(cfg, stages=("data",), console=Console(quiet=True))
    return root / "runs" / "my"


def test_a_copied_projects_run_reads_and_checks_the_copys_events_file(tmp_path: Path) -> None:
    run = _project(tmp_path / "proj")
    assert written_in(run / "config.yaml") == run.resolve()
    shutil.copytree(tmp_path / "proj", tmp_path / "proj3", symlinks=True)
    copy = tmp_path / "proj3" / "runs" / "my"
    cfg = _load(None, copy)
    assert cfg.data.events_path == tmp_path / "proj3" / "events.csv"  # not proj/events.csv, which config.yaml names
    assert RunDir(copy).stale_reason(cfg, "data") is None  # the same bytes: the copy's stages are reused
    (tmp_path / "proj3" / "events.csv").write_text("\n".join(["user_id,item_id,ts,feedback", *ROWS[:90]]) + "\n")
    with pytest.raises(ConfigError) as err:  # both files exist and differ: which one is meant is the user's choice
        _load(None, copy)
    assert str(tmp_path / "proj" / "events.csv") in str(err.value) and str(tmp_path / "proj3" / "events.csv") in str(err.value)
    chosen = _load(tmp_path / "proj3" / "my.yaml", copy)  # -c with the copy's config: the copy's file, found stale
    why = RunDir(copy).stale_reason(chosen, "data") or ""
    assert why.startswith(f"{tmp_path / 'proj3' / 'events.csv'} differs in content from {tmp_path / 'proj' / 'events.csv'}")
    original = _load(None, run)  # the original is itself
    assert original.data.events_path == tmp_path / "proj" / "events.csv" and RunDir(run).stale_reason(original, "data") is None


def test_a_moved_project_reads_its_files_where_they_are_now(tmp_path: Path) -> None:
    _project(tmp_path / "proj")
    (tmp_path / "proj").rename(tmp_path / "moved")
    run = tmp_path / "moved" / "runs" / "my"
    cfg = _load(None, run)
    assert cfg.data.events_path == tmp_path / "moved" / "events.csv" and RunDir(run).stale_reason(cfg, "data") is None
    res = CliRunner().invoke(app, ["data", "-r", str(run)])  # a rerun reads the moved file, not the gone one
    assert res.exit_code == 0, res.output


def test_a_run_copied_alone_keeps_its_projects_files(tmp_path: Path) -> None:
    run = _project(tmp_path / "proj")
    shutil.copytree(run, tmp_path / "elsewhere" / "my")  # no events.csv at ../../ from there
    cfg = _load(None, tmp_path / "elsewhere" / "my")
    assert cfg.data.events_path == tmp_path / "proj" / "events.csv"


def test_an_older_runs_config_without_the_line_finds_the_original_beside_its_file(tmp_path: Path) -> None:
    run = _project(tmp_path / "proj")
    record = run / "config.yaml"
    record.write_text("".join(line for line in record.read_text().splitlines(keepends=True) if not line.startswith("#")))
    (run / "config.yaml").write_text(record.read_text().replace(f"run_dir: {run}", "run_dir: runs/my"))
    assert written_in(record) is None
    shutil.copytree(tmp_path / "proj", tmp_path / "proj3")
    copy = tmp_path / "proj3" / "runs" / "my"
    raw = load_config(copy / "config.yaml", {"run_dir": str(copy)})
    assert follow_copy(raw, copy / "config.yaml").data.events_path == tmp_path / "proj3" / "events.csv"
    assert follow_copy(load_config(record, {"run_dir": str(run)}), record).data.events_path == tmp_path / "proj" / "events.csv"


def test_a_missing_file_named_by_the_runs_config_says_where_the_path_comes_from(tmp_path: Path) -> None:
    run = _project(tmp_path / "proj")
    record = run / "config.yaml"
    gone = tmp_path / "gone" / "events.csv"
    record.write_text(record.read_text().replace(str(tmp_path / "proj" / "events.csv"), str(gone)))
    res = CliRunner().invoke(app, ["data", "-r", str(run)])
    out = " ".join(res.output.split())
    assert res.exit_code == 2 and f"events file not found: {gone}" in out, out
    assert f"this path is named by the run's {record}" in out and "pass -c with the project's config" in out, out


def test_a_run_copied_alone_into_another_projects_runs_is_not_switched_to_its_events(tmp_path: Path) -> None:
    """A review of 7 December 2026: ``cp -a projA/runs/my projB/runs/from_a`` found projB/events.csv at
    ../../events.csv and silently read it (the run was then stale, and ``conrec demo -r`` would rebuild A's run on B's
    data). Both files exist and differ: the CLI refuses with one line naming both and how to choose."""
    run = _project(tmp_path / "projA")
    (tmp_path / "projB" / "runs").mkdir(parents=True)
    (tmp_path / "projB" / "events.csv").write_text("\n".join(["user_id,item_id,ts,feedback", *ROWS[:60]]) + "\n")
    copy = tmp_path / "projB" / "runs" / "from_a"
    shutil.copytree(run, copy)
    res = CliRunner().invoke(app, ["data", "-r", str(copy)])
    out = " ".join(res.output.split())
    assert res.exit_code != 0, out
    assert str(tmp_path / "projA" / "events.csv") in out and str(tmp_path / "projB" / "events.csv") in out, out
    assert "pass -c with that project's config" in out and f"set the path in {copy / 'config.yaml'}" in out, out
    assert (tmp_path / "projB" / "events.csv").read_text().count("\n") == 61  # nothing rebuilt, nothing read


def test_a_copied_project_whose_original_is_gone_reads_the_copy(tmp_path: Path) -> None:
    """The original's file no longer exists (a project copied, then the original deleted): the copy's is read."""
    _project(tmp_path / "proj")
    shutil.copytree(tmp_path / "proj", tmp_path / "proj3", symlinks=True)
    (tmp_path / "proj3" / "events.csv").write_text("\n".join(["user_id,item_id,ts,feedback", *ROWS[:90]]) + "\n")
    shutil.rmtree(tmp_path / "proj")
    copy = tmp_path / "proj3" / "runs" / "my"
    cfg = _load(None, copy)
    assert cfg.data.events_path == tmp_path / "proj3" / "events.csv"
    assert (RunDir(copy).stale_reason(cfg, "data") or "").startswith(f"{tmp_path / 'proj3' / 'events.csv'} differs")
