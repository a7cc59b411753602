"""``conrec init EVENTS [--items ITEMS]``: write a commented config for your own data.

The data section comes from :mod:`conrec.data.guess` (each guessed line carries its reason as a
comment); every other section is copied from a preset (``--preset``, default ``demo``), so the
file runs as it is and shows where to change the model or the training length. The file is
validated by loading it back before it is written (atomically), so ``conrec init`` never leaves a
config that ``conrec data`` would refuse for its own syntax.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from conrec.config import load_config, preset_path
from conrec.config_yaml import dump_yaml, load_yaml
from conrec.data.guess import Guess, guess, id_overlap_warning, read_sample
from conrec.errors import ConfigError
from conrec.io import check_output_file, write_text


def _rel(path: Path, base: Path) -> str:
    """``path`` relative to the config's directory (configs resolve input paths against it)."""
    try:
        return os.path.relpath(path.absolute(), base.absolute())
    except ValueError:  # another drive on Windows
        return str(path.absolute())


def _q(value: Any) -> str:
    """One YAML scalar (quoted when YAML would read it as something else); non-ASCII text as itself
    (``用户ID``, ``gefällt_mir``), not as ``"\\u7528..."`` escapes nobody can read or edit."""
    return dump_yaml(value, default_flow_style=True, allow_unicode=True).strip().removesuffix("...").strip()


def _preset_rest(name: str) -> tuple[str, dict[str, Any]]:
    """The preset's text without its ``run_dir`` and ``data`` blocks (comments kept), and its data section."""
    text = preset_path(name).read_text()
    data = (load_yaml(text) or {}).get("data", {}) or {}
    kept: list[str] = []
    skipping = False
    for line in text.splitlines():
        top = line[:1] not in ("", " ", "#")
        if top:
            skipping = line.split(":", 1)[0] in ("run_dir", "data")
        if not skipping and not (line.startswith("#") and not kept):
            kept.append(line)
    return "\n".join(kept).strip() + "\n", {k: v for k, v in data.items() if k in ("split", "on_invalid")}


def _label_reason(label: str, value: int, unknown: list[str]) -> str:
    if label in unknown:
        return "not a known feedback word: neutral, dropped; set -1 or 1 if it is a dislike or a positive"
    return {-1: "a usual word for a dislike", 1: "a usual word for a positive", 0: "a usual word for no reaction: neutral, dropped"}[value]


def render(g: Guess, events: Path, items: Path | None, out: Path, run_dir: str, preset: str, command: str) -> str:
    """The config's text: a commented data section, then the preset's other sections."""
    base = out.parent
    rest, preset_data = _preset_rest(preset)
    lines = [
        f"# Written by `{command}`.",
        "# The data section was guessed from the files' header and first rows (the rating scale or feedback labels from",
        "# the whole column); each guess says why.",
        f"# Check it, then: conrec data -c {out.name}   (load, repair, split; prints what was dropped)",
        f"#                conrec demo -c {out.name}   (every stage, then the results table)",
        f"run_dir: {_q(run_dir)}",
        "data:",
        "  source: table",
        f"  events_path: {_q(_rel(events, base))}",
    ]
    if items is not None:
        lines.append(f"  items_path: {_q(_rel(items, base))}")
    if g.items_warning:
        lines.append(f"  # WARNING: {g.items_warning}")
    if g.ids_warning:
        lines.append(f"  # WARNING: {g.ids_warning}")
    if g.extra_text:
        current = load_config(preset_path(preset)).sid.encoder.text_fields  # what the preset embeds now
        fields = ", ".join(_q(c) for c in [*current, *g.extra_text])
        lines.append(f"  # the items file's other text column(s) {g.extra_text} are kept but not embedded; to build the SIDs from them "
                     f"too, set sid: {{encoder: {{text_fields: [{fields}]}}}}")
    mapping = g.columns()
    reasons = {c.column: c.reason for c in [*g.items.values(), *g.events.values()]}  # the events reason wins
    if mapping:
        lines.append("  columns:  # source column -> canonical column")
        lines += [f"    {_q(src)}: {dst}  # {reasons[src]}" for src, dst in mapping.items()]
    else:
        lines.append("  columns: {}  # every column already has its canonical name")
    same = dict.fromkeys(c.column for c in [*g.events.values(), *g.items.values()] if c.column == c.role)
    lines += [f"  # {col}: already canonical" for col in same]
    if g.rating_range is not None:
        lines += [
            f"  # {g.rating_reason}",
            *([f"  # WARNING: {g.rating_warning}"] if g.rating_warning else []),
            *([f"  # WARNING: {g.outlier_warning}"] if g.outlier_warning else []),
            *([f"  # hint: {g.scale_hint}"] if g.scale_hint else []),
            f"  dislike_max_rating: {g.dislike_max_rating:g}",
            f"  like_min_rating: {g.like_min_rating:g}",
            f"  rating_range: [{g.rating_range[0]:g}, {g.rating_range[1]:g}]  # ratings outside it are invalid rows",
        ]
    elif "feedback" in g.events:
        lines.append(f"  # {g.events['feedback'].reason}")
        if g.feedback_warning:
            lines.append(f"  # WARNING: {g.feedback_warning}")
    if g.feedback_labels is not None:
        if g.labels_warning:
            lines.append(f"  # WARNING: {g.labels_warning}")
        if g.labels_reason:
            lines.append(f"  # {g.labels_reason}")
        lines.append(f"  feedback_labels:  # each value of {g.events['feedback'].column!r}: -1 dislike, 1 positive, 0 neutral (dropped)")
        lines += [
            f"    {_q(label)}: {value}" + ("" if g.labels_reason else f"  # {_label_reason(label, value, g.labels_unknown)}")
            for label, value in g.feedback_labels.items()
        ]
    lines.append(f"  ts_unit: {g.ts_unit}  # {g.ts_reason}")
    if g.ts_format is not None:
        lines.append(f"  ts_format: {_q(g.ts_format)}  # the layout every date/time of the file is read with")
    lines.append("  on_invalid: drop  # bad rows are dropped with counts (see data/stats.json); `error` stops at the first")
    for key, value in preset_data.items():
        lines.append(f"  {key}: {_q(value)}")
    lines += ["", f"# Everything below is preset:{preset} (model, training length, decoding, evaluation).", rest]
    return "\n".join(lines)


