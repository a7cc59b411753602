"""The inspector page's server side (``/ui``, ``/ui/api/...``) without a browser: what each view
returns, the API key and limits, and the page's safety rules (CSP, no inline handlers, text only).
The browser itself is exercised in ``test_serve_ui_browser.py``."""

from __future__ import annotations

import re
from importlib import resources

import polars as pl
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from conrec.config import PipelineConfig
from conrec.io import read_parquet
from conrec.runs import RunDir
from conrec.serve.app import create_app_from_run
from conrec.serve.inspect_data import Inspector, iso_date, pick_baselines
from conrec.serve.limits import OPEN_PATHS
from conrec.serve.ui import MAX_SEARCH, PUBLIC_PATHS, inspector_router

from builders import inspector_run, record_current

XSS = "<script>alert(1)</script>"
QUOTES = "Bob's \"quoted\" <b>film</b>"
KEY = "s3cret-key"


def _run(tmp_path, current: bool = True, **serve: object) -> tuple[TestClient, pl.DataFrame]:
    """:func:`builders.inspector_run` with i0 and i1 titled with HTML and quotes, as a test client."""
    cfg, test = inspector_run(tmp_path / "run", {"i0": XSS, "i1": QUOTES}, current, **serve)
    return TestClient(create_app_from_run(cfg), base_url="http://localhost"), test


def test_page_and_assets_carry_csp_and_load_without_the_key_while_data_needs_it(tmp_path):
    client, _ = _run(tmp_path, api_key=KEY)
    for path in sorted(PUBLIC_PATHS):
        r = client.get(path)
        assert r.status_code == 200, path
        assert "script-src 'self'" in r.headers["content-security-policy"] and "default-src 'none'" in r.headers["content-security-policy"]
        assert r.headers["x-content-type-options"] == "nosniff"
    assert PUBLIC_PATHS <= OPEN_PATHS
    assert client.get("/ui/api/overview").status_code == 401
    assert client.get("/ui/api/overview", headers={"X-API-Key": "wrong"}).status_code == 401
    ok = client.get("/ui/api/overview", headers={"X-API-Key": KEY})
    assert ok.status_code == 200 and ok.json()["n_points"] == 6
    assert client.get("/ui/assets/../app.py").status_code in (401, 404)  # nothing else is served open


def test_the_pages_address_with_a_trailing_slash_redirects_to_the_page_with_or_without_a_key(tmp_path):
    """Found by probing: with an API key set, ``/ui/`` answered 401 "missing API key" while an open server redirected
    it to ``/ui``. Now both redirect it (307, no body, no data) before the key check, and nothing under ``/ui/`` but
    the page's shell and assets opens with it."""
    for key in (None, KEY):
        client, _ = _run(tmp_path / str(key), api_key=key)
        r = client.get("/ui/", follow_redirects=False)
        assert (r.status_code, r.headers["location"], r.content) == (307, "http://localhost/ui", b""), (key, r.text)
        assert r.headers["cache-control"] == "no-store"
        assert client.get("/ui/").status_code == 200  # followed: the page
        if key:
            assert client.get("/ui/api/overview/", follow_redirects=False).status_code == 401
            assert client.get("/ui/api/items/", params={"q": "t"}, follow_redirects=False).status_code == 401


