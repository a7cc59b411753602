"""Loading a model: non-finite weights and missing files are refused with one line; non-finite scores are never an empty success."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import torch
from fastapi.testclient import TestClient

from conrec.errors import ModelOutputError, StageInputError
from conrec.io import atomic_path
from conrec.llm.config import DecodeConfig, PromptConfig
from conrec.llm.inference.predict import Predictor
from conrec.llm.model.toy import write_toy_run
from conrec.llm.model.vocab import save_vocab_meta
from conrec.serve.app import create_app
from conrec.serve.config import ServeConfig
from conrec.sid.sid_map import SidMap

from builders import tiny_policy

DECODE = DecodeConfig(num_beams=6, top_k=5, batch_size=4)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """(run dir, SID map, a tiny finite model, the same model with NaN in one weight)."""
    run = write_toy_run(tmp_path_factory.mktemp("run"), n_items=16, n_users=4, samples_per_user=2)
    sid_map = SidMap.from_parquet(run.sid_map)
    good, tok, _ = tiny_policy(sid_map)
    bad, _, _ = tiny_policy(sid_map)
    with torch.no_grad():
        bad.model.layers[0].mlp.up_proj.weight[0, 0] = float("nan")
    return run, sid_map, good, bad, tok


def _save(model, tok, sid_map: SidMap, where: Path) -> Path:
    with atomic_path(where) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        save_vocab_meta(tmp, sid_map)
    return where


def test_a_model_file_with_nan_weights_is_refused_at_load(toy, tmp_path):
    # regression (issue 24.4): NaN weights with an intact size and header passed every check
    run, sid_map, good, bad, tok = toy
    with pytest.raises(StageInputError, match=r"non-finite weight\(s\) \(NaN or inf\) in model\.layers\.0\.mlp\.up_proj\.weight"):
        Predictor.from_dir(_save(bad, tok, sid_map, tmp_path / "bad"), sid_map, PromptConfig(), DECODE)
    Predictor.from_dir(_save(good, tok, sid_map, tmp_path / "good"), sid_map, PromptConfig(), DECODE)  # the same, finite: loads


def test_non_finite_scores_are_an_error_not_an_empty_answer(toy):
    run, sid_map, good, bad, tok = toy
    pred = Predictor(bad, tok, sid_map, PromptConfig(), DECODE)
    history = ([sid_map.items[0]], [-1])
    with pytest.raises(ModelOutputError, match="history #0"):
        pred.recommend([history], k=5)
    with pytest.raises(ModelOutputError, match="not finite"):
        pred.score([history], [[sid_map.items[1], sid_map.items[2]]])
    ok = Predictor(good, tok, sid_map, PromptConfig(), DECODE)
    assert len(ok.recommend([history], k=5)[0]) == 5


def test_the_server_answers_422_not_an_empty_200_for_non_finite_scores(toy):
    # regression (issue 24.4): `"items": []` and `"score": null, "decision": "keep"` with status 200
    run, sid_map, _, bad, tok = toy
    items = pl.read_parquet(run.items)
    client = TestClient(create_app(Predictor(bad, tok, sid_map, PromptConfig(), DECODE), items, pl.read_parquet(run.sid_map), None, ServeConfig()), base_url="http://localhost")
    first, second = sid_map.items[0], sid_map.items[1]
    r = client.post("/v1/dislikes", json={"negative": [first], "k": 3})
    assert r.status_code == 422, r.text
    assert "not finite" in r.json()["detail"] or "no valid item" in r.json()["detail"]
    r = client.post("/v1/score", json={"negative": [first], "candidates": [second], "threshold": 0.0})
    assert r.status_code == 422 and "not finite" in r.json()["detail"], r.text


def test_a_missing_tokenizer_file_is_named(toy, tmp_path):
    # regression (issue 24.7): the error said "Couldn't instantiate the backend tokenizer from one of:" and named no file
    run, sid_map, good, _, tok = toy
    model_dir = _save(good, tok, sid_map, tmp_path / "m")
    (model_dir / "tokenizer.json").unlink()
    with pytest.raises(StageInputError, match=r"m/tokenizer\.json is missing"):
        Predictor.from_dir(model_dir, sid_map, PromptConfig(), DECODE)
