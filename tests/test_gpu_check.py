"""The prepared GPU check: its payload survives chunking and is verified, and its dry run produces the full table on CPU."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = mod  # dataclasses resolve their module by name
    spec.loader.exec_module(mod)
    return mod


gc = _module()


def _files(tmp_path: Path) -> dict[str, Path]:
    src = tmp_path / "src"
    src.mkdir()
    sizes = {"gguf/model.gguf": 2500, "wheels/a.whl": 700, "run/data/x.parquet": 10, "run/sid/empty.json": 0}
    out = {}
    for i, (name, size) in enumerate(sizes.items()):
        p = src / f"f{i}"
        p.write_bytes(bytes((i * 7 + j) % 251 for j in range(size)))
        out[name] = p
    return out


def test_payload_is_cut_into_chunks_no_larger_than_the_limit_and_rebuilt_exactly(tmp_path):
    files = _files(tmp_path)
    manifest = gc.pack(files, tmp_path / "payload", chunk_bytes=1000)
    chunks = sorted(d for d in (tmp_path / "payload").iterdir() if d.name.isdigit())
    assert len(chunks) == manifest["chunks"] == math.ceil(3210 / 1000)
    for d in chunks:
        pieces = [f for f in d.iterdir() if f.name != gc.MANIFEST]
        assert sum(f.stat().st_size for f in pieces) <= 1000
        assert all("/" not in f.name for f in pieces)
    assert (chunks[-1] / gc.MANIFEST).exists()  # the manifest travels with the last chunk
    staging = tmp_path / "staging"
    for d in chunks:
        gc.unpack(d, staging)
    rebuilt = gc.assemble(staging, tmp_path / "dest")
    assert set(rebuilt) == set(files)
    for name, src in files.items():
        assert rebuilt[name].read_bytes() == src.read_bytes()


def test_a_missing_or_damaged_chunk_stops_the_check_with_its_name(tmp_path):
    files = _files(tmp_path)
    gc.pack(files, tmp_path / "payload", chunk_bytes=1000)
    chunks = sorted(d for d in (tmp_path / "payload").iterdir() if d.name.isdigit())
    staging = tmp_path / "staging"
    with pytest.raises(SystemExit, match="unpack every chunk"):
        gc.assemble(staging, tmp_path / "dest")
    gc.unpack(chunks[-1], staging)  # only the last one (with the manifest) arrived
    with pytest.raises(SystemExit, match="was never unpacked"):
        gc.assemble(staging, tmp_path / "dest")
    for d in chunks[:-1]:
        gc.unpack(d, staging)
    piece = next(p for p in staging.iterdir() if p.name.startswith("gguf__model.gguf.part"))
    piece.write_bytes(b"x" + piece.read_bytes()[1:])
    with pytest.raises(SystemExit, match="gguf/model.gguf does not match its SHA-256"):
        gc.assemble(staging, tmp_path / "dest")


def test_both_models_of_the_check_share_data_sid_and_points_and_differ_only_in_the_backbone(tmp_path):
    from conrec.stages import stage_fingerprint

    for plan in (gc.GPU_PLAN, gc.DRY_PLAN):
        for split in gc.SPLITS:
            cfgs = gc.check_configs(tmp_path, plan, split)
            lm, small = cfgs["smollm2"], cfgs["small"]
            assert stage_fingerprint(lm, "sid") == stage_fingerprint(small, "sid")
            assert lm.eval.max_samples == small.eval.max_samples == plan.eval_points
            assert lm.eval.split == lm.data.split.train_until == split and lm.data.split.protocol == "per_user"
            assert lm.sft.prompt == small.sft.prompt and lm.sft.tasks == small.sft.tasks and lm.decode == small.decode
            # only the valid run measures the curve (valid points are after its training events)
            assert (lm.sft.train.early_stopping is not None) == (split == "valid")
    valid = gc.check_configs(tmp_path, gc.GPU_PLAN, "valid")
    assert valid["smollm2"].sft.model.backbone == "smollm2" and valid["smollm2"].sft.model.tiny is None
    assert valid["smollm2"].sft.model.sid_init == "title" and valid["small"].sft.model.tiny is not None
    assert valid["smollm2"].sft.prompt.variant == "neg_timeline" and valid["smollm2"].sft.tasks.timeline > 0
    with pytest.raises(ValueError, match="split must be one of"):
        gc.check_configs(tmp_path, gc.GPU_PLAN, "train")


def test_the_test_run_trains_for_the_epochs_the_valid_curve_chose(tmp_path):
    stats = {"n_examples": 1400, "steps": 700, "early_stopping": {"best_step": 528}}
    assert gc.chosen_epochs(stats, 16) == 6.0  # 88 steps per epoch
    assert gc.chosen_epochs({**stats, "early_stopping": {"best_step": 0}}, 16) == round(700 / 88, 2)
    lm = gc.test_config(tmp_path, gc.GPU_PLAN, 6.0)
    assert lm.sft.train.epochs == 6.0 and lm.sft.train.early_stopping is None and lm.data.split.train_until == "test"


def test_smollm2_overrides_reach_both_of_its_runs_and_not_the_small_model(tmp_path):
    import dataclasses

    plan = dataclasses.replace(gc.GPU_PLAN, lm_train={"dropout": 0.0, "learning_rate": 1e-4})
    valid = gc.check_configs(tmp_path, plan, "valid")
    assert valid["smollm2"].sft.train.dropout == 0.0 and valid["smollm2"].sft.train.learning_rate == 1e-4
    assert valid["small"].sft.train.dropout == 0.2 and valid["small"].sft.train.learning_rate == 2e-3
    assert gc.test_config(tmp_path, plan, 3.0).sft.train.dropout == 0.0


@pytest.mark.slow
def test_the_dry_run_goes_from_prepare_to_the_full_table_on_cpu(tmp_path, capsys):
    payload, staging, dest, out = (tmp_path / n for n in ("payload", "staging", "dest", "out"))
    gc.main(["prepare", "--dry-run", "--payload", str(payload), "--chunk-mib", "1"])
    for d in sorted(p for p in payload.iterdir() if p.name.isdigit()):
        gc.main(["unpack", str(d), "--staging", str(staging)])
    gc.main(["assemble", "--staging", str(staging), "--dest", str(dest)])
    capsys.readouterr()
    gc.main(["run", "--dry-run", "--work", str(dest), "--out", str(out), "--lm-train", '{"dropout": 0.1}'])
    # the printed table (what the device log keeps) names the overrides as the file does
    assert 'overrides: {"dropout": 0.1}' in " ".join(capsys.readouterr().out.split())
    table = (out / "gpu_check.md").read_text()
    assert "DRY RUN" in table and "per-user protocol" in table
    rows = [line.split(" | ") for line in table.splitlines() if line.startswith("| ") and not line.startswith("| stage |")]
    assert [r[0].strip("| ") for r in rows] == ["SFT, valid run", "eval, valid", "SFT, test run", "eval, test", "SFT, valid run", "eval, valid"]
    for sft in (rows[0], rows[2], rows[4]):
        assert int(sft[2]) > 0 and float(sft[3]) > 0 and float(sft[4]) > 0
    assert "curve points" in rows[0][-1] and "epochs (kept)" in rows[0][-1]
    for r in (rows[1], rows[3], rows[5]):
        assert 0.0 <= float(r[7].split(" [")[0]) <= 1.0  # FHR of every scored model
    for run in ("valid_smollm2", "test_smollm2", "valid_small"):  # what comes back for the paired differences
        assert {p.name for p in (out / run).iterdir()} == {"stats.json", "metrics.json", "sft.parquet"}
