"""The HTTP app with an in-process fake predictor: every endpoint, every error, and recovery."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import polars as pl
import pytest
from fastapi.testclient import TestClient

from conrec.config import PipelineConfig
from conrec.errors import DataValidationError, StageInputError
from conrec.io import write_parquet
from conrec.runs import RunDir
from conrec.serve.app import create_app, create_app_from_run
from conrec.serve.catalog import SidCatalog, user_histories
from conrec.serve.config import ServeConfig
from conrec.serve.popular import PopularDislikePredictor
from conrec.serve.synthetic import record_serving_tables

from builders import (
    SERVE_DISLIKES,
    SERVE_N_ITEMS,
    SERVE_TEST_LIMITS,
    RecordingPredictor,
    record_current,
    serve_tables,
    write_fake_outputs,
)

CFG = ServeConfig(**SERVE_TEST_LIMITS)


@pytest.fixture()
def setup(serve_client) -> tuple[TestClient, RecordingPredictor]:
    return serve_client()


def _ids(body: dict) -> list[str]:
    return [it["item_id"] for it in body["items"]]


# --- happy paths ---------------------------------------------------------------------------------


def test_healthz_reports_model_items_users_limits(setup):
    client, _ = setup
    r = client.get("/healthz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["model"] == "fake"
    assert body["n_items"] == SERVE_N_ITEMS
    assert body["n_users"] == max(SERVE_DISLIKES.values()) + 1  # d0..d3 and u_hist
    assert body["limits"] == {"max_k": 8, "default_k": 4, "max_history": 4, "max_batch": 3, "max_candidates": 200,
                              "unknown_items": "error"}


def test_negative_positive_lists(setup):
    client, pred = setup
    r = client.post("/v1/dislikes", json={"negative": ["i0"], "positive": ["i9"], "k": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "fake" and body["k"] == 3
    assert _ids(body) == ["i1", "i2", "i3"]  # most disliked, minus the history
    assert [it["rank"] for it in body["items"]] == [1, 2, 3]
    assert body["items"][0]["sid"] == "<a_1><b_1>" and body["items"][0]["title"] == "Title 1"
    scores = [it["score"] for it in body["items"]]
    assert scores == sorted(scores, reverse=True)
    (histories, k), = pred.calls
    assert k == 3 and histories == [(["i9", "i0"], [1, -1])]


def test_chronological_history_is_passed_in_order(setup):
    client, pred = setup
    hist = [{"item_id": "i2", "feedback": -1}, {"item_id": "i9", "feedback": 1}, {"item_id": "i0", "feedback": -1}]
    r = client.post("/v1/dislikes", json={"history": hist, "k": 2})
    assert r.status_code == 200, r.text
    assert _ids(r.json()) == ["i1", "i3"]
    assert pred.calls[-1][0] == [(["i2", "i9", "i0"], [-1, 1, -1])]


def test_known_user_uses_most_recent_max_history_events(setup):
    client, pred = setup
    r = client.post("/v1/dislikes", json={"user_id": "u_hist"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["k"] == CFG.default_k and len(body["items"]) == CFG.default_k
    # Oldest event (i0 at ts 10) is cut: max_history = 4, order by ts.
    assert pred.calls[-1][0] == [(["i1", "i5", "i7", "i6"], [-1, 1, -1, 1])]
    assert _ids(body)[:2] == ["i0", "i2"]


def test_batch_is_one_predictor_call_per_distinct_k_in_request_order(serve_client):
    client, pred = serve_client(max_batch=4)
    reqs = [{"negative": ["i0"], "k": 1}, {"user_id": "u_hist", "k": 3}, {"positive": ["i4"]}, {"negative": ["i2"], "k": 3}]
    r = client.post("/v1/dislikes/batch", json={"requests": reqs})
    assert r.status_code == 200, r.text
    results = r.json()["results"][:3]
    # each history decoded with its own k (a top-1 beam search is not the head of a top-4 one)
    assert sorted((len(h), k) for h, k in pred.calls) == [(1, 1), (1, CFG.default_k), (2, 3)]
    assert [len(res["items"]) for res in results] == [1, 3, CFG.default_k]
    assert [res["k"] for res in results] == [1, 3, CFG.default_k]
    assert _ids(results[0]) == ["i1"]
    assert _ids(results[2])[:2] == ["i0", "i1"]


def test_openapi_documents_endpoints_and_examples(setup):
    client, _ = setup
    spec = client.get("/openapi.json").json()
    assert {"/v1/dislikes", "/v1/dislikes/batch", "/healthz"} <= set(spec["paths"])
    post = spec["paths"]["/v1/dislikes"]["post"]
    assert {"404", "413", "422"} <= set(post["responses"])
    req_schema = spec["components"]["schemas"]["DislikeRequest"]
    assert req_schema["examples"] and "oldest first" in req_schema["properties"]["negative"]["description"]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_api_pages_load_everything_from_the_server_itself(page, setup):
    """Found by a docs probe: FastAPI's own /docs (Swagger UI) and /redoc fetch their scripts and styles from
    cdn.jsdelivr.net, so on an offline machine, where conrec is meant to run, "OpenAPI at /docs" was a blank page.
    Every script, style and icon the pages name must be served here, with a content type a browser runs under
    nosniff."""
    import re

    client, _ = setup
    r = client.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    urls = re.findall(r"""(?:src|href)=['"]([^'"]+)['"]|(?:url|spec-url)\s*[:=]\s*['"]([^'"]+)['"]""", r.text)
    urls = [a or b for a, b in urls]
    assert urls and not [u for u in urls if "//" in u], urls  # no absolute (CDN) address
    kinds = {".js": "javascript", ".css": "text/css", ".png": "image/png", ".json": "application/json"}
    for url in urls:
        got = client.get(url)
        assert got.status_code == 200, url
        kind = next(v for k, v in kinds.items() if url.endswith(k))
        assert kind in got.headers["content-type"], (url, got.headers["content-type"])


def test_the_api_pages_scripts_are_kept_by_the_browser_and_the_answers_are_not(setup):
    """Found in review: the API pages' scripts and styles (~2.7 MB) came back with ``Cache-Control: no-store``, so
    every visit to /docs or /redoc downloaded them again. They are served under a URL that names fastapi-offline's
    version and may be kept a year (a revalidation's 304 says so too); the pages themselves, /openapi.json, the API's
    answers, /healthz and a file the URL does not hold still say no-store."""
    from importlib.metadata import version

    client, _ = setup
    assets = set()
    for page in ("/docs", "/redoc"):
        assets.update(re.findall(r"""(?:src|href)=['"]([^'"]+\.(?:js|css|png))['"]""", client.get(page).text))
    assert len(assets) == 4 and all(a.startswith(f"/static-offline-docs/{version('fastapi-offline')}/") for a in assets), assets
    kept = "private, max-age=31536000, immutable"
    for url in sorted(assets):
        r = client.get(url)
        assert r.status_code == 200 and r.headers.get_list("cache-control") == [kept], (url, r.headers)
        again = client.get(url, headers={"If-None-Match": r.headers["etag"]})
        assert again.status_code == 304 and again.headers.get_list("cache-control") == [kept], url
    missing = next(iter(assets)).rsplit("/", 1)[0] + "/nope.js"
    answers = {
        "docs": client.get("/docs"),
        "redoc": client.get("/redoc"),
        "openapi": client.get("/openapi.json"),
        "dislikes": client.post("/v1/dislikes", json={"negative": ["i0"], "k": 2}),
        "healthz": client.get("/healthz"),
        "missing asset": client.get(missing),
    }
    assert [r.status_code for r in answers.values()] == [200] * 5 + [404]
    for what, r in answers.items():
        assert r.headers.get_list("cache-control") == ["no-store"], what


# --- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"negative": ["i0", "nope", "zzz"]}, 422, "'nope', 'zzz'"),
        ({"history": [{"item_id": "ghost", "feedback": -1}]}, 422, "'ghost'"),
        ({"user_id": "who"}, 404, "'who'"),
        ({}, 422, "no history"),
        ({"negative": [], "positive": []}, 422, "both empty"),
        ({"history": []}, 422, "history is empty"),
        ({"user_id": "u_hist", "negative": ["i0"]}, 422, "only one history source"),
        ({"negative": ["i0"], "k": 0}, 422, "body.k"),
        ({"negative": ["i0"], "k": 9}, 422, "1..8"),
        ({"negative": ["i0"], "k": "ten"}, 422, "body.k"),
        ({"negatives": ["i0"]}, 422, "negatives"),
        ({"history": [{"item_id": "i0", "feedback": 0}]}, 422, "feedback"),
        ({"negative": ["i0", "i1", "i2"], "positive": ["i4", "i5"]}, 413, "max_history = 4"),
    ],
)
def test_bad_requests_get_clear_4xx_and_server_keeps_serving(setup, body, status, needle):
    client, pred = setup
    r = client.post("/v1/dislikes", json=body)
    assert r.status_code == status, r.text
    assert needle in r.json()["detail"]
    assert pred.calls == []  # rejected before the model
    assert client.post("/v1/dislikes", json={"negative": ["i0"]}).status_code == 200


def test_empty_and_non_json_bodies(setup):
    client, _ = setup
    r = client.post("/v1/dislikes")
    assert r.status_code == 422 and "empty request body" in r.json()["detail"]
    r = client.post("/v1/dislikes", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "JSON" in r.json()["detail"]
    # JSON sent as curl's default form type (or as text): the message names the content type, not "a valid dictionary"
    for ctype in ("application/x-www-form-urlencoded", "text/plain"):
        r = client.post("/v1/dislikes", content=b'{"negative": ["i0"]}', headers={"content-type": ctype})
        assert r.status_code == 422 and r.json()["detail"] == (
            f"the body must be JSON, sent with content-type: application/json (got {ctype!r})"
        ), r.text
    assert client.post("/v1/dislikes", json={"negative": ["i0"]}).status_code == 200


def test_batch_errors_name_the_request(setup):
    client, pred = setup
    r = client.post("/v1/dislikes/batch", json={"requests": [{"negative": ["i0"]}] * 4})
    assert r.status_code == 413 and "max_batch = 3" in r.json()["detail"]
    r = client.post("/v1/dislikes/batch", json={"requests": [{"negative": ["i0"]}, {"negative": ["bad"]}]})
    assert r.status_code == 422 and r.json()["detail"].startswith("requests[1]: ") and "'bad'" in r.json()["detail"]
    r = client.post("/v1/dislikes/batch", json={"requests": [{"negative": ["i0"]}, {"user_id": "nobody"}]})
    assert r.status_code == 404 and "requests[1]" in r.json()["detail"]
    r = client.post("/v1/dislikes/batch", json={"requests": [{"negative": ["i0"], "k": 99}]})
    assert r.status_code == 422 and "requests[0]: k = 99" in r.json()["detail"]
    r = client.post("/v1/dislikes/batch", json={"requests": [{"negative": ["i0"]}, {}]})
    assert r.status_code == 422 and "body.requests.1" in r.json()["detail"]
    r = client.post("/v1/dislikes/batch", json={"requests": []})
    assert r.status_code == 422
    assert pred.calls == []
    assert client.post("/v1/dislikes/batch", json={"requests": [{"negative": ["i0"]}]}).status_code == 200


@pytest.mark.parametrize(
    ("error", "status"),
    [(DataValidationError("history 0: unknown item id(s) ['x']"), 422), (StageInputError("model dir missing"), 400)],
)
def test_predictor_conrec_errors_map_to_4xx(setup, error, status):
    client, pred = setup
    pred.fail_with = error
    r = client.post("/v1/dislikes", json={"negative": ["i0"]})
    assert r.status_code == status and r.json()["detail"] == str(error)
    pred.fail_with = None
    assert client.post("/v1/dislikes", json={"negative": ["i0"]}).status_code == 200


def test_unexpected_predictor_error_is_500_and_logged(setup, caplog):
    client, pred = setup
    pred.fail_with = RuntimeError("CUDA? on a CPU box")
    with caplog.at_level(logging.ERROR, logger="conrec.serve"):
        r = client.post("/v1/dislikes/batch", json={"requests": [{"negative": ["i0"]}]})
    assert r.status_code == 500 and "RuntimeError" in r.json()["detail"]
    assert any(rec.exc_info and "CUDA? on a CPU box" in str(rec.exc_info[1]) for rec in caplog.records)
    pred.fail_with = None
    assert client.post("/v1/dislikes", json={"negative": ["i0"]}).status_code == 200
    assert client.get("/healthz").status_code == 200


def test_wrong_number_of_results_is_500(setup):
    client, pred = setup
    pred.inner.recommend = lambda histories, k: []  # type: ignore[method-assign]
    assert client.post("/v1/dislikes", json={"negative": ["i0"]}).status_code == 500


def test_non_finite_scores_are_null(setup):
    client, pred = setup
    pred.inner.recommend = lambda histories, k: [[("i1", float("-inf")), ("i2", 0.5)]]  # type: ignore[method-assign]
    r = client.post("/v1/dislikes", json={"negative": ["i0"]})
    assert r.status_code == 200 and [it["score"] for it in r.json()["items"]] == [None, 0.5]


def test_without_events_user_requests_are_404_but_lists_work():
    items, sid_map, events = serve_tables()
    app = create_app(PopularDislikePredictor(events, sid_map["item_id"].to_list()), items, sid_map, None, CFG)
    client = TestClient(app, base_url="http://localhost")
    assert client.get("/healthz").json()["model"] == CFG.model
    assert client.post("/v1/dislikes", json={"user_id": "u_hist"}).status_code == 404
    assert client.post("/v1/dislikes", json={"negative": ["i3"], "k": 2}).status_code == 200


# --- building blocks -------------------------------------------------------------------------------


def test_catalog_requires_columns_and_names_unknown_ids():
    items, sid_map, _ = serve_tables()
    cat = SidCatalog.build(items, sid_map.with_columns(pl.col("codes").alias("sid")))  # list SIDs get joined
    assert cat.sid["i3"] == "33" and cat.title["i3"] == "Title 3"
    assert cat.unknown(["i1", "x", "y", "x"]) == ["x", "y"]
    with pytest.raises(DataValidationError, match="sid"):
        SidCatalog.build(items, sid_map.drop("sid"))
    with pytest.raises(DataValidationError, match="empty"):
        SidCatalog.build(items, sid_map.head(0))


def test_user_histories_keep_ts_order_and_ties():
    ev = pl.DataFrame({"user_id": ["a", "a", "a", "b"], "item_id": ["x", "y", "z", "x"], "ts": [5, 1, 5, -0], "feedback": [1, -1, -1, 1]})
    h = user_histories(ev, max_history=2)
    assert h["a"] == (["x", "z"], [1, -1]) and h["b"] == (["x"], [1])


def test_popular_predictor_contract():
    _, sid_map, events = serve_tables()
    pred = PopularDislikePredictor(events, sid_map["item_id"].to_list())
    (recs,) = pred.recommend([(["i1"], [-1])], k=3)
    assert [i for i, _ in recs] == ["i0", "i2", "i3"]
    dislikes = events.filter(pl.col("feedback") < 0)
    assert recs[0][1] == pytest.approx(dislikes.filter(pl.col("item_id") == "i0").height / dislikes.height)
    with pytest.raises(DataValidationError, match="'q'"):
        pred.recommend([(["q"], [-1])], k=3)
    with pytest.raises(DataValidationError, match="empty"):
        pred.recommend([([], [])], k=3)


# --- loading a run directory -----------------------------------------------------------------------


def _write_run(root: Path) -> RunDir:
    items, sid_map, events = serve_tables()
    run = RunDir(root)
    write_parquet(items, run.items)
    write_parquet(sid_map, run.sid_map)
    write_parquet(events, run.events)
    return run


def _recording_loader(loaded: list[str]):
    """A stand-in for loading a trained LM: records which model was asked for."""

    def load_lm(cfg: PipelineConfig, model: str) -> PopularDislikePredictor:
        loaded.append(model)
        _, sid_map, events = serve_tables()
        return PopularDislikePredictor(events, sid_map["item_id"].to_list())

    return load_lm


def _write_model(run: RunDir, cfg: PipelineConfig, stage: str) -> None:
    """A model dir that passes the cheap output checks, recorded as finished with ``cfg``."""
    write_fake_outputs(run, stage)
    record_current(cfg, stage)


@pytest.mark.parametrize(("has_grpo", "expected"), [(False, "sft"), (True, "grpo")])
def test_from_run_falls_back_to_sft_without_grpo_model(tmp_path, monkeypatch, caplog, has_grpo, expected):
    run = _write_run(tmp_path / "run")
    cfg = PipelineConfig(run_dir=run.root)
    _write_model(run, cfg, "sft")
    if has_grpo:
        _write_model(run, cfg, "grpo")
    loaded: list[str] = []
    with caplog.at_level(logging.WARNING, logger="conrec.serve"):
        app = create_app_from_run(cfg, load_lm=_recording_loader(loaded))
    assert loaded == [expected]
    assert ("not serving the grpo model (no model at" in caplog.text) == (not has_grpo)
    client = TestClient(app, base_url="http://localhost")
    assert client.get("/healthz").json()["model"] == expected
    assert client.post("/v1/dislikes", json={"user_id": "u_hist", "k": 2}).status_code == 200


def test_a_stale_grpo_model_is_never_served_predicted_or_scored(tmp_path, caplog):
    # regression (issue 24.1): after `conrec sft` reran with another setting, the GRPO model trained
    # on the old SFT model was still served (the lookup only checked that grpo/model/config.json existed)
    from conrec.llm.inference.predict_request import check_model_dir

    run = _write_run(tmp_path / "run")
    old = PipelineConfig(run_dir=run.root)
    _write_model(run, old, "sft")
    _write_model(run, old, "grpo")
    new = PipelineConfig.model_validate({"run_dir": str(run.root), "sft": {"train": {"max_steps": 7}}})
    record_current(new, "sft")  # SFT retrained with the new setting; GRPO not
    loaded: list[str] = []
    with caplog.at_level(logging.WARNING, logger="conrec.serve"):
        client = TestClient(create_app_from_run(new, load_lm=_recording_loader(loaded)), base_url="http://localhost")
    assert loaded == ["sft"] and client.get("/healthz").json()["model"] == "sft"
    assert "not serving the grpo model (made with a different configuration (sft.train.max_steps: -1 -> 7))" in caplog.text
    # conrec predict / score (Predictor.from_run) refuse instead, naming why and the current alternative
    with pytest.raises(StageInputError, match=r"grpo model cannot be used with this config: made with a different configuration \(sft.train.max_steps: -1 -> 7\).*--model sft"):
        check_model_dir(new, "grpo")
    assert check_model_dir(new, "sft") == run.sft_model
    # nor under the old config: the SFT model it was trained from is gone (rebuilt), whichever config asks
    with pytest.raises(StageInputError, match="built on a sft stage that was rebuilt"):
        check_model_dir(old, "grpo")


def test_no_current_model_is_a_clear_error_not_a_stale_answer(tmp_path):
    run = _write_run(tmp_path / "run")
    old = PipelineConfig(run_dir=run.root)
    _write_model(run, old, "sft")
    new = PipelineConfig.model_validate({"run_dir": str(run.root), "seed": 5})
    with pytest.raises(StageInputError, match=r"no model in .* is current for this config \(grpo: no model at .*; sft: made with a different configuration \(seed: 0 -> 5\)\)"):
        create_app_from_run(new, load_lm=_recording_loader([]))


def test_a_cause_every_model_shares_is_said_once(tmp_path):
    """Found by probing an upgrade (8 December 2026): with the SFT and GRPO models stale for the same reason, the
    refusal said it once per model, in one line of about 1,500 characters; a shared cause is said once now."""
    run = _write_run(tmp_path / "run")
    old = PipelineConfig(run_dir=run.root)
    _write_model(run, old, "sft")
    _write_model(run, old, "grpo")
    new = PipelineConfig.model_validate({"run_dir": str(run.root), "seed": 5})
    with pytest.raises(StageInputError) as refused:
        create_app_from_run(new, load_lm=_recording_loader([]))
    assert re.search(r"is current for this config \(grpo and sft: made with a different configuration \(seed: 0 -> 5\)\); run", str(refused.value))
    assert str(refused.value).count("seed: 0 -> 5") == 1


def test_from_run_popular_needs_no_model_and_missing_tables_are_clear(tmp_path):
    run = _write_run(tmp_path / "run")
    cfg = PipelineConfig.model_validate({"run_dir": str(run.root), "serve": {"model": "popular"}})
    record_serving_tables(cfg)
    client = TestClient(create_app_from_run(cfg), base_url="http://localhost")
    assert client.get("/healthz").json() | {"limits": None} == {
        "status": "ok", "model": "popular", "n_items": SERVE_N_ITEMS, "n_users": 5, "limits": None, "process": os.getpid(),
        "requested_model": "popular", "fallback": False, "model_current": True, "loaded_current": True, "model_build": f"popular@{run.stage_identity('data')}+{run.stage_identity('sid')}",
    }
    run.sid_map.unlink()
    with pytest.raises(StageInputError, match="sid_map.parquet"):
        create_app_from_run(cfg)


def test_popular_is_served_only_from_data_and_sids_current_for_the_config(tmp_path):
    """The popularity counts are the data stage's events: after a changed data setting, or a data
    stage rerun that cleared the SID stage, they are not this config's answers."""
    run = _write_run(tmp_path / "run")
    cfg = PipelineConfig.model_validate({"run_dir": str(run.root), "serve": {"model": "popular"}})
    record_serving_tables(cfg)
    changed = cfg.model_copy(update={"data": cfg.data.model_copy(update={"dislike_max_rating": 1.0})})
    with pytest.raises(StageInputError, match=r"serve.model: popular needs the data stage's outputs in .*made with a different configuration \(data.dislike_max_rating: 2.0 -> 1.0\); run `conrec data`"):
        create_app_from_run(changed)
    run.clear_done("sid")  # what a rerun data stage leaves until the SID stage reruns
    with pytest.raises(StageInputError, match=r"needs the sid stage's outputs in .*: not finished; run `conrec sid`"):
        create_app_from_run(cfg)


def test_serve_config_rejects_default_k_above_max_k():
    with pytest.raises(ValueError, match="default_k"):
        ServeConfig(default_k=20, max_k=10)


def test_serve_refuses_max_k_over_the_bound_with_the_reason(tmp_path):
    """Found by probing: max_k had no bound while a request's beam search grows with k squared (k 19,960 took 39 s
    and 7.1 GB on a tiny model); one client could take gigabytes of a shared host. The default stays 50. Found in
    review: checked at config load, the bound made a run whose config.yaml had `max_k: 2000` (valid before) fail every
    command on it; only `conrec serve` refuses it now, in one line, before loading anything."""
    from conrec.config import load_config
    from conrec.errors import ConfigError
    from conrec.serve.app import run as serve_run

    assert ServeConfig().max_k == 50 and ServeConfig(max_k=1000).max_k == 1000
    path = tmp_path / "config.yaml"
    path.write_text(f"run_dir: {tmp_path / 'missing'}\nserve:\n  max_k: 2000\n")
    cfg = load_config(path)  # predict, eval, ablate on the run read it
    assert cfg.serve.max_k == 2000
    with pytest.raises(ConfigError, match=r"^serve.max_k: 2000 is over 1000: the beam search's time and memory grow with k squared"):
        serve_run(cfg)  # before it listens or loads: the run does not even exist


def _popular_run(root: Path) -> tuple[RunDir, PipelineConfig]:
    """A run served as ``popular`` whose training events can be read (a valid cut-off after every event)."""
    from conrec.io import write_json

    run = _write_run(root)
    cfg = PipelineConfig.model_validate({"run_dir": str(run.root), "serve": {"model": "popular"}})
    write_json({"source": "synthetic", "valid_cutoff_ts": 10**6}, run.data / "stats.json")
    record_serving_tables(cfg)
    return run, cfg


def test_explanations_never_count_co_dislikes_on_data_read_after_start_up(tmp_path, monkeypatch, caplog):
    """Found by probing: the co-dislike events were read at the first explain request, so after `conrec data`
    reran, a server of the old model explained it with the new data's co-dislikes (two servers of one model
    gave different reasons for one request). Then found in review: reading them at start-up instead made every server
    process read the events and samples again and keep them, explanations asked or not. Now they are read at the first
    explanation from the data stage loaded at start-up, or not at all (SID reasons only, said once)."""
    import conrec.serve.app

    reads = []
    real = conrec.serve.app.explanation_events
    monkeypatch.setattr(conrec.serve.app, "explanation_events", lambda *a: reads.append(a) or real(*a))
    run, cfg = _popular_run(tmp_path / "run")
    ask = {"negative": ["i0", "i1"], "k": 3, "explain": True}
    co = lambda client: [e["item_id"] for e in client.post("/v1/dislikes", json=ask).json()["items"][0]["reason"]["co_disliked_with"]]  # noqa: E731
    fresh = TestClient(create_app_from_run(cfg), base_url="http://localhost")
    stale = TestClient(create_app_from_run(cfg), base_url="http://localhost")
    assert reads == []  # nothing read until an explanation is asked for
    assert co(fresh) == ["i1", "i0"] and len(reads) == 1
    _, _, events = serve_tables()
    write_parquet(events.with_columns(pl.lit(1, pl.Int8).alias("feedback")), run.events)  # `conrec data` reran
    run.clear_done("data")
    record_current(cfg, "data")
    assert co(fresh) == ["i1", "i0"]  # built once, from the data it started with
    with caplog.at_level(logging.WARNING):
        assert co(stale) == []  # not the new data's
    assert "the data stage in" in caplog.text and "has rerun since this server started" in caplog.text


def test_healthz_says_when_a_stage_the_server_read_besides_its_model_has_rerun(tmp_path, monkeypatch):
    """Found in review: after a routine `conrec eval` rerun /healthz still said current (the model is), while a
    worker restarted after a crash would stop the whole server: loaded_current says so."""
    monkeypatch.setattr("conrec.serve.app.CURRENT_TTL_S", 0.0)
    run, cfg = _popular_run(tmp_path / "run")
    client = TestClient(create_app_from_run(cfg), base_url="http://localhost")
    health = client.get("/healthz").json()
    assert (health["model_current"], health["loaded_current"]) == (True, True)
    record_current(cfg, "eval")  # the eval stage ran again
    health = client.get("/healthz").json()
    assert (health["model_current"], health["loaded_current"]) == (True, False)


def test_a_cached_answer_is_reused_within_its_seconds_and_asked_again_after():
    """docs/serving.md promises that model_current is checked at most once a second (a check costs ~10 ms of
    GIL-held Python); every other test sets the TTL to 0, so nothing checked the reuse."""
    from conrec.serve.app import cached_for

    t, asked = [100.0], []
    cached = cached_for(1.0, lambda: asked.append(t[0]) or len(asked) % 2 == 1, clock=lambda: t[0])
    assert [cached(), cached()] == [True, True] and asked == [100.0]
    t[0] = 100.9
    assert cached() is True and asked == [100.0]
    t[0] = 101.0
    assert cached() is False and asked == [100.0, 101.0]


def test_healthz_reuses_its_current_answers_within_the_ttl(tmp_path, monkeypatch):
    """Two /healthz within CURRENT_TTL_S compute model_current and loaded_current once each."""
    import conrec.serve.app

    run, cfg = _popular_run(tmp_path / "run")
    monkeypatch.setattr(conrec.serve.app, "CURRENT_TTL_S", 3600.0)  # no sleep, no clock race on a loaded machine
    builds, loads = [], []
    real_build, real_loaded = conrec.serve.app.current_build, conrec.serve.app.loaded_identities
    client = TestClient(create_app_from_run(cfg), base_url="http://localhost")
    monkeypatch.setattr(conrec.serve.app, "current_build", lambda c: builds.append(c) or real_build(c))
    monkeypatch.setattr(conrec.serve.app, "loaded_identities", lambda r: loads.append(r) or real_loaded(r))
    assert [client.get("/healthz").json()["model_current"] for _ in range(2)] == [True, True]
    assert len(builds) == 1 and len(loads) == 1


def test_a_stage_rerun_while_the_server_loads_is_refused(tmp_path):
    run, cfg = _popular_run(tmp_path / "run")

    def rerun_eval_meanwhile(cfg: PipelineConfig, model: str) -> PopularDislikePredictor:
        record_current(cfg, "eval")  # the inspector's lists would come from a stage finished after the check
        return _recording_loader([])(cfg, model)

    lm_cfg = cfg.model_copy(update={"serve": cfg.serve.model_copy(update={"model": "sft"})})
    _write_model(run, lm_cfg, "sft")
    with pytest.raises(StageInputError, match="changed while loading"):
        create_app_from_run(lm_cfg, load_lm=rerun_eval_meanwhile)


def test_healthz_names_the_build_served_so_replicas_can_be_compared(tmp_path):
    """Found by probing: /healthz named the stage only, so an old server and a fresh one after a retrain both said grpo."""
    run = _write_run(tmp_path / "run")
    cfg = PipelineConfig(run_dir=run.root)
    _write_model(run, cfg, "sft")
    health = lambda: TestClient(create_app_from_run(cfg, load_lm=_recording_loader([])), base_url="http://localhost").get("/healthz").json()  # noqa: E731
    first = health()
    assert first["model_build"] == f"sft@{run.stage_identity('sft')}" and health()["model_build"] == first["model_build"]
    run.clear_done("sft")
    record_current(cfg, "sft")  # retrained
    assert health()["model_build"] not in (first["model_build"], None)


def test_a_fallback_sft_model_is_not_current_once_the_requested_grpo_model_is(tmp_path, monkeypatch):
    """Found by probing: with GRPO unfinished the server fell back to SFT and /healthz said model sft, current,
    for as long as it ran, also after `conrec grpo` finished: "restart to serve it" was never signalled."""
    monkeypatch.setattr("conrec.serve.app.CURRENT_TTL_S", 0.0)
    run = _write_run(tmp_path / "run")
    cfg = PipelineConfig(run_dir=run.root)
    _write_model(run, cfg, "sft")
    client = TestClient(create_app_from_run(cfg, load_lm=_recording_loader([])), base_url="http://localhost")
    health = client.get("/healthz").json()
    assert (health["model"], health["requested_model"], health["fallback"], health["model_current"]) == ("sft", "grpo", True, True)
    _write_model(run, cfg, "grpo")  # GRPO finished: a restart would serve it
    assert client.get("/healthz").json()["model_current"] is False


def test_model_current_follows_the_rule_predict_and_a_restart_use(tmp_path, monkeypatch):
    """Found by probing: model_current compared the served stage's identity only, so a model that `conrec predict`
    and a fresh server refused (built on a stage rebuilt since, e.g. a parent run's SFT) was reported current."""
    from conrec.llm.inference.predict_request import check_model_dir

    monkeypatch.setattr("conrec.serve.app.CURRENT_TTL_S", 0.0)
    run = _write_run(tmp_path / "run")
    cfg = PipelineConfig(run_dir=run.root)
    _write_model(run, cfg, "sft")
    _write_model(run, cfg, "grpo")
    client = TestClient(create_app_from_run(cfg, load_lm=_recording_loader([])), base_url="http://localhost")
    assert client.get("/healthz").json()["model_current"] is True
    run.clear_done("sft")
    record_current(cfg, "sft")  # SFT rebuilt without clearing GRPO's marker, as a parent run's is under a child's GRPO
    with pytest.raises(StageInputError, match="built on a sft stage that was rebuilt"):
        check_model_dir(cfg, "grpo")
    assert client.get("/healthz").json()["model_current"] is False


def _holding(run: RunDir):
    """The run's lock, held as another process's retraining stage holds it (flock: this process's filelock sees it)."""
    import fcntl
    from contextlib import contextmanager

    from conrec.run_lock import LOCK_FILE

    @contextmanager
    def held():
        with open(run.root / LOCK_FILE, "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            yield

    return held()


def _data_and_sid_current(run: RunDir, cfg: PipelineConfig) -> None:
    """The data and SID stages finished with ``cfg`` over :func:`_write_run`'s tables (their other files: stand-ins)."""
    import numpy as np

    from conrec.io import write_json

    write_parquet(pl.DataFrame({"split": ["valid"], "ts": [2_000_000_000]}), run.samples)
    run.quantizer.write_bytes(b"q")
    np.save(run.embeddings, np.zeros((1, 2)))
    np.save(run.text_vectors, np.zeros((1, 2)))
    for stage in ("data", "sid"):
        write_json({}, run.stage_dir(stage) / "stats.json")
    record_current(cfg, "data", "sid")


BUSY = r"; another conrec process holds .* now \(its .conrec.lock: a stage is running on it\): if that is `conrec {}` with this config, wait"


def test_a_run_being_retrained_says_so_beside_the_stage_to_run(tmp_path):
    """Found by probing: with `conrec sft` retraining the run in another process, a server restart (and `conrec
    predict`) refused with "run `conrec sft`", which that process was doing and which a second may not do. Then the
    lock replaced the advice: a refusal for other reasons (another sft config, an eval running) lost it until the
    other process ended. Now the advice stays and the lock is a clause beside it."""
    from conrec.llm.inference.predict_request import check_model_dir

    run = _write_run(tmp_path / "run")
    cfg = PipelineConfig(run_dir=run.root)
    _write_model(run, cfg, "sft")
    run.invalidate_from("sft")  # what the retrain does first
    advice = r"run `conrec ([a-z]+)` and the stages after it up to sft with it"
    with pytest.raises(StageInputError, match=advice) as free:
        create_app_from_run(cfg, load_lm=_recording_loader([]))
    assert "another conrec process" not in str(free.value)
    earliest = re.search(advice, str(free.value)).group(1)
    with _holding(run):
        with pytest.raises(StageInputError, match=advice + ".*" + BUSY.format(earliest)):
            create_app_from_run(cfg, load_lm=_recording_loader([]))
        with pytest.raises(StageInputError, match=advice + ".*" + BUSY.format(earliest)):
            check_model_dir(cfg, "sft")


def test_a_changed_config_still_names_its_stage_while_the_run_is_held(tmp_path):
    """Found in review: with the lock held, "wait for it to finish" replaced "run `conrec sft` with it" even when the
    model was refused for an sft setting changed, which no running stage would fix."""
    from conrec.llm.inference.predict_request import check_model_dir

    run = _write_run(tmp_path / "run")
    cfg = PipelineConfig(run_dir=run.root)
    _data_and_sid_current(run, cfg)
    _write_model(run, cfg, "sft")
    changed = cfg.model_copy(update={"sft": cfg.sft.model_copy(update={"discernment_eval": cfg.sft.discernment_eval + 1})})
    with _holding(run), pytest.raises(StageInputError, match=r"sft.discernment_eval: 200 -> 201\); run `conrec sft` with it.*" + BUSY.format("sft")):
        check_model_dir(changed, "sft")


def test_serving_popular_on_a_held_run_says_so_and_healthz_never_probes_the_lock(tmp_path, monkeypatch):
    """Found in review: serve.model: popular (through require_current) said "run `conrec sid`" alone while another
    process held the run; and /healthz built the refusal, lock probe included, every second while no model was
    current, so a server could make a stage starting then fail with "in use by another conrec process"."""
    import conrec.run_lock

    run = _write_run(tmp_path / "run")
    cfg = PipelineConfig(run_dir=run.root, serve=ServeConfig(model="popular"))
    _data_and_sid_current(run, cfg)
    monkeypatch.setattr("conrec.serve.app.CURRENT_TTL_S", 0.0)
    probes = []
    real = conrec.run_lock.held_elsewhere
    monkeypatch.setattr(conrec.run_lock, "held_elsewhere", lambda root: probes.append(root) or real(root))
    client = TestClient(create_app_from_run(cfg), base_url="http://localhost")
    run.clear_done("sid")  # a `conrec sid` started
    assert [client.get("/healthz").json()["model_current"] for _ in range(3)] == [False] * 3
    assert probes == []
    with _holding(run), pytest.raises(StageInputError, match=r"not finished; run `conrec sid` with this config first.*" + BUSY.format("sid")):
        create_app_from_run(cfg)
    assert probes


def test_healthz_on_a_stale_model_never_probes_the_run_lock(tmp_path, monkeypatch):
    """Found in review: with no model current, each /healthz (once a second per worker) built the refusal's hint,
    whose lock probe takes the lock for an instant: a `conrec sft` starting then could fail with "in use"."""
    import conrec.run_lock

    monkeypatch.setattr("conrec.serve.app.CURRENT_TTL_S", 0.0)
    run = _write_run(tmp_path / "run")
    cfg = PipelineConfig(run_dir=run.root)
    _write_model(run, cfg, "sft")
    client = TestClient(create_app_from_run(cfg, load_lm=_recording_loader([])), base_url="http://localhost")
    probes = []
    monkeypatch.setattr(conrec.run_lock, "held_elsewhere", lambda root: probes.append(root) or False)
    run.invalidate_from("sft")  # a retrain started
    assert [client.get("/healthz").json()["model_current"] for _ in range(3)] == [False] * 3
    assert probes == []
