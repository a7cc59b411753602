"""Data engines (see :mod:`conrec.data.engine.base`), found by name through :data:`ENGINES`.

Engines are named, not imported, so that polars users never import pyspark and a missing optional
dependency is reported when the engine is chosen, in one line.
"""

from __future__ import annotations

import importlib

from conrec.data.engine.base import DataEngine
from conrec.errors import ConfigError

ENGINES: dict[str, str] = {
    "polars": "conrec.data.engine.polars:PolarsEngine",
    "spark": "conrec.data.engine.spark:SparkEngine",
}


def get_engine(name: str) -> DataEngine:
    """The engine registered as ``name`` (a :class:`ConfigError` names the choices or the missing extra)."""
    if name not in ENGINES:
        raise ConfigError(f"data.engine: unknown engine {name!r}; choose one of {sorted(ENGINES)}")
    module, cls = ENGINES[name].split(":")
    try:
        engine: DataEngine = getattr(importlib.import_module(module), cls)()
    except ImportError as exc:
        raise ConfigError(f"data.engine: {name} needs {exc.name!r}: pip install -e '.[{name}]'") from exc
    return engine
