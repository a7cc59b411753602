"""A library caller's process is left as it was: torch threads, warning filters, logger levels, the environment."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import conrec.pipeline as pipeline
import conrec.runtime as runtime
from conrec.config import load_config


def test_run_pipeline_and_run_stage_give_torch_its_thread_count_back(tmp_path: Path, fake_stages: list[str]) -> None:
    """Found by using the library: after ``run_pipeline`` in a notebook torch kept the count the stage had picked
    from the cores idle at its start (2 -> 1), for every later torch call of the session."""
    import torch

    before = torch.get_num_threads()
    cfg = load_config(None, {"run_dir": str(tmp_path / "run"), "threads": before + 1})
    try:
        pipeline.run_pipeline(cfg, stages=("data", "sid"))
        assert fake_stages == ["data", "sid"] and torch.get_num_threads() == before
        pipeline.run_stage(cfg, "data")
        assert torch.get_num_threads() == before
    finally:
        torch.set_num_threads(before)


def test_a_stage_run_leaves_no_warning_filter_or_logger_level_behind(tmp_path: Path, fake_stages: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """``quiet_third_party`` added 30 ``ignore`` filters and set third-party loggers to ERROR for the whole session;
    a stage run by a library caller now quiets them only while it runs."""
    monkeypatch.setattr(runtime, "_quiet_done", False)  # as in a fresh process
    seen: dict[str, object] = {}

    def runner(stage: str):
        def run(*_: object, **__: object) -> None:
            seen["level"] = logging.getLogger("transformers").level
            seen["ignored"] = any(f[0] == "ignore" and f[3] is not None and f[3].pattern.startswith("transformers") for f in warnings.filters)
            fake(stage)(*_, **__)

        return run

    fake = pipeline._stage_runner
    monkeypatch.setattr(pipeline, "_stage_runner", runner)
    filters, level = list(warnings.filters), logging.getLogger("transformers").level
    pipeline.run_stage(load_config(None, {"run_dir": str(tmp_path / "run")}), "data")
    assert seen == {"level": logging.ERROR, "ignored": True}  # quiet while the stage runs
    assert warnings.filters == filters and logging.getLogger("transformers").level == level


def test_quieted_gives_transformers_its_verbosity_and_bars_back() -> None:
    from transformers.utils import logging as hf_logging

    before = (hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled())
    hf_logging.set_verbosity_warning()
    hf_logging.enable_progress_bar()
    try:
        with runtime.quieted():
            assert hf_logging.get_verbosity() == logging.ERROR and not hf_logging.is_progress_bar_enabled()
        assert hf_logging.get_verbosity() == logging.WARNING and hf_logging.is_progress_bar_enabled()
    finally:
        hf_logging.set_verbosity(before[0])
        (hf_logging.enable_progress_bar if before[1] else hf_logging.disable_progress_bar)()


def test_importing_the_api_and_loading_locally_set_no_offline_switch() -> None:
    """Importing the Predictor set ``HF_HUB_OFFLINE=1`` and ``TRANSFORMERS_OFFLINE=1`` in ``os.environ``, and the
    sentence encoder forced ``HF_HUB_OFFLINE=1`` over a user's explicit ``0``: every process a notebook started
    afterwards was offline. The loads read local directories with ``local_files_only=True`` instead."""
    code = (
        "import os\n"
        "from conrec.llm.inference.predict import Predictor\n"
        "from conrec.sid.encoder import SentenceTransformerEncoder\n"
        "SentenceTransformerEncoder().truncated(['word ' * 400])\n"  # loads the encoder's tokenizer from its directory
        "print(os.environ.get('HF_HUB_OFFLINE'), os.environ.get('TRANSFORMERS_OFFLINE'), os.environ.get('TOKENIZERS_PARALLELISM'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("TRANSFORMERS_OFFLINE", "TOKENIZERS_PARALLELISM")}
    env["HF_HUB_OFFLINE"] = "0"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0", "None", "None"]
