"""SIGTERM (``docker stop``, systemd, Kubernetes, ``timeout``) stops a CLI command as Ctrl-C does: one line, the
cleanup run, exit 143. Each test starts the command in a child process and signals it at a known moment."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX signals")

STAGE_MID_WRITE = """
import os, sys, time
from pathlib import Path
import conrec.cli as cli
from conrec.io import atomic_path
from conrec.run_lock import holding_run

run = Path(sys.argv[1])

def stage(*_, **__):  # a stage under the run lock, in the middle of its model's save
    with holding_run(run), atomic_path(run / "sft" / "model") as tmp:
        tmp.mkdir()
        (tmp / "model.safetensors").write_bytes(b"w" * 64)
        print("saving", flush=True)
        time.sleep(120)

cli._stage = stage
cli.app(["sft", "-c", "preset:tiny", "-r", str(run)])
"""


def _start(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _left(root: Path) -> list[str]:
    """Every file and directory under ``root``, hidden ones included, relative to it."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def test_sigterm_mid_save_runs_the_cleanup_says_so_and_exits_143(tmp_path: Path) -> None:
    """Found by probing (`timeout 20 conrec sft`): SIGTERM's default action ended the command with exit 143, no line,
    and no ``finally``: the run lock's owner file and the save's ``sft/.model.XXXXXXXX.tmp`` stayed behind."""
    run = tmp_path / "run"
    proc = _start(STAGE_MID_WRITE, str(run))
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "saving\n"
        assert ".conrec.lock.owner" in _left(run) and any(".model." in name for name in _left(run))
        proc.send_signal(signal.SIGTERM)  # to the process alone, as `docker stop` sends it
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert err.startswith("terminated:") and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert _left(run) == [".conrec.lock", "sft"]  # the OS lock file stays (as after Ctrl-C); no owner, no temporary


INIT_CHECKING = """
import os, signal, sys, time
import conrec.cli as cli
import conrec.init_config as init_config

real = init_config.load_config

def checked(path, *args, **kwargs):  # init validates the config it wrote to its hidden check file: SIGTERM arrives then
    if str(path).endswith(".check.yaml"):
        assert os.path.isfile(path)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(120)
    return real(path, *args, **kwargs)

init_config.load_config = checked
cli.app(["init", sys.argv[1], "--out", sys.argv[2]])
"""


def test_sigterm_during_init_leaves_no_hidden_check_file(tmp_path: Path) -> None:
    """Found by probing: SIGTERM while `conrec init` checked the config it rendered left ``.my.yaml.check.yaml``
    beside it, which no later command removes."""
    events = tmp_path / "events.csv"
    events.write_text("user,item,rating,ts\n" + "".join(f"u{i % 3},i{i % 5},{1 + i % 5},{1000 + i}\n" for i in range(30)))
    proc = _start(INIT_CHECKING, str(events), str(tmp_path / "my.yaml"))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert err.startswith("terminated:") and "Traceback" not in err, err
    assert _left(tmp_path) == ["events.csv"]


FORKS = """
import os, signal, sys, time
import conrec.cli as cli

def body(*_, **__):
    child = os.fork()
    if child == 0:  # a forked helper (a data loader's worker): SIGTERM ends it as before, no CLI unwinding in it
        time.sleep(120)
        os._exit(0)
    time.sleep(0.5)
    os.kill(child, signal.SIGTERM)
    _, status = os.waitpid(child, 0)
    print(os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM, flush=True)

cli._stage = body
cli.app(["data", "-c", "preset:tiny", "-r", sys.argv[1]])
"""


def test_a_process_forked_by_a_command_keeps_the_default_sigterm(tmp_path: Path) -> None:
    """The handler belongs to the command's own process: a child forked while it runs dies of SIGTERM at once, as it did
    (it would otherwise have unwound a copy of the command and printed its line)."""
    proc = _start(FORKS, str(tmp_path / "run"))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.strip() == "True" and err == "", (out, err)


def test_the_sigterm_handler_is_the_commands_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A command run in process (a library caller's CliRunner) gives SIGTERM's handler back as it was."""
    from typer.testing import CliRunner

    import conrec.cli as cli

    seen: list[object] = []
    monkeypatch.setattr(cli, "_stage", lambda *_, **__: seen.append(signal.getsignal(signal.SIGTERM)))
    before = signal.getsignal(signal.SIGTERM)
    res = CliRunner().invoke(cli.app, ["data", "-c", "preset:tiny", "-r", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    assert callable(seen[0]) and seen[0] is not before and signal.getsignal(signal.SIGTERM) is before


@pytest.mark.parametrize("processes", [1, 2])
def test_sigterm_stops_a_serving_server_gracefully_as_ctrl_c_does(tmp_path: Path, processes: int) -> None:
    """uvicorn takes SIGTERM while it serves (requests in flight finish), then gives it back to the handler it found
    and raises it again: that is now the command's, so a single-process server ends as after Ctrl-C, exit 0 (it was
    the default action: exit -15 after the shutdown). The supervisor of ``serve.processes`` workers keeps its own."""
    import httpx

    from conrec.config import PipelineConfig
    from conrec.serve.local import local_server
    from conrec.serve.synthetic import write_synthetic_run

    run = write_synthetic_run(tmp_path / "run", n_items=60, n_users=10, events_per_user=12)
    cfg = PipelineConfig.model_validate({"run_dir": str(run.root), "threads": 1, "serve": {"model": "popular", "processes": processes}})
    with local_server(cfg, startup_timeout=120) as server:
        assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(timeout=60)
        log = server.log_tail(100_000)
    assert server.process.returncode == 0, log
    assert "Shutting down" in log and "terminated:" not in log and "Traceback" not in log, log


def test_sft_and_grpo_as_processes_of_a_launch_keep_the_default_sigterm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found in review: `-m conrec.cli sft` under torchrun installed the SIGTERM handler in every process, where
    `-m conrec.llm.training.sft` (which docs/scale-out.md calls the same) keeps the default action that the launchers'
    SIGTERM relies on: a process stuck in a collective outlived it, and each process printed its `terminated:` line.
    A lone process keeps the handler, and so does a single-process command in a scheduler's job."""
    from typer.testing import CliRunner

    import conrec.cli as cli

    seen: list[object] = []
    monkeypatch.setattr(cli, "_stage", lambda *_, **__: seen.append(signal.getsignal(signal.SIGTERM)))
    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in ("0", "1"):
        monkeypatch.setenv("RANK", rank)
        for command in ("sft", "grpo"):
            res = CliRunner().invoke(cli.app, [command, "-c", "preset:tiny", "-r", str(tmp_path / "run")])
            assert res.exit_code == 0, res.output
    monkeypatch.setenv("RANK", "0")
    CliRunner().invoke(cli.app, ["data", "-c", "preset:tiny", "-r", str(tmp_path / "run")])
    monkeypatch.delenv("WORLD_SIZE")
    CliRunner().invoke(cli.app, ["sft", "-c", "preset:tiny", "-r", str(tmp_path / "run")])
    assert seen[:4] == [before] * 4 and callable(seen[4]) and seen[4] is not before and callable(seen[5]), seen
