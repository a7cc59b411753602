"""Request and start-up inputs the service used to accept silently (issue 24): each is now refused or answered."""

from __future__ import annotations

import pytest

from conrec.errors import ConfigError
from conrec.serve.limits import resolve_api_key


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
