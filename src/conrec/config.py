"""The pipeline config: one YAML file with one section per stage.

Each stage's command (``conrec <stage> --config file.yaml``) reads the whole file and uses its own
section; sections left out take their defaults. Unknown keys are errors (typos must not be
silently ignored).
"""

from __future__ import annotations

import copy
import difflib
import json
import re
import typing
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from conrec.config_base import StrictConfig, TextValueError, accepted_types, takes_text, text_problem
from conrec.config_yaml import DuplicateKeyError, dump_yaml, load_yaml_noting_texts, written_as_text_before
from conrec.data.config import SIMULATOR_FACETS, DataConfig
from conrec.errors import ConfigError
from conrec.eval.config import EvalConfig
from conrec.llm.config import TIMELINE_VARIANTS, DecodeConfig, GrpoConfig, SftConfig, early_stopping_refusal
from conrec.llm.model.precision import ComputeConfig
from conrec.serve.config import ServeConfig
from conrec.sid.config import SidConfig


class PipelineConfig(StrictConfig):
    model_config = ConfigDict(extra="forbid")

    run_dir: Path = Field(Path("runs/demo"), description="where every stage reads and writes")
    seed: int = Field(
        0, description="the run's random seed: SID quantizer (unless sid.quantizer.seed), SFT and GRPO (combined with "
        "their own seeds); change it to see how much a result depends on chance"
    )
    threads: int | None = Field(
        None,
        ge=1,
        description="torch CPU threads per process; null = OMP_NUM_THREADS if set, else the cores this process may use "
        "(affinity, cgroup quota) shared among a distributed launch's local processes, capped by the cores other "
        "processes leave idle when a stage starts (at least 1)",
    )
    data: DataConfig = Field(default_factory=DataConfig)
    sid: SidConfig = Field(default_factory=SidConfig)
    sft: SftConfig = Field(default_factory=SftConfig)
    decode: DecodeConfig = Field(default_factory=DecodeConfig)
    grpo: GrpoConfig = Field(default_factory=GrpoConfig)
    compute: ComputeConfig = Field(
        default_factory=ComputeConfig, description="device, mixed precision, checkpointing, compile, loader workers of SFT and GRPO"
    )
    eval: EvalConfig = Field(default_factory=EvalConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)

    @model_validator(mode="before")
    @classmethod
    def _grpo_budget_follows_sft(cls, data: Any) -> Any:
        """A named GRPO schedule (``grpo.stages: positive_budget`` or ``paper``, the default included) of a
        segmented layout ends with the SFT prompt's positive budget, ``sft.prompt.max_pos_items``, and no stage
        shows more, unless the preset names its own ``max_pos_items``.

        Why: the preset's last stage is "the full positive budget", and ``progressive: false`` (the
        ablation it is compared with) uses the SFT budget; with a hard-coded 30 a run with
        ``sft.prompt.max_pos_items: 5`` showed GRPO six times the positives SFT had ever seen. (Its last stage's
        default, null, is that budget too; the middle stage's 10 is capped by it here.) The timeline layouts are left
        alone: their SFT windows and eval prompts cap no positive, and neither does their last stage's null.
        """
        if not isinstance(data, dict) or not isinstance(data.get("sft"), dict):
            return data
        prompt = data["sft"].get("prompt")
        budget = prompt.get("max_pos_items") if isinstance(prompt, dict) else None
        grpo = data.get("grpo", {})
        if type(budget) is not int or budget < 0 or not isinstance(grpo, dict):  # a bad value: the field's own error, once
            return data
        if isinstance(prompt, dict) and prompt.get("variant") in TIMELINE_VARIANTS:
            return data
        stages = grpo.get("stages", "positive_budget")
        if isinstance(stages, str):
            stages = {"preset": stages}
        if isinstance(stages, dict) and "preset" in stages and "max_pos_items" not in stages:
            return {**data, "grpo": {**grpo, "stages": {**stages, "max_pos_items": budget}}}
        return data

    @model_validator(mode="after")
    def _simulator_facets(self) -> PipelineConfig:
        """On simulated data the facet baselines read every facet axis, and the facet rule joins the
        baselines, unless the config says otherwise.

        Why: a simulated user's dislike facets are a category, a tone or a setting. Reading the category
        column alone, the category rule and taste x exposure saw 40% of them, and every simulated
        comparison understated the best baseline (default world 0.463 instead of 0.577: docs/results.md).
        """
        category = self.eval.category
        if self.data.source == "simulator" and "columns" not in category.model_fields_set:
            facets = category.model_copy(update={"columns": list(SIMULATOR_FACETS)})
            facets.model_fields_set.add("columns")  # explicit from here on: a dumped and reloaded config says the same
            self.eval = self.eval.model_copy(update={"category": facets})
        if self.data.source == "simulator" and "baselines" not in self.eval.model_fields_set:
            # the facet rule reads the same facets, and its likes-clear-the-suspects logic is the simulator's
            # (docs/results.md): without it the simulated comparisons understate the best baseline again
            ev = self.eval.model_copy(update={"baselines": [*self.eval.baselines, "facet_rule"]})
            ev.model_fields_set.add("baselines")
            try:
                self.eval = ev.check_budget()  # a copy is not validated: the added baseline's grid is now one that is tried
            except ValueError as exc:  # said at eval, and why facet_rule is there: the user never listed it
                raise _error_at(("eval",), f"facet_rule joins the baselines on simulated data when eval.baselines is unset, and {exc}; "
                                "cut eval.facet_rule.grid, raise eval.tune_budget, or list eval.baselines", self.eval.tune_budget) from None
        return self

    @model_validator(mode="after")
    def _copy_bias_skips_grpo(self) -> PipelineConfig:
        """A model with a copy bias is not trained further by GRPO: TRL computes the policy's
        log-probabilities from the plain logits, without the bias the model decodes with, so the pipeline
        skips the grpo stage for it and there is no GRPO model to evaluate."""
        if self.sft.copy_bias.enabled and "grpo" in self.eval.models:
            raise ValueError("sft.copy_bias: GRPO cannot train a model with a copy bias, so there is no grpo model; set eval.models: [sft]")
        return self

    @model_validator(mode="after")
    def _early_stopping_scores_valid(self) -> PipelineConfig:
        """Early stopping scores valid points, which ``train_until: test`` trains on (the SFT stage refused it at its
        start, after the pipeline had unmarked the run's finished SFT, GRPO and eval)."""
        if (why := early_stopping_refusal(self.sft.train, self.data.split.train_until)) is not None:
            raise ValueError(why)
        return self


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> PipelineConfig:
    """Load a pipeline config from YAML (a file or ``preset:<name>``; None = all defaults), with clear errors
    naming the field.

    A file may start from another config: a top-level ``base: preset:demo`` (or a path to a YAML file, relative to
    the file naming it) is loaded first (recursively), and the file's keys are merged over it (nested mappings key
    by key, anything else replaced). Without ``base`` a file starts from the library defaults (the paper's design,
    not a preset's recipe). ``base`` is not a setting: the result, and a run's recorded ``config.yaml``, hold the full
    effective config.

    Relative input paths (data files, model dirs, caches: see :func:`input_path_keys`) are resolved
    against the directory of the file that names them (a base's against the base's), so a config works
    from any current directory; paths in ``overrides`` are resolved against the current directory (like
    CLI arguments). Every input path of the result is absolute. ``run_dir`` is an output location and
    stays relative to the current directory (presets write ``runs/...`` where you run them).
    """
    layers: list[_Layer] = []
    if path is not None:
        path = resolve_config_path(path, None) or Path(path)  # "preset:<name>", as every CLI -c takes it
        layers = _load_layers(Path(path), ())
    if overrides is not None and not isinstance(overrides, dict):  # an AttributeError from the merge, before
        raise ConfigError(f"config overrides must be a mapping of sections (e.g. {{'sft': {{...}}}}), got {type(overrides).__name__}")
    raw: dict[str, Any] = {}
    written: dict[tuple[str | int, ...], str] = {}  # unquoted scalars YAML converted, as the winning file wrote them
    for layer in layers:
        raw = _deep_merge(raw, layer.raw)
        written = {loc: text for loc, text in written.items() if not _replaces(layer.raw, loc)} | layer.written
    from_file = raw
    if overrides:
        raw = _deep_merge(raw, resolve_input_paths(overrides, Path.cwd()))
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise _config_error(exc, written, overrides, layers, from_file) from exc


