"""The data stage is stale once the user's files change in place (conrec.source_files): a fixed or
refreshed export at the same path reruns the pipeline instead of reporting the old run's results."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import polars as pl
import pytest
from rich.console import Console

from conrec import source_files
from conrec.config import load_config
from conrec.errors import StageInputError
from conrec.pipeline import run_pipeline, run_stage
from conrec.runs import RunDir
from conrec.source_files import change, snapshot


def _later(path: Path) -> None:
    """Move the file's modification time on, as a rewrite or a copy does."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


def test_a_change_is_named_and_a_copy_a_touch_or_a_deleted_file_are_not(tmp_path: Path) -> None:
    f = tmp_path / "events.csv"
    f.write_text("a,b\n1,2\n")
    folder = tmp_path / "logs"
    folder.mkdir()
    (folder / "log1.csv").write_text("x\n")
    snap = snapshot({"events": f, "items": None, "logs": folder, "missing": tmp_path / "nope.csv"})
    assert set(snap) == {"events", "logs"} and change(snap) is None
    _later(f)  # same bytes, new time: hashed again, unchanged
    assert change(snap) is None
    f.write_text("a,b\n1,3\n")  # same size, other bytes
    assert change(snap) == f"made from {f.resolve()}, which changed since"
    f.write_text("a,b\n1,2\n")
    assert change(snap) is None
    (folder / "log2.csv").write_text("y\n")
    assert change(snap) == f"made from {folder.resolve()}, whose files were added or removed since"
    (folder / "log2.csv").unlink()
    f.unlink()  # the raw export deleted after the run: the run stays usable
    assert change(snap) is None


def test_beyond_the_hash_limit_a_new_time_counts_as_a_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(source_files, "HASH_MAX_BYTES", 4)
    f = tmp_path / "events.csv"
    f.write_text("a,b\n1,2\n")
    snap = snapshot({"events": f})
    assert snap["events"]["files"][0][3] is None and change(snap) is None
    _later(f)
    assert change(snap) is not None


def test_a_pipeline_on_a_rewritten_events_file_reruns_from_the_data_stage(tmp_path: Path) -> None:
    ev = tmp_path / "events.csv"
    rows = [f"u{u},i{k % 7},{k * 3600 + u},{-1 if k % 4 == 0 else 1}" for u in range(3) for k in range(40)]
    ev.write_text("\n".join(["user_id,item_id,ts,feedback", *rows]) + "\n")
    cfg = load_config(None, {"run_dir": str(tmp_path / "run"), "data": {"source": "table", "events_path": str(ev)}})
    quiet = Console(quiet=True)
    run_pipeline(cfg, stages=("data", "sid"), console=quiet)
    run = RunDir(cfg.run_dir)
    assert run.stale_reason(cfg, "data") is None and run.stale_reason(cfg, "sid") is None
    shutil.copy(ev, tmp_path / "copy.csv")
    shutil.copy(tmp_path / "copy.csv", ev)  # a copy of the same bytes over it: still current
    assert run.stale_reason(cfg, "data") is None

    ev.write_text("\n".join(["user_id,item_id,ts,feedback", *rows[:90]]) + "\n")  # the export refreshed in place
    changed = f"made from {ev.resolve()}, which changed since"
    assert run.stale_reason(cfg, "data") == changed
    assert run.stale_reason(cfg, "sid") == changed  # built on it: stale too (a model would not be served)
    with pytest.raises(StageInputError, match="which changed since; run `conrec data`"):
        run_stage(cfg, "sid", console=quiet)  # a later stage alone refuses the old data
    run_pipeline(cfg, stages=("data",), console=quiet)  # the pipeline reruns it
    assert pl.read_parquet(run.events).height == 90 and run.stale_reason(cfg, "data") is None


def test_a_copy_at_another_path_whose_content_changed_is_named_by_its_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by running the docs: a copied project whose events.csv then gained a row was told "made from
    <old path>, not <new path>", read as "the run may not be used from another path"; the cause is the content."""
    old, new = tmp_path / "a" / "events.csv", tmp_path / "b" / "events.csv"
    old.parent.mkdir()
    new.parent.mkdir()
    old.write_text("a,b\n1,2\n")
    shutil.copy(old, new)
    snap = snapshot({"events": old})
    assert change(snap, {"events": new}) is None  # the same bytes elsewhere: reused
    new.write_text("a,b\n1,3\n")  # same size, other bytes
    made_from = f"differs in content from {old.resolve()}, which the run was made from"
    assert change(snap, {"events": new}) == f"{new.resolve()} {made_from} (same size, other SHA-256)"
    new.write_text("a,b\n1,2\n3,4\n")
    assert change(snap, {"events": new}) == f"{new.resolve()} {made_from} (12 bytes, not 8)"
    folder_old, folder_new = tmp_path / "logs_a", tmp_path / "logs_b"
    folder_old.mkdir()
    (folder_old / "log1.csv").write_text("x\n")
    shutil.copytree(folder_old, folder_new)
    snap = snapshot({"logs": folder_old})
    (folder_new / "log1.csv").write_text("y\n")
    assert change(snap, {"logs": folder_new}) == (
        f"{(folder_new / 'log1.csv').resolve()} differs in content from {folder_old.resolve() / 'log1.csv'}, which the run "
        "was made from (same size, other SHA-256)"
    )
    (folder_new / "log2.csv").write_text("z\n")
    assert "differs in its file names" in (change(snap, {"logs": folder_new}) or "")
    monkeypatch.setattr(source_files, "HASH_MAX_BYTES", 4)
    new.write_text("a,b\n1,2\n")
    big = snapshot({"events": old})
    assert "too large to hash" in (change(big, {"events": new}) or "")


def test_a_stages_staleness_reads_each_stages_file_record_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found in review: staleness became transitive, and each stage an eval is built on checked its own upstream's files
    again (the data stage's five times per question; rerun_hint asked every stage the whole question). The eval's own
    check covers every stage it is built on, once each (the answers are the same)."""
    import conrec.runs as runs
    from conrec.stages import upstream_closure

    from builders import finished_run

    cfg, run = finished_run(tmp_path / "run")
    calls: list[int] = []
    real = runs.source_change
    monkeypatch.setattr(runs, "source_change", lambda recorded, now: calls.append(1) or real(recorded, now))
    once = sum(1 for up in upstream_closure("eval", cfg) if run.fingerprint_record(up) is not None)
    assert run.stale_reason(cfg, "eval") is None and len(calls) == once
    calls.clear()
    run.rerun_hint(cfg, "eval")
    assert len(calls) == sum(sum(1 for up in upstream_closure(s, cfg) if run.fingerprint_record(up) is not None) for s in run.reads_closure(cfg, "eval"))
