"""What a SIGKILL leaves outside atomic_path's stage-directory temporaries is removed too, as safely: the data stage's
staging directory, and the run directory's own files' temporaries (config.yaml, timings.json)."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

import conrec.pipeline as pipeline
from conrec.config import load_config, preset_path
from conrec.io import atomic_path
from conrec.runs import RunDir

from builders import killed_atomic_write

KILL_WHILE_STAGING = """
import os, signal, sys
import conrec.data.stage as stage
from conrec.config import load_config, preset_path
from conrec.pipeline import run_stage

def killed(exposures, events_file, *args, **kwargs):  # the staging directory holds the new events file now
    print(sorted(p.name for p in events_file.parent.parent.iterdir() if p.name.startswith(".")), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

stage._write_exposures = killed
run_stage(load_config(preset_path("tiny"), {"run_dir": sys.argv[1]}), "data")
"""


def _hidden(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".") and p.name != ".conrec.lock")


def test_the_staging_directory_of_a_killed_data_stage_is_removed_by_the_next_one(tmp_path: Path) -> None:
    """Found by the session-41 probes: a data stage SIGKILLed while its engine wrote left ``data/.staging-XXXXXXXX``
    (the run's whole events table) through every later run, since the stray-temp cleanup knew only atomic_path's
    names. The staging directory is now one of atomic_path's locked temporaries."""
    run_dir = tmp_path / "run"
    done = subprocess.run([sys.executable, "-c", KILL_WHILE_STAGING, str(run_dir)], capture_output=True, text=True, check=False)
    assert done.returncode == -signal.SIGKILL, done.stderr
    left = [name for name in eval(done.stdout.strip().splitlines()[-1]) if name != ".conrec.lock"]  # noqa: S307 (our own print)
    assert len(left) == 1 and _hidden(run_dir / "data") == left  # what the kill leaves
    out = io.StringIO()
    pipeline.run_stage(load_config(preset_path("tiny"), {"run_dir": str(run_dir)}), "data", console=Console(file=out, width=300))
    assert _hidden(run_dir / "data") == []
    assert "data: removed 1 temporary output(s) left by an interrupted write (1 in data/)" in out.getvalue()


def test_an_older_data_stages_staging_directory_is_removed(tmp_path: Path, fake_stages: list[str]) -> None:
    """One an older conrec left (``.staging-`` + 8 characters, no lock file): its data stage held the run, as the
    stage that removes it does, so it cannot be a write in progress."""
    cfg = load_config(None, {"run_dir": str(tmp_path / "run")})
    pipeline.run_pipeline(cfg)
    old = RunDir(cfg.run_dir).data / ".staging-ab_12xyz"
    old.mkdir()
    (old / "events.parquet").write_bytes(b"x")
    pipeline.run_stage(cfg, "data")
    assert not old.exists()


def test_a_killed_write_of_the_runs_config_is_removed_and_a_live_one_kept(tmp_path: Path, fake_stages: list[str]) -> None:
    """Found by the session-41 probes: ``.config.yaml.XXXXXXXX.tmp`` in the run directory, left by a kill while a stage
    start rewrote config.yaml, stayed; the cleanup looked in stage directories only. Now the run directory's own files'
    temporaries go too (only those: the run directory may hold other things), and never one being written."""
    cfg = load_config(None, {"run_dir": str(tmp_path / "run")})
    pipeline.run_pipeline(cfg)
    run = RunDir(cfg.run_dir)
    killed = killed_atomic_write(run.root / "config.yaml", "    tmp.write_text('run_dir: x')\n")
    assert killed.is_dir() and killed.name.startswith(".config.yaml.")
    other = run.root / ".notes.abcdefgh.tmp"  # not a file conrec writes there: kept
    other.mkdir()
    out = io.StringIO()
    with atomic_path(run.root / "timings.json") as live:  # a write in progress: kept
        live.write_text("{}")
        pipeline.run_stage(cfg, "eval", console=Console(file=out, width=300))
        assert live.is_file()
    assert not killed.exists() and other.is_dir()
    assert "eval: removed 1 temporary output(s) left by an interrupted write (1 in the run directory)" in out.getvalue()
    assert _hidden(run.root) == [".notes.abcdefgh.tmp"]


def test_a_killed_write_of_an_ablation_table_is_removed_by_the_next_stage_or_ablation(
    tmp_path: Path, fake_stages: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found in review: a kill while `conrec ablate` wrote its table (or a stage start marked one stale) left
    ``ablations/.grpo.md.XXXXXXXX.tmp``; no cleanup looked in ``ablations/``. The next stage start or ablation removes
    the tables' temporaries there, and only those: not another file's, not a row's child run's, not a live write's."""
    import conrec.ablation as ablation

    cfg = load_config(None, {"run_dir": str(tmp_path / "run")})
    pipeline.run_pipeline(cfg)
    run = RunDir(cfg.run_dir)
    tables = run.root / "ablations"
    killed = killed_atomic_write(tables / "grpo.md", "    tmp.write_text('| row |')\n")
    assert killed.is_dir() and killed.name.startswith(".grpo.md.")
    kept = [tables / ".notes.abcdefgh.tmp", tables / "grpo" / "sft" / "sft" / ".model.abcdefgh.tmp"]  # another file's; a row's
    for path in kept:
        path.mkdir(parents=True)
    out = io.StringIO()
    with atomic_path(tables / "prompts.json") as live:  # a write in progress: kept
        live.write_text("{}")
        pipeline.run_stage(cfg, "eval", console=Console(file=out, width=300))
        assert live.is_file()
    assert not killed.exists() and all(p.is_dir() for p in kept)
    assert "eval: removed 1 temporary output(s) left by an interrupted write (1 in ablations/)" in out.getvalue()

    killed = killed_atomic_write(tables / "paper.json", "    tmp.write_text('{}')\n")  # now `conrec ablate` comes next
    monkeypatch.setattr(ablation, "_run_rows", lambda cfg, what, console, started: {})
    out = io.StringIO()
    ablation.run(cfg, "grpo", console=Console(file=out, width=300))
    assert not killed.exists() and all(p.is_dir() for p in kept)
    assert "ablate: removed 1 temporary output(s) left by an interrupted write (1 in ablations/)" in out.getvalue()
