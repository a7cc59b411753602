"""HTTP service: top-K likely dislikes for a user history."""

import os as _os
import signal as _signal

PARENT_ENV = "CONREC_SERVE_PARENT"
"""The pid of the supervisor of ``serve.processes`` workers (:mod:`conrec.serve.workers`), set in its environment for
them to inherit: a process that finds another pid there is one of its workers."""


def _ignore_hangup_in_a_worker() -> None:
    """Ignore SIGHUP here, at the first import of the serving package, in a worker process of ``serve.processes``.

    Why here: a spawned worker imports this package first (unpickling its uvicorn config imports
    :mod:`conrec.serve.workers`), then uvicorn, FastAPI, the config and the serving app, seconds in all; SIGHUP was
    ignored only after them (:func:`conrec.serve.workers.ignore_hangup`, which stays for a worker started otherwise), and
    a closed terminal's SIGHUP in that time ended the worker, which uvicorn started again, loading again. The
    supervisor (its own pid there) and any other importer keep their handling."""
    parent = _os.environ.get(PARENT_ENV)
    if parent is None or parent == str(_os.getpid()) or not hasattr(_signal, "SIGHUP"):
        return
    try:
        _signal.signal(_signal.SIGHUP, _signal.SIG_IGN)
    except ValueError:  # pragma: no cover  (imported outside the main thread: app_from_env does it then)
        pass


_ignore_hangup_in_a_worker()
