"""One history format for the CLI, the Python API and the server (issue 14), checked before any model loads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conrec.config import load_config
from conrec.errors import ConfigError, DataValidationError, StageInputError
from conrec.history import events_from_lists, parse_history, read_history_json
from conrec.llm.inference.predict_request import check_predict_request
from conrec.runs import RunDir
from conrec.serve.schemas import DislikeRequest
from conrec.sid.sid_map import SidMap

from builders import record_current, tiny_policy

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "history.json"


@pytest.mark.parametrize(
    "body",
    [
        {"negative": ["a", "b"], "positive": ["c"]},
        {"neg": ["a", "b"], "pos": ["c"]},
        {"negative": ["a", "b"], "pos": ["c"]},
        {"history": [{"item_id": "c", "feedback": 1}, {"item_id": "a", "feedback": -1}, {"item_id": "b", "feedback": -1}]},
    ],
)
def test_cli_api_and_server_read_a_body_the_same_way(body: dict) -> None:
    want = (["c", "a", "b"], [1, -1, -1])
    assert parse_history(body) == want
    assert DislikeRequest.model_validate(body).events() == want


@pytest.mark.parametrize("body", [{"negative": [""]}, {"positive": ["a", ""]}, {"history": [{"item_id": "", "feedback": -1}]}])
def test_an_empty_item_id_is_refused_in_every_form_by_the_cli_and_the_server(body: dict) -> None:
    """`{"negative": [""]}` was a history with the item id "" while the `history` form refused it."""
    with pytest.raises(DataValidationError):
        parse_history(body)
    with pytest.raises(ValueError, match="an item id must not be empty"):  # one rule, one message in every form
        DislikeRequest.model_validate(body)


def test_a_slate_with_an_empty_or_repeated_candidate_is_refused_by_the_server() -> None:
    """Review: an empty candidate id was scored as an unknown item; repeats are found in one pass (the batch-row check
    counted each id's occurrences anew, quadratic in the slate)."""
    from conrec.history import repeated_ids
    from conrec.serve.schemas import ScoreRequest

    with pytest.raises(ValueError, match="an item id must not be empty"):
        ScoreRequest.model_validate({"negative": ["a"], "candidates": ["b", ""]})
    with pytest.raises(ValueError, match=r"candidates repeat item id\(s\) \['b'\]"):
        ScoreRequest.model_validate({"negative": ["a"], "candidates": ["b", "c", "b"]})
    assert repeated_ids(["x", "y", "x", "z", "y", "x"]) == ["x", "y"] and repeated_ids([]) == []


def test_lists_put_positives_first_and_dislikes_last_in_their_order() -> None:
    assert events_from_lists(["n1", "n2"], ["p1"]) == (["p1", "n1", "n2"], [1, -1, -1])


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ({}, "no history"),
        ({"negative": [], "positive": []}, "empty"),
        ({"negatives": ["a"]}, "negatives"),
        ({"negative": ["a"], "history": [{"item_id": "b", "feedback": 1}]}, "not both"),
        ({"history": [{"item_id": "b", "feedback": 0}]}, "feedback"),
        ({"items": ["a"], "feedback": [-1]}, "no longer accepted"),
        (["a"], "expected"),
        ({"negative": [""]}, r"negative\.0: Value error, an item id must not be empty"),  # as history's item_id: it was accepted
        ({"negative": ["a"], "pos": [""]}, r"pos\.0: Value error, an item id must not be empty"),
        ({"history": [{"item_id": "", "feedback": 1}]}, r"history\.0\.item_id: Value error, an item id must not be empty"),
    ],
)
def test_bad_bodies_are_named(body, match: str) -> None:
    with pytest.raises(DataValidationError, match=match):
        parse_history(body, source="h.json")


def test_the_committed_example_is_a_valid_history_and_server_body() -> None:
    obj = json.loads(EXAMPLE.read_text())
    hist = read_history_json(EXAMPLE)
    assert hist[0] and set(hist[1]) == {-1, 1}
    assert DislikeRequest.model_validate(obj).events() == hist


