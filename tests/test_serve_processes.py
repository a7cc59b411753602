"""``serve.processes``: several uvicorn worker processes answer as one, get TCP_NODELAY, and stop together."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import uvicorn

from conrec.config import PipelineConfig, dump_config
from conrec.io import read_parquet
from conrec.runs import RunDir
from conrec.serve.app import CURRENT_TTL_S
from conrec.serve.local import free_port, local_server
from conrec.serve.popular import PopularDislikePredictor
from conrec.serve.synthetic import write_synthetic_run
from conrec.serve.workers import CONFIG_ENV, _TcpConfig, worker_threads


def _pid_alive(pid: int) -> bool:
    """Running: a zombie (exited, not yet reaped by whoever adopted it) is not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:  # no /proc (not Linux): as kill says
        return True


def test_worker_processes_answer_like_one_server_and_stop_with_it(tmp_path):
    run = write_synthetic_run(tmp_path / "run", n_items=60, n_users=10, events_per_user=12)
    cfg = PipelineConfig.model_validate(
        {"run_dir": str(run.root), "threads": 1, "serve": {"model": "popular", "max_k": 20, "processes": 2}}
    )
    events, sid_map = read_parquet(run.events), read_parquet(run.sid_map)
    expected = PopularDislikePredictor(events, sid_map["item_id"].to_list())
    want = [i for i, _ in expected.recommend([(["i2", "i0", "i1"], [1, -1, -1])], 5)[0]]

    with local_server(cfg, startup_timeout=120) as server:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            assert client.get("/healthz").json()["model"] == "popular"
            for _ in range(6):  # new connections, so that more than one worker may answer
                r = httpx.post(f"{server.url}/v1/dislikes", json={"negative": ["i0", "i1"], "positive": ["i2"], "k": 5})
                assert r.status_code == 200, r.text
                assert [it["item_id"] for it in r.json()["items"]] == want
            assert client.post("/v1/dislikes", json={"user_id": "nobody"}).status_code == 404
        log = server.log_tail(100_000)
        assert "serving with 2 worker processes, 1 torch thread(s) each" in log
        workers = [int(p) for p in re.findall(r"Started server process \[(\d+)\]", log)]
        assert len(workers) == 2 and all(_pid_alive(p) for p in workers)
    assert server.process.returncode is not None
    assert not any(_pid_alive(p) for p in workers)  # the workers stopped with the parent


def test_a_broken_run_fails_once_before_any_worker_starts(tmp_path):
    cfg = PipelineConfig.model_validate({"run_dir": str(tmp_path / "missing"), "serve": {"processes": 2}})
    path = tmp_path / "serve.yaml"
    path.write_text(dump_config(cfg))
    out = subprocess.run(
        [sys.executable, "-m", "conrec.cli", "serve", "--config", str(path)], capture_output=True, text=True, timeout=120
    )
    text = out.stdout + out.stderr
    assert out.returncode == 2, text  # a conrec error line (a mistyped option also exits non-zero)
    assert text.count("no such run directory") == 1, text  # said once, by the parent: no worker repeats it
    assert "Started server process" not in text and "worker process" not in text and "Started parent process" not in text
    assert "Traceback" not in text


