"""Where a run's ``config.yaml`` was written, so that a copied or moved project's run reads the copy's input files.

Why: the pipeline writes the run's config.yaml with absolute input paths (:func:`conrec.config.load_config` makes them
so, to work from any current directory). A project copied with ``cp -a proj proj3`` and opened with
``-r proj3/runs/my`` then read, and compared its finished stages against, ``proj/events.csv``: an edited copy was
served as current, while ``-c proj3/small.yaml`` compared the copy's file and refused. The config.yaml now starts with
the run directory it was written in (:data:`HOME_LINE`); opened from another place, each input path is looked for at
the same place relative to the run (``../../events.csv``) and read from there where that file exists and the named one
is gone or holds the same bytes; where both exist and differ, the user chooses (:func:`follow_copy` refuses). Only
the CLI's ``-r`` does this: a library caller reads the paths of the config it passes.
"""

from __future__ import annotations

import filecmp
import json
import os
import shlex
from pathlib import Path
from typing import Any

import yaml

from conrec.config import PipelineConfig, dump_config, input_path_keys
from conrec.errors import ConfigError

HOME_LINE = "# written in the run directory "
"""The first line of a run's config.yaml, then the run directory's absolute path as a JSON string (one line whatever
the path holds). A comment: :func:`conrec.config.load_config` reads the settings alone, as it did before."""

_HOME_NOTE = (
    "# (opened from another directory, e.g. a copy of its project, each input path below is read from the same place\n"
    "# relative to the run there, where that file exists; its content is then compared with what the run was made from)\n"
)


def run_config_text(cfg: PipelineConfig, root: Path) -> str:
    """The text of the run's ``config.yaml`` for the run in ``root``: :data:`HOME_LINE` and the config's YAML."""
    home = json.dumps(str(Path(root).resolve()), ensure_ascii=False)
    return f"{HOME_LINE}{home}\n{_HOME_NOTE}{dump_config(cfg)}"


def written_in(record: Path) -> Path | None:
    """The run directory ``record`` (a run's config.yaml) says it was written in; None for a file without the line
    (another config, or a run's written by an older conrec)."""
    try:
        with open(record, encoding="utf-8") as fh:
            first = fh.readline()
    except (OSError, UnicodeDecodeError):
        return None
    if not first.startswith(HOME_LINE):
        return None
    try:
        home = json.loads(first[len(HOME_LINE):])
    except ValueError:
        return None
    return Path(home) if isinstance(home, str) and home else None


def _older_home(record: Path, inputs: list[Path]) -> Path | None:
    """Where a run whose config.yaml has no :data:`HOME_LINE` (an older conrec's) was made, when that can be told: an
    absolute ``run_dir`` in it; else the nearest directory above one of its input files under which its relative
    ``run_dir`` is a run directory (the original, beside the file it read). None when that is the run itself, or none
    is found (the original is gone: nothing to confuse the copy with)."""
    try:
        raw = yaml.safe_load(record.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    run_dir = raw.get("run_dir") if isinstance(raw, dict) else None
    if not isinstance(run_dir, str) or not run_dir:
        return None
    if Path(run_dir).expanduser().is_absolute():
        return Path(run_dir).expanduser().resolve()
    here = record.parent.resolve()
    for path in inputs:
        for above in path.parents:
            if above == above.parent:  # the filesystem root: not a project
                break
            if (above / run_dir / "config.yaml").is_file():
                return None if (above / run_dir).resolve() == here else (above / run_dir).resolve()
    return None


def _input_paths(cfg: PipelineConfig) -> dict[tuple[str, ...], Path]:
    """The config's set input paths, by key (:func:`conrec.config.input_path_keys`)."""
    out: dict[tuple[str, ...], Path] = {}
    for key in input_path_keys():
        node: Any = cfg
        for part in key:
            node = getattr(node, part, None)
        if isinstance(node, Path):
            out[key] = node
    return out


def _same_content(a: Path, b: Path) -> bool:
    """Whether two existing files (or directories, file by file) hold the same bytes."""
    if a.is_file() and b.is_file():
        return filecmp.cmp(a, b, shallow=False)
    if a.is_dir() and b.is_dir():
        files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
        files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
        return files_a == files_b and all(filecmp.cmp(a / f, b / f, shallow=False) for f in files_a)
    return False


def follow_copy(cfg: PipelineConfig, record: Path) -> PipelineConfig:
    """``cfg`` (loaded from ``record``, the config.yaml of the run it addresses) with each input path that lay under
    the directory the run was made in read from the same relative place under the run's directory now, where that
    file exists and either the named file is gone (a moved project) or holds the same bytes (a copied project, not
    yet edited). Paths that share only the filesystem root with the run's old place (a shared data directory) are
    kept, and so is each whose counterpart does not exist (a run copied alone, without its project).

    Where both files exist and differ, this cannot tell an edited copy of the project from a run copied alone into
    another project's folder (a review of 7 December 2026: such a run silently read the other project's events and was
    then stale), so it refuses with a :class:`ConfigError` naming both paths and how to choose."""
    now = record.parent.resolve()
    inputs = _input_paths(cfg)
    made = written_in(record) or _older_home(record, list(inputs.values()))
    if made is None or made == now:
        return cfg
    moved: dict[tuple[str, ...], str] = {}
    for key, path in inputs.items():
        real = path.resolve()  # compared as the run's directories are (a project reached through a symlink)
        if Path(os.path.commonpath([real, made])) == Path(made.anchor):
            continue  # only the root in common: not part of the run's project
        there = Path(os.path.normpath(now / os.path.relpath(real, made)))
        if there == real or not there.exists():
            continue
        if real.exists() and not _same_content(real, there):
            raise ConfigError(
                f"{'.'.join(key)}: the run's {record} names {path}, and {there} at the same place beside this copy of "
                f"the run holds other content: to use the copy's files pass -c with that project's config (and -r "
                f"{shlex.quote(str(record.parent))}); to keep the named file, set the path in {record}"
            )
        moved[key] = str(there)
    if not moved:
        return cfg
    data = cfg.model_dump(mode="json")
    for key, value in moved.items():
        node = data
        for part in key[:-1]:
            node = node[part]
        node[key[-1]] = value
    return PipelineConfig.model_validate(data)


def missing_inputs(cfg: PipelineConfig) -> list[Path]:
    """The config's input paths that do not exist (a project moved away from the run's config.yaml's paths)."""
    return [path for path in _input_paths(cfg).values() if not path.exists()]
