"""The public API's annotations accept the calls its docs show (a user's ``mypy --strict`` refused them)."""

from __future__ import annotations

import typing

import pytest
from pydantic import ConfigDict, TypeAdapter, ValidationError

from conrec.llm.inference.predict import Predictor
from conrec.pipeline import run_pipeline

STRICT = ConfigDict(strict=True)  # no list -> tuple conversion: the value must be of the annotated type as given


def _accepts(func: typing.Callable[..., object], param: str, value: object) -> bool:
    try:
        TypeAdapter(typing.get_type_hints(func)[param], config=STRICT).validate_python(value)
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize("stages", ["eval", ("data", "sid"), ["data", "sid"]])
def test_run_pipeline_stages_may_be_one_name_or_any_sequence(stages: object) -> None:
    """The docstring says ``stages`` may be one name, and a list works: the annotation said ``tuple[str, ...]``."""
    assert _accepts(run_pipeline, "stages", stages)


@pytest.mark.parametrize("method", [Predictor.recommend, Predictor.score])
def test_predictor_takes_any_sequence_of_histories(method: typing.Callable[..., object]) -> None:
    """``recommend((history,), k=3)`` was an arg-type error though the method only iterates (``list[History]``)."""
    history = (["1", "50"], [-1, -1])
    assert _accepts(method, "histories", (history,)) and _accepts(method, "histories", [history])
    assert not _accepts(method, "histories", history[0])  # a bare list of ids is still not a history
