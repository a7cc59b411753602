"""Stale messages of runs recorded before conrec had some of today's settings (RunDir.stale_reason)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import conrec.pipeline as pipeline
from conrec.config import config_reference, load_config
from conrec.config_yaml import load_yaml
from conrec.runs import MAX_CHANGES_SHOWN, STAGES, RunDir
from conrec.stages import ADDED_SETTINGS, EXECUTION_SETTINGS, fingerprint_sections, fixes_text, stage_hash

OLD_RUN = Path(__file__).with_name("data") / "run_made_2026_12_05"


def added_since(stage: str) -> list[str]:
    """The settings ``stage``'s fingerprint hashes today that the fixture run's config.yaml lacks (the first missing
    key: a section added whole is one), in the order its stale message names them, less those registered in
    ADDED_SETTINGS (left out of fingerprints at their neutral value): what that message calls added since.

    Derived, not typed: the list was typed here, and a setting a contributor added and listed in
    tests/fingerprinted_settings.txt (every existing run reruns) failed these tests with a bare string diff (found by
    a contributor probe, 7 December 2026). Such a setting is named here, as the message names it, with no edit."""
    written = load_yaml((OLD_RUN / "config.yaml").read_text(encoding="utf-8"))
    keys = [k for k, _, _ in config_reference() if k not in EXECUTION_SETTINGS]
    added: dict[str, None] = {}
    for section in fingerprint_sections(stage):
        for key in (k for k in keys if k == section or k.startswith(section + ".")):
            parts = key.split(".")
            if any(".".join(parts[:n]) in ADDED_SETTINGS for n in range(1, len(parts) + 1)):
                continue
            node: Any = written
            for n, part in enumerate(parts, 1):
                if not isinstance(node, dict):  # inside a setting the run had (an optional section left null)
                    break
                if part not in node:
                    added[".".join(parts[:n])] = None
                    break
                node = node[part]
    return list(added)


def added_note(stage: str) -> str:
    """The part of ``stage``'s stale message that names the settings :func:`added_since` finds."""
    added = added_since(stage)
    more = f" and {len(added) - MAX_CHANGES_SHOWN} more" if len(added) > MAX_CHANGES_SHOWN else ""
    return f"settings added since ({', '.join(added[:MAX_CHANGES_SHOWN])}{more}) are at their defaults, and no setting it was made with has changed"


DATA_ADDED = added_note("data")


def test_the_settings_added_since_the_fixture_run_are_derived() -> None:
    """The fixture run predates data.feedback_labels, data.ts_format and eval.facet_rule: :func:`added_since` finds
    them, with nothing else but a setting added later and listed in tests/fingerprinted_settings.txt (not registered
    in ADDED_SETTINGS: the stale message names it too, and this test needs no edit for it)."""
    listing = Path(__file__).with_name("fingerprinted_settings.txt").read_text(encoding="utf-8").splitlines()
    listed = {line.strip() for line in listing if line.strip() and not line.startswith("#")}
    for stage in STAGES:
        found = added_since(stage)
        known = {"data.feedback_labels", "data.ts_format", *(["eval.facet_rule"] if stage == "eval" else [])}
        later = [s for s in found if s not in known]
        assert known <= set(found) and len(found) == len(set(found)), (stage, found)
        assert all(any(k == s or k.startswith(s + ".") for k in listed) for s in later), (stage, later)


def _old_run(tmp_path: Path, **overrides: Any) -> tuple[RunDir, Any]:
    """A copy of the records conrec made at 3dba695 (tests/data/run_made_2026_12_05), and its own config.yaml as
    today's conrec loads it, with ``overrides``."""
    root = tmp_path / "old"
    shutil.copytree(OLD_RUN, root)
    return RunDir(root), load_config(root / "config.yaml", {"run_dir": str(root), **overrides})


