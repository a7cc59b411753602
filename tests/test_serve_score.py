"""POST /v1/score and /v1/score/batch, and explanations on /v1/dislikes and /v1/score."""

from __future__ import annotations

import polars as pl
import pytest
from fastapi.testclient import TestClient

from conrec.explain import Explainer, shared_prefix
from conrec.serve.app import create_app
from conrec.serve.config import ServeConfig
from conrec.serve.popular import PopularDislikePredictor
from conrec.slate import decide, rank_scores

IDS = [f"i{j}" for j in range(8)]
# SIDs: i0..i3 share <a_0>; i0,i1 share <a_0><b_0>; i4..i7 share <a_1>
SIDS = ["<a_0><b_0><c_0>", "<a_0><b_0><c_1>", "<a_0><b_1><c_0>", "<a_0><b_1><c_1>",
        "<a_1><b_0><c_0>", "<a_1><b_0><c_1>", "<a_1><b_1><c_0>", "<a_1><b_1><c_1>"]  # fmt: skip
# co-dislikes: users d0, d1 dislike i1 and i6 together; i0 disliked by d2 (plus a popularity order)
EVENTS = [("d0", "i1", 1, -1), ("d0", "i6", 2, -1), ("d1", "i1", 1, -1), ("d1", "i6", 2, -1), ("d2", "i0", 1, -1),
          ("d2", "i0", 2, -1), ("u", "i1", 1, -1), ("u", "i3", 2, -1), ("u", "i7", 3, 1)]  # fmt: skip


def _app(cfg: ServeConfig | None = None, predictor=None) -> TestClient:
    items = pl.DataFrame({"item_id": IDS, "title": [f"Film {j}" for j in range(8)]})
    sid_map = pl.DataFrame({"item_id": IDS, "sid": SIDS})
    events = pl.DataFrame(EVENTS, schema={"user_id": pl.String, "item_id": pl.String, "ts": pl.Int64, "feedback": pl.Int8}, orient="row")
    pred = predictor or PopularDislikePredictor(events, IDS)
    return TestClient(create_app(pred, items, sid_map, events, cfg or ServeConfig(max_candidates=5, max_batch=2), model_name="pop"), base_url="http://localhost")


