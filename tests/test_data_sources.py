"""The data-source registry: one module per ``data.source`` value, in step with the config literal."""

from __future__ import annotations

import re
import typing

import pytest

from conrec.data.config import DataConfig
from conrec.data.sources import SOURCES, load_source
from conrec.errors import ConfigError


def test_registry_covers_exactly_the_configurable_sources() -> None:
    literal = typing.get_args(DataConfig.model_fields["source"].annotation)
    assert set(SOURCES) == set(literal)
    assert all(name == src.name for name, src in SOURCES.items())


@pytest.mark.parametrize("name", [n for n, s in SOURCES.items() if s.events_what is not None])
def test_file_sources_name_the_file_they_need(name: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"data.events_path is required for data.source={name!r} (the {SOURCES[name].events_what})")):
        load_source(DataConfig(source=name))