def _serve_two_processes_on_a_damaged_run(
    tmp_path: Path, damage: Callable[[RunDir], None], slow_start_s: float = 0.0, ping_timeout_s: int = 30
) -> tuple[int, str]:
    """``conrec serve`` with 2 processes (the popularity model) on a synthetic run that ``damage`` edited by hand
    after its stages finished: the exit status and the whole output. ``slow_start_s``: each worker process starts that
    much later (a ``sitecustomize`` run by every interpreter the command starts, acting in the workers only), as a
    worker's imports do on a loaded machine. ``ping_timeout_s``: serve.worker_ping_timeout_s."""
    env = None
    if slow_start_s:
        site = tmp_path / "site"
        site.mkdir()
        (site / "sitecustomize.py").write_text(
            f"import os, time\nif os.environ.get({CONFIG_ENV!r}):  # set by the parent for its workers only\n"
            f"    time.sleep({slow_start_s})\n"
        )
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    run = write_synthetic_run(tmp_path / "run", n_items=60, n_users=10, events_per_user=12)
    damage(run)
    cfg = PipelineConfig.model_validate(
        {
            "run_dir": str(run.root),
            "threads": 1,
            "serve": {"model": "popular", "processes": 2, "port": free_port(), "worker_ping_timeout_s": ping_timeout_s},
        }
    )
    path = tmp_path / "serve.yaml"
    path.write_text(dump_config(cfg))
    out = subprocess.run(
        [sys.executable, "-m", "conrec.cli", "serve", "--config", str(path)], capture_output=True, text=True, timeout=300, env=env
    )
    return out.returncode, out.stdout + out.stderr


def test_what_only_loading_finds_stops_the_server_once_with_a_workers_line(tmp_path):
    """The parent checks the run without loading it, so a table that reads but does not load (or non-finite weights)
    is found by the workers: the first to find it stops the whole server with its one line (exit 2), no loop of restarts.

    And the supervisor sees that worker's exit at once (workers.release_worker_pipes, wired into its loop): it exits
    while a ping waits for its answer, and with the supervisor's copy of the pipe left open the wait lasted the whole
    serve.worker_ping_timeout_s, here 120 s. The bound below is a correctness bound, not a speed goal: only that wait
    can take the command past it (about 20 s otherwise on 2 shared cores, 132 s with the wait)."""
    import time

    import polars as pl

    def damage(run: RunDir) -> None:
        pl.DataFrame({"x": [1]}).write_parquet(run.items)  # by hand: the stage stays current, so the parent's check passes

    began = time.monotonic()
    returncode, text = _serve_two_processes_on_a_damaged_run(tmp_path, damage, ping_timeout_s=120)
    took = time.monotonic() - began
    assert took < 120, f"stopped after {took:.0f} s: the supervisor waited out its ping instead of seeing the exit"
    assert returncode == 2, text
    assert "a worker process stopped the server: items table: missing column(s) ['item_id', 'title']" in text, text
    assert text.rstrip().splitlines()[-1].startswith("error: a worker process stopped the server: items table")


def test_a_load_error_outside_conrec_stops_the_server_once_too(tmp_path):
    """Found in review: a worker whose load raised something other than a conrec error (here polars comparing string
    feedback with numbers; a torch error or CUDA out of memory alike) exited 1, and uvicorn restarted it forever,
    loading the run again each time, while its siblings served. It now stops the server with its line (exit 2)."""
    import polars as pl

    def damage(run: RunDir) -> None:
        events = read_parquet(run.events)
        events.with_columns(pl.col("feedback").cast(pl.String)).write_parquet(run.events)  # by hand: the stage stays current

    returncode, text = _serve_two_processes_on_a_damaged_run(tmp_path, damage)
    assert returncode == 2, text
    last = text.rstrip().splitlines()[-1]
    assert last.startswith("error: a worker process stopped the server: ComputeError: "), text
    assert "] died" not in text, text  # no worker was restarted


def test_a_worker_slower_to_start_than_uvicorns_ping_is_not_killed_and_restarted(tmp_path):
    """Found by the flaky test above (1 failure in 3 at load average 9): a spawned worker answers uvicorn's health
    ping only once it has imported conrec's server modules (1.4 s on an idle machine), and uvicorn's supervisor pings it
    0.5 s after its start and SIGKILLs it as hung when no answer comes within its timeout (5 s by default): exit -9,
    not the startup failure that stops the server, so it was restarted ("Child process [N] died") and loaded the run
    again. Here each worker starts 8 s late; it is waited for (serve.worker_ping_timeout_s) and stops the server once."""
    import polars as pl

    def damage(run: RunDir) -> None:
        pl.DataFrame({"x": [1]}).write_parquet(run.items)

    returncode, text = _serve_two_processes_on_a_damaged_run(tmp_path, damage, slow_start_s=8.0)
    assert returncode == 2, text
    assert "a worker process stopped the server: items table: missing column(s)" in text, text
    assert "] died" not in text, text  # no worker was killed as hung and restarted


