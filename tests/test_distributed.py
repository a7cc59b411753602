"""The SFT and GRPO stages run unchanged as 2 CPU processes (gloo DDP), as they would on 2 GPUs.

Launched with ``torchrun --standalone`` (a free rendezvous port, so parallel test runs do not
collide) through the module entry points the docs give. ``accelerate launch --multi_gpu --num_processes 2``
works the same way on a CPU-only machine; note that ``accelerate launch --cpu`` starts a single process for a
one-machine MULTI_CPU config in accelerate 1.x (it expects mpirun), which is why it is not used here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from rich.console import Console

from conrec.config import dump_config, load_config, preset_path
from conrec.pipeline import run_pipeline
from conrec.runs import RunDir


def _launch(module: str, cfg_path, timeout: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", module, "--config", str(cfg_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_sft_then_progressive_grpo_as_two_cpu_processes_leave_models_later_commands_use(tmp_path):
    """Each stage's entry point runs it as ``conrec sft``/``grpo`` would, recorded for the config: a direct runner
    call left no configuration record, and `conrec eval` refused the models (the docs' distributed commands)."""
    cfg = load_config(preset_path("tiny"), {
        "run_dir": str(tmp_path / "run"),
        "sft": {"train": {"max_steps": 2, "batch_size": 2, "logging_steps": 1}, "max_samples": 16},
        # 6 x 2 processes, groups of 4: the second group straddles the processes (beam rollouts allow that)
        "grpo": {"batch_size": 6, "num_generations": 4, "max_samples": 16,
                 "stages": [{"name": "neg", "steps": 1, "max_pos_items": 0, "positive_share": 0.0},
                            {"name": "pos", "steps": 1, "max_pos_items": 3, "positive_share": 0.5}]},
    })
    run_pipeline(cfg, stages=("data", "sid"), console=Console(quiet=True))
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(dump_config(cfg))
    run = RunDir(cfg.run_dir)

    _launch("conrec.llm.training.sft", cfg_path, timeout=180)
    stats = json.loads((run.sft / "stats.json").read_text())
    assert stats["num_processes"] == 2 and stats["steps"] == 2
    assert run.model_problem(cfg, "sft") is None  # current for the config: predict, serve and eval use it

    _launch("conrec.llm.training.grpo", cfg_path, timeout=300)
    stats = json.loads((run.grpo / "stats.json").read_text())
    assert stats["steps"] == 2 and [s["invalid_rate"] for s in stats["stages"]] == [0.0, 0.0]
    # grpo.batch_size is per process: the record says how many (it said nothing)
    assert stats["num_processes"] == 2 and [s["num_processes"] for s in stats["stages"]] == [2, 2]
    # counted on both processes' completions gathered: the straddling group holds 4 distinct beams only when each
    # process gives its positions the members TRL's layout says (a member count ignoring the process offset gave
    # [3, 3]; with whole groups per process, batch_size 8, the offset is a multiple of 4 and nothing could tell)
    assert [s["duplicate_items"] for s in stats["stages"]] == [0, 0]
    assert [e["stage"] for e in json.loads((run.grpo / "reward_log.json").read_text())] == ["neg", "pos"]
    assert run.model_problem(cfg, "grpo") is None


def test_the_entry_points_say_a_config_error_in_one_line(tmp_path, capsys):
    """A bad config through `accelerate launch -m ...` was a traceback from every process."""
    import pytest

    from conrec.llm.training import grpo, sft

    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: abc\n")
    for main in (sft.main, grpo.main):
        with pytest.raises(SystemExit) as exit_:
            main(["--config", str(bad)])
        assert exit_.value.code == 2
        err = " ".join(capsys.readouterr().err.split())
        assert err.startswith("error: invalid config") and "seed" in err and "Traceback" not in err


def test_under_a_launcher_the_main_process_says_the_error_and_the_others_wait_for_it(tmp_path, capsys, monkeypatch):
    """A refusal every process meets alike (a GRPO batch that splits a group) was printed once per process. Another
    process now exits 2 as well, but says it only after a grace (the launcher stops it once the main one has exited),
    so an error of its own is still said."""
    import pytest

    import conrec.pipeline as pipeline
    from conrec.llm.training import grpo

    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: abc\n")
    waited: list[tuple[float, str]] = []
    monkeypatch.setattr(pipeline.time, "sleep", lambda s: waited.append((s, capsys.readouterr().err)))
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank, label in (("0", "error: invalid config"), ("1", "error (process 1): invalid config")):
        monkeypatch.setenv("RANK", rank)
        with pytest.raises(SystemExit) as exit_:
            grpo.main(["--config", str(bad)])
        assert exit_.value.code == 2
        assert capsys.readouterr().err.startswith(label)
    assert waited == [(pipeline.WORKER_ERROR_GRACE_S, "")]  # the worker only, before it printed anything


def test_the_entry_points_say_a_read_only_run_directory_in_one_line(tmp_path, capsys, monkeypatch):
    """An OSError from a read-only mount was a traceback from every process under accelerate."""
    import contextlib
    import errno

    import pytest

    import conrec.pipeline as pipeline
    from conrec.llm.training import sft

    @contextlib.contextmanager
    def read_only(root, **_):
        raise OSError(errno.EROFS, "Read-only file system", f"{root}/.conrec.lock")
        yield

    monkeypatch.setattr(pipeline, "holding_run", read_only)
    monkeypatch.setattr(pipeline, "check_upstream", lambda *a, **k: None)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"run_dir: {tmp_path / 'run'}\n")
    with pytest.raises(SystemExit) as exit_:
        sft.main(["--config", str(cfg)])
    assert exit_.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith("error:") and "Read-only file system" in err and "Traceback" not in err


