"""A real ``conrec serve`` uvicorn process on 127.0.0.1: start, answer, survive bad input, stop."""

from __future__ import annotations

import httpx
import pytest

from conrec.config import PipelineConfig
from conrec.io import read_parquet
from conrec.serve.local import local_server
from conrec.serve.popular import PopularDislikePredictor
from conrec.serve.synthetic import write_synthetic_run


def test_uvicorn_process_serves_and_shuts_down(tmp_path):
    run = write_synthetic_run(tmp_path / "run", n_items=60, n_users=10, events_per_user=12)
    cfg = PipelineConfig.model_validate({"run_dir": str(run.root), "serve": {"model": "popular", "max_k": 20}})
    events, sid_map = read_parquet(run.events), read_parquet(run.sid_map)
    expected = PopularDislikePredictor(events, sid_map["item_id"].to_list())

    with local_server(cfg, startup_timeout=60) as server:
        assert server.url.startswith("http://127.0.0.1:")
        with httpx.Client(base_url=server.url, timeout=10) as client:
            health = client.get("/healthz").json()
            assert health["model"] == "popular" and health["n_items"] == 60 and health["n_users"] == 10

            r = client.post("/v1/dislikes", json={"negative": ["i0", "i1"], "positive": ["i2"], "k": 5})
            assert r.status_code == 200, r.text
            got = [(it["item_id"], it["score"]) for it in r.json()["items"]]
            want = expected.recommend([(["i2", "i0", "i1"], [1, -1, -1])], 5)[0]
            assert [i for i, _ in got] == [i for i, _ in want]

            bad = client.post("/v1/dislikes", json={"negative": ["no-such-item"]})
            assert bad.status_code == 422 and "no-such-item" in bad.json()["detail"]
            assert client.post("/v1/dislikes", json={"user_id": "nobody"}).status_code == 404

            batch = client.post("/v1/dislikes/batch", json={"requests": [{"user_id": "u3", "k": 3}, {"negative": ["i5"]}]})
            assert batch.status_code == 200 and [len(x["items"]) for x in batch.json()["results"]] == [3, 10]
        assert server.process.poll() is None  # still up after the errors
        assert "Uvicorn running on http://127.0.0.1" in server.log_tail(100_000)

    assert server.process.returncode is not None  # stopped when the block exited


def test_serve_checks_its_port_before_loading_anything(tmp_path):
    """--port 0 served on the config's port, 70000 was an OverflowError traceback after the model had loaded."""
    from typer.testing import CliRunner

    from conrec.cli import app
    from conrec.config import PipelineConfig
    from conrec.errors import ConfigError
    from conrec.serve.app import run

    for port in ("0", "70000"):
        out = CliRunner().invoke(app, ["serve", "-r", str(tmp_path / "none"), "--port", port])
        assert out.exit_code == 2 and "Invalid value for '--port'" in out.output, out.output
    with pytest.raises(ConfigError, match="port 70000 is out of range"):
        run(PipelineConfig.model_validate({"run_dir": str(tmp_path / "none")}), port=70000)


def test_serve_says_in_one_line_that_it_cannot_listen_before_loading_the_model(tmp_path):
    """A busy port or an unknown host: uvicorn said it after the model had loaded, and exited 3."""
    import socket

    from conrec.config import PipelineConfig
    from conrec.errors import ConfigError
    from conrec.serve.app import run

    cfg = PipelineConfig.model_validate({"run_dir": str(tmp_path / "none")})  # no run: the port is checked first
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}: .*in use"):
            run(cfg, host="127.0.0.1", port=port)
    with pytest.raises(ConfigError, match="cannot listen on 999.1.1.1"):
        run(cfg, host="999.1.1.1", port=port)


def test_the_listen_check_accepts_what_uvicorn_accepts():
    """host "" is every interface to asyncio: the check said "Name or service not known"."""
    import socket

    from conrec.serve.app import check_can_listen

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    check_can_listen("", port)
    check_can_listen("127.0.0.1", port)