@dataclass(frozen=True)
class _Layer:
    """One config file as :func:`load_config` merges it: its keys (``base`` taken out, input paths resolved against
    its directory), the unquoted scalars YAML converted (as written), and the path to name in its errors."""

    path: Path
    raw: dict[str, Any]
    written: dict[tuple[str | int, ...], str]


def _load_layers(p: Path, chain: tuple[Path, ...], asked_by: Path | None = None) -> list[_Layer]:
    """The file ``p`` and the bases it names (``base:``), the deepest base first; ``chain``: the files naming it.

    Why a base: the advice "write only the keys you change, in a small file" gave a file over the library defaults
    (a pretrained SmolLM2 trained for hours), not over the preset the user had read; ``base: preset:demo`` says
    which config the small file changes."""
    asker = f" (the base of {asked_by})" if asked_by is not None else ""
    if not p.exists():
        preset = p.stem if p.suffix in ("", ".yaml", ".yml") and len(p.parts) == 1 and p.stem in PRESETS else None
        raise ConfigError(f"config file not found: {p.absolute()}{asker}" + (f" (for the preset, write preset:{preset})" if preset else ""))
    if not p.is_file():
        raise ConfigError(f"config path {p.absolute()} is a directory, not a YAML file{asker}")
    here = p.resolve()
    if here in chain:
        cycle = " -> ".join(str(c) for c in (*chain[chain.index(here):], here))
        raise ConfigError(f"config file {p}: its bases form a cycle ({cycle}); one of them must not name a base")
    loaded, written = _read_config_file(p)
    base = loaded.pop("base", None)
    written = {loc: text for loc, text in written.items() if loc[:1] != ("base",)}
    raw = resolve_input_paths(_exponent_words_as_text(loaded, written), p.absolute().parent)
    layer = _Layer(p, raw, written)
    if base is None:
        return [layer]
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"config file {p}: base must name a config (preset:<name> or a YAML file's path), got {base!r}")
    base_path = resolve_config_path(base, None)
    assert base_path is not None  # (a path was given)
    if not base_path.is_absolute():
        base_path = p.parent / base_path.expanduser()
    return [*_load_layers(base_path, (*chain, here), asked_by=p), layer]