def test_every_response_says_no_store_and_nosniff_once(tmp_path):
    """Found by probing: the page's shell and assets (no data) said ``Cache-Control: no-store`` and ``nosniff``, the
    JSON holding the data (a user's history, the API's answers) neither, so a browser or proxy could cache it.
    Found in review: a route that raised got Starlette's own 500, from outside every middleware, with neither; now
    the app's 500 says both too, as the refusals (413 over the body limit, 503 with the queue full) do."""
    client, test = _run(tmp_path, api_key=KEY)

    def boom() -> None:
        raise RuntimeError("secret detail of the failure")

    client.app.add_api_route("/ui/api/boom", boom)
    client = TestClient(client.app, base_url="http://localhost", raise_server_exceptions=False)
    key = {"X-API-Key": KEY}
    row = test.row(0, named=True)
    history = [{"item_id": i, "feedback": int(f)} for i, f in zip(row["hist_items"], row["hist_feedback"])]
    responses = {
        "overview": client.get("/ui/api/overview", headers=key),
        "point": client.get(f"/ui/api/points/{row['sample_id']}", headers=key),
        "points": client.get("/ui/api/points", params={"user": "u"}, headers=key),
        "items": client.get("/ui/api/items", params={"q": "t"}, headers=key),
        "pasted": client.post("/ui/api/history", json={"history": history[:3]}, headers=key),
        "dislikes": client.post("/v1/dislikes", json={"history": history}, headers=key),
        "score": client.post("/v1/score", json={"history": history, "candidates": ["i0", "i1"]}, headers=key),
        "healthz": client.get("/healthz"),
        "no key": client.get("/ui/api/overview"),
        "unknown item": client.post("/v1/dislikes", json={"negative": ["nope"]}, headers=key),
        "page": client.get("/ui"),
        "asset": client.get("/ui/assets/app.js"),
        "other host": client.get("/healthz", headers={"Host": "evil.example"}),
        "raised": client.get("/ui/api/boom", headers=key),
        "too large": client.post("/v1/dislikes", content=b"x" * 2_000_001, headers={**key, "content-type": "application/json"}),
    }
    gate = client.app.state.admission
    while gate.reserve():  # the model's slots and queue all taken
        pass
    try:
        responses["busy"] = client.post("/v1/dislikes", json={"history": history}, headers=key)
    finally:
        while gate.pending:
            gate.release()
    assert [r.status_code for r in responses.values()] == [200] * 8 + [401, 422, 200, 200, 400, 500, 413, 503]
    for what, r in responses.items():
        assert r.headers.get_list("cache-control") == ["no-store"], what
        assert r.headers.get_list("x-content-type-options") == ["nosniff"], what
    assert responses["raised"].json() == {"detail": "internal server error; see the server log"}  # no traceback, no message


def test_page_source_has_no_inline_script_or_handler_and_writes_text_only():
    ui = resources.files("conrec.serve") / "ui"
    html, js = (ui / "index.html").read_text(), (ui / "app.js").read_text()
    assert not re.search(r"\son[a-z]+\s*=", html, re.I), "inline event handler in index.html"
    assert not re.search(r"<script(?![^>]*\ssrc=)[^>]*>", html), "inline <script> in index.html"
    assert " style=" not in html
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in js, f"app.js uses {sink}"


def test_point_view_has_timeline_newest_first_future_and_marked_lists(tmp_path):
    client, test = _run(tmp_path)
    row = test.row(0, named=True)
    view = client.get(f"/ui/api/points/{row['sample_id']}").json()
    assert view["user_id"] == row["user_id"] and view["date"] == iso_date(row["ts"])
    hist = row["hist_items"][-500:]
    assert [e["item_id"] for e in view["history"]] == hist  # oldest first: what /v1 is asked with
    timeline = view["timeline"]
    assert [e["item_id"] for e in timeline] == hist[::-1]
    assert [e["date"] for e in timeline] == [iso_date(t) for t in row["hist_ts"][::-1]]
    assert {e["feedback"] for e in timeline} <= {-1, 1}
    assert timeline[0]["category"].startswith("c")
    assert [f["item_id"] for f in view["future"]] == row["future_negs"]

    lists = {m["name"]: m for m in view["lists"]}
    assert list(lists) == ["sft", "popularity"]  # LMs first, then baselines
    pop = lists["popularity"]["items"]
    assert [it["item_id"] for it in pop] == ["i0", "i1", "i2"]  # cut to default_k = 3
    assert [it["rank"] for it in pop] == [1, 2, 3] and [it["score"] for it in pop] == [0.5, 0.4, 0.3]
    assert pop[0]["title"] == XSS and pop[1]["title"] == QUOTES  # raw text in JSON; the page writes it as text
    assert [it["hit"] for it in pop] == [i in set(row["future_negs"]) for i in ("i0", "i1", "i2")]
    assert lists["sft"]["items"][0]["score"] is None  # no scores column
    assert set(pop[0]["reason"]) == {"similar_dislikes", "co_disliked_with", "text"}

    k5 = client.get(f"/ui/api/points/{row['sample_id']}?k=5").json()
    assert len(k5["lists"][0]["items"]) == 5
    too_big = client.get(f"/ui/api/points/{row['sample_id']}?k=6")
    assert too_big.status_code == 422 and "1..5" in too_big.json()["detail"]
    assert client.get("/ui/api/points/999999").status_code == 404
    assert client.get("/ui/api/points/random").json()["sample_id"] in set(test["sample_id"].to_list())