def test_the_supervisor_sees_a_worker_exit_while_it_waits_for_its_ping():
    """Found while timing the suite: a worker that stopped the server (the tests above) exited while uvicorn's supervisor
    waited for its ping's answer, on a pipe whose other end the supervisor held too, so it saw the exit only after
    serve.worker_ping_timeout_s: the worker's line came 30 s late. With its copy released, the exit is an end of file."""
    import multiprocessing
    from types import SimpleNamespace

    from conrec.serve import workers

    spawn = multiprocessing.get_context("spawn")  # as uvicorn starts its workers
    parent_conn, child_conn = spawn.Pipe()
    worker = SimpleNamespace(parent_conn=parent_conn, child_conn=child_conn, process=spawn.Process(target=child_conn.recv))
    worker.process.start()
    workers.release_worker_pipes([worker])
    parent_conn.send(b"ping")  # the worker reads it and exits without answering, as one does while it shuts down
    worker.process.join(60)
    assert worker.process.exitcode == 0
    assert parent_conn.poll(0)  # readable at once: the supervisor's poll(worker_ping_timeout_s) returns now
    with pytest.raises(EOFError):  # and uvicorn's ping takes the end of file for "not alive", then reads the exit status
        parent_conn.recv()
    parent_conn.close()


def test_a_worker_whose_load_raises_any_exception_stops_the_server(tmp_path, monkeypatch, caplog):
    """The same in one process: a plain RuntimeError from the load is logged with its traceback, its first line is
    handed to the parent, and the worker exits with uvicorn's startup-failure status (the one it does not restart)."""
    import logging

    from uvicorn.config import STARTUP_FAILURE

    import conrec.serve.app as app_mod
    from conrec.serve import workers

    def broken(c, pinned=None):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")

    cfg = PipelineConfig.model_validate({"run_dir": str(tmp_path / "run"), "serve": {"processes": 2}})
    path = tmp_path / "serve.yaml"
    path.write_text(dump_config(cfg))
    monkeypatch.setattr(app_mod, "create_app_from_run", broken)
    monkeypatch.setattr(workers, "stop_with_parent", lambda: None)
    monkeypatch.setattr(workers, "ignore_hangup", lambda: None)
    monkeypatch.setattr(workers, "prepare_process", lambda threads: None)
    monkeypatch.setenv(workers.CONFIG_ENV, str(path))
    monkeypatch.setenv(workers.STOP_ENV, str(tmp_path / "stopped"))
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as stopped:
        workers.app_from_env()
    assert stopped.value.code == STARTUP_FAILURE
    assert "Traceback" in caplog.text or caplog.records[-1].exc_info is not None
    assert (tmp_path / "stopped").read_text() == "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB\n"