def test_readme_documents_the_format_with_the_example_file() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "examples/history.json" in readme
    assert json.dumps(json.loads(EXAMPLE.read_text())) in readme  # the README shows the file's content


def test_a_saved_dislikes_body_reads_as_its_history(tmp_path: Path) -> None:
    """The docs' "one format everywhere": a saved POST /v1/dislikes body was refused ("Extra inputs are not permitted")."""
    body = tmp_path / "body.json"
    body.write_text(json.dumps({"negative": ["1", "50"], "positive": ["100"], "k": 5, "explain": True}))
    assert read_history_json(body) == (["100", "1", "50"], [1, -1, -1])
    body.write_text(json.dumps({"user_id": "405", "k": 5}))
    with pytest.raises(DataValidationError, match="a user_id is looked up in a run's events"):
        read_history_json(body)


def test_missing_history_file_names_the_absolute_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataValidationError, match=str(tmp_path / "nope.json")):
        read_history_json("nope.json")


def test_predict_help_shows_the_item_id_lists() -> None:
    from conrec.cli import app

    out = CliRunner().invoke(app, ["predict", "--help"], env={"COLUMNS": "200"}).output
    assert '"negative": [item ids]' in out and '"positive": [item ids]' in out


# --- checks before any model is loaded


def _fake_run(tmp_path: Path, with_model: bool = True) -> Path:
    """A run dir with a SID map of items a..d and (optionally) an empty 'sft model' dir: no real model."""
    run = RunDir(tmp_path / "run")
    SidMap(["a", "b", "c", "d"], np.array([[0, 0], [0, 1], [1, 0], [1, 1]]), [2, 2]).to_parquet(run.sid_map)
    if with_model:  # a real (tiny, random) model dir: only current, intact models pass the checks before loading
        from conrec.io import atomic_path
        from conrec.llm.model.vocab import save_vocab_meta

        model, tok, _ = tiny_policy(SidMap.from_parquet(run.sid_map))
        with atomic_path(run.sft_model) as tmp:
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            save_vocab_meta(tmp, SidMap.from_parquet(run.sid_map))
        (run.sft / "stats.json").write_text("{}")
    return run.root


def test_unknown_items_fail_before_the_model_is_loaded(tmp_path: Path) -> None:
    cfg = load_config(None, {"run_dir": str(_fake_run(tmp_path))})
    record_current(cfg, "sft")  # a current model (only those are used): the item check is what must fail
    with pytest.raises(DataValidationError, match=r"unknown item id.*\['x', 'y'\]"):
        check_predict_request(cfg, (["a", "x", "y"], [-1, -1, 1]), None, "sft")
    ok = check_predict_request(cfg, (["a", "b"], [-1, 1]), None, "sft")
    assert ok.history == (["a", "b"], [-1, 1])


def test_missing_checkpoint_and_bad_model_name_are_checked_first(tmp_path: Path) -> None:
    cfg = load_config(None, {"run_dir": str(_fake_run(tmp_path, with_model=False))})
    with pytest.raises(StageInputError, match=str((tmp_path / "run" / "sft" / "model").absolute())):
        check_predict_request(cfg, (["a"], [-1]), None, "sft")
    with pytest.raises(ConfigError, match="unknown model"):
        check_predict_request(cfg, (["a"], [-1]), None, "best")
    with pytest.raises(ConfigError, match="exactly one"):
        check_predict_request(cfg, None, None, "sft")


