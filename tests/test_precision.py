"""The compute section: GPU-only settings fail clearly on a CPU, resolve sensibly on a GPU, reach the trainers."""

from __future__ import annotations

import json

import pytest
import torch

from conrec.config import load_config
from conrec.errors import ConfigError
from conrec.llm.model.precision import (
    PRECISION_FILE,
    ComputeConfig,
    inference_dtype,
    pin_launcher_precision,
    record_precision,
    resolve_compute,
    trained_precision,
    trainer_kwargs,
)
from conrec.llm.model.toy import write_toy_run
from conrec.stages import STAGE_REGISTRY

CPU = {"cuda_available": False, "bf16_supported": False}
H100 = {"cuda_available": True, "bf16_supported": True}
T4 = {"cuda_available": True, "bf16_supported": False}


def test_defaults_are_fp32_on_cpu_and_bf16_on_a_bf16_gpu():
    assert resolve_compute(ComputeConfig(), **CPU).precision == "fp32"
    assert resolve_compute(ComputeConfig(), **CPU).device == "cpu"
    assert resolve_compute(ComputeConfig(), **H100).precision == "bf16"
    assert resolve_compute(ComputeConfig(), **H100).device == "cuda"
    assert resolve_compute(ComputeConfig(), **T4).precision == "fp32"  # no bf16 on the card: auto stays safe


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_on_a_cpu_is_a_clear_error(precision):
    with pytest.raises(ConfigError, match=f"compute.precision {precision} needs a GPU but torch sees no GPU"):
        resolve_compute(ComputeConfig(precision=precision), **CPU)
    with pytest.raises(ConfigError, match="compute.device is cpu"):
        resolve_compute(ComputeConfig(precision=precision, device="cpu"), **H100)


def test_asking_for_a_gpu_without_one_is_a_clear_error():
    with pytest.raises(ConfigError, match="compute.device is cuda but torch sees no GPU"):
        resolve_compute(ComputeConfig(device="cuda"), **CPU)
    with pytest.raises(ConfigError, match="compile is GPU-only"):
        resolve_compute(ComputeConfig(compile=True), **CPU)


def test_bf16_on_a_gpu_without_bf16_is_refused_but_fp16_is_allowed():
    with pytest.raises(ConfigError, match="does not support bfloat16"):
        resolve_compute(ComputeConfig(precision="bf16"), **T4)
    assert resolve_compute(ComputeConfig(precision="fp16"), **T4).precision == "fp16"


def test_unknown_precision_is_rejected_by_the_config():
    with pytest.raises(ConfigError, match="compute.precision"):
        load_config(None, {"compute": {"precision": "fp8"}})


def test_trainer_arguments_follow_the_resolved_settings():
    gpu = trainer_kwargs(resolve_compute(
        ComputeConfig(precision="bf16", gradient_checkpointing=True, compile=True, dataloader_workers=4), **H100
    ))
    assert gpu["bf16"] and not gpu["fp16"] and not gpu["use_cpu"] and gpu["torch_compile"]
    assert gpu["activation_checkpointing"] and gpu["activation_checkpointing_kwargs"] == {"use_reentrant": False}
    assert gpu["dataloader_num_workers"] == 4 and gpu["dataloader_pin_memory"] and gpu["tf32"]
    cpu = trainer_kwargs(resolve_compute(ComputeConfig(), **CPU))
    assert cpu["use_cpu"] and not cpu["bf16"] and not cpu["fp16"] and cpu["tf32"] is None and not cpu["dataloader_pin_memory"]
    from trl import SFTConfig

    SFTConfig(output_dir="unused", **cpu)  # every key is a TrainingArguments field


def test_a_launchers_mixed_precision_gives_way_to_compute_precision(monkeypatch):
    """accelerate's config (mixed_precision: bf16) reaches TrainingArguments through the environment when
    bf16 and fp16 are both off: an fp32 run trained in bf16 autocast, on a CPU too, and recorded fp32."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from trl import SFTConfig

    rc = resolve_compute(ComputeConfig(), **CPU)
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    assert pin_launcher_precision(rc) is None  # no launcher: nothing set
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    from rich.console import Console

    console = Console(record=True, width=200)
    assert pin_launcher_precision(rc, console) == "bf16"
    assert "the launcher's mixed precision (bf16) is overridden by compute.precision (fp32 here)" in console.export_text()
    AcceleratorState._reset_state(True)
    SFTConfig(output_dir="unused", **trainer_kwargs(rc))
    assert Accelerator(cpu=True).mixed_precision == "no"
    AcceleratorState._reset_state(True)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    assert pin_launcher_precision(rc) is None  # agrees: no warning


def test_the_launchers_precision_warning_suggests_compute_precision_only_where_the_device_takes_it(monkeypatch):
    """Found by probing: on a CPU the warning said "set compute.precision to choose it", and compute.precision bf16
    is refused there ("needs a GPU")."""
    from rich.console import Console

    for machine, compute, hint in ((CPU, ComputeConfig(), "this run trains on the CPU, which is always fp32"),
                                   (H100, ComputeConfig(precision="fp32"), "set compute.precision to choose it")):
        monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
        console = Console(record=True, width=300)
        assert pin_launcher_precision(resolve_compute(compute, **machine), console) == "bf16"
        said = console.export_text()
        assert "the launcher's mixed precision (bf16) is overridden by compute.precision (fp32 here); " + hint in said
        assert ("set compute.precision" in said) is (machine is H100)


def test_only_the_main_process_warns_that_the_launchers_precision_gives_way(monkeypatch):
    """Under `accelerate launch --num_processes 2` the warning was printed once per process."""
    import os

    from rich.console import Console

    rc = resolve_compute(ComputeConfig(), **CPU)
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank, warned in (("1", False), ("0", True)):
        monkeypatch.setenv("RANK", rank)
        monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
        console = Console(record=True, width=200)
        assert pin_launcher_precision(rc, console) == "bf16" and os.environ["ACCELERATE_MIXED_PRECISION"] == "no"  # overridden on each
        assert ("the launcher's mixed precision (bf16) is overridden" in console.export_text()) is warned


def test_gpu_decoding_uses_the_recorded_training_precision(tmp_path):
    assert trained_precision(tmp_path) == "fp32"  # nothing recorded: a foreign or older model
    record_precision(tmp_path, resolve_compute(ComputeConfig(), **H100))
    assert json.loads((tmp_path / PRECISION_FILE).read_text())["precision"] == "bf16"
    assert inference_dtype(tmp_path, "cuda") == torch.bfloat16
    assert inference_dtype(tmp_path, "cpu") == torch.float32  # CPU decoding is always fp32


def test_sft_asked_for_bf16_on_this_cpu_stops_before_loading_anything(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("needs a machine without a GPU")
    write_toy_run(tmp_path, n_items=16, n_users=6)
    cfg = load_config(None, {"run_dir": str(tmp_path), "sft": {"model": {"tiny": {"seed": 0}}}, "compute": {"precision": "bf16"}})
    with pytest.raises(ConfigError, match="compute.precision bf16 needs a GPU"):
        STAGE_REGISTRY["sft"].call(cfg)
    assert not (tmp_path / "sft" / "model").exists()


def test_the_compute_section_is_placement_only():
    from conrec.stages import fingerprint_sections

    assert "compute" in STAGE_REGISTRY["sft"].placement and "compute" in STAGE_REGISTRY["grpo"].placement
    assert all("compute" not in fingerprint_sections(s) for s in STAGE_REGISTRY)
