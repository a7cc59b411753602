"""The scripts under ``benchmarks/``: they clean up when stopped, validate their arguments before any work and
measure what they say (found by probing them; their speed figures are not asserted anywhere)."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


def bench(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """A benchmark script imported as a module (the scripts import their sibling ``_cleanup``)."""
    monkeypatch.syspath_prepend(str(BENCH))
    sys.modules.pop(name, None)
    return importlib.import_module(name)


def _children(pid: int) -> list[int]:
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        out += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_sigterm_to_threads_stops_its_concurrent_trainer(tmp_path: Path) -> None:
    """``kill PID`` of threads.py while its concurrent trainer ran left that infinite loop running (re-parented to
    init). Here the measurements are stubbed: the script is stopped in its first measurement beside the trainer."""
    driver = tmp_path / "driver.py"
    driver.write_text(textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(BENCH)!r})
        import threads
        calls = []
        def child(stage, run_dir, t, args):
            calls.append(stage)
            if len(calls) > 6:  # the first measurement beside the trainer
                print("READY", flush=True)
                time.sleep(60)
            return {{"stage": stage, "threads": 1, "seconds": 1.0, "per_unit": 1.0, "unit": "step"}}
        threads.prepare = lambda run_dir: None
        threads._child = child
        main = lambda: threads.main([])
        sys.exit(threads._cleanup.main(main) if hasattr(threads, "_cleanup") else main())
    """))
    proc = subprocess.Popen([sys.executable, str(driver)], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    trainers: list[int] = []
    try:
        assert proc.stdout is not None
        assert "READY\n" in iter(proc.stdout.readline, "")  # rows of the stubbed measurements alone come first
        trainers = [c for c in _children(proc.pid) if "torch.optim" in Path(f"/proc/{c}/cmdline").read_text()]
        assert trainers
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) != 0
        for _ in range(50):  # the trainer is reaped by the script before it exits; a survivor would be re-parented
            if not any(_alive(t) for t in trainers):
                break
            time.sleep(0.1)
        assert not any(_alive(t) for t in trainers)
    finally:
        for pid in [*trainers, proc.pid]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _prior_run(root: Path) -> Path:
    """A toy run with an SFT model whose config asks for ``decode.popularity_prior: 1`` (the demo and full presets do)."""
    from conrec.config import dump_config

    from builders import grpo_run_dir

    cfg, run = grpo_run_dir(root)
    cfg = cfg.model_copy(update={"decode": cfg.decode.model_copy(update={"popularity_prior": 1.0})})
    (root / "config.yaml").write_text(dump_config(cfg))
    return root


def test_headroom_scores_the_lm_alone_on_a_run_with_a_popularity_prior(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """headroom.py died with 'decode.popularity_prior > 0 needs the item prior' on every demo-recipe run."""
    headroom = bench("headroom", monkeypatch)
    run = _prior_run(tmp_path / "run")
    out = headroom.main(["--run", str(run), "--models", "sft", "--split", "train"])
    assert "sft (exhaustive)" in out["rows"] and out["split"] == "train"
    # another split than the run's eval.split: its own file, no comparison with the eval split's metrics
    assert (run / "eval" / "headroom-train.json").exists() and "best_baseline" not in out


def test_headroom_rejects_unknown_models_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    headroom = bench("headroom", monkeypatch)
    with pytest.raises(SystemExit):
        headroom.main(["--run", str(tmp_path), "--models", "sft,gpro"])
    assert "unknown model gpro" in capsys.readouterr().err
