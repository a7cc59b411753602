"""Thread count chosen for the machine, and quiet third-party libraries (issue 14)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conrec.config import load_config
from conrec.runtime import (
    available_cores,
    available_memory,
    cgroup_cpu_limit,
    choose_threads,
    idle_cpus,
    parse_cgroup_memory_left,
    parse_cgroup_v1_quota,
    parse_cgroup_v2_cpu_max,
    parse_mem_available,
    parse_proc_stat,
)


@pytest.mark.parametrize(
    ("text", "cpus"),
    [("max 100000\n", None), ("200000 100000\n", 2.0), ("150000 100000", 1.5), ("50000", 0.5), ("junk 1", None)],
)
def test_cgroup_v2_quota(text: str, cpus: float | None) -> None:
    assert parse_cgroup_v2_cpu_max(text) == cpus


def test_cgroup_v1_quota() -> None:
    assert parse_cgroup_v1_quota("-1\n", "100000\n") is None
    assert parse_cgroup_v1_quota("300000\n", "100000\n") == 3.0


def test_cgroup_files_are_read_from_the_hierarchy(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("100000 100000\n")
    assert cgroup_cpu_limit(tmp_path) == 1.0
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("400000")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000")
    assert cgroup_cpu_limit(v1) == 4.0
    assert cgroup_cpu_limit(tmp_path / "absent") is None


def test_available_cores_is_affinity_capped_by_the_quota() -> None:
    assert available_cores(affinity=16, quota=2.0) == 2
    assert available_cores(affinity=16, quota=1.5) == 2  # a fractional quota still runs 2 threads' worth
    assert available_cores(affinity=4, quota=None) == 4
    assert available_cores(affinity=4, quota=0.2) == 1
    assert available_cores() >= 1


def test_choose_threads_order_of_precedence() -> None:
    assert choose_threads(3, cores=8, local_processes=2, omp_env="5") == 3  # the setting wins
    assert choose_threads(None, cores=8, local_processes=2, omp_env="5") == 5  # then OMP_NUM_THREADS
    assert choose_threads(None, cores=8, local_processes=2, omp_env="") == 4  # then a share of the cores
    assert choose_threads(None, cores=2, local_processes=4, omp_env=None) == 1
    with pytest.raises(ValueError):
        choose_threads(0, cores=2)


def test_idle_cores_cap_the_automatic_choice() -> None:
    assert choose_threads(None, cores=2, idle=2.0) == 2  # a quiet machine: every core
    assert choose_threads(None, cores=2, idle=0.1) == 1  # another trainer holds both cores: 1 thread
    assert choose_threads(None, cores=8, idle=3.4) == 3
    assert choose_threads(None, cores=8, local_processes=2, idle=8.0) == 4
    assert choose_threads(None, cores=2, idle=None) == 2  # unknown: the available cores
    assert choose_threads(2, cores=2, idle=0.0) == 2  # the setting wins over the measurement


PROC_STAT_1 = "cpu  10 0 10 80 0 0 0 0 0 0\ncpu0 5 0 5 40 0 0 0 0 0 0\ncpu1 5 0 5 40 0 0 0 0 0 0\nintr 1 2\n"
PROC_STAT_2 = "cpu  110 0 10 180 0 0 0 0 0 0\ncpu0 105 0 5 40 0 0 0 0 0 0\ncpu1 5 0 5 140 0 0 0 0 0 0\nintr 1 2\n"


def test_idle_cpus_from_two_proc_stat_samples() -> None:
    before, after = parse_proc_stat(PROC_STAT_1), parse_proc_stat(PROC_STAT_2)
    assert before == {0: (40, 50), 1: (40, 50)}
    assert idle_cpus(before, after, {0, 1}) == pytest.approx(1.0)  # cpu0 fully busy, cpu1 fully idle
    assert idle_cpus(before, after, {1}) == pytest.approx(1.0)
    assert idle_cpus(before, after, {0}) == pytest.approx(0.0)
    assert idle_cpus(before, before, {0, 1}) is None  # no time passed


def test_threads_is_a_validated_config_setting() -> None:
    assert load_config(None, {"threads": 1}).threads == 1
    assert load_config(None).threads is None
    from conrec.errors import ConfigError

    with pytest.raises(ConfigError, match="threads"):
        load_config(None, {"threads": 0})


def _run(code: str, env: dict[str, str]) -> str:
    import os

    full = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, check=True).stdout


def test_prepare_process_sets_torch_threads_from_the_setting_and_the_launch() -> None:
    code = "from conrec.runtime import prepare_process; import torch; prepare_process({}); print(torch.get_num_threads())"
    assert _run(code.format("1"), {}).strip() == "1"
    assert _run(code.format("None"), {"OMP_NUM_THREADS": "", "LOCAL_WORLD_SIZE": "64"}).strip() == "1"
    assert _run(code.format("None"), {"OMP_NUM_THREADS": "2", "LOCAL_WORLD_SIZE": "1"}).strip() == "2"


def test_loading_a_model_prints_no_third_party_progress_bar(tmp_path: Path) -> None:
    """transformers' "Loading weights" bar (stderr) is gone once conrec quiets the process."""
    code = (
        "import sys\n"
        "from conrec.llm.model.backbone import load_backbone\n"
        "from conrec.llm.config import ModelConfig, TinyModelConfig\n"
        "if sys.argv[1] == 'quiet':\n"  # transformers is imported already: the in-process switch is tested
        "    from conrec.runtime import quiet_third_party\n"
        "    quiet_third_party()\n"
        "model, tok = load_backbone(ModelConfig(tiny=TinyModelConfig()))\n"
        "model.save_pretrained(sys.argv[2])\n"
        "from conrec.llm.model.backbone import load_causal_lm\n"
        "load_causal_lm(__import__('pathlib').Path(sys.argv[2]))\n"
    )
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY", "TQDM_DISABLE")}
    # both at once: each spends seconds importing torch and transformers, mostly waiting on the disk
    procs = [subprocess.Popen([sys.executable, "-c", code, mode, str(tmp_path / mode)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for mode in ("loud", "quiet")]
    (_, loud_err), (_, quiet_err) = (p.communicate(timeout=300) for p in procs)
    assert [p.returncode for p in procs] == [0, 0], loud_err + quiet_err
    assert "Loading weights" in loud_err  # the test can fail: the bar exists without conrec's setup
    assert "Loading weights" not in quiet_err and "it/s" not in quiet_err, quiet_err


def test_a_cli_process_shows_no_plain_tqdm_bar() -> None:
    """transformers' GGUF conversion (a pretrained backbone's first load) draws a plain tqdm bar that its
    disable_progress_bar() does not reach: it ran into logs as \\r-joined text."""
    code = (
        "import sys\n"
        "if sys.argv[1] == 'quiet':\n    import conrec.cli\n"
        "from tqdm.auto import tqdm\nfor _ in tqdm(range(3), desc='Converting and de-quantizing GGUF tensors'): pass\n"
    )
    import os

    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}
    runs = {mode: subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True, env=env, timeout=120) for mode in ("loud", "quiet")}
    assert "Converting" in runs["loud"].stderr  # the test can fail: the bar exists without conrec's setup
    assert runs["quiet"].returncode == 0 and "Converting" not in runs["quiet"].stderr, runs["quiet"].stderr


def test_available_memory_is_mem_available_capped_by_the_cgroup(tmp_path: Path) -> None:
    """What eval compares a dense baseline's memory with (conrec.eval.cost.skip_reason)."""
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16000000 kB\nMemFree:  100 kB\nMemAvailable:    8000000 kB\n")
    assert parse_mem_available(meminfo.read_text()) == 8_000_000 * 1024
    assert parse_mem_available("MemTotal: 1 kB\n") is None
    assert parse_cgroup_memory_left("max\n", "123\n") is None
    assert parse_cgroup_memory_left("1000\n", "400\n") == 600
    cg = tmp_path / "cg"
    cg.mkdir()
    assert available_memory(meminfo, cg) == 8_000_000 * 1024  # no cgroup files: MemAvailable alone
    (cg / "memory.max").write_text("2000000000\n")
    (cg / "memory.current").write_text("500000000\n")
    assert available_memory(meminfo, cg) == 1_500_000_000
    assert available_memory(tmp_path / "none", tmp_path / "none") is None