def test_user_search_lists_only_evaluated_points(tmp_path):
    client, test = _run(tmp_path)
    user = test["user_id"][0]
    found = client.get("/ui/api/points", params={"user": user}).json()["points"]
    assert found and found[0]["user_id"] == user
    assert {p["sample_id"] for p in found} <= set(test["sample_id"].to_list())
    assert client.get("/ui/api/points", params={"user": "nobody"}).json()["points"] == []
    some = client.get("/ui/api/points", params={"user": "u", "limit": 2}).json()
    assert len(some["points"]) == 2 and some["total"] == 6
    assert client.get("/ui/api/points", params={"limit": MAX_SEARCH + 1}).status_code == 422


def test_pasted_history_is_checked_like_the_api_and_ranked_by_popularity(tmp_path):
    client, _ = _run(tmp_path, max_history=3)
    ok = client.post("/ui/api/history", json={"history": [{"item_id": "i2", "feedback": -1}, {"item_id": "i3", "feedback": 1}]})
    assert ok.status_code == 200, ok.text
    view = ok.json()
    assert [e["item_id"] for e in view["timeline"]] == ["i3", "i2"] and view["future"] == []
    # served model `popular`: the page's live list is this history's popularity ranking, not shown twice
    assert view["lists"] == []
    # under an LM it is shown next to the LM's live list: the same views, routed for serve.model grpo
    cfg, _ = inspector_run(tmp_path / "lm", None, max_history=3)
    app = create_app_from_run(cfg)
    run = RunDir(cfg.run_dir)
    lm = FastAPI()
    lm.state = app.state
    lm.include_router(inspector_router(Inspector.from_run(run, cfg, read_parquet(run.items)), read_parquet(run.events), cfg.serve.model_copy(update={"model": "grpo"})))
    as_lm = TestClient(lm, base_url="http://localhost").post("/ui/api/history", json={"history": [{"item_id": "i2", "feedback": -1}, {"item_id": "i3", "feedback": 1}]})
    (pop,) = as_lm.json()["lists"]
    assert pop["kind"] == "baseline_live"  # computed for this history now: not an eval run's list
    assert pop["name"] == "popularity" and len(pop["items"]) == 3 and "i2" not in {it["item_id"] for it in pop["items"]}

    unknown = client.post("/ui/api/history", json={"history": [{"item_id": "nope", "feedback": -1}]})
    assert unknown.status_code == 422 and "'nope'" in unknown.json()["detail"]
    assert view["skipped_items"] == []
    skipping, _ = _run(tmp_path / "skip", max_history=3, unknown_items="skip")  # the view lists what skip left out
    mixed = skipping.post("/ui/api/history", json={"history": [{"item_id": "i2", "feedback": -1}, {"item_id": "nope", "feedback": 1}]})
    assert mixed.status_code == 200 and mixed.json()["skipped_items"] == ["nope"]
    assert [e["item_id"] for e in mixed.json()["history"]] == ["i2"]
    long = client.post("/ui/api/history", json={"history": [{"item_id": "i2", "feedback": -1}] * 4})
    assert long.status_code == 413 and "max_history = 3" in long.json()["detail"]
    assert client.post("/ui/api/history", json={"history": []}).status_code == 422