def test_listening_socket_says_tcp_so_accepted_connections_get_nodelay():
    """Regression: uvicorn binds the workers' socket with proto 0 (its issue 3149), and asyncio then
    leaves Nagle's algorithm on, which delayed every keep-alive response by ~40 ms."""
    sock = _TcpConfig("conrec.serve.workers:app_from_env", host="127.0.0.1", port=0).bind_socket()
    assert sock.proto == socket.IPPROTO_TCP
    # and it listens as soon as "Uvicorn running" is printed: a client was refused until a worker had loaded the model
    socket.create_connection(sock.getsockname(), timeout=5).close()
    nodelay: list[int] = []

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            nodelay.append(transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    async def accept_one() -> None:
        server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
        _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        for _ in range(100):
            if nodelay:
                break
            await asyncio.sleep(0.01)
        writer.close()
        server.close()

    asyncio.run(accept_one())
    assert nodelay and nodelay[0] != 0
    plain = uvicorn.Config("conrec.serve.workers:app_from_env", host="127.0.0.1", port=0).bind_socket()
    try:
        assert plain.proto == 0  # the upstream behaviour this works around; if uvicorn fixes it, drop _TcpConfig
    finally:
        plain.close()


def test_each_worker_gets_a_share_of_the_cores(monkeypatch):
    monkeypatch.setattr("conrec.serve.workers.available_cores", lambda: 8)
    cfg = PipelineConfig.model_validate({"serve": {"processes": 3}})
    assert worker_threads(cfg) == 2
    assert worker_threads(cfg.model_copy(update={"threads": 4})) == 4
    assert worker_threads(PipelineConfig.model_validate({"serve": {"processes": 16}})) == 1


def test_local_server_waits_until_every_worker_answers(monkeypatch, tmp_path):
    """A benchmark that opened its keep-alive connections while only one worker listened kept them all
    on that worker: the helper waits until /healthz has come from every process."""
    from conrec.serve import local

    answers = iter([None, 101, 101, 101, 102, 101])  # None: not listening yet
    calls = []

    class Reply:
        status_code = 200

        def __init__(self, pid: int) -> None:
            self.pid = pid

        def json(self) -> dict:
            return {"process": self.pid}

    def fake_get(url, timeout):
        calls.append(url)
        pid = next(answers)
        if pid is None:
            raise httpx.ConnectError("refused")
        return Reply(pid)

    monkeypatch.setattr(local.httpx, "get", fake_get)
    monkeypatch.setattr(local.time, "sleep", lambda s: None)
    server = local.LocalServer(url="http://x", process=subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]), log_path=tmp_path / "log")
    try:
        local._wait_healthy(server, timeout=10, processes=2)
        assert len(calls) == 5  # refused, then 101 three times, then 102
        local._wait_healthy(server, timeout=10, processes=1)
        assert len(calls) == 6
    finally:
        server.process.kill()
        server.process.wait()