def _read_config_file(p: Path) -> tuple[dict[str, Any], dict[tuple[str | int, ...], str]]:
    """The mapping a config file holds, and the unquoted scalars YAML converted (as written), or a one-line
    :class:`ConfigError` naming the file."""
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {p} is not UTF-8 text (byte {exc.start}: {exc.reason}); is it a YAML file?") from None
    except OSError as exc:
        raise ConfigError(f"config file {p} cannot be read: {exc.strerror or exc}") from None
    try:
        loaded, written = load_yaml_noting_texts(text)
    except DuplicateKeyError as exc:
        raise ConfigError(f"config file {p}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {p} is not valid YAML: {_yaml_problem(exc)}") from exc
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {p} must be a mapping of sections, got {type(loaded).__name__}")
    return loaded, written


def _replaces(raw: dict[str, Any], loc: tuple[str | int, ...]) -> bool:
    """Whether merging ``raw`` over a config replaces the value at the key path ``loc`` (:func:`_deep_merge` merges
    mappings key by key and replaces anything else: a list, a scalar, or a mapping written over a scalar)."""
    node: Any = raw
    for i, part in enumerate(loc):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
        if not isinstance(node, dict) or i == len(loc) - 1:
            return True
    return False


def validated(cfg: PipelineConfig) -> PipelineConfig:
    """``cfg`` checked again, as :func:`load_config` checks a file: ``cfg`` itself when its validated copy equals it,
    else that copy (a value pydantic converts, e.g. a path given as text), or the one-line :class:`ConfigError`.

    Why: pydantic checks a config when it is built, not when a field is assigned, so a notebook's
    ``cfg.data.split.max_history = 0`` (or ``valid_frac = 0.9``, ``horizon_days = "7"``) reached the stages unchecked:
    a deep traceback from polars, or a run whose recorded ``config.yaml`` every CLI command then refused. The copy goes
    through every validator, the cross-field ones included, from the same full dump a run records as its
    ``config.yaml`` (:func:`dump_config`), so a run gets the config the CLI reads back. The entry points that take a
    config object (:func:`conrec.pipeline.run_pipeline`, :func:`conrec.pipeline.run_stage`,
    :meth:`conrec.llm.inference.predict.Predictor.from_run`) call it before anything is written."""
    if not isinstance(cfg, PipelineConfig):
        raise ConfigError(f"expected a PipelineConfig (conrec.config.load_config gives one), got {type(cfg).__name__}")
    try:
        checked = PipelineConfig.model_validate(cfg.model_dump(warnings=False))
    except ValidationError as exc:
        raise _config_error(exc, {}, None, [], {}) from None
    return cfg if checked == cfg else checked


