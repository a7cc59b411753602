"""Request and start-up inputs the service used to accept silently (issue 24): each is now refused or answered."""

from __future__ import annotations

import unicodedata

import polars as pl
import pytest
from fastapi.testclient import TestClient

from conrec.errors import ConfigError
from conrec.serve.app import create_app
from conrec.serve.config import ServeConfig
from conrec.serve.limits import resolve_api_key

from builders import SERVE_TEST_LIMITS, RecordingPredictor, serve_tables


@pytest.mark.parametrize("bad", ["-Infinity", "NaN", "1e400", "Infinity"])
def test_non_finite_threshold_is_rejected_with_422(serve_client, bad):
    # regression (issue 24.5): these were accepted, echoed as null, and still filtered every item
    client, _ = serve_client()
    body = f'{{"negative": ["i1"], "candidates": ["i2", "i3"], "threshold": {bad}}}'
    r = client.post("/v1/score", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith("body.threshold: Input should be a finite number")


@pytest.mark.parametrize("feedback", ["1.0", "-1.0", "true", '"1"'])
def test_feedback_must_be_the_integer_minus_one_or_one(serve_client, feedback):
    # regression (issue 24.7): 1.0 was accepted although the types are strict
    client, _ = serve_client()
    body = f'{{"history": [{{"item_id": "i1", "feedback": {feedback}}}]}}'
    r = client.post("/v1/dislikes", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert "feedback" in r.json()["detail"]
    ok = client.post("/v1/dislikes", json={"history": [{"item_id": "i1", "feedback": 1}]})
    assert ok.status_code == 200, ok.text


def test_head_healthz_answers_like_get(serve_client):
    # regression (issue 24.7): HEAD /healthz answered 405, which load balancers read as "down"
    client, _ = serve_client()
    head = client.head("/healthz")
    assert head.status_code == 200 and head.content == b""
    assert "/healthz" in client.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize("blank", ["", "   "])
def test_a_blank_api_key_is_an_error_not_authentication_off(monkeypatch, serve_client, blank):
    # regression (issue 24.7): CONREC_API_KEY="" silently served without authentication
    monkeypatch.setenv("CONREC_API_KEY", blank)
    with pytest.raises(ConfigError, match=r"\$CONREC_API_KEY is set but blank"):
        resolve_api_key(None)
    with pytest.raises(ConfigError, match="CONREC_API_KEY"):
        serve_client()
    monkeypatch.delenv("CONREC_API_KEY")
    with pytest.raises(ConfigError, match="serve.api_key is blank"):
        resolve_api_key(blank)
    assert resolve_api_key(None) is None  # unset: open, as documented


@pytest.mark.parametrize("key", ["clé", "ключ", "k€y", "bell\x07", "tab\tkey"])
def test_a_key_outside_printable_ascii_is_refused_at_start_up(monkeypatch, serve_client, key):
    """Found by probing: with the key "clé" the inspector page (a browser sends the header as Latin-1) always got
    "wrong API key", while curl (UTF-8) got in: such a key is refused at start-up, naming the character, not the key."""
    monkeypatch.setenv("CONREC_API_KEY", key)
    with pytest.raises(ConfigError, match=r"^\$CONREC_API_KEY holds .* which is not printable ASCII") as env_error:
        resolve_api_key(None)
    with pytest.raises(ConfigError, match="not printable ASCII"):
        serve_client()
    monkeypatch.delenv("CONREC_API_KEY")
    with pytest.raises(ConfigError, match=r"^serve.api_key holds .* which is not printable ASCII") as config_error:
        resolve_api_key(key)
    for error in (env_error, config_error):
        assert key not in str(error.value) and "\n" not in str(error.value)
    assert resolve_api_key("with space & ~punctuation!") == "with space & ~punctuation!"


@pytest.mark.parametrize("unknown_items", ["error", "skip"])
def test_an_id_that_is_a_lone_surrogate_is_a_422_not_a_500(serve_client, unknown_items):
    """JSON's ``"\\ud800"`` decodes to a lone surrogate: under ``unknown_items: skip`` the id was echoed back
    as skipped and the response could not be encoded (500, plain text, after the model work). The inspector's
    ``/ui/api/history`` reads the same body schema."""
    client, pred = serve_client(unknown_items=unknown_items)
    bodies = {
        "/v1/dislikes": '{"negative": ["i1", "\\ud800"]}',
        "/v1/dislikes/batch": '{"requests": [{"positive": ["\\udfff"], "negative": ["i1"]}]}',
        "/v1/score": '{"negative": ["i1"], "candidates": ["i2", "\\udfff"]}',
        "/v1/score/batch": '{"requests": [{"negative": ["i1", "\\ud800"], "candidates": ["i2"]}]}',
    }
    for path, body in bodies.items():
        r = client.post(path, content=body, headers={"content-type": "application/json"})
        assert r.status_code == 422 and "lone surrogate" in r.json()["detail"], (path, r.status_code, r.text)
    user = client.post("/v1/dislikes", content='{"user_id": "\\ud800"}', headers={"content-type": "application/json"})
    assert user.status_code == 422 and "user_id" in user.json()["detail"]
    assert not pred.calls  # refused before any model work
    ok = client.post("/v1/dislikes", json={"negative": ["i1", "\u00e9t\u00e9"]})  # real non-ASCII text is an id like any other
    if unknown_items == "skip":
        assert ok.status_code == 200 and ok.json()["skipped_items"] == ["\u00e9t\u00e9"]
    else:
        assert ok.status_code == 422 and "unknown" in ok.json()["detail"]


def test_a_request_file_is_validated_as_the_server_validates_its_body(serve_client, tmp_path):
    """``score --request`` and ``predict --history`` validated the JSON text directly, which kept one of
    ``negative`` and its alias ``neg`` when both were given (two dislikes silently gone); the server
    validates the decoded body and answers 422. Both now decide alike."""
    from conrec.errors import DataValidationError
    from conrec.llm.inference.score import request_body
    from conrec.runs import RunDir
    from conrec.serve.schemas import DislikeRequest, ScoreRequest

    client, _ = serve_client()
    run = RunDir(tmp_path)
    cases = [
        ("/v1/score", ScoreRequest, '{"negative": ["i1"], "neg": ["i2", "i3"], "candidates": ["i4"]}', False),
        ("/v1/dislikes", DislikeRequest, '{"positive": ["i1"], "pos": ["i2"]}', False),
        ("/v1/score", ScoreRequest, '{"neg": ["i2", "i3"], "candidates": ["i4"], "threshold": -6}', True),
        ("/v1/dislikes", DislikeRequest, '{"history": [{"item_id": "i1", "feedback": -1}], "k": 3}', True),
        ("/v1/dislikes", DislikeRequest, '{"negative": ["i1"], "k": 3.0}', False),
    ]
    for path, schema, body, valid in cases:
        served = client.post(path, content=body, headers={"content-type": "application/json"})
        assert (served.status_code != 422) == valid, (body, served.text)  # 501: this fake model scores no slates
        if valid:
            request_body(body, schema, "request file r.json", run, 10)
        else:
            with pytest.raises(DataValidationError, match=r"^request file r\.json: "):
                request_body(body, schema, "request file r.json", run, 10)
    with pytest.raises(DataValidationError, match=r"^request file r\.json is not valid JSON: "):
        request_body('{"negative": ["i1"]', ScoreRequest, "request file r.json", run, 10)


def test_history_exclusion_covers_the_history_given_and_says_so() -> None:
    """``decode.exclude_history`` read "never return an item already in the history", while a ``user_id`` request's
    history is that user's newest serve.max_history events: a user with 3,043 events got back 10 items rated only
    earlier. The behaviour stays (it is the evaluation's); the description says what is excluded."""
    import polars as pl

    from conrec.llm.config import DecodeConfig
    from conrec.serve.catalog import user_histories
    from conrec.serve.popular import PopularDislikePredictor

    events = pl.DataFrame({"user_id": ["u"] * 3 + ["v"] * 3, "item_id": ["a", "b", "c", "a", "a", "b"],
                           "ts": [1, 2, 3, 1, 2, 3], "feedback": [-1, 1, -1, -1, -1, -1]})
    history = user_histories(events, max_history=2)["u"]
    assert history == (["b", "c"], [1, -1])  # the newest 2: "a" (rated first) is not in it
    top = PopularDislikePredictor(events, ["a", "b", "c"]).recommend([history], 3)[0]
    assert [i for i, _ in top] == ["a"]  # returned although u rated it, before its newest 2 events
    text = DecodeConfig.model_fields["exclude_history"].description or ""
    assert "serve.max_history" in text and "data.split.max_history" in text and "older events may be returned" in text


@pytest.mark.parametrize("unknown_items", ["error", "skip"])
def test_exclude_lists_items_never_to_return_checked_like_history_items(serve_client, unknown_items):
    """`exclude` (the inspector's need: an evaluation point's items rated before its history window, which the eval
    leaves out) is left out of the top-K with the history, for an explicit history and a user_id alike; its ids are
    checked as the history's are, its length is bounded by the catalogue, and /v1/score refuses it."""
    client, pred = serve_client(unknown_items=unknown_items, max_k=8)
    plain = client.post("/v1/dislikes", json={"negative": ["i5"], "k": 4}).json()
    assert [it["item_id"] for it in plain["items"]] == ["i0", "i1", "i2", "i3"]  # popularity order
    assert pred.excluded == [None]  # no exclude given: the predictor is asked as before
    r = client.post("/v1/dislikes", json={"negative": ["i5"], "exclude": ["i0", "i2", "i0"], "k": 4})
    assert r.status_code == 200, r.text
    assert [it["item_id"] for it in r.json()["items"]] == ["i1", "i3", "i7", "i4"]
    user = client.post("/v1/dislikes", json={"user_id": "u_hist", "exclude": ["i2"], "k": 2})  # newest 4: i1, i5, i7, i6
    assert [it["item_id"] for it in user.json()["items"]] == ["i0", "i3"]
    batch = client.post("/v1/dislikes/batch", json={"requests": [{"negative": ["i5"], "exclude": ["i0"], "k": 2}, {"negative": ["i5"], "k": 2}]})
    assert [[it["item_id"] for it in res["items"]] for res in batch.json()["results"]] == [["i1", "i2"], ["i0", "i1"]]

    unknown = client.post("/v1/dislikes", json={"negative": ["i5"], "exclude": ["i0", "nope"], "k": 2})
    if unknown_items == "skip":
        assert unknown.status_code == 200 and unknown.json()["skipped_items"] == ["nope"]
        assert [it["item_id"] for it in unknown.json()["items"]] == ["i1", "i2"]
    else:
        assert unknown.status_code == 422 and unknown.json()["detail"].startswith("unknown exclude item id(s): 'nope'"), unknown.text
    # found by review: repeats counted, so the whole catalogue plus one repeat was refused as over its size
    whole = client.post("/v1/dislikes", json={"negative": ["i5"], "exclude": [f"i{j}" for j in range(12)] + ["i1"] * 2, "k": 2})
    assert whole.status_code == 200 and whole.json()["items"] == [], whole.text
    repeated = client.post("/v1/dislikes", json={"negative": ["i5"], "exclude": ["i0"] * 13 + (["nope"] * 13 if unknown_items == "skip" else []), "k": 2})
    assert repeated.status_code == 200 and [it["item_id"] for it in repeated.json()["items"]] == ["i1", "i2"], repeated.text
    assert repeated.json()["skipped_items"] == (["nope"] if unknown_items == "skip" else None)  # listed once
    many = client.post("/v1/dislikes/batch", json={"requests": [{"negative": ["i5"], "exclude": [f"x{j}" for j in range(13)]}]})
    assert many.status_code == 413 and many.json()["detail"] == "requests[0]: exclude has 13 distinct ids; the limit is the catalogue's size, n_items = 12"
    for bad in ('[""]', '["\\ud800"]', '"i1"'):
        body = f'{{"negative": ["i5"], "exclude": {bad}}}'
        assert client.post("/v1/dislikes", content=body, headers={"content-type": "application/json"}).status_code == 422, bad
    score = client.post("/v1/score", json={"negative": ["i5"], "candidates": ["i1"], "exclude": ["i2"]})
    assert score.status_code == 422 and "exclude is not used by /v1/score" in score.json()["detail"]
    schema = client.get("/openapi.json").json()["components"]["schemas"]["DislikeRequest"]["properties"]
    assert "exclude" in schema and "never to return" in schema["exclude"]["description"]


def test_an_unknown_id_that_is_a_catalogue_id_in_another_unicode_normalisation_says_so():
    """Found by probing: the NFD form of the catalogue's NFC id "ünï©ødé" got 422 "unknown item id(s): 'ünï©ødé'",
    which looks exactly like the known id. Ids still match exactly; the message now names the catalogue id it
    differs from only in normalisation (canonically equivalent: NFC/NFD).
    Found in review: the twin was found by NFKC, so ids that do not look the same ("ａ²" for "a2", the ligature "ﬁ"
    for "fi") were said to differ "only in Unicode normalisation" and lost the "items newer than the model?" hint.
    They are now said to resemble the catalogue id (its compatibility form), and keep the hint."""
    nfc = unicodedata.normalize("NFC", "ünï©ødé")
    renamed = {"i3": nfc, "i4": "fi", "i5": "a2"}
    items, sid_map, events = (t.with_columns(pl.col("item_id").replace(renamed)) for t in serve_tables())
    pred = RecordingPredictor(events, sid_map["item_id"].to_list())
    client = TestClient(create_app(pred, items, sid_map, events, ServeConfig(**SERVE_TEST_LIMITS), model_name="fake"), base_url="http://localhost")
    nfd = unicodedata.normalize("NFD", nfc)
    r = client.post("/v1/score", json={"negative": [nfd], "candidates": ["i1"]})
    assert r.status_code == 422
    assert r.json()["detail"] == (f"unknown item id(s): {nfd!r} (differs from catalogue id {nfc!r} only in Unicode normalisation: "
                                  "the catalogue's is NFC; ids are matched exactly)")  # not "items newer than the model?"
    newer = " (items newer than the model? serve.unknown_items: skip leaves them out)"
    r = client.post("/v1/dislikes", json={"negative": ["i1"], "exclude": ["nope", "\ufb01"]})
    assert r.status_code == 422
    assert r.json()["detail"] == ("unknown exclude item id(s): 'nope', 'ﬁ' (resembles catalogue id 'fi', its Unicode compatibility form; "
                                  "ids are matched exactly)" + newer)
    r = client.post("/v1/dislikes", json={"negative": ["\uff41\u00b2"]})  # fullwidth a, superscript 2: alone, still maybe newer
    assert r.status_code == 422
    assert r.json()["detail"] == ("unknown item id(s): 'ａ²' (resembles catalogue id 'a2', its Unicode compatibility form; "
                                  "ids are matched exactly)" + newer)
    assert client.post("/v1/dislikes", json={"negative": [nfc]}).status_code == 200 and pred.calls  # the exact id is known


def test_an_unknown_user_id_that_is_a_known_one_in_another_unicode_normalisation_says_so():
    """Found in review (2026-12): an unknown item id that is a catalogue id in another normalisation said so, while a
    ``user_id`` sent in NFD for a known NFC user still got a plain 404 "unknown user_id 'ünï'", which looks exactly like
    the known id. User ids now get the same hint (the same lookup, :class:`conrec.serve.catalog.IdTwins`), on every
    endpoint that reads one, and keep the 404."""
    nfc = unicodedata.normalize("NFC", "ünï©ødé")
    items, sid_map, events = serve_tables()
    events = events.with_columns(pl.col("user_id").replace({"u_hist": nfc, "d0": "fi"}))
    client = TestClient(create_app(RecordingPredictor(events, sid_map["item_id"].to_list()), items, sid_map, events,
                                   ServeConfig(**SERVE_TEST_LIMITS), model_name="fake"), base_url="http://localhost")
    nfd = unicodedata.normalize("NFD", nfc)
    same = f"{nfd!r} (differs from known user_id {nfc!r} only in Unicode normalisation: the known one is NFC; ids are matched exactly)"
    for path, body, where in (
        ("/v1/dislikes", {"user_id": nfd}, ""),
        ("/v1/score", {"user_id": nfd, "candidates": ["i1"]}, ""),
        ("/v1/dislikes/batch", {"requests": [{"negative": ["i1"]}, {"user_id": nfd}]}, "requests[1]: "),
        ("/v1/score/batch", {"requests": [{"user_id": nfd, "candidates": ["i1"]}]}, "requests[0]: "),
    ):
        r = client.post(path, json=body)
        assert r.status_code == 404 and r.json()["detail"] == f"{where}unknown user_id {same}", (path, r.text)
    r = client.post("/v1/dislikes", json={"user_id": "\ufb01"})  # the ligature: resembles "fi", does not look the same
    assert r.status_code == 404
    assert r.json()["detail"] == "unknown user_id 'ﬁ' (resembles known user_id 'fi', its Unicode compatibility form; ids are matched exactly)"
    assert client.post("/v1/dislikes", json={"user_id": "ghost"}).json()["detail"] == "unknown user_id 'ghost'"  # no twin: as before
    assert client.post("/v1/dislikes", json={"user_id": nfc}).status_code == 200  # the exact id is known


class _UnlistedUsers(dict):
    """Known users that count every pass over them: a twin lookup that indexes them all shows here."""

    passes = 0

    def __iter__(self):
        type(self).passes += 1
        return super().__iter__()

    def keys(self):
        type(self).passes += 1
        return super().keys()

    def items(self):
        type(self).passes += 1
        return super().items()


def test_an_unknown_user_id_is_matched_to_its_twin_without_indexing_every_known_user(monkeypatch):
    """Found in review (7 December 2026): the first unknown ``user_id`` normalised every known user id twice (NFC and
    NFKC) into two dicts, on the request's thread, in each worker: seconds and hundreds of MB at millions of users,
    for any mistyped id. The unknown id's own normal forms are now looked up in the known users instead; the messages
    are the same (the test above)."""
    from conrec.serve import app as app_module

    nfc = unicodedata.normalize("NFC", "ünï")
    items, sid_map, events = serve_tables()
    events = events.with_columns(pl.col("user_id").replace({"u_hist": nfc, "d0": "fi"}))
    histories = app_module.user_histories
    monkeypatch.setattr(app_module, "user_histories", lambda *a: _UnlistedUsers(histories(*a)))
    client = TestClient(create_app(RecordingPredictor(events, sid_map["item_id"].to_list()), items, sid_map, events,
                                   ServeConfig(**SERVE_TEST_LIMITS), model_name="fake"), base_url="http://localhost")
    before = _UnlistedUsers.passes
    for user, twin in ((unicodedata.normalize("NFD", nfc), nfc), ("\ufb01", "fi"), ("ghost", None)):
        r = client.post("/v1/dislikes", json={"user_id": user})
        assert r.status_code == 404 and (twin is None or repr(twin) in r.json()["detail"]), r.text
    assert _UnlistedUsers.passes == before, "an unknown user_id made a pass over every known user"