def test_a_worker_restarted_after_the_model_changed_stops_the_server_instead_of_serving_two_models(tmp_path):
    """Found by probing: a worker restarted after a crash loaded whatever the run held then: after
    `conrec sft` on the run, half the answers came from the new model and half from the old one; with
    the model gone it failed in an endless loop of tracebacks while the server hung. /healthz could
    not tell that the run's model had changed."""
    import signal
    import time

    from conrec.runs import RunDir

    run = write_synthetic_run(tmp_path / "run", n_items=60, n_users=10, events_per_user=12)
    cfg = PipelineConfig.model_validate({"run_dir": str(run.root), "threads": 1, "serve": {"model": "popular", "processes": 2}})
    with local_server(cfg, startup_timeout=120) as server:
        assert httpx.get(f"{server.url}/healthz", timeout=10).json()["model_current"] is True
        RunDir(run.root).mark_done("sid")  # the SID stage ran again while the server was up
        time.sleep(CURRENT_TTL_S)  # a model_current answer is reused that long
        assert httpx.get(f"{server.url}/healthz", timeout=10).json()["model_current"] is False
        workers = [int(p) for p in re.findall(r"Started server process \[(\d+)\]", server.log_tail(100_000))]
        os.kill(workers[0], signal.SIGKILL)
        server.process.wait(timeout=120)
        log = server.log_tail(100_000)
    assert server.process.returncode == 2, log
    assert "a worker process stopped the server: the run's popular model is no longer the one this server started with" in log
    assert "Traceback" not in log
    deadline = time.monotonic() + 10
    while _pid_alive(workers[1]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _pid_alive(workers[1])


def test_workers_stop_when_their_parent_is_killed(tmp_path):
    """They went on serving, unsupervised, holding the port."""
    import signal
    import time

    run = write_synthetic_run(tmp_path / "run", n_items=60, n_users=10, events_per_user=12)
    cfg = PipelineConfig.model_validate({"run_dir": str(run.root), "threads": 1, "serve": {"model": "popular", "processes": 2}})
    with local_server(cfg, startup_timeout=120) as server:
        workers = [int(p) for p in re.findall(r"Started server process \[(\d+)\]", server.log_tail(100_000))]
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(timeout=10)
        deadline = time.monotonic() + 30
        while any(_pid_alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
    assert len(workers) == 2 and not any(_pid_alive(p) for p in workers)


SLOW_LOAD = """
import os, time
if os.environ.get({config_env!r}):  # set by the parent for its workers only
    import conrec.serve.app as app
    real = app.create_app_from_run

    def slow(*args, **kwargs):  # a model that takes a minute to load
        open(os.path.join({marks!r}, str(os.getpid())), "w").close()
        time.sleep(60)
        return real(*args, **kwargs)

    app.create_app_from_run = slow
"""


@pytest.mark.parametrize(("signum", "to_group"), [("SIGTERM", False), ("SIGINT", True)])
def test_a_stop_while_the_workers_load_ends_them_at_once(tmp_path, signum, to_group):
    """Found by probing: uvicorn calls the app factory inside its signal capture, so SIGTERM (to the parent, as
    `docker stop` sends it) or Ctrl-C (SIGINT to the whole group) while the workers loaded the model waited until each
    had loaded it and started, then shut it down (33 s on the tiny model). A loading worker now ends at once."""
    import signal
    import time

    marks, site = tmp_path / "loading", tmp_path / "site"
    marks.mkdir()
    site.mkdir()
    (site / "sitecustomize.py").write_text(SLOW_LOAD.format(config_env=CONFIG_ENV, marks=str(marks)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    run = write_synthetic_run(tmp_path / "run", n_items=60, n_users=10, events_per_user=12)
    cfg = PipelineConfig.model_validate({"run_dir": str(run.root), "threads": 1, "serve": {
        "model": "popular", "processes": 2, "port": free_port(), "worker_ping_timeout_s": 120}})
    path = tmp_path / "serve.yaml"
    path.write_text(dump_config(cfg))
    proc = subprocess.Popen([sys.executable, "-m", "conrec.cli", "serve", "--config", str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while len(list(marks.iterdir())) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        workers = [int(p.name) for p in marks.iterdir()]
        assert len(workers) == 2, proc.communicate(timeout=60)[0] if proc.poll() is not None else "workers not loading"
        began = time.monotonic()
        if to_group:
            os.killpg(proc.pid, getattr(signal, signum))
        else:
            proc.send_signal(getattr(signal, signum))
        out, _ = proc.communicate(timeout=120)
        took = time.monotonic() - began
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    assert took < 30, f"stopped {took:.0f} s after {signum}: the workers finished loading first\n{out}"
    assert proc.returncode == 0, out
    assert "Application startup complete" not in out and "Traceback" not in out, out
    assert not any(_pid_alive(p) for p in workers)


def test_a_worker_whose_parent_is_pid_1_is_not_taken_for_an_orphan(tmp_path):
    """In a container the supervisor itself is often pid 1: workers took "my parent is pid 1" for "my parent
    died", quit, and were restarted forever. They now compare with the supervisor's own pid."""
    code = (
        "import os, sys\nfrom conrec.serve import workers\n"
        "os.environ[workers.PARENT_ENV] = sys.argv[1]\n"
        "try:\n    workers.stop_with_parent()\n    print('serving')\nexcept SystemExit:\n    print('quit')\n"
    )
    runs = {name: subprocess.run([sys.executable, "-c", code, str(pid)], capture_output=True, text=True, timeout=60).stdout.strip()
            for name, pid in (("own parent", os.getpid()), ("another", 1 if os.getpid() != 1 else 2))}
    assert runs == {"own parent": "serving", "another": "quit"}


def test_a_restarted_worker_loads_the_model_the_parent_served_not_a_fresh_choice(monkeypatch, tmp_path):
    """serve.model grpo served as sft (GRPO not current at start): after GRPO finished, a restarted worker chose
    grpo, and stopped the server although the sft model it was meant to serve was unchanged."""
    from types import SimpleNamespace

    import conrec.serve.app as app_mod
    from conrec.serve import workers

    cfg = PipelineConfig.model_validate({"run_dir": str(tmp_path / "run"), "serve": {"model": "grpo", "processes": 2}})
    path = tmp_path / "serve.yaml"
    path.write_text(dump_config(cfg))
    asked: list[str] = []

    def fake_app(c, pinned=None):
        asked.append(pinned)
        return SimpleNamespace(state=SimpleNamespace(served=f"{pinned}@abc", loaded={}))

    monkeypatch.setattr(app_mod, "create_app_from_run", fake_app)
    monkeypatch.setattr(workers, "stop_with_parent", lambda: None)
    monkeypatch.setattr(workers, "ignore_hangup", lambda: None)
    monkeypatch.setattr(workers, "prepare_process", lambda threads: None)
    monkeypatch.setenv(workers.CONFIG_ENV, str(path))
    monkeypatch.setenv(workers.SERVED_ENV, "sft@abc")
    assert workers.app_from_env().state.served == "sft@abc" and asked == ["sft"]


def test_a_restarted_worker_reads_the_stages_its_siblings_read_or_stops_the_server(tmp_path, monkeypatch, caplog):
    """Found by probing: a worker restarted after `conrec eval` reran loaded the new evaluation points and lists
    while its siblings kept the old ones, so the same inspector URL answered 200 and 404 in turn. Found in review:
    the parent's last line then said the model could not be served; it now gives the worker's reason."""
    import logging

    import pytest
    from uvicorn.config import STARTUP_FAILURE

    from conrec.serve import workers
    from conrec.serve.app import create_app_from_run

    from builders import record_current

    run = write_synthetic_run(tmp_path / "run", n_items=60, n_users=10, events_per_user=12)
    cfg = PipelineConfig.model_validate({"run_dir": str(run.root), "threads": 1, "serve": {"model": "popular", "processes": 2}})
    parent = create_app_from_run(cfg)
    path = tmp_path / "serve.yaml"
    path.write_text(dump_config(cfg))
    monkeypatch.setattr(workers, "stop_with_parent", lambda: None)  # this is the test process, not a worker
    monkeypatch.setattr(workers, "ignore_hangup", lambda: None)
    monkeypatch.setattr(workers, "prepare_process", lambda threads: None)
    for name, value in ((workers.CONFIG_ENV, str(path)), (workers.SERVED_ENV, parent.state.served),
                        (workers.LOADED_ENV, json.dumps(parent.state.loaded)), (workers.STOP_ENV, str(tmp_path / "stopped"))):
        monkeypatch.setenv(name, value)
    assert workers.app_from_env().state.loaded == parent.state.loaded  # nothing changed: the worker serves
    record_current(cfg, "eval")  # the eval stage ran again; the served model (popular: data and SIDs) did not change
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as stopped:
        workers.app_from_env()
    assert stopped.value.code == STARTUP_FAILURE
    assert "the run's eval stage is no longer the one this server started with" in caplog.text
    # the parent's last line says why (it blamed the model, which an eval rerun leaves current)
    assert (tmp_path / "stopped").read_text().startswith("the run's eval stage is no longer the one this server started with")


def test_serve_processes_leaves_no_identities_to_a_later_server(tmp_path, monkeypatch):
    """Found in review: the parent's variables stayed in os.environ, so a second in-process serve_processes(...,
    loaded=None) gave its workers the first server's identities, and they stopped at start-up."""
    from conrec.serve import workers

    seen: list[dict[str, str | None]] = []
    names = (workers.CONFIG_ENV, workers.PARENT_ENV, workers.SERVED_ENV, workers.LOADED_ENV, workers.STOP_ENV)

    class Supervisor:
        def __init__(self, config, sockets):
            self.processes = []

        def run(self):
            seen.append({name: os.environ.get(name) for name in names})

    monkeypatch.setattr(workers, "_Supervisor", Supervisor)
    monkeypatch.setattr(workers._TcpConfig, "bind_socket", lambda self: None)
    for name in names:
        monkeypatch.delenv(name, raising=False)
    cfg = PipelineConfig.model_validate({"run_dir": str(tmp_path / "run"), "serve": {"processes": 2}})
    workers.serve_processes(cfg, {}, served="popular@a", loaded={"eval": "a"})
    assert seen[0][workers.LOADED_ENV] == json.dumps({"eval": "a"}) and seen[0][workers.SERVED_ENV] == "popular@a"
    assert all(os.environ.get(name) is None for name in names)
    workers.serve_processes(cfg, {})  # a second server told of no identities: its workers are not told the first's
    assert seen[1][workers.LOADED_ENV] is None and seen[1][workers.SERVED_ENV] is None and seen[1][workers.CONFIG_ENV]
    assert all(os.environ.get(name) is None for name in names)


@pytest.mark.parametrize("model", ["popular", "grpo"])
def test_the_parent_of_several_workers_checks_the_run_without_loading_it(tmp_path, monkeypatch, caplog, model):
    """Found by probing (a 20k-item run): the parent built the whole app to check the run, and `del app; gc.collect()`
    freed nothing (FastAPI's caches keep the endpoint closures, and with them the model, catalogue, users and
    explainer), so serve.processes 2 held three loaded copies (689 MB each) and the workers began loading only after
    the parent had. The parent now loads nothing, and hands the workers the build a worker then loads."""
    import logging

    import conrec.serve.app as app_mod
    from conrec.serve import workers
    from conrec.serve.app import create_app_from_run

    from builders import record_current, serve_tables, write_fake_outputs

    if model == "popular":
        run = write_synthetic_run(tmp_path / "run", n_items=60, n_users=10, events_per_user=12)
        want = "popular"
    else:  # GRPO not run: the server falls back to SFT, and says so in the parent
        from conrec.io import write_parquet
        from conrec.runs import RunDir

        run = RunDir(tmp_path / "run")
        items, sid_map, events = serve_tables()
        for table, path in ((items, run.items), (sid_map, run.sid_map), (events, run.events)):
            write_parquet(table, path)
        write_fake_outputs(run, "sft")
        want = "sft"
    cfg = PipelineConfig.model_validate({"run_dir": str(run.root), "threads": 1, "serve": {"model": model, "processes": 2}})
    if model != "popular":
        record_current(cfg, "sft")

    def no_load(*args, **kwargs):
        raise AssertionError("the parent loaded the run")

    handed: list[tuple[str | None, dict | None]] = []
    monkeypatch.setattr(app_mod, "load_predictor", no_load)
    monkeypatch.setattr(app_mod, "load_lm", no_load)
    monkeypatch.setattr(app_mod, "create_app_from_run", no_load)
    monkeypatch.setattr(workers, "serve_processes", lambda cfg, options, served=None, loaded=None: handed.append((served, loaded)))
    with caplog.at_level(logging.WARNING, logger="conrec.serve"):
        app_mod.run(cfg, host="127.0.0.1", port=free_port())
    assert ("not serving the grpo model" in caplog.text) == (model == "grpo")  # the fallback is said by the parent
    monkeypatch.undo()
    # what a worker loads is what the parent handed it: it serves, instead of stopping the server
    stand_in = lambda c, name: PopularDislikePredictor(read_parquet(run.events), read_parquet(run.sid_map)["item_id"].to_list())  # noqa: E731
    worker = create_app_from_run(cfg, load_lm=stand_in, pinned=want)
    assert handed == [(worker.state.served, worker.state.loaded)] and worker.state.served.startswith(f"{want}@")


@pytest.mark.parametrize("processes", [1, 2])
def test_sighup_is_ignored_with_a_warning_whatever_the_number_of_processes(tmp_path, processes):
    """Found by probing: with the default serve.processes 1, SIGHUP (the usual "reload" signal; a closed terminal
    sends it) ended the server at once, exit status 129 and no line, while with 2 it was ignored with a warning, as
    docs/reliability.md says. Sent to every process (as a terminal's hangup is), it also ended the workers of 2."""
    import signal
    import time

    run = write_synthetic_run(tmp_path / "run", n_items=60, n_users=10, events_per_user=12)
    cfg = PipelineConfig.model_validate({"run_dir": str(run.root), "threads": 1, "serve": {"model": "popular", "processes": processes}})
    with local_server(cfg, startup_timeout=120) as server:
        served_by = [int(p) for p in re.findall(r"Started server process \[(\d+)\]", server.log_tail(100_000))]
        for pid in {server.process.pid, *served_by}:
            os.kill(pid, signal.SIGHUP)
        deadline = time.monotonic() + 60
        while "SIGHUP ignored" not in server.log_tail(100_000) and server.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        log = server.log_tail(100_000)
        assert server.process.poll() is None, log
        assert log.count("SIGHUP ignored: the server keeps the model it loaded") == 1, log  # said once, by the parent
        assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
        assert len(served_by) == processes and all(_pid_alive(p) for p in served_by), server.log_tail(100_000)


@pytest.mark.parametrize("processes", [1, 2])
def test_sighup_is_ignored_while_the_server_loads(tmp_path, monkeypatch, processes):
    """Found in review: the single-process server loaded the model (13-28 s for a real one) before ignoring SIGHUP, so
    a terminal closed meanwhile still ended it (exit 129, no line); the parent of several workers checked the run
    before too. SIGHUP is ignored from before the load, and the handler before it is put back after."""
    import signal

    import conrec.serve.app as app_mod
    from conrec.serve import workers

    during: list[object] = []
    monkeypatch.setattr(app_mod, "create_app_from_run", lambda cfg: during.append(signal.getsignal(signal.SIGHUP)))
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: None)
    monkeypatch.setattr(app_mod, "check_servable", lambda cfg: during.append(signal.getsignal(signal.SIGHUP)) or ("popular@a", {}))
    monkeypatch.setattr(workers, "serve_processes", lambda cfg, options, served=None, loaded=None: None)
    cfg = PipelineConfig.model_validate({"run_dir": str(tmp_path / "run"), "serve": {"model": "popular", "processes": processes}})
    before = signal.getsignal(signal.SIGHUP)
    app_mod.run(cfg, host="127.0.0.1", port=free_port())
    assert len(during) == 1 and callable(during[0]) and during[0] not in (signal.SIG_DFL, signal.SIG_IGN, before)
    assert signal.getsignal(signal.SIGHUP) == before


def test_sighup_ignored_puts_back_a_handler_python_did_not_set(monkeypatch):
    """Found in review: a SIGHUP handler set outside Python (an embedding host) reads as None, and putting None back
    raised TypeError as the server stopped; the default is put back instead."""
    import signal

    import conrec.serve.app as app_mod

    calls: list[object] = []
    monkeypatch.setattr(signal, "signal", lambda signum, handler: calls.append(handler))  # returns None: not Python's
    with app_mod.sighup_ignored():
        pass
    assert len(calls) == 2 and calls[1] == signal.SIG_DFL


def test_a_loading_worker_ends_on_sigterm_and_leaves_ctrl_c_to_the_supervisor():
    """Found in review: a loading worker gave SIGINT its default action too, so Ctrl-C (sent to the whole group) could
    kill it while uvicorn's supervisor was in a health check, before it acted on its own SIGINT, and the supervisor
    started a new worker in its place. During the load SIGINT is ignored (the supervisor's SIGTERM, sent as it stops,
    ends the worker at once); the handlers are back afterwards."""
    import signal

    from conrec.serve.workers import stoppable_while_loading

    def term(*_: object) -> None: ...

    def interrupt(*_: object) -> None: ...

    before = signal.signal(signal.SIGTERM, term), signal.signal(signal.SIGINT, interrupt)
    try:
        with stoppable_while_loading():
            during = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
        after = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGTERM, before[0])
        signal.signal(signal.SIGINT, before[1])
    assert during == (signal.SIG_DFL, signal.SIG_IGN) and after == (term, interrupt)