def test_catalogue_search_matches_title_substrings_and_is_capped(tmp_path):
    client, _ = _run(tmp_path)
    hits = client.get("/ui/api/items", params={"q": "SCRIPT"}).json()["items"]
    assert [h["item_id"] for h in hits] == ["i0"] and hits[0]["title"] == XSS
    assert [h["item_id"] for h in client.get("/ui/api/items", params={"q": "t1"}).json()["items"]][:1] == ["i10"]
    four = client.get("/ui/api/items", params={"q": "t", "limit": 4}).json()
    assert len(four["items"]) == 4 and four["total"] == 15  # every title has a "t": the page says "first 4 of 15"
    assert client.get("/ui/api/items", params={"q": "t"}).json()["total"] == 15
    assert client.get("/ui/api/items", params={"q": "t", "limit": MAX_SEARCH + 1}).status_code == 422
    assert client.get("/ui/api/items", params={"q": "x" * 201}).status_code == 422


@pytest.mark.parametrize(
    ("available", "metrics", "want"),
    [
        (["category", "itemknn", "popularity"], {"itemknn": {"FHR@10": 0.3}, "category": {"FHR@10": 0.2}}, ["popularity", "itemknn", "category"]),
        (["ease", "popularity", "sasrec", "swing"], {"swing": {"FHR@10": 0.4}, "ease": {"FHR@10": 0.5}}, ["popularity", "sasrec", "ease"]),
        (["swing", "ease"], None, ["ease", "swing"]),
        (["itemknn", "popularity", "sasrec", "swing"], {"popularity": {"FHR@10": 0.5}, "swing": {"FHR@10": 0.4}, "itemknn": {"FHR@10": 0.3}},
         ["popularity", "sasrec", "swing"]),
        # the h6 run: popularity shown, then swing and taste_exposure by FHR, not category (alphabetically next)
        (["category", "content", "popularity", "swing", "taste_exposure"],
         {"popularity": {"FHR@10": 0.207}, "swing": {"FHR@10": 0.205}, "taste_exposure": {"FHR@10": 0.198},
          "content": {"FHR@10": 0.175}, "category": {"FHR@10": 0.120}}, ["popularity", "swing", "taste_exposure"]),
        (["category", "itemknn", "swing"], {"swing": {"FHR@10": 0.1}}, ["swing", "category", "itemknn"]),  # unscored last, by name
    ],
)
def test_baselines_shown_are_popularity_sasrec_and_the_best(available, metrics, want):
    assert pick_baselines(available, metrics, "FHR@10") == want


def test_lists_of_an_eval_stage_that_is_not_current_are_not_shown(tmp_path):
    """After a retrained model or a rebuilt split, the eval stage's files are another model's lists, or
    another point's: the page leaves them out and says why, instead of showing them under the model's name."""
    client, test = _run(tmp_path, current=False)
    overview = client.get("/ui/api/overview").json()
    assert overview["precomputed"] == [] and overview["precomputed_stale"] == "not finished"
    cfg = PipelineConfig.model_validate({"run_dir": str(tmp_path / "run"), "serve": {"model": "popular", "default_k": 3, "max_k": 5}})
    hint = RunDir(cfg.run_dir).rerun_hint(cfg, "eval")  # what the server logs: the page shows the same
    assert overview["precomputed_hint"] == hint and hint.startswith("run `conrec ")
    js = (resources.files("conrec.serve") / "ui" / "app.js").read_text()
    assert "precomputed_hint" in js and "run conrec eval" not in js
    view = client.get(f"/ui/api/points/{test['sample_id'][0]}").json()
    assert view["lists"] == []
    fresh, _ = _run(tmp_path / "fresh")
    assert [m["name"] for m in fresh.get("/ui/api/overview").json()["precomputed"]] == ["sft", "popularity"]
    assert fresh.get("/ui/api/overview").json()["precomputed_stale"] is None
    assert fresh.get("/ui/api/overview").json()["precomputed_hint"] is None


