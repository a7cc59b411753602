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


def test_the_file_settings_each_source_reads_are_declared_for_every_source() -> None:
    """SOURCE_READS (the refusal of ignored file settings) knows every source, and a source that needs an events file
    reads events_path."""
    from conrec.data.config import SOURCE_READS

    assert set(SOURCE_READS) == set(SOURCES)
    assert all(("events_path" in SOURCE_READS[n]) == (s.events_what is not None) for n, s in SOURCES.items())


@pytest.mark.parametrize(
    ("settings", "needle"),
    [
        # the probe's case: exit 0 and a results table for MovieLens-100K, the user's file never read
        ({"events_path": "own/events.csv", "columns": {"user": "user_id"}},
         "data.events_path and data.columns are set, but data.source: movielens100k does not read them (it loads the "
         "embedded MovieLens-100K); for your own CSV/Parquet files set data.source: table"),
        ({"source": "simulator", "items_path": "items.csv"}, "data.items_path is set, but data.source: simulator does not read it"),
        ({"source": "movielens", "events_path": "r.dat", "items_path": "m.dat", "columns": {"u": "user_id"}},
         "data.columns is set, but data.source: movielens does not read it (it reads its data set's own files); remove it"),
        ({"source": "simulator", "events_path": "e.csv", "items_path": "i.csv", "columns": {"u": "user_id"}},
         "data.events_path, data.items_path and data.columns are set, but data.source: simulator does not read them"),
    ],
)
def test_file_settings_the_source_does_not_read_are_refused(settings: dict, needle: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as err:
        DataConfig.model_validate(settings)
    assert needle in str(err.value)


@pytest.mark.parametrize(
    ("settings", "needle"),
    [
        # the probe's case: accepted, and read by nothing (the simulator writes its own seconds)
        ({"source": "simulator", "ts_unit": "ms", "rating_range": [1, 5]},
         "data.ts_unit and data.rating_range are set, but data.source: simulator does not read them (only data.source: "
         "table reads ts_unit, ts_format, feedback_labels, rating_range); remove them, or set data.source: table"),
        ({"source": "movielens", "events_path": "r.dat", "items_path": "m.dat", "feedback_labels": {"hide": -1}},
         "data.feedback_labels is set, but data.source: movielens does not read it"),
        ({"ts_format": "%Y-%m-%d"}, "data.ts_format is set, but data.source: movielens100k does not read it"),
    ],
)
def test_table_settings_with_another_source_are_refused(settings: dict, needle: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as err:
        DataConfig.model_validate(settings)
    assert needle in str(err.value)


def test_table_settings_at_their_defaults_or_with_the_table_source_are_accepted() -> None:
    DataConfig(source="simulator", ts_unit="auto", ts_format=None, feedback_labels={}, rating_range=None)
    DataConfig(source="movielens100k", like_min_rating=3.0)  # the presets' threshold: MovieLens reads it
    DataConfig(source="table", events_path="e.csv", ts_unit="ms", ts_format="%Y", feedback_labels={"hide": -1}, rating_range=(1, 5))


def test_file_settings_the_source_reads_are_accepted() -> None:
    DataConfig(source="table", events_path="e.csv", items_path="i.csv", columns={"u": "user_id"})
    DataConfig(source="kuairand", events_path="log", items_path="video_features.csv")