def test_a_run_made_before_settings_were_added_is_stale_for_its_fixes_not_a_configuration(tmp_path: Path, fake_stages: list[str]) -> None:
    """Found by a compatibility probe (7 December 2026): a run made on 5 December, opened with its own config.yaml,
    was stale for every command "made with a different configuration (data changed)" (eval: "data, eval changed"),
    since data.feedback_labels, data.ts_format and eval.facet_rule were added after it; the fixes it is stale for
    (stage revisions) were never said. It stays stale (every stage reruns), with those fixes and the added settings."""
    run, cfg = _old_run(tmp_path)
    data_fixes = fixes_text("data", [1])  # a simulator run: revision 2 (float ids) does not concern it
    assert run.stale_reason(cfg, "data") == (
        f"made by an older conrec whose data stage has been fixed since ({data_fixes}); {DATA_ADDED}; rerun it"
    )
    assert run.stale_reason(cfg, "sid") == (
        f"built on a data stage that an older conrec made, and that stage has been fixed since ({data_fixes}); {added_note('sid')}; rerun it"
    )
    for stage in ("sft", "grpo"):  # and the SFT fix that changed the models (upgrade probe, 8 December 2026)
        assert run.stale_reason(cfg, stage) == (
            f"made by an older conrec whose data and sft stages have been fixed since (data: {data_fixes}; sft: "
            f"{fixes_text('sft', [1])}); {added_note(stage)}; rerun it"
        )
    why = run.stale_reason(cfg, "eval") or ""
    assert added_note("eval") in why
    assert all("different configuration" not in (run.stale_reason(cfg, s) or "") for s in STAGES)
    assert run.model_problem(cfg, "grpo") is not None  # never served
    pipeline.run_pipeline(cfg)
    assert fake_stages == list(STAGES)


def test_a_change_on_a_run_made_before_settings_were_added_is_named_as_one(tmp_path: Path) -> None:
    """On the same run, a setting it had that is changed since is named with both values, the added settings left
    out of the line; an added setting at another value than its default is a change too."""
    run, cfg = _old_run(tmp_path, data={"simulator": {"n_users": 90}})
    assert run.stale_reason(cfg, "data") == "made with a different configuration (data.simulator.n_users: 80 -> 90)"
    assert run.stale_reason(cfg, "eval") == "made with a different configuration (data.simulator.n_users: 80 -> 90)"
    run, cfg = _old_run(tmp_path / "b", eval={"seed": 3})
    assert run.stale_reason(cfg, "eval") == "made with a different configuration (eval.seed: 0 -> 3)"
    assert (run.stale_reason(cfg, "data") or "").endswith(f"; {DATA_ADDED}; rerun it")
    run, cfg = _old_run(tmp_path / "c", eval={"facet_rule": {"prior": 2.0}})
    assert (run.stale_reason(cfg, "eval") or "").startswith("made with a different configuration (eval.facet_rule: unset -> {")


def test_a_setting_added_since_alone_is_said_without_a_fix(tmp_path: Path) -> None:
    """Where no fix applies (the record at today's revision), the settings added since are the whole message."""
    run, cfg = _old_run(tmp_path)
    path = run.stage_dir("data") / "_fingerprint.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "revision": 2}))  # global-time data: revision 2 today
    assert run.stale_reason(cfg, "data") == f"made by an older conrec: {DATA_ADDED}; rerun it"


def test_a_record_holding_its_settings_names_a_setting_added_since(tmp_path: Path, fake_stages: list[str]) -> None:
    """A record that holds its settings (since 6 December 2026), made before a setting was added (here
    sft.train.dropout plays it): the setting at its default is added since, at another value a change."""
    cfg = load_config(None, {"run_dir": str(tmp_path / "run")})
    pipeline.run_pipeline(cfg)
    run = RunDir(cfg.run_dir)
    path = run.stage_dir("sft") / "_fingerprint.json"
    rec = json.loads(path.read_text())
    del rec["settings"]["sft"]["train"]["dropout"]  # as the conrec without the field recorded it
    rec["sections"]["sft"], rec["fingerprint"] = stage_hash(rec["settings"]["sft"]), "0" * 16
    path.write_text(json.dumps(rec))
    added = "settings added since (sft.train.dropout) are at their defaults, and no setting it was made with has changed"
    assert run.stale_reason(cfg, "sft") == f"made by an older conrec: {added}; rerun it"
    dropout = load_config(None, {"run_dir": str(tmp_path / "run"), "sft": {"train": {"dropout": 0.1}}})
    assert run.stale_reason(dropout, "sft") == "made with a different configuration (sft.train.dropout: unset -> 0.1)"
    # the record's section is not the config's without it (another setting differs under the same hash): not claimed
    rec["sections"]["sft"] = "f" * 16
    path.write_text(json.dumps(rec))
    assert run.stale_reason(cfg, "sft") == "made with a different configuration (sft changed)"
