"""An eval rerun that stops part way leaves no earlier evaluation's results looking current."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from conrec.config import load_config
from conrec.eval import stage as eval_stage
from conrec.stages import STAGE_REGISTRY

from builders import eval_run_dir


def test_an_interrupted_rerun_leaves_no_earlier_report_or_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by using the library: Ctrl-C 14 s into `conrec eval` left the previous report.md and metrics.json
    (their old timestamps) beside three new baseline prediction files, the report naming plots already removed."""
    run, _ = eval_run_dir(tmp_path / "run")
    cfg = load_config(None, {"run_dir": str(run.root), "data": {"split": {"horizon_days": 3, "max_horizon_days": 10}},
                             "eval": {"baselines": ["popularity"], "ks": [2], "horizons": [3], "tune": False, "models": [],
                                      "slates": {"enabled": False}}})
    STAGE_REGISTRY["eval"].call(cfg, console=Console(quiet=True))
    outputs = [run.eval / name for name in eval_stage.HEADLINE_OUTPUTS]
    assert all(p.exists() for p in outputs)

    def interrupted(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(eval_stage, "make_baseline", interrupted)
    with pytest.raises(KeyboardInterrupt):
        STAGE_REGISTRY["eval"].call(cfg, console=Console(quiet=True))
    assert [p.name for p in outputs if p.exists()] == []
