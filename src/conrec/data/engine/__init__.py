"""Data engines (see :mod:`conrec.data.engine.base`), found by name through :data:`ENGINES`.

Engines are named, not imported, so that polars users never import pyspark and a missing optional
dependency is reported when the engine is chosen, in one line.
"""

from __future__ import annotations

import importlib

from conrec.data.engine.base import DataEngine
from conrec.errors import ConfigError, install_hint

ENGINES: dict[str, str] = {
    "polars": "conrec.data.engine.polars:PolarsEngine",
    "spark": "conrec.data.engine.spark:SparkEngine",
}

# an engine's optional packages, pinned as pyproject's extra of the engine's name pins them (a test compares them):
# the hint names the packages, which installs them in a checkout and in an installed conrec alike
EXTRAS: dict[str, str] = {"spark": "pyspark==4.0.5"}


def get_engine(name: str) -> DataEngine:
    """The engine registered as ``name`` (a :class:`ConfigError` names the choices or the missing extra)."""
    if name not in ENGINES:
        raise ConfigError(f"data.engine: unknown engine {name!r}; choose one of {sorted(ENGINES)}")
    module, cls = ENGINES[name].split(":")
    try:
        engine: DataEngine = getattr(importlib.import_module(module), cls)()
    except ImportError as exc:
        how = f": {install_hint(f'pip install {EXTRAS[name]}', extra=name)}" if name in EXTRAS else ""
        package = (exc.name or "?").partition(".")[0]  # the package to install, not its submodule
        raise ConfigError(f"data.engine: {name} needs {package!r}{how}") from exc
    return engine