def test_score_returns_every_candidate_in_request_order_with_rank_and_decision():
    client = _app()
    r = client.post("/v1/score", json={"negative": ["i3"], "candidates": ["i5", "i0", "i1"], "threshold": 0.3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [it["item_id"] for it in body["items"]] == ["i5", "i0", "i1"]
    # dislike shares: i1 3/7, i0 2/7, i6 2/7, i3 ... i5 0
    scores = [it["score"] for it in body["items"]]
    assert scores[0] == 0.0 and scores[2] > scores[1] > 0
    assert [it["rank"] for it in body["items"]] == [3, 2, 1]
    assert [it["decision"] for it in body["items"]] == ["keep", "keep", "filter"]  # 3/7 >= 0.3 > 2/7
    assert body["n_filtered"] == 1 and body["threshold"] == 0.3 and body["model"] == "pop"
    assert body["items"][0]["sid"] == SIDS[5] and body["items"][0]["title"] == "Film 5"
    assert body["items"][0]["reason"] is None
    plain = client.post("/v1/score", json={"user_id": "u", "candidates": ["i5"]}).json()
    assert plain["items"][0]["decision"] is None and plain["n_filtered"] is None


@pytest.mark.parametrize(
    "body, status, needle",
    [
        ({"negative": ["i3"], "candidates": []}, 422, "candidates is empty"),
        ({"negative": ["i3"], "candidates": ["i1", "i1"]}, 422, "repeat"),
        ({"negative": ["i3"], "candidates": ["i1", "nope", "zz"]}, 422, "unknown candidate item id(s): 'nope', 'zz'"),
        ({"negative": ["i3"], "candidates": IDS[:6]}, 413, "max_candidates = 5"),
        ({"negative": ["i3"]}, 422, "candidates"),
        ({"negative": ["i3"], "candidates": ["i1"], "k": 3}, 422, "k is not used by /v1/score"),  # it said "Input should be None"
        ({"candidates": ["i1"]}, 422, "no history"),
        ({"user_id": "ghost", "candidates": ["i1"]}, 404, "unknown user_id"),
        ({"negative": ["i3"], "candidates": ["i1"], "threshold": "high"}, 422, "threshold"),
    ],
)
def test_bad_slates_get_clear_4xx(body, status, needle):
    r = _app().post("/v1/score", json=body)
    assert r.status_code == status, r.text
    assert needle in r.json()["detail"]


def test_score_batch_is_one_call_and_names_the_bad_request():
    calls = []

    class Spy(PopularDislikePredictor):
        def score(self, histories, candidates):
            calls.append(len(candidates))
            return super().score(histories, candidates)

    events = pl.DataFrame(EVENTS, schema={"user_id": pl.String, "item_id": pl.String, "ts": pl.Int64, "feedback": pl.Int8}, orient="row")
    client = _app(predictor=Spy(events, IDS))
    r = client.post("/v1/score/batch", json={"requests": [
        {"negative": ["i3"], "candidates": ["i0", "i1"]}, {"user_id": "u", "candidates": ["i6"], "threshold": 0.1}]})
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert [len(x["items"]) for x in res] == [2, 1] and calls == [2]
    assert res[1]["items"][0]["decision"] == "filter"
    bad = client.post("/v1/score/batch", json={"requests": [{"negative": ["i3"], "candidates": ["i0"]}, {"negative": ["i3"], "candidates": ["x"]}]})
    assert bad.status_code == 422 and bad.json()["detail"].startswith("requests[1]: unknown candidate")
    too_many = client.post("/v1/score/batch", json={"requests": [{"negative": ["i3"], "candidates": ["i0"]}] * 3})
    assert too_many.status_code == 413


def test_model_without_scoring_is_501():
    class OnlyRecommend:
        def recommend(self, histories, k):
            return [[] for _ in histories]

    r = _app(predictor=OnlyRecommend()).post("/v1/score", json={"negative": ["i3"], "candidates": ["i0"]})
    assert r.status_code == 501 and "cannot score" in r.json()["detail"]


def test_explanations_cite_sid_cluster_and_co_dislikes_with_titles():
    client = _app()
    # user disliked i1 (<a_0><b_0>...) and i3 (<a_0><b_1>...); liked i7
    r = client.post("/v1/score", json={"user_id": "u", "candidates": ["i0", "i6", "i4"], "explain": True})
    assert r.status_code == 200, r.text
    reasons = {it["item_id"]: it["reason"] for it in r.json()["items"]}
    r0 = reasons["i0"]  # shares 2 SID levels with i1, 1 with i3
    assert [(e["item_id"], e["title"], e["shared_sid_levels"]) for e in r0["similar_dislikes"]] == [("i1", "Film 1", 2)]
    assert "Film 1" in r0["text"] and "<a_0><b_0>" in r0["text"]
    r6 = reasons["i6"]  # no SID prefix with any dislike, but co-disliked with i1 by d0 and d1
    assert r6["similar_dislikes"] == []
    assert [e["item_id"] for e in r6["co_disliked_with"]] == ["i1"] and r6["co_disliked_with"][0]["similarity"] > 0.5
    assert "Often disliked together with 'Film 1'" in r6["text"]
    assert "i7" not in str(reasons)  # positives are never cited
    d = client.post("/v1/dislikes", json={"user_id": "u", "k": 2, "explain": True}).json()
    assert all(it["reason"] is not None for it in d["items"])
    assert client.post("/v1/dislikes", json={"user_id": "u", "k": 2}).json()["items"][0]["reason"] is None


def test_explainer_and_slate_helpers_directly():
    assert shared_prefix(["<a_1>", "<b_2>"], ["<a_1>", "<b_3>"]) == 1
    ex = Explainer(dict(zip(IDS, SIDS)), {}, None)
    assert ex.explain("i0", ["i7"], [1]).text == "No past dislike to compare with."
    r = ex.explain("i0", ["i4", "i2", "i3"], [-1, -1, -1])
    assert [e.item_id for e in r.similar_dislikes] == ["i3", "i2"]  # both share 1 level, most recent first
    assert r.co_disliked_with == []
    assert rank_scores([0.1, 0.5, 0.5, float("-inf")]) == [3, 1, 2, 4]
    assert decide([0.1, 0.5], 0.5) == ["keep", "filter"] and decide([0.1], None) == [None]
    assert decide([float("nan")], 0.0) == ["keep"]


def test_items_unknown_to_the_model_are_skipped_and_listed_when_the_config_says_so():
    """A slate or a history holding an item newer than the model was a 422 for the whole request, with no way
    around it but filtering ids client-side; ``serve.unknown_items: skip`` answers the known part and lists the rest."""
    r = _app().post("/v1/score", json={"negative": ["i3"], "candidates": ["i1", "new"]})
    assert r.status_code == 422 and "serve.unknown_items: skip" in r.json()["detail"]  # the default says how
    client = _app(ServeConfig(max_candidates=5, max_batch=2, unknown_items="skip"))
    body = client.post("/v1/score", json={"negative": ["i3", "old"], "candidates": ["i5", "new", "i1"], "threshold": 0.3,
                                          "explain": True}).json()
    assert [it["item_id"] for it in body["items"]] == ["i5", "new", "i1"]  # the request's order, skipped ones too
    new = body["items"][1]
    assert new["score"] is None and new["rank"] is None and new["decision"] is None and new["reason"] is None
    assert body["n_filtered"] == 1 and body["skipped_items"] == ["old", "new"]
    # the known part is answered exactly as a request without the unknown ids
    same = client.post("/v1/score", json={"negative": ["i3"], "candidates": ["i5", "i1"], "threshold": 0.3, "explain": True}).json()
    assert [body["items"][0], body["items"][2]] == same["items"] and same["skipped_items"] is None
    twice = client.post("/v1/score", json={"negative": ["i3", "new"], "candidates": ["new", "i1"]}).json()
    assert twice["skipped_items"] == ["new"]  # unknown in the history and the slate: listed once
    assert client.get("/healthz").json()["limits"]["unknown_items"] == "skip"  # a client can see the mode
    all_new = client.post("/v1/score", json={"negative": ["i3"], "candidates": ["n1", "n2"]}).json()
    assert [it["score"] for it in all_new["items"]] == [None, None] and all_new["skipped_items"] == ["n1", "n2"]
    # /v1/dislikes: the history's unknown events are left out; a history of unknown items only is refused
    d = client.post("/v1/dislikes", json={"negative": ["i3", "zz"], "k": 3}).json()
    assert d["skipped_items"] == ["zz"]
    assert d["items"] == client.post("/v1/dislikes", json={"negative": ["i3"], "k": 3}).json()["items"]
    r = client.post("/v1/dislikes", json={"negative": ["zz"]})
    assert r.status_code == 422 and "no item of the history is known" in r.json()["detail"]
    # the batch endpoints the same way
    b = client.post("/v1/score/batch", json={"requests": [{"negative": ["i3"], "candidates": ["new", "i1"]},
                                                          {"negative": ["i3"], "candidates": ["n9"]}]}).json()
    assert b["results"][0]["items"][1]["rank"] == 1 and b["results"][1]["skipped_items"] == ["n9"]
    db = client.post("/v1/dislikes/batch", json={"requests": [{"negative": ["i3", "zz"], "k": 2}]}).json()
    assert db["results"][0]["skipped_items"] == ["zz"]


def test_a_reason_cites_only_what_the_model_read_and_counts_co_dislikes_on_training_events(tmp_path):
    """Found by probing: a reason cited dislikes older than the predictor's history limit (the model never saw
    them), and co-dislikes were counted on the whole log, so an evaluation point's hit was explained by its own
    future label (the inspector shows test points)."""
    from conrec.config import load_config
    from conrec.explain import explanation_events

    ex = Explainer(dict(zip(IDS, SIDS)), {}, None, history_limit=2)
    assert ex.explain("i0", ["i1", "i7", "i7"], [-1, 1, 1]).text == "No past dislike to compare with."  # i1 is cut
    assert [e.item_id for e in ex.explain("i0", ["i7", "i1", "i7"], [1, -1, 1]).similar_dislikes] == ["i1"]
    # the app counts co-dislikes on the events it is given for that, not on the users' histories
    events = pl.DataFrame(EVENTS, schema={"user_id": pl.String, "item_id": pl.String, "ts": pl.Int64, "feedback": pl.Int8}, orient="row")
    items = pl.DataFrame({"item_id": IDS, "title": [f"Film {j}" for j in range(8)]})
    sid_map = pl.DataFrame({"item_id": IDS, "sid": SIDS})
    body = {"negative": ["i1"], "candidates": ["i6"], "explain": True}
    full = TestClient(create_app(PopularDislikePredictor(events, IDS), items, sid_map, events, ServeConfig(), model_name="pop"),
                      base_url="http://localhost")
    assert full.post("/v1/score", json=body).json()["items"][0]["reason"]["co_disliked_with"]  # d0, d1: i1 with i6
    early = events.filter(pl.col("ts") < 2)  # before the i6 dislikes
    cut = TestClient(create_app(PopularDislikePredictor(events, IDS), items, sid_map, events, ServeConfig(), model_name="pop",
                                explain_events=lambda: early), base_url="http://localhost")
    assert cut.post("/v1/score", json=body).json()["items"][0]["reason"]["co_disliked_with"] == []
    # a run's training events: those before the valid cut-off (train_until: valid), as the models saw them
    from builders import eval_run_dir

    run, _ = eval_run_dir(tmp_path / "run")
    split = load_config(None, {"data": {"split": {"horizon_days": 3, "max_horizon_days": 10}}}).data.split
    counted = explanation_events(run, split)
    valid_cut = pl.read_parquet(run.samples).filter(pl.col("split") == "valid")["ts"].min()
    assert counted is not None and 0 < counted.height < pl.read_parquet(run.events).height and counted["ts"].max() < valid_cut