def _config_error(
    exc: ValidationError, written: dict[tuple[str | int, ...], str], overrides: dict[str, Any] | None, layers: list[_Layer], from_file: dict[str, Any]
) -> ConfigError:
    """One line for every problem of ``exc``, grouped by where each key came from (:func:`_blame`): of the files
    (``layers``, a base before the file naming it), the last that writes the key, else the file loaded."""
    groups: dict[str, list[str]] = {}
    for e in exc.errors():
        problem = validation_problem(_as_written(e, written, overrides))
        owner = next((la.path for la in reversed(layers) if _key_at(la.raw, tuple(e["loc"])) is not _ABSENT), None)
        where = _blame(e["loc"], from_file, overrides, owner or (layers[-1].path if layers else None))
        if e["type"] == "extra_forbidden":
            problem += _unknown_key_hint(e["loc"], overrides=where == " in the overrides")
        groups.setdefault(where, []).append(problem)
    return ConfigError("invalid config" + ";".join(f"{where}: {'; '.join(ps)}" for where, ps in groups.items()))


def _exponent_words_as_text(loaded: dict[str, Any], written: dict[tuple[str | int, ...], str]) -> dict[str, Any]:
    """``loaded`` with each text setting that the file wrote as an unquoted exponent number YAML 1.1 reads as a string
    (``api_key: 5e10``) set back to that text (in place; returned).

    Why: conrec reads YAML 1.2 exponent floats (``1e-4``), and its earlier releases wrote such strings unquoted to a
    run's ``config.yaml`` (and read them back as strings); refusing them as numbers in a text field left those run
    directories unloadable with ``-r``. A field that also takes a number keeps the number."""
    for loc, text in written.items():
        annotation = _annotation_at(loc)
        if annotation is None or not takes_text(annotation) or float in accepted_types(annotation):
            continue
        parent, key = (_key_at(loaded, loc[:-1]) if len(loc) > 1 else loaded), loc[-1]
        if isinstance(parent, dict) and isinstance(key, str) and isinstance(parent.get(key), float) and written_as_text_before(text):
            parent[key] = text
    return loaded


def _annotation_at(loc: tuple[str | int, ...]) -> Any:
    """The annotation of the setting at the key path ``loc`` (list items stepped over, as in ``grpo.stages.0``); None
    where that is not one field of the config's models (pure)."""
    model = _model_at(loc[:-1]) if loc and not isinstance(loc[-1], int) else None
    field = model.model_fields.get(str(loc[-1])) if model is not None else None
    return field.annotation if field is not None else None