def test_under_a_launcher_every_command_but_sft_and_grpo_refuses_before_it_touches_the_run(tmp_path, monkeypatch):
    """Found by probing: `torchrun --nproc_per_node 2 -m conrec.cli demo` ran the data and SID stages in both processes
    (the second rebuilt data/ without the run lock while the first read it) and died at SFT with a false "rebuilt or
    removed"; `... -m conrec.cli eval` decoded every model twice and wrote all of eval/ from both. Each command that
    runs in one process now refuses in one line, said by the main process, exit 2 in every process; sft and grpo
    run as before."""
    import typer
    from typer.testing import CliRunner

    import conrec.pipeline as pipeline
    from conrec.cli import app

    run = tmp_path / "run"
    commands = sorted(typer.main.get_command(app).commands)
    assert {"data", "sid", "eval", "demo", "predict", "serve", "init", "ablate"} <= set(commands)
    waited: list[float] = []
    monkeypatch.setattr(pipeline.time, "sleep", waited.append)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")  # torchrun's elastic agent sets it for its processes
    for rank, label in (("0", "error:"), ("1", "error (process 1):")):
        monkeypatch.setenv("RANK", rank)
        for command in (c for c in commands if c not in ("sft", "grpo", "config")):  # config: below
            res = CliRunner().invoke(app, [command, "-r", str(run)], env={"COLUMNS": "80"})
            err = " ".join(res.stderr.split())
            assert res.exit_code == 2 and err.startswith(f"{label} conrec {command} runs in one process"), (command, res.output)
            assert "run it without the launcher" in err and len(res.stderr.strip().splitlines()) == 1, res.stderr
            assert not run.exists()
    assert waited == [pipeline.WORKER_ERROR_GRACE_S] * (len(commands) - 3)  # the worker only: the launcher stops it
    demo = " ".join(CliRunner().invoke(app, ["demo"]).stderr.split())
    assert "`conrec data` and `conrec sid` first, then sft and grpo under the launcher, then `conrec eval`" in demo
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: abc\n")
    for command in ("sft", "grpo"):  # they run under a launcher (test_sft_then_progressive_grpo_as_two_cpu_processes...)
        err = CliRunner().invoke(app, [command, "-c", str(bad)]).stderr
        assert "invalid config" in err and "one process" not in err
    err = " ".join(CliRunner().invoke(app, ["eval"]).stderr.split())
    assert "process 1 of 2 started by torchrun or accelerate launch (WORLD_SIZE=2)" in err, err
    monkeypatch.setenv("WORLD_SIZE", "1")  # a lone process with a stray RANK (a pod's environment) is not refused
    assert "one process" not in CliRunner().invoke(app, ["data", "-c", str(bad)]).stderr


def test_a_real_two_process_launch_of_eval_stops_at_once_saying_why_once(tmp_path):
    """The refusal above through torchrun itself: the launch fails, the main process's line is the only one, and
    the run directory is not created."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "conrec.cli",
           "eval", "-r", str(tmp_path / "run")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    said = proc.stdout + proc.stderr
    assert said.count("conrec eval runs in one process") == 1 and "error: conrec eval" in said, said[-3000:]
    assert not (tmp_path / "run").exists()


def test_only_the_launchers_themselves_refuse_a_command_and_never_its_help_or_conrec_config(tmp_path, monkeypatch):
    """Found in review: the refusal above took WORLD_SIZE with RANK for a launcher, so a SLURM or Kubeflow job, which
    exports them for every command, had `conrec data` refused as "started by a launcher", and `conrec config` and
    `conrec eval --help` exited 2 under torchrun. Now only torchrun's or accelerate's own variables count, and neither
    help nor `config` (which touches no run) is refused."""
    from typer.testing import CliRunner

    from conrec.cli import app

    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: abc\n")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    for command in ("data", "eval", "demo"):  # a scheduler's exported variables: the command runs (and reads the config)
        err = CliRunner().invoke(app, [command, "-c", str(bad)]).stderr
        assert "invalid config" in err and "one process" not in err, (command, err)
    for launcher in ({"TORCHELASTIC_RUN_ID": "none"}, {"ACCELERATE_MIXED_PRECISION": "no"}):
        with monkeypatch.context() as m:
            for key, value in launcher.items():
                m.setenv(key, value)
            refused = CliRunner().invoke(app, ["eval", "-r", str(tmp_path / "run")])
            assert refused.exit_code == 2 and "started by torchrun or accelerate launch" in refused.stderr
            for args in (["eval", "--help"], ["demo", "--help"], ["config", "-r", str(tmp_path / "run")]):
                res = CliRunner().invoke(app, args)
                assert res.exit_code == 0 and "one process" not in res.output + res.stderr, (args, res.stderr)
    assert not (tmp_path / "run").exists()
