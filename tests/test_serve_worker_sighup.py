"""A worker process of ``serve.processes`` ignores SIGHUP from its first conrec import, not only once it has imported
uvicorn, FastAPI, the config and the serving app (seconds, during which a closed terminal's SIGHUP ended it and uvicorn
started it again, loading again)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

SPY = """
import importlib.abc, json, os, signal, sys
seen = {}

class Spy(importlib.abc.MetaPathFinder):  # the SIGHUP disposition as each of these starts to be imported
    def find_spec(self, name, path, target=None):
        if name in ("uvicorn", "conrec.config", "conrec.serve.app") and name not in seen:
            seen[name] = signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
            if name == "conrec.serve.app":
                raise ImportError("stop here")  # the serving app itself is not needed
        return None

signal.signal(signal.SIGHUP, signal.SIG_DFL)  # as a process starts by default: not as inherited (nohup ignores it)
sys.meta_path.insert(0, Spy())
if sys.argv[1] != "unset":  # "self": the supervisor itself
    os.environ["CONREC_SERVE_PARENT"] = str(os.getpid()) if sys.argv[1] == "self" else sys.argv[1]
from conrec.serve import workers
os.environ[workers.CONFIG_ENV] = "/nonexistent/serve.yaml"
try:
    workers.app_from_env()
except BaseException:
    pass
print(json.dumps(seen))
"""


def _ignored_while_importing(parent: str) -> dict[str, bool]:
    done = subprocess.run([sys.executable, "-c", SPY, parent], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGHUP"), reason="no SIGHUP on this platform")
def test_a_worker_ignores_sighup_before_it_imports_its_libraries() -> None:
    """Found by the session-41 probes: the worker installed SIG_IGN in app_from_env after importing the serving app,
    and uvicorn, FastAPI and the config were imported before that (when its config was unpickled)."""
    assert _ignored_while_importing(str(os.getpid())) == {"uvicorn": True, "conrec.config": True, "conrec.serve.app": True}


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGHUP"), reason="no SIGHUP on this platform")
def test_the_supervisor_and_other_importers_keep_their_sighup() -> None:
    """Only a worker (its supervisor's pid in the environment, not its own) ignores it on import: the supervisor logs
    SIGHUP (conrec.serve.workers._Supervisor), and any other program importing the module keeps its own handling."""
    assert _ignored_while_importing("self")["uvicorn"] is False
    assert _ignored_while_importing("unset")["uvicorn"] is False