def _as_written(error: Any, written: dict[tuple[str | int, ...], str], overrides: dict[str, Any] | None) -> Any:
    """A validation error whose text setting got a number, date or boolean, re-worded with the scalar as the file wrote
    it (:func:`conrec.config_base.text_problem`); other errors, or a value the overrides gave, as they are."""
    cause = (error.get("ctx") or {}).get("error")
    loc = tuple(error["loc"])
    if not isinstance(cause, TextValueError) or loc not in written or (overrides and _key_at(overrides, loc) is not _ABSENT):
        return error
    return {**error, "msg": f"Value error, {text_problem(cause.value, cause.annotation, written[loc])}"}


def _unknown_key_hint(loc: tuple[Any, ...], overrides: bool) -> str:
    """What to write instead of the unknown key at ``loc``: nested mappings for a dotted key (``data.split:`` in a file,
    as the reference spells keys, read as one unknown key), else the allowed keys at that level closest to it (pure).

    Why: pydantic says only "Extra inputs are not permitted", which for ``data.split`` read as if that valid key were
    refused, and for ``max_step`` did not point to ``max_steps``."""
    key = str(loc[-1])
    if "." in key:
        if overrides:
            return " (overrides are nested mappings, e.g. {'sft': {'train': {'max_steps': 5}}}, not dotted keys)"
        parts = key.split(".")
        nested = ": {".join(parts) + ": ..." + "}" * (len(parts) - 1)
        return f" (a dotted key is not a path in a file: write nested mappings, {nested}, or each key indented under the one before)"
    allowed = _keys_at(loc[:-1])
    close = difflib.get_close_matches(key, allowed, n=3, cutoff=0.6) if allowed else []
    return f" (did you mean {' or '.join(close)}?)" if close else ""


def _keys_at(loc: tuple[Any, ...]) -> list[str]:
    """The keys the config section at ``loc`` (a validation error's path) allows; [] where that is not one model
    (a list index is stepped over; a union of several models, or a path pydantic names by type, gives [])."""
    model = _model_at(loc)
    return list(model.model_fields) if model is not None else []


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The config model of the section at the key path ``loc`` (list indices stepped over); None where that is not
    one model (an unknown key, a plain setting, a union of several models)."""
    model: type[BaseModel] = PipelineConfig
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        inner = _nested_models(field.annotation) if field is not None else []
        if len(inner) != 1:
            return None
        model = inner[0]
    return model


def _nested_models(annotation: Any) -> list[type[BaseModel]]:
    """Pydantic model classes anywhere inside an annotation (``Model``, ``Model | None``, ``list[Model]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in get_args(annotation) for m in _nested_models(a)]


def _error_at(loc: tuple[str, ...], message: str, value: Any) -> ValidationError:
    """A validation error at ``loc``, for a check of the whole config that concerns one section: raised from a model
    validator, a plain ValueError is placed at the root, and the message said ``<root>``."""
    detail = InitErrorDetails(type=PydanticCustomError("value_error", "Value error, {why}", {"why": message}), loc=loc, input=value)
    return ValidationError.from_exception_data("PipelineConfig", [detail])


def validation_problem(error: Any) -> str:
    """One pydantic validation error as ``dotted.key: message`` (the form every config error takes)."""
    return f"{'.'.join(str(x) for x in error['loc']) or '<root>'}: {error['msg']}"


def _blame(loc: tuple[Any, ...], from_file: dict[str, Any], overrides: dict[str, Any] | None, path: Any) -> str:
    """Where a validation error's key came from, for its message. The overrides win the merge, so a value they
    set is theirs (a typo in ``overrides`` was reported as though the YAML file had it); a section-level refusal
    of a section both set (e.g. contradictory SFT settings, one from each) is the merge's, and said so."""
    in_file = path is not None and _key_at(from_file, loc) is not _ABSENT
    node = _key_at(overrides, loc) if overrides else _ABSENT
    if node is not _ABSENT and (not in_file or not isinstance(node, dict)):
        return " in the overrides"
    if path is None:
        return ""
    return f" in {path} with the overrides" if overrides and (node is not _ABSENT or not loc) else f" in {path}"


