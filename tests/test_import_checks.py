"""The import-time checks that a registry covers its config's choices hold under ``python -O``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")

# (what to change in the config module before the registry's module is imported, that module, the message's start)
MISMATCHES = [
    ("import conrec.llm.config as c\nclass T(c.TaskMix):\n    bogus: float = 0.0\nc.TaskMix = T",
     "conrec.llm.training.tasks", "conrec.llm.training.tasks.TASKS must have a builder"),
    ("import conrec.llm.config as c\nc.PROMPT_VARIANTS = (*c.PROMPT_VARIANTS, 'bogus')",
     "conrec.llm.inference.prompts", "conrec.llm.inference.prompts.LAYOUTS must render"),
    # the timeline renderer goes with TIMELINE_VARIANTS itself: a layout that leaves the list has no renderer left
    ("import conrec.llm.config as c\nc.TIMELINE_VARIANTS = ('timeline',)",
     "conrec.llm.inference.prompts", "conrec.llm.inference.prompts.LAYOUTS must render"),
    ("import typing, conrec.sid.config as c\nc.QuantizerKind = typing.Literal['rqvae', 'rkmeans', 'bogus']",
     "conrec.sid.quantizers", "conrec.sid.quantizers.QUANTIZERS must have an entry"),
    ("import conrec.eval.config as c\nc.BASELINE_NAMES = (*c.BASELINE_NAMES, 'bogus')",
     "conrec.eval.baselines", "conrec.eval.config.BASELINE_NAMES must list"),
]


@pytest.mark.parametrize(("patch", "module", "message"), MISMATCHES, ids=[m[1] + str(i) for i, m in enumerate(MISMATCHES)])
def test_a_registry_that_misses_a_config_choice_fails_its_import_under_python_o(patch: str, module: str, message: str) -> None:
    """Found in review (7 December 2026): the checks that SFT's task builders, the prompt layouts, the quantizers and
    the baselines each cover their config's choices were bare asserts, which ``python -O`` strips, so such a gap went
    unnoticed until a run reached it. They raise RuntimeError now, naming the mismatch."""
    code = f"{patch}\nimport importlib\nimportlib.import_module({module!r})"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-O", "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode != 0 and f"RuntimeError: {message}" in done.stderr, done.stderr[-2000:]