def test_lists_made_stale_while_the_server_runs_are_left_out_from_the_next_view(tmp_path, monkeypatch, caplog):
    """Found by probing: 25 s into an SFT retrain of the served run ``/healthz`` said ``loaded_current: false``, but the
    page still listed the eval stage's lists (checked at start-up only) under the retrained model's name. The overview
    and point views now leave them out from the next view on, with the reason and hint a start-up gives; the eval stage
    current again does not bring them back (they are the earlier run's), a restart does."""
    monkeypatch.setattr("conrec.serve.app.CURRENT_TTL_S", 0.0)  # the check /healthz reuses for a second
    client, test = _run(tmp_path)
    point = f"/ui/api/points/{test['sample_id'][0]}"
    assert [m["name"] for m in client.get("/ui/api/overview").json()["precomputed"]] == ["sft", "popularity"]
    assert [m["name"] for m in client.get(point).json()["lists"]] == ["sft", "popularity"]
    cfg = PipelineConfig.model_validate({"run_dir": str(tmp_path / "run"), "serve": {"model": "popular", "default_k": 3, "max_k": 5}})
    run = RunDir(cfg.run_dir)
    assert "eval" in run.invalidate_from("sft", cfg)  # what `conrec sft` does as it starts
    assert client.get("/healthz").json()["loaded_current"] is False
    why, hint = run.stale_message(cfg, "eval"), run.rerun_hint(cfg, "eval")
    assert why is not None and why.startswith("`conrec sft` was run again")
    for body in (client.get("/ui/api/overview").json(), client.get(point).json(), client.get("/ui/api/points/random").json()):
        assert (body.get("precomputed", []), body.get("lists", []), body["precomputed_stale"], body["precomputed_hint"]) == ([], [], why, hint)
    assert sum("no longer shown" in r.getMessage() for r in caplog.records) == 1  # logged once, as at start-up
    record_current(cfg, "eval")  # the eval stage ran again: its new lists are not the ones in memory
    again = client.get("/ui/api/overview").json()
    assert again["precomputed"] == [] and "ran again after this server started" in again["precomputed_stale"]
    assert "restart conrec serve" in again["precomputed_hint"]
    restarted = TestClient(create_app_from_run(cfg), base_url="http://localhost")
    assert [m["name"] for m in restarted.get("/ui/api/overview").json()["precomputed"]] == ["sft", "popularity"]


def test_served_popularity_saw_the_points_futures_so_the_page_does_not_score_it(tmp_path):
    """Found by a leakage audit: served `popular` counts every dislike of the log, so on evaluation points the
    page marked 27 of 30 with hits of a list made popular by their own held-out futures (8 of 30 for the eval
    run's popularity, fitted before the cut-off). The views say so, and the page marks none of its hits
    (``test_serve_ui_browser.py``)."""
    client, test = _run(tmp_path)
    view = client.get(f"/ui/api/points/{test['sample_id'][0]}").json()
    assert "serve.model: popular" in view["live_unscored"] and "not marked" in view["live_unscored"]
    assert client.get("/ui/api/overview").json()["live_unscored"] == view["live_unscored"]
    assert [m["name"] for m in view["lists"]] == ["sft", "popularity"]  # the eval run's lists are still scored


def test_a_served_lm_trained_on_the_valid_labels_is_not_scored_on_valid_points(tmp_path):
    """Found by a leakage audit: with eval.split: valid and data.split.train_until: test the eval stage refuses
    the LM (it learnt the valid points' futures as targets), but the page showed the valid points, called
    their futures held out and marked the live LM's hits against them, with no word."""
    cfg, _ = inspector_run(tmp_path / "run")
    app = create_app_from_run(cfg)
    run = RunDir(cfg.run_dir)
    items, events = read_parquet(run.items), read_parquet(run.events)

    def served_lm(split: str, train_until: str) -> TestClient:
        raw = cfg.model_dump()
        raw["eval"]["split"], raw["data"]["split"]["train_until"], raw["serve"]["model"] = split, train_until, "grpo"
        lm_cfg = PipelineConfig.model_validate(raw)
        lm = FastAPI()
        lm.state = app.state
        lm.include_router(inspector_router(Inspector.from_run(run, lm_cfg, items), events, lm_cfg.serve))
        return TestClient(lm, base_url="http://localhost")

    leaky = served_lm("valid", "test")
    overview = leaky.get("/ui/api/overview").json()
    assert overview["split"] == "valid" and overview["n_points"] > 0
    assert "trained on the valid period's labels" in overview["live_unscored"]
    view = leaky.get("/ui/api/points/random").json()
    assert view["live_unscored"] == overview["live_unscored"]
    for split, train_until in (("valid", "valid"), ("test", "test"), ("test", "valid")):  # the LM never saw these futures
        fair = served_lm(split, train_until)
        assert fair.get("/ui/api/overview").json()["live_unscored"] is None
        assert fair.get("/ui/api/points/random").json()["live_unscored"] is None