_ABSENT = object()


def _key_at(mapping: Any, loc: tuple[Any, ...]) -> Any:
    """The value at the key path ``loc`` of a validation error in the nested ``mapping``; :data:`_ABSENT` when it
    holds no such path (or ``loc`` is empty: an error of the whole config)."""
    node = mapping
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and -len(node) <= part < len(node):
            node = node[part]
        else:
            return _ABSENT
    return node if loc else _ABSENT


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML parse error in one line: its problem and where (line/column, 1-based). ``str(exc)`` is several
    lines (context, a quoted snippet, a caret), and errors in inputs and configs print one line."""
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    if problem is None:
        return " ".join(str(exc).split())
    context = getattr(exc, "context", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}" + (f" ({context})" if context else "")


PRESETS = ("demo", "full", "tiny", "smollm2", "gemma3")


def preset_path(name: str) -> Path:
    """Path of a configuration shipped with the package (``src/conrec/presets/<name>.yaml``)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return Path(str(resources.files("conrec") / "presets" / f"{name}.yaml"))


def resolve_config_path(path: str | Path | None, run_dir: str | Path | None, default_preset: str | None = None) -> Path | None:
    """Which YAML a command loads: ``path`` (a file, or ``preset:<name>``); else the run directory's
    own ``config.yaml`` (written by the pipeline, so a stage rerun alone uses the settings the run
    was made with); else ``default_preset``; else None (all defaults)."""
    if path is not None:
        text = str(path)
        return preset_path(text.split(":", 1)[1]) if text.startswith("preset:") else Path(path)
    rd = Path(run_dir) if run_dir is not None else PipelineConfig.model_fields["run_dir"].default
    if (rd / "config.yaml").exists():
        return rd / "config.yaml"
    return preset_path(default_preset) if default_preset else None


def _model_types(annotation: Any) -> list[type[BaseModel]]:
    """Pydantic model classes inside an annotation (``Model``, ``Model | None``)."""
    candidates = [annotation, *get_args(annotation)]
    return [a for a in candidates if isinstance(a, type) and issubclass(a, BaseModel)]


def _is_path(annotation: Any) -> bool:
    return annotation is Path or Path in get_args(annotation)