def init_config(
    events: Path,
    items: Path | None,
    out: Path,
    given: dict[str, str] | None = None,
    preset: str = "demo",
    run_dir: str | None = None,
    force: bool = False,
    command: str = "conrec init",
    ts_format: str | None = None,
) -> tuple[Path, Guess]:
    """Guess, render, validate and write the config; returns its path and the guess (for printing)."""
    check_output_file(out, "--out", example="my.yaml")  # a directory was replaced by the config, contents and all (with --force)
    if out.exists() and not force:
        raise ConfigError(f"{out} exists; pass --force to overwrite it, or --out another file")
    sample_events = read_sample(events, "events")
    sample_items = read_sample(items, "items") if items is not None else None
    g = guess(sample_events, sample_items, given, ts_format, whole_column=lambda c: read_sample(events, "events", None, [c])[c])
    if items is not None:  # the whole items file's ids: a catalogue's first rows need not be the items of the first events
        all_items = read_sample(items, "items", n_rows=None)
        column = g.events["item_id"].column  # the whole column's '.0' verdict, as the data stage reads it
        whole = read_sample(events, "events", None, [column])[column]
        g.items_warning = id_overlap_warning(sample_events[column], all_items[g.items["item_id"].column], whole)
    text = render(g, events, items, out, run_dir or f"runs/{out.stem}", preset, command)
    tmp = out.parent / f".{out.name}.check.yaml"
    try:
        write_text(text, tmp)
        load_config(tmp)  # a config init writes must load
    finally:
        tmp.unlink(missing_ok=True)
    write_text(text, out)
    return out, g


def summary_lines(g: Guess) -> list[str]:
    """What was guessed and why, one line per role, for the terminal."""
    lines = [f"{c.role:>9} <- {c.column!r}: {c.reason}" for c in g.events.values()]
    if g.ids_warning:
        lines.append(f"{'warning':>9}: {g.ids_warning}")
    lines.append(f"{'time unit':>9}: {g.ts_unit} ({g.ts_reason})")
    if g.rating_range is not None:
        lines.append(f"{'threshold':>9}: {g.rating_reason}")
        lines += [f"{'warning':>9}: {w}" for w in (g.rating_warning, g.outlier_warning) if w]
        lines += [f"{'hint':>9}: {g.scale_hint}"] if g.scale_hint else []
    if g.labels_reason:
        lines.append(f"{'labels':>9}: {g.labels_reason}")
    elif g.feedback_labels is not None:
        by = {v: [k for k, x in g.feedback_labels.items() if x == v and k not in g.labels_unknown] for v in (-1, 1)}
        lines.append(f"{'labels':>9}: dislike {by[-1]}, positive {by[1]}"
                     + (f", not recognised (neutral, dropped: check them) {g.labels_unknown}" if g.labels_unknown else ""))
    lines += [f"{'warning':>9}: {w}" for w in (g.labels_warning, g.feedback_warning) if w]
    lines += [f"{c.role:>9} <- {c.column!r}: {c.reason} (items file)" for c in g.items.values()
              if c.role != "item_id" or c.column != g.events["item_id"].column]  # the items' id, where it is named otherwise
    if g.items_warning:
        lines.append(f"{'warning':>9}: {g.items_warning}")
    if g.extra_text:
        lines.append(f"{'text':>9}: the items file's {g.extra_text} are not in the SIDs' text; the file says how to add them")
    return lines
