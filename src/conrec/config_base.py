"""The base of every config section: unknown keys are errors, and no value changes type silently.

Why not pydantic's ``strict=True``: it would also refuse the conversions YAML needs (a string for a
``Path``, a list for a tuple). What must never pass is a value of another kind that pydantic's lax
mode quietly converts: ``max_steps: true`` read as 1, ``seed: "0"`` read as 0. YAML writes those
only by mistake (an unquoted ``yes``, a quoted number), so they are refused with the field named.
"""

from __future__ import annotations

import datetime
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator, model_validator

_SCALARS = frozenset({int, float, bool, type(None)})


def accepted_types(annotation: Any) -> set[Any]:
    """The plain types a field annotation accepts (unions and ``Annotated`` unwrapped, ``Literal`` values' types)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return accepted_types(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return set().union(*(accepted_types(a) for a in get_args(annotation)))
    if origin is Literal:
        return {type(v) for v in get_args(annotation)}
    return {origin or annotation}


def coercion_problem(value: Any, accepted: set[Any]) -> str | None:
    """Why ``value`` must not be converted to a field accepting ``accepted``; None when it may be."""
    numeric = bool(accepted & {int, float})
    if isinstance(value, bool) and bool not in accepted and numeric:
        return f"must be a number, not the boolean {str(value).lower()}"
    if isinstance(value, str) and str not in accepted and accepted <= _SCALARS and accepted - {type(None)}:
        kinds = " or ".join(sorted(t.__name__ for t in accepted - {type(None)}))
        # the hint only where the text is such a value in quotes ("0"): `seed: abc` is not fixed by removing quotes
        return f"must be {kinds}, not the string {value!r}" + (" (remove the quotes)" if _reads_as(value, accepted) else "")
    return None


def takes_text(annotation: Any) -> bool:
    """Whether a field takes free text (``str`` or a ``Path``, possibly optional), not only a choice of words."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return takes_text(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return any(takes_text(a) for a in get_args(annotation))
    return annotation in (str, Path)


def text_problem(value: Any, annotation: Any, written: str | None = None) -> str | None:
    """Why ``value``, which YAML read as a number, a date or a boolean, does not fit a text field; None when it
    is not that case. Why: ``api_key: 123456`` or ``ts_format: 2024-01-01`` got pydantic's "Input should be a valid
    string" (a path: "Input is not a valid path for <class 'pathlib.Path'>"), no word on the quotes that fix it.

    ``written``: the scalar as the file wrote it, when known (the config loader's note of it). The quoted example is
    that text: the converted value is not what was written (``0123456`` reads 42798, ``5e10`` 50000000000.0), and a
    user who copied it got another key; where the text is unknown, no example is given."""
    if not takes_text(annotation) or not isinstance(value, (int, float, bool, datetime.date)):
        return None
    if type(value) in accepted_types(annotation):  # a field that also takes the number as a number
        return None
    example = f", '{written}'" if written is not None else ""
    if isinstance(value, bool):
        word = written if written is not None else "yes/no/on/off/true/false"
        return f"must be text, but YAML reads an unquoted {word} as a boolean: quote it{example}"
    kind = "a date" if isinstance(value, datetime.date) else "a number"
    converted = f" ({value})" if written is not None and written != str(value) else ""
    return f"must be text, but YAML reads {written if written is not None else value} unquoted as {kind}{converted}: quote it as written{example}"


class TextValueError(ValueError):
    """A text setting given a number, date or boolean (:func:`text_problem`). It keeps the value and the field's
    annotation so that the config loader, which knows what the file wrote there, can say it with that text."""

    def __init__(self, value: Any, annotation: Any, problem: str) -> None:
        super().__init__(problem)
        self.value = value
        self.annotation = annotation


def _reads_as(text: str, accepted: set[Any]) -> bool:
    """Whether a config (:func:`conrec.config_yaml.load_yaml`) would read ``text`` unquoted as one of the ``accepted``
    scalar types."""
    import yaml

    from conrec.config_yaml import load_yaml

    try:
        value = load_yaml(text)
    except yaml.YAMLError:
        return False
    return type(value) in accepted or (isinstance(value, int) and not isinstance(value, bool) and float in accepted)


def _is_section(annotation: Any) -> bool:
    """Whether a field is a config section that always exists (a model, not ``Model | None``, whose null means off)."""
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


class StrictConfig(BaseModel):
    """Config sections derive from this: ``extra="forbid"`` and no silent bool/str -> number coercion."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _empty_sections_take_defaults(cls, data: Any) -> Any:
        """A section written empty (``sft:`` with every setting commented out, or ``sft: ~``) takes its defaults, as a
        section left out does. It was refused as "Input should be a valid dictionary or instance of SftConfig"."""
        if not isinstance(data, dict):
            return data
        empty = [k for k, v in data.items() if v is None and k in cls.model_fields and _is_section(cls.model_fields[k].annotation)]
        return {k: v for k, v in data.items() if k not in empty} if empty else data

    @field_validator("*", mode="before")
    @classmethod
    def _no_silent_coercion(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        if field is not None:
            problem = coercion_problem(value, accepted_types(field.annotation))
            if problem is not None:
                raise ValueError(problem)
            if (text := text_problem(value, field.annotation)) is not None:
                raise TextValueError(value, field.annotation, text)
        return value