def input_path_keys(model: type[BaseModel] = PipelineConfig, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Dotted keys (as tuples) of every path setting that names an input, i.e. all but ``run_dir``."""
    keys: list[tuple[str, ...]] = []
    for name, field in model.model_fields.items():
        key = (*prefix, name)
        if key == ("run_dir",):
            continue
        if _is_path(field.annotation):
            keys.append(key)
        for sub in _model_types(field.annotation):
            keys.extend(input_path_keys(sub, key))
    return keys


def resolve_input_paths(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """A copy of a raw (unvalidated) config mapping with relative input paths joined to ``base``.

    ``~`` is expanded first; absolute paths, nulls and values of the wrong type are left alone
    (validation reports the latter).
    """
    out = copy.deepcopy(raw)
    for key in input_path_keys():
        node: Any = out
        for part in key[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or not isinstance(node.get(key[-1]), (str, Path)):
            continue
        value = Path(node[key[-1]]).expanduser()
        node[key[-1]] = str(value if value.is_absolute() else (base / value))
    return out


def dump_config(cfg: PipelineConfig) -> str:
    """The config as YAML that :func:`load_config` reads back to it (a run's ``config.yaml``, ``conrec config``)."""
    return dump_yaml(cfg.model_dump(mode="json"), sort_keys=False)


EFFECTIVE_CONFIG_HEADER = """\
# The effective configuration: every setting, with the defaults filled in, including those derived from other
# settings (on simulated data: eval.category.columns and eval.baselines; grpo.stages.max_pos_items from
# sft.prompt.max_pos_items). Here they are written out, so they no longer follow: edit one key of this file and
# what was derived from it stays as it is (a switch to data.source: simulator keeps the one facet column).
# To change settings, write only the keys you change, in a small file that starts from its preset:
# a top-level `base: preset:<name>`, then the changed keys (without `base`, a file starts from the library
# defaults, which are not a preset's recipe).
"""
"""What ``conrec config`` prints above the effective YAML (comments: the YAML reads back to the same config).

Why: the printed config freezes derived defaults, and a copy of it edited in one key was not the config the same edit
to the preset gives (GRPO showing more positives than SFT was trained with; simulated comparisons reading one facet)."""


def dump_effective_config(cfg: PipelineConfig) -> str:
    """``conrec config``'s output: :data:`EFFECTIVE_CONFIG_HEADER`, then the config's YAML (:func:`dump_config`)."""
    return EFFECTIVE_CONFIG_HEADER + dump_config(cfg)


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def config_reference(model: type[BaseModel] = PipelineConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, description) of every setting, nested sections flattened.

    Generated from the pydantic models, so the docs' reference (docs/configuration.md) cannot drift from the code.
    """
    rows: list[tuple[str, str, str]] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            rows.extend(config_reference(ann, key + "."))
            continue
        default = field.get_default(call_default_factory=True)
        # an optional section (``X | None``, e.g. sft.train.early_stopping): its own row, then its settings,
        # with the defaults they take once it is set (they were nowhere in the reference)
        optional = [a for a in typing.get_args(ann) if isinstance(a, type) and issubclass(a, BaseModel)]
        if default is None and len(optional) == 1 and type(None) in typing.get_args(ann):
            rows.append((key, "null", " ".join(filter(None, [field.description, f"(off unless set; its settings: {key}.*)"]))))
            rows.extend(config_reference(optional[0], key + "."))
            continue
        if isinstance(default, BaseModel):
            default = default.model_dump(mode="json")
        elif isinstance(default, list) and default and isinstance(default[0], BaseModel):
            default = [d.model_dump(mode="json") for d in default]
        rows.append((key, json.dumps(default, default=str), _with_choices(field.description or "", ann)))
    return rows


def _literal_choices(annotation: Any) -> tuple[str, list[Any]] | None:
    """("one of" or "each one of", the values) of a choice setting: ``Literal[...]``, ``Literal[...] | None`` or
    ``list[Literal[...]]``; None for any other annotation."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "one of", list(typing.get_args(annotation))
    if origin is list:
        inner = _literal_choices(next(iter(typing.get_args(annotation)), None))
        return ("each one of", inner[1]) if inner is not None and inner[0] == "one of" else None
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin is not None and len(args) == 1 and type(None) in typing.get_args(annotation):  # X | None
        return _literal_choices(args[0])
    return None


def _with_choices(description: str, annotation: Any) -> str:
    """A setting's description with its allowed values added when it is a choice whose description does not name
    them all (``data.source`` and ``sid.quantizer.kind`` had no word on what they accept)."""
    found = _literal_choices(annotation)
    if found is None:
        return description
    how, values = found
    words = [str(v) for v in values]
    if description and all(re.search(rf"(?<![\w-]){re.escape(w)}(?![\w-])", description) for w in words):
        return description
    listed = f"{how}: {', '.join(words)}"
    return f"{description} ({listed})" if description else listed


def config_reference_markdown(escape_html: bool = True) -> str:
    """The reference as a Markdown table (docs/configuration.md). ``escape_html``: ``<`` as ``&lt;`` so that a
    Markdown renderer does not read ``<name>`` as a tag; off for a terminal, where it showed as ``&lt;``."""
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for key, default, desc in config_reference():
        desc = desc.replace("|", "/")
        lines.append(f"| `{key}` | `{default}` | {desc.replace('<', '&lt;') if escape_html else desc} |")
    return "\n".join(lines)