@pytest.mark.parametrize(
    ("negative", "extra", "expected"),
    [
        (["a", "zzz"], [], ["unknown item id", "zzz"]),
        (["a"], ["--out", "p.csv"], ["--out", "p.csv", ".parquet"]),  # the suffix was checked after torch was imported
    ],
)
def test_cli_predict_rejects_a_bad_request_without_importing_torch(tmp_path: Path, negative: list[str], extra: list[str], expected: list[str]) -> None:
    run_dir = _fake_run(tmp_path)
    record_current(load_config(None, {"run_dir": str(run_dir)}), "sft")  # writes the run's config.yaml too
    hist = tmp_path / "h.json"
    hist.write_text(json.dumps({"negative": negative, "positive": ["b"]}))
    args = ["predict", "-r", str(run_dir), "--model", "sft", "--history", str(hist), *(str(tmp_path / a) if a.endswith(".csv") else a for a in extra)]
    code = (
        "import sys\nfrom conrec.cli import app\n"
        f"try:\n    app({args!r})\n"
        "except SystemExit as e:\n    code = e.code\n"
        "print('EXIT', code, 'torch' in sys.modules, 'transformers' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"COLUMNS": "200", **_env()})
    assert all(e in out.stderr for e in expected), out.stdout + out.stderr  # errors go to stderr
    assert "EXIT 2 False False" in out.stdout


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "COLUMNS"}


def test_predict_reads_a_plain_history_from_a_pipe() -> None:
    """`conrec predict --history /dev/stdin` read the file twice for a plain history; the second read of a pipe was
    empty ("history file /dev/stdin is not valid JSON")."""
    code = (
        "from pathlib import Path\nfrom conrec.llm.inference.predict_request import read_dislike_body\n"
        "print(read_dislike_body(Path('/dev/stdin'), None, 10))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], input='{"negative": ["a"], "positive": ["b"]}', capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "(['b', 'a'], [1, -1]), None, False" in out.stdout


def test_predict_refuses_explain_with_a_split(tmp_path: Path) -> None:
    """`predict --split S --explain` wrote the split's predictions without reasons and without a word."""
    cfg = load_config(None, {"run_dir": str(_fake_run(tmp_path, with_model=False))})
    with pytest.raises(ConfigError, match="--explain works with --history only"):
        check_predict_request(cfg, None, "test", "sft", explain=True)
    from conrec.cli import app

    out = CliRunner().invoke(app, ["predict", "-r", str(cfg.run_dir), "--split", "test", "--explain"], env={"COLUMNS": "200"})
    assert out.exit_code == 2 and "--explain works with --history only" in out.output, out.output


def test_request_files_with_a_utf8_bom_are_read(tmp_path: Path) -> None:
    """A history or score request saved with a byte-order mark was refused ("Unexpected UTF-8 BOM") while a YAML
    config with one loads."""
    from conrec.history import read_request_text

    body = tmp_path / "h.json"
    body.write_bytes(b"\xef\xbb\xbf" + json.dumps({"negative": ["a"], "positive": ["b"]}).encode())
    assert read_history_json(body) == (["b", "a"], [1, -1])
    assert read_request_text(body, "score request").startswith("{")


def test_exclude_as_a_flat_list_of_ids_is_refused_not_read_character_by_character() -> None:
    """Found by review: ``recommend([h], k, exclude=["121"])`` (one flat list, not one list per history) passed the
    length check with one history and excluded the items "1" and "2", returning item 121 itself. Both predictors read
    ``exclude`` through :func:`conrec.history.exclusion_lists`."""
    from conrec.history import exclusion_lists
    from conrec.serve.popular import PopularDislikePredictor

    known = {"1", "2", "3", "12", "121"}
    history = (["3"], [-1])
    assert exclusion_lists([history], [["121"]], known) == [{"3", "121"}]
    for flat in (["121"], "121", [b"121"]):
        with pytest.raises(DataValidationError, match="one list of item ids per history"):
            exclusion_lists([history], flat, known)  # type: ignore[arg-type]
    popular = PopularDislikePredictor(None, sorted(known))
    with pytest.raises(DataValidationError, match="not a string where a list is expected"):
        popular.recommend([history], 3, exclude=["121"])
    assert "121" not in [i for i, _ in popular.recommend([history], 5, exclude=[["121"]])[0]]