def test_a_run_without_evaluation_points_still_serves_the_api_and_pasted_histories(tmp_path):
    from conrec.serve.synthetic import write_synthetic_run

    run = write_synthetic_run(tmp_path / "run", n_items=30, n_users=5, events_per_user=6)
    (run.predictions).mkdir(parents=True)
    (run.predictions / "popularity.parquet").write_bytes(b"not parquet")  # unreadable: logged, not fatal
    cfg = PipelineConfig.model_validate({"run_dir": str(run.root), "serve": {"model": "popular"}})
    client = TestClient(create_app_from_run(cfg), base_url="http://localhost")
    assert client.get("/ui/api/overview").json()["n_points"] == 0
    assert client.get("/ui/api/points/random").status_code == 404
    assert client.post("/ui/api/history", json={"history": [{"item_id": "i3", "feedback": -1}]}).status_code == 200
    assert client.post("/v1/dislikes", json={"negative": ["i3"]}).status_code == 200


def _luminance(hex_colour: str) -> float:
    h = hex_colour.lstrip("#")
    h = "".join(c * 2 for c in h) if len(h) == 3 else h
    channels = [int(h[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    r, g, b = (c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


# (rule giving the text colour, rule giving the background it sits on): the page's small text
CONTRAST_PAIRS = [
    (".badge.hit", ".badge.hit"), (".badge.neg", ".badge.neg"), (".badge.pos", ".badge.pos"), (".badge.live", ".badge.live"),
    (".badge.filter", ".badge.filter"), (".badge.keep", ".badge.keep"), (".future li .by", ".future li"), (".future li .meta", ".future li"),
    (".hint", ".card"), (".picklist .meta", ".card"), ("th", "th"), (".model-list .score", ".model-list li.hit"),
    (".model-list .rank", ".model-list li.hit"), (".status.error", ".status.error"), (".served", ".top"), (".served.stale", ".top"),
]


def test_small_text_meets_wcag_aa_contrast():
    """Every coloured small text on its background: at least 4.5:1 (WCAG 2 AA), computed from app.css."""
    css = (resources.files("conrec.serve") / "ui" / "app.css").read_text()
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.S)
    rules: dict[str, dict[str, str]] = {}
    for selectors, body in re.findall(r"([^{}]+)\{([^{}]*)\}", css):
        props = dict(p.split(":", 1) for p in body.split(";") if ":" in p)
        for sel in selectors.split(","):
            rules.setdefault(sel.strip(), {}).update({k.strip(): v.strip() for k, v in props.items()})
    variables = {k: v for k, v in rules[":root"].items() if k.startswith("--")}

    def colour(rule: str, prop: str) -> str:
        value = rules[rule][prop]
        return variables[m.group(1)] if (m := re.fullmatch(r"var\((--[\w-]+)\)", value)) else value

    low = []
    for fg, bg in CONTRAST_PAIRS:
        a, b = sorted((_luminance(colour(fg, "color")), _luminance(colour(bg, "background"))), reverse=True)
        if (ratio := (a + 0.05) / (b + 0.05)) < 4.5:
            low.append(f"{fg} on {bg}: {ratio:.2f}")
    assert not low, low


def test_title_search_normalises_unicode_and_case(tmp_path):
    """A title stored decomposed (e + combining accent) is found by the composed letter and back; so are
    compatibility forms (the "ﬁ" ligature, full-width letters) and case folding ("STRASSE" finds "Straße")."""
    titles = {"i5": "Ame\u0301lie", "i6": "Caf\u00e9 Society", "i7": "The \ufb01nal cut", "i8": "Stra\u00dfe", "i9": "\uff33\uff54\uff41\uff52 Wars"}
    cfg, _ = inspector_run(tmp_path / "run", titles)
    client = TestClient(create_app_from_run(cfg), base_url="http://localhost")

    def found(q: str) -> list[str]:
        return [h["item_id"] for h in client.get("/ui/api/items", params={"q": q}).json()["items"]]

    assert found("Am\u00e9lie") == ["i5"] and found("AM\u00c9LIE") == ["i5"]
    assert found("cafe\u0301") == ["i6"]
    assert found("final") == ["i7"] and found("\ufb01nal") == ["i7"]
    assert found("STRASSE") == ["i8"]
    assert found("star wars") == ["i9"]


def _with_user_ids(cfg: PipelineConfig, renamed: dict[str, str]) -> None:
    """The run's events and samples with the users of ``renamed`` given new ids."""
    from conrec.io import write_parquet

    run = RunDir(cfg.run_dir)
    for table in (run.events, run.samples):
        frame = read_parquet(table)
        write_parquet(frame.with_columns(pl.col("user_id").replace(renamed)), table)


def test_user_search_finds_an_id_as_typed_and_stripped(tmp_path):
    """Found by probing: the query was stripped (by the page, then by the server), so the user " lead" (a leading
    space, kept by `conrec data` as its own user) could not be found. Now exact matches as typed come first, then
    those stripped, then ids starting with either."""
    cfg, test = inspector_run(tmp_path / "run")
    users = list(dict.fromkeys(test["user_id"].to_list()))
    assert len(users) >= 3
    _with_user_ids(cfg, {users[0]: " lead", users[1]: "lead", users[2]: "leader"})
    client = TestClient(create_app_from_run(cfg), base_url="http://localhost")

    def found(query: str) -> list[str]:
        return [p["user_id"] for p in client.get("/ui/api/points", params={"user": query}).json()["points"]]

    def each(ids: list[str]) -> list[str]:
        return list(dict.fromkeys(ids))

    assert each(found(" lead")) == [" lead", "lead", "leader"]
    assert each(found("lead")) == ["lead", "leader"]
    assert each(found("lead ")) == ["lead", "leader"]  # a stray space typed after an id still finds it
    assert found(" ") == found("") and len(found("")) == len(test)  # a blank query: every point


def test_a_point_without_a_prior_event_tells_the_page_not_to_ask_the_api(tmp_path):
    """Found by probing: with data.split.min_history: 0 a point may have no prior event; its view was served, but
    the page then asked /v1/dislikes and /v1/score with an empty history, which the API refuses (422), and showed
    "body: history is empty" as the served model's list. The view now says why the API is not asked."""
    from conrec.io import write_parquet
    from conrec.serve.ui import NO_HISTORY

    cfg, test = inspector_run(tmp_path / "run")
    run = RunDir(cfg.run_dir)
    empty, other = test["sample_id"][0], test["sample_id"][1]
    samples = read_parquet(run.samples)
    write_parquet(samples.with_columns(
        pl.when(pl.col("sample_id") == empty).then(pl.lit([], dtype=samples[c].dtype)).otherwise(pl.col(c)).alias(c)
        for c in ("hist_items", "hist_feedback", "hist_ts")
    ), run.samples)
    client = TestClient(create_app_from_run(cfg), base_url="http://localhost")
    view = client.get(f"/ui/api/points/{empty}").json()
    assert (view["history"], view["timeline"], view["live_unasked"]) == ([], [], NO_HISTORY)
    assert [m["name"] for m in view["lists"]] == ["sft", "popularity"]  # the eval run's lists are still shown
    assert client.get(f"/ui/api/points/{other}").json()["live_unasked"] is None
    # what the page would have asked: refused, which is why it asks nothing (if the API ever answers it, drop the note)
    assert client.post("/v1/dislikes", json={"history": [], "k": 3}).status_code == 422
    js = (resources.files("conrec.serve") / "ui" / "app.js").read_text()
    assert "if (view.live_unasked) return" in js and "if (state.view.live_unasked) throw" in js


def test_a_points_live_list_leaves_out_what_the_eval_left_out_and_the_page_counts_every_earlier_event(tmp_path):
    """The inference audit of 7 December 2026: the page asked /v1/dislikes for an evaluation point with its
    data.split.max_history window alone, so the live list held items the user rated before the window, which the eval's
    lists beside it leave out (user 13's point 1275: 9 of 10), and it said "200 events before it (70 dislikes)" of a
    user who had 608 and 201. The view now carries the rest of what the eval excluded (`exclude`, which the page
    sends with the history) and the full counts."""
    cfg, test = inspector_run(tmp_path / "run", split_max_history=4)
    client = TestClient(create_app_from_run(cfg), base_url="http://localhost")
    events = read_parquet(RunDir(cfg.run_dir).events)
    checked = 0
    for row in test.iter_rows(named=True):
        before = events.filter((pl.col("user_id") == row["user_id"]) & (pl.col("ts") < row["ts"]))
        seen = set(before["item_id"].to_list()) | set(row["hist_items"])  # what the eval excluded (conrec.eval.seen)
        view = client.get(f"/ui/api/points/{row['sample_id']}").json()
        history = [e["item_id"] for e in view["history"]]
        assert history == row["hist_items"]  # the window, what the models read
        assert view["n_before"] == before.height + sum(t == row["ts"] for t in row["hist_ts"])
        assert view["n_dislikes_before"] == row["hist_negatives"]
        assert sorted(view["exclude"]) == sorted(seen - set(history)) and len(set(view["exclude"])) == len(view["exclude"])
        live = client.post("/v1/dislikes", json={"history": view["history"], "exclude": view["exclude"], "k": 5})  # as app.js asks
        assert live.status_code == 200, live.text
        assert not {it["item_id"] for it in live.json()["items"]} & seen
        checked += bool(view["exclude"])
        assert view["n_before"] > len(history) or not view["exclude"]
    assert checked  # some point's user rated items before its 4-event window
    listed = {p["sample_id"]: p["n_history"] for p in client.get("/ui/api/points").json()["points"]}
    assert listed == {r["sample_id"]: client.get(f"/ui/api/points/{r['sample_id']}").json()["n_before"] for r in test.iter_rows(named=True)}
    refused = client.post("/ui/api/history", json={"negative": ["i2"], "exclude": ["i3"]})
    assert refused.status_code == 422 and "exclude is not used" in refused.json()["detail"]


def test_the_page_asks_to_exclude_nothing_when_the_eval_excluded_nothing(tmp_path):
    """Found by review: an ``exclude`` always applies, but under ``decode.exclude_history: false`` the eval leaves out
    nothing, not even the history; the page still sent every item rated before the window, so its live list differed
    from the eval's list beside it (16 of 20 demo points)."""
    cfg, test = inspector_run(tmp_path / "run", split_max_history=4)
    off = cfg.model_copy(update={"decode": cfg.decode.model_copy(update={"exclude_history": False})})
    on_client = TestClient(create_app_from_run(cfg), base_url="http://localhost")
    off_client = TestClient(create_app_from_run(off), base_url="http://localhost")
    ids = test["sample_id"].to_list()
    assert any(on_client.get(f"/ui/api/points/{s}").json()["exclude"] for s in ids)  # the window hides earlier items
    assert all(off_client.get(f"/ui/api/points/{s}").json()["exclude"] == [] for s in ids)


def test_the_page_escapes_the_same_characters_as_the_cli():
    """Found in review: the page (app.js UNSEEN) escaped five characters, the CLI (conrec.console_text) also the
    left-to-right and right-to-left marks, the other bidi controls and the C0 and C1 controls, so `u\\u200ex` read
    `ux` on the page, which docs/inspector.md says shows them as the CLI prints them. The two sets are now one
    (how each is written: tests/test_serve_ui_browser.py)."""
    from conrec.console_text import _UNPRINTABLE

    source = (resources.files("conrec.serve") / "ui" / "app.js").read_text(encoding="utf-8")
    found = re.search(r"^const UNSEEN = /(\[[^\]]*\])/g;$", source, re.M)
    assert found is not None
    page = re.compile(found.group(1))  # a JS character class of \uXXXX escapes reads the same in Python
    assert [hex(c) for c in range(0x10000) if bool(page.match(chr(c))) != bool(_UNPRINTABLE.match(chr(c)))] == []
