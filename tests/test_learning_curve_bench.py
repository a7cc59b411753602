"""``benchmarks/learning_curve.py``: each point's config is the one given, settings set to null included."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_base_config_keeps_settings_given_as_null(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by probing: the base config was dumped without None values, so ``eval.category.separator: null``
    (keep the value whole) became the default ``"|"`` and ``sid.quantizer.max_steps: null`` (no cap) 10000."""
    from conrec.config import load_config

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # the script imports its sibling _script
    spec = importlib.util.spec_from_file_location("learning_curve", ROOT / "benchmarks" / "learning_curve.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["learning_curve"] = mod
    spec.loader.exec_module(mod)
    given = tmp_path / "given.yaml"
    given.write_text("eval:\n  category: {separator: null}\nsid:\n  quantizer: {max_steps: null}\n")
    point = load_config(mod.write_yaml(mod.base_config(str(given), tmp_path / "curve"), tmp_path / "point.yaml"))
    assert point.eval.category.separator is None and point.sid.quantizer.max_steps is None
    assert point.eval.split == "valid" and point.data.split.train_until == "valid"  # what the curve changes
