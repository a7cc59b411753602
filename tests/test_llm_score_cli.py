"""``conrec score`` (one JSON request or a Parquet batch) and ``conrec predict --explain`` on a toy SFT run."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from conrec.cli import app
from conrec.config import load_config
from conrec.errors import ConfigError, DataValidationError
from conrec.llm.inference import predict as predict_mod
from conrec.llm.inference import score as score_mod
from conrec.llm.inference.predict import Predictor
from conrec.llm.model.toy import write_toy_events, write_toy_run
from conrec.runs import RunDir
from conrec.serve.catalog import user_histories
from conrec.stages import STAGE_REGISTRY

from builders import record_current


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    write_toy_run(root, n_items=32, n_users=12)
    cfg = load_config(None, {"run_dir": str(root), "sft": {"model": {"tiny": {"seed": 3}}, "max_samples": 24,
                                                             "train": {"max_steps": 2, "batch_size": 4, "save_steps": 1}},
                             "decode": {"num_beams": 6, "top_k": 5, "batch_size": 4}})
    STAGE_REGISTRY["sft"].call(cfg)
    record_current(cfg, "sft")
    return cfg, Predictor.from_run(cfg, "sft")


def test_request_json_scores_every_candidate_like_the_predictor(trained, tmp_path):
    cfg, pred = trained
    req = tmp_path / "req.json"
    req.write_text(json.dumps({"negative": ["i0", "i4"], "positive": ["i1"], "candidates": ["i8", "i2", "i5"], "threshold": -100}))
    table = score_mod.run(cfg, request=req, batch=None, out=None, model="sft", threshold=None, explain=True)
    want = pred.score([(["i1", "i0", "i4"], [1, -1, -1])], [["i8", "i2", "i5"]])[0]
    assert table["item_id"].to_list() == ["i8", "i2", "i5"]
    np.testing.assert_allclose(table["score"].to_list(), want, rtol=5e-6, atol=1e-5)
    assert table["rank"].to_list() == [1 + sum(y > x for y in want) for x in want]  # in the request's order
    assert table["decision"].to_list() == ["filter"] * 3  # every log-prob >= -100
    # toy SIDs: level 0 = genre; i8 and i0, i4 are all genre 0 -> they share the <a_..> cluster
    assert "Same semantic cluster" in table["reason"][0]
    strict = score_mod.run(cfg, request=req, batch=None, out=None, model="sft", threshold=0.0, explain=False)
    assert strict["decision"].to_list() == ["keep"] * 3 and strict["reason"].to_list() == [None] * 3


def test_batch_parquet_writes_scores_ranks_decisions(trained, tmp_path):
    cfg, pred = trained
    samples = pl.read_parquet(f"{cfg.run_dir}/data/samples.parquet").head(5)
    slates = [["i3", "i7", "i11"], ["i1"], ["i2", "i6"], ["i0", "i9", "i10", "i12"], ["i5", "i13"]]
    src = tmp_path / "batch.parquet"
    samples.with_columns(pl.Series("candidates", slates)).write_parquet(src)
    out = tmp_path / "scores.parquet"
    hist = [(list(h), [int(f) for f in fb]) for h, fb in zip(samples["hist_items"].to_list(), samples["hist_feedback"].to_list())]
    want_scores = pred.score(hist, slates)
    threshold = float(np.median(want_scores[0]))  # the middle of the first slate: it keeps one item and filters two
    res = score_mod.run(cfg, request=None, batch=src, out=out, model="sft", threshold=threshold, explain=False)
    assert pl.read_parquet(out).equals(res)
    assert {"sample_id", "user_id", "candidates", "scores", "ranks", "decisions"} <= set(res.columns)
    for got, want in zip(res["scores"].to_list(), want_scores):
        np.testing.assert_allclose(got, want, rtol=5e-6, atol=1e-5)
    # ranks: 1 = the most likely dislike; decisions: filter at or above the threshold (their values were never checked)
    assert res["ranks"].to_list() == [[1 + sum(y > x for y in s) for x in s] for s in want_scores]
    assert res["decisions"].to_list() == [["filter" if x >= threshold else "keep" for x in s] for s in want_scores]
    assert set(res["decisions"][0].to_list()) == {"keep", "filter"}
    neg_pos = pl.DataFrame({"negative": [["i0"]], "positive": [["i1"]], "candidates": [["i2", "i3"]]})
    assert score_mod.score_batch(pred, neg_pos, None)["scores"][0].len() == 2


def test_batch_of_user_ids_scores_their_run_histories_and_keeps_every_other_column(trained, tmp_path):
    """As ``/v1/score`` and ``--request`` take a ``user_id``, so does a batch (it needed explicit histories),
    and a column such as ``slate_id`` comes back beside its scores (only three id names did)."""
    cfg, pred = trained
    req = tmp_path / "req.json"
    users = write_toy_events(RunDir(cfg.run_dir))["user_id"].unique().sort().head(2).to_list()
    req.write_text(json.dumps({"user_id": users[1], "candidates": ["i2", "i6"]}))
    single = score_mod.run(cfg, request=req, batch=None, out=None, model="sft", threshold=None, explain=False)
    src = tmp_path / "by_user.parquet"
    pl.DataFrame({"slate_id": [10, 11], "user_id": users, "candidates": [["i3"], ["i2", "i6"]]}).write_parquet(src)
    res = score_mod.run(cfg, request=None, batch=src, out=tmp_path / "out.parquet", model="sft", threshold=None, explain=False)
    assert res["slate_id"].to_list() == [10, 11] and res["user_id"].to_list() == users
    np.testing.assert_allclose(res["scores"][1].to_list(), single["score"].to_list(), rtol=5e-6, atol=1e-5)
    known = score_mod.run_histories(RunDir(cfg.run_dir), "batch", cfg.serve.max_history)  # the lookup run() makes, without loading the model again
    for bad, message in [([users[0], "nobody"], r"1 user_id\(s\) not in the run's events, e\.g\. \['nobody'\]"),
                         ([users[0], None], r"1 row\(s\) without a user_id, e\.g\. row 1")]:
        with pytest.raises(DataValidationError, match=message):
            score_mod.score_batch(pred, pl.DataFrame({"user_id": bad, "candidates": [["i3"], ["i2"]]}), None, known=known)


def test_score_errors_are_clear(trained, tmp_path):
    cfg, pred = trained
    with pytest.raises(ConfigError, match="exactly one"):
        score_mod.run(cfg, request=None, batch=None, out=None, model="sft", threshold=None, explain=False)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"negatives": ["i0"], "candidates": ["i1"]}))
    with pytest.raises(DataValidationError, match="negatives"):
        score_mod.run(cfg, request=bad, batch=None, out=None, model="sft", threshold=None, explain=False)
    with pytest.raises(DataValidationError, match="candidates"):
        score_mod.score_batch(pred, pl.DataFrame({"negative": [["i0"]]}), None)
    with pytest.raises(DataValidationError, match="unknown item id"):
        score_mod.score_batch(pred, pl.DataFrame({"negative": [["i0"]], "candidates": [["zz"]]}), None)


def test_cli_score_and_predict_explain(trained, tmp_path):
    cfg, _ = trained
    req = tmp_path / "req.json"
    req.write_text(json.dumps({"negative": ["i0"], "candidates": ["i4", "i1"]}))
    runner = CliRunner()
    r = runner.invoke(app, ["score", "--run-dir", str(cfg.run_dir), "--request", str(req), "--model", "sft", "--threshold", "-2", "--explain"])
    assert r.exit_code == 0, r.output
    assert "i4" in r.output and "decision" in r.output and "reason" in r.output
    hist = tmp_path / "h.json"
    hist.write_text(json.dumps({"neg": ["i0", "i4"], "pos": ["i1"]}))
    table = predict_mod.run(cfg, history=hist, split=None, out=None, model="sft", k=3, explain=True)
    assert table.height == 3 and all(isinstance(x, str) and x for x in table["reason"].to_list())


def test_cli_reads_a_user_id_as_the_server_does_and_predict_takes_a_whole_dislikes_body(trained, tmp_path):
    """``conrec score`` read a ``user_id``'s newest 10,000 events where the server reads ``serve.max_history``
    (other explanations for long histories), and ``predict --history`` refused the ``k``/``user_id`` of a
    ``POST /v1/dislikes`` body although its help promised the same fields."""
    cfg, pred = trained
    short = cfg.model_copy(update={"serve": cfg.serve.model_copy(update={"max_history": 3})})
    events = write_toy_events(RunDir(cfg.run_dir))
    user = events["user_id"].value_counts().sort("count", descending=True)["user_id"][0]
    served = user_histories(events, 3)[user]  # what the server's user_id lookup gives
    assert len(served[0]) == 3 < events.filter(pl.col("user_id") == user).height
    assert score_mod.run_histories(RunDir(cfg.run_dir), "request", 3)[user] == served
    req = tmp_path / "req.json"
    req.write_text(json.dumps({"user_id": user, "candidates": ["i2", "i6"]}))
    table = score_mod.run(short, request=req, batch=None, out=None, model="sft", threshold=None, explain=False)
    np.testing.assert_allclose(table["score"].to_list(), pred.score([served], [["i2", "i6"]])[0], rtol=5e-6, atol=1e-5)

    body = tmp_path / "body.json"
    body.write_text(json.dumps({"user_id": user, "k": 2, "explain": True}))
    runner = CliRunner()
    for k_flag, rows in (([], 2), (["--k", "4"], 4)):  # the body's k, or --k over it
        r = runner.invoke(app, ["predict", "--run-dir", str(cfg.run_dir), "--history", str(body), "--model", "sft", *k_flag])
        assert r.exit_code == 0, r.output
        assert f"top-{rows} likely dislikes" in r.output and "reason" in r.output
    table = predict_mod.run(short, history=body, split=None, out=None, model="sft", k=2)
    assert table["item_id"].to_list() == [i for i, _ in pred.recommend([served], 2)[0]]
    assert table["reason"].null_count() == 0  # the body's explain
    # the body's exclude too (items never to return besides the history's), as the server takes it
    body.write_text(json.dumps({"user_id": user, "k": 2, "exclude": table["item_id"].to_list()}))
    without = predict_mod.run(short, history=body, split=None, out=None, model="sft", k=2)
    assert without["item_id"].to_list() == [i for i, _ in pred.recommend([served], 2, exclude=[table["item_id"].to_list()])[0]]
    assert not set(without["item_id"].to_list()) & set(table["item_id"].to_list())
    for bad, message in (({"user_id": "nobody"}, "unknown user_id 'nobody'"), ({"negative": ["i0"], "k": 0}, "k: Input should be greater"),
                         ({"negative": ["i0"], "exclude": ["nope"]}, "exclude: 1 unknown item id(s)")):
        body.write_text(json.dumps(bad))
        r = runner.invoke(app, ["predict", "--run-dir", str(cfg.run_dir), "--history", str(body), "--model", "sft"])
        assert r.exit_code != 0 and message in " ".join(r.output.split()), r.output  # the console wraps lines


def test_predict_cli_leaves_out_a_history_files_exclude(trained, tmp_path):
    """Found by review: ``conrec predict --history body.json`` checked the body's ``exclude`` and then dropped it (the
    command passed the parsed history on, not the file), so the excluded items came back at the top of the table. The
    earlier test called ``predict.run`` with the file and never went through the command."""
    cfg, pred = trained
    history = (["i0", "i4"], [-1, -1])
    body, out = tmp_path / "body.json", tmp_path / "top.parquet"
    runner = CliRunner()

    def top(request: dict) -> list[str]:
        body.write_text(json.dumps(request))
        r = runner.invoke(app, ["predict", "--run-dir", str(cfg.run_dir), "--history", str(body), "--model", "sft", "-o", str(out)])
        assert r.exit_code == 0, r.output
        return pl.read_parquet(out)["item_id"].to_list()

    plain = top({"negative": history[0], "k": 3})
    excluded = plain[:2]
    left = top({"negative": history[0], "k": 3, "exclude": excluded})
    assert not set(left) & set(excluded)
    assert left == [i for i, _ in pred.recommend([history], 3, exclude=[excluded])[0]]
    with pytest.raises(ConfigError, match="exclude goes with a parsed history only"):
        predict_mod.check_predict_request(cfg, body, None, "sft", exclude=["i1"])


def test_predict_help_says_which_k_a_dislikes_body_without_k_gets(trained, tmp_path):
    """Found by probing: the --history help said a POST /v1/dislikes body "is read as the server reads it", but a body
    without "k" gets decode.top_k items where the server gives serve.default_k (the CLI's default, as docs/pipeline.md
    says): the help now says so."""
    cfg, _ = trained
    assert cfg.decode.top_k != cfg.serve.default_k  # 5 and 10: the two defaults tell apart
    body = tmp_path / "body.json"
    body.write_text(json.dumps({"negative": ["i0", "i4"], "explain": False}))  # a whole server body, without k
    r = CliRunner().invoke(app, ["predict", "--run-dir", str(cfg.run_dir), "--history", str(body), "--model", "sft"])
    assert r.exit_code == 0, r.output
    assert f"top-{cfg.decode.top_k} likely dislikes" in r.output
    text = CliRunner().invoke(app, ["predict", "--help"], env={"COLUMNS": "2000"}).output
    assert '"k" unless --k is given; without either decode.top_k, where the server uses serve.default_k' in text


def test_score_checks_before_loading_and_honours_explain_and_out_in_both_modes(trained, tmp_path, monkeypatch):
    """An unknown id or model failed only after the model loaded (seconds), with no word on whether the id was a
    history's or a candidate's; ``--explain`` on a batch and ``--out`` on a request were ignored silently."""
    cfg, pred = trained
    req = tmp_path / "req.json"
    batch = tmp_path / "b.parquet"
    pl.DataFrame({"negative": [["i0"], ["i1"]], "candidates": [["i4", "i1"], ["i2"]]}).write_parquet(batch)

    def no_model(*_a, **_k):
        raise AssertionError("the model was loaded before the request was checked")

    with monkeypatch.context() as m:
        m.setattr(score_mod, "_load_predictor", no_model)
        for body, message in [({"negative": ["zz"], "candidates": ["i1"]}, r"history: 1 unknown item id\(s\).*\['zz'\]"),
                              ({"negative": ["i0"], "candidates": ["i1", "yy"]}, r"candidates: 1 unknown item id\(s\).*\['yy'\]")]:
            req.write_text(json.dumps(body))
            with pytest.raises(DataValidationError, match=message):
                score_mod.run(cfg, request=req, batch=None, out=None, model="sft", threshold=None, explain=False)
        bad = tmp_path / "bad.parquet"
        pl.DataFrame({"negative": [["i0"], ["i1"]], "candidates": [["i4"], ["xx"]]}).write_parquet(bad)
        with pytest.raises(DataValidationError, match=r"row 1: candidates: 1 unknown item id\(s\)"):
            score_mod.run(cfg, request=None, batch=bad, out=None, model="sft", threshold=None, explain=False)
        # a text column, an empty slate and a neutral feedback value: before the model, with the file's name
        for frame, message in [
            (pl.DataFrame({"negative": [["i0"]], "candidates": ["i4,i1"]}), "'candidates' must be a list column"),
            (pl.DataFrame({"negative": [["i0"], ["i1"]], "candidates": [["i4"], []]}), "row 1: the candidate slate is empty"),
            (pl.DataFrame({"hist_items": [["i0"]], "hist_feedback": [[0]], "candidates": [["i4"]]}), r"feedback must be -1 .* got \[0\]"),
            # found by probing: a null or text feedback value was a traceback from int(); a text history
            # column was split into characters ("unknown ids ['0', '1', 'i']")
            (pl.DataFrame({"hist_items": [["i0", "i1"]], "hist_feedback": [[-1, None]], "candidates": [["i4"]]}), r"got \[None\]"),
            (pl.DataFrame({"hist_items": [["i0", "i1"]], "hist_feedback": [["-1", "x"]], "candidates": [["i4"]]}), r"got \['-1', 'x'\]"),
            (pl.DataFrame({"negative": ["i0,i1"], "candidates": [["i4"]]}), "'negative' must be a list column"),
            (pl.DataFrame({"hist_items": ["i0"], "hist_feedback": [[-1]], "candidates": [["i4"]]}), "'hist_items' must be a list column"),
        ]:
            frame.write_parquet(bad)
            with pytest.raises(DataValidationError, match=f"score batch {bad}.*{message}"):
                score_mod.run(cfg, request=None, batch=bad, out=None, model="sft", threshold=None, explain=False)
        with pytest.raises(DataValidationError, match="score request path .* is a directory"):  # was IsADirectoryError
            score_mod.run(cfg, request=tmp_path, batch=None, out=None, model="sft", threshold=None, explain=False)
        (tmp_path / "latin.json").write_bytes('{"negative": ["caf\xe9"]}'.encode("latin-1"))
        with pytest.raises(DataValidationError, match=r"latin\.json is not UTF-8 text"):  # was UnicodeDecodeError
            score_mod.run(cfg, request=tmp_path / "latin.json", batch=None, out=None, model="sft", threshold=None, explain=False)
        with pytest.raises(ConfigError, match="unknown model 'popular'"):
            score_mod.run(cfg, request=req, batch=None, out=None, model="popular", threshold=None, explain=False)

    fixed = tmp_path / "fixed.parquet"  # a fixed-size list column (from a 2-D array) is a list column too
    pl.DataFrame({"negative": [["i0"]], "candidates": [["i4", "i1"]]}).with_columns(pl.col("candidates").cast(pl.Array(pl.String, 2))).write_parquet(fixed)
    assert score_mod.run(cfg, request=None, batch=fixed, out=tmp_path / "f.parquet", model="sft", threshold=None, explain=False).height == 1
    res = score_mod.run(cfg, request=None, batch=batch, out=tmp_path / "o.parquet", model="sft", threshold=None, explain=True)
    assert [len(r) for r in res["reasons"].to_list()] == [2, 1] and all(t for r in res["reasons"].to_list() for t in r)
    req.write_text(json.dumps({"negative": ["i0"], "candidates": ["i4", "i1"]}))
    table = score_mod.run(cfg, request=req, batch=None, out=tmp_path / "one.parquet", model="sft", threshold=None, explain=True)
    assert pl.read_parquet(tmp_path / "one.parquet").equals(table)
    assert res["reasons"][0].to_list() == table["reason"].to_list()  # the same sentence either way


def test_an_out_path_that_is_a_directory_or_under_a_file_is_refused_before_any_work(trained, tmp_path):
    """Found by probing: `--out DIR` replaced DIR, contents and all, by the Parquet file (`--out RUN_DIR` deleted
    the run); `--out FILE/x.parquet` was a FileExistsError after the predicting was done. Also: a nan threshold
    kept every candidate, `predict --history --out` wrote nothing, and errors went to stdout, wrapped at 80 columns."""
    cfg, _ = trained
    keep = tmp_path / "outdir"
    keep.mkdir()
    (keep / "important.txt").write_text("keep")
    (tmp_path / "afile").write_text("x")
    req = tmp_path / "req.json"
    req.write_text(json.dumps({"negative": ["i0"], "candidates": ["i2", "i3"]}))
    hist = tmp_path / "h.json"
    hist.write_text(json.dumps({"negative": ["i0"], "positive": ["i1"]}))
    runner = CliRunner()
    for args in (["predict", "-r", str(cfg.run_dir), "--model", "sft", "--split", "test", "--out", str(keep)],
                 ["score", "-r", str(cfg.run_dir), "--model", "sft", "--request", str(req), "-o", str(keep)],
                 ["predict", "-r", str(cfg.run_dir), "--model", "sft", "--split", "test", "--out", str(tmp_path / "afile" / "p.parquet")]):
        out = runner.invoke(app, args)
        assert out.exit_code == 2 and ("is a directory" in out.stderr or "is a file, not a directory" in out.stderr), out.output
        assert out.stdout == ""  # the error line is on stderr
    assert (keep / "important.txt").read_text() == "keep"
    out = runner.invoke(app, ["score", "-r", str(cfg.run_dir), "--model", "sft", "--request", str(req), "--threshold", "nan"])
    assert out.exit_code == 2 and "--threshold must be a finite number" in out.stderr, out.output
    target = tmp_path / "one.parquet"
    out = runner.invoke(app, ["predict", "-r", str(cfg.run_dir), "--model", "sft", "--history", str(hist), "-o", str(target)])
    assert out.exit_code == 0, out.output
    assert pl.read_parquet(target)["item_id"].len() == cfg.decode.top_k
    long_dir = tmp_path / ("a" * 120)
    out = runner.invoke(app, ["data", "-c", str(long_dir / "cfg.yaml")], env={"COLUMNS": "80"})
    assert out.exit_code == 2 and str(long_dir / "cfg.yaml") in out.stderr.replace("\n", "") and out.stderr.count("\n") == 1, out.stderr


def test_a_file_written_over_a_directory_is_an_error_not_a_deletion(tmp_path):
    from conrec.io import write_parquet

    d = tmp_path / "d"
    d.mkdir()
    (d / "x").write_text("keep")
    with pytest.raises(IsADirectoryError):
        write_parquet(pl.DataFrame({"a": [1]}), d)
    assert (d / "x").read_text() == "keep"


def test_a_batch_with_an_all_empty_history_column_still_reads(trained):
    """An all-None `positive` column reads back from Parquet as type Null: the list-column check refused it."""
    df = pl.DataFrame({"negative": [["i1"], ["i2"]], "positive": [None, None], "candidates": [["i3"], ["i4"]]})
    assert df.schema["positive"] == pl.Null
    assert score_mod.batch_histories(df, "batch") == [(["i1"], [-1]), (["i2"], [-1])]


def test_batch_rows_with_repeated_or_null_candidates_are_named_before_the_model_loads():
    """Repeated candidates were caught only by the loaded model ("candidate slate #0 repeats ...", no file, no row);
    a null candidate was read as the unknown item id 'None'."""
    where = "score batch b.parquet"
    known = {"i1", "i2", "i3"}
    df = pl.DataFrame({"negative": [["i1"], ["i1"]], "candidates": [["i2"], ["i3", "i2", "i3"]]})
    with pytest.raises(DataValidationError, match=r"^score batch b\.parquet row 1: the candidates repeat item id\(s\) \['i3'\]"):
        score_mod.check_item_ids(*score_mod.batch_slates(df, where), known, where)
    df = pl.DataFrame({"negative": [["i1"], ["i1"]], "candidates": [["i2"], ["i3", None]]})
    with pytest.raises(DataValidationError, match=r"^score batch b\.parquet row 1: the candidates hold a null \(missing\) item id"):
        score_mod.check_item_ids(*score_mod.batch_slates(df, where), known, where)


def test_an_out_path_not_ending_in_parquet_is_refused_before_any_work(trained, tmp_path):
    """`predict --out x.csv` and `score --out x.csv` wrote Parquet bytes into a file named .csv (rc 0)."""
    cfg, _ = trained
    req = tmp_path / "req.json"
    req.write_text(json.dumps({"negative": ["i0"], "candidates": ["i2", "i3"]}))
    runner = CliRunner()
    for args in (["predict", "-r", str(cfg.run_dir), "--model", "sft", "--split", "test", "--out", str(tmp_path / "p.csv")],
                 ["score", "-r", str(cfg.run_dir), "--model", "sft", "--request", str(req), "-o", str(tmp_path / "s.csv")],
                 ["score", "-r", str(cfg.run_dir), "--model", "sft", "--request", str(req), "-o", str(tmp_path / "s")]):
        out = runner.invoke(app, args)
        assert out.exit_code == 2 and "so its name must end in .parquet" in out.stderr, out.output
        assert out.stderr.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["req.json"]


@pytest.mark.parametrize("command", ["predict", "score"])
def test_a_data_stage_rerun_while_the_model_answers_is_refused_not_mixed_into_the_table(trained, tmp_path, monkeypatch, command):
    """Found by probing: `conrec predict --explain` / `conrec score` read titles and explanation events after the
    model ran, so with `conrec data` rewriting the run meanwhile, the old model's ranking was printed with the new
    data's titles and reasons."""
    import shutil

    from conrec.errors import StageInputError

    cfg, _ = trained
    root = tmp_path / "run"
    shutil.copytree(cfg.run_dir, root)  # the module's run stays untouched
    copy = cfg.model_copy(update={"run_dir": root})
    method = "recommend" if command == "predict" else "score"
    answer = getattr(Predictor, method)

    def data_rerun_meanwhile(self, *args, **kwargs):
        out = answer(self, *args, **kwargs)
        RunDir(root).invalidate_from("data")  # what `conrec data` does first
        return out

    monkeypatch.setattr(Predictor, method, data_rerun_meanwhile)
    req = tmp_path / "req.json"
    body = {"negative": ["i0", "i4"], "positive": ["i1"], "explain": True}
    req.write_text(json.dumps(body | ({"candidates": ["i8", "i2"]} if command == "score" else {})))
    with pytest.raises(StageInputError, match="changed while the sft model answered"):
        if command == "predict":
            predict_mod.run(copy, req, None, None, "sft", 3)
        else:
            score_mod.run(copy, request=req, batch=None, out=None, model="sft", threshold=None, explain=True)


MARKUP_TITLES = {"i0": "Heat [/i]", "i1": "Up [bold red]LOUD", "i2": "Alien [/]", "i4": "ctrl\x01\x1b[31mred\u202eevil"}


@pytest.mark.parametrize("command", ["predict", "score"])
def test_titles_with_rich_markup_or_control_characters_are_printed_verbatim_and_visible(trained, tmp_path, monkeypatch, command):
    """Found by probing: a title such as ``Heat [/i]`` made `conrec predict --history` / `conrec score` end in a
    Rich ``MarkupError`` traceback, ``Up [bold red]LOUD`` was printed restyled as "Up LOUD", and control
    characters (ESC sequences, U+202E) reached the terminal raw."""
    import io

    from rich.console import Console

    from conrec.console_text import shown

    cfg, _ = trained
    for mod in (predict_mod, score_mod):
        real = mod.read_parquet

        def with_titles(path, *args, _real=real, **kwargs):
            df = _real(path, *args, **kwargs)
            if kwargs.get("what") == "items table":
                df = df.with_columns(pl.col("item_id").cast(pl.String).replace_strict(MARKUP_TITLES, default=pl.col("title"), return_dtype=pl.String).alias("title"))
            return df

        monkeypatch.setattr(mod, "read_parquet", with_titles)
    buf = io.StringIO()
    console = Console(file=buf, width=400, color_system=None)
    req = tmp_path / "req.json"
    if command == "predict":
        req.write_text(json.dumps({"negative": ["i8"], "positive": []}))
        table = predict_mod.run(cfg, req, None, None, "sft", 32, console=console, explain=True)
    else:
        req.write_text(json.dumps({"negative": ["i8"], "candidates": list(MARKUP_TITLES)}))
        table = score_mod.run(cfg, request=req, batch=None, out=None, model="sft", threshold=None, explain=True, console=console)
    out = buf.getvalue()
    assert set(MARKUP_TITLES) <= set(table["item_id"].to_list())
    for title in ("Heat [/i]", "Up [bold red]LOUD", "Alien [/]", "ctrl\\x01\\x1b[31mred\\u202eevil"):
        assert title in out, out
    assert "\x1b" not in out and "\x01" not in out and "\u202e" not in out
    assert shown("a\\[b] [/] \t\n") == "a\\\\\\[b] \\[/] \\x09\\x0a"


def test_a_history_covering_the_whole_catalogue_says_there_is_nothing_to_rank(trained, tmp_path):
    """Found by probing: a history holding every catalogue item printed an empty "top-20" table and nothing else."""
    import io

    from rich.console import Console

    cfg, pred = trained
    buf = io.StringIO()
    hist = tmp_path / "all.json"
    hist.write_text(json.dumps({"negative": list(pred.items), "positive": []}))
    table = predict_mod.run(cfg, hist, None, None, "sft", 5, console=Console(file=buf, width=200, color_system=None))
    assert table.height == 0
    assert buf.getvalue().strip() == f"nothing to rank: every one of the {len(pred.items)} catalogue items is in the history (decode.exclude_history leaves them out)"
    # decode.exclude_history off keeps the history eligible: only a request's exclude list (which applies anyway) empties it
    keep = cfg.model_copy(update={"decode": cfg.decode.model_copy(update={"exclude_history": False})})
    buf.truncate(0), buf.seek(0)
    table = predict_mod.run(keep, (["i0"], [-1]), None, None, "sft", 5, console=Console(file=buf, width=200, color_system=None),
                            exclude=list(pred.items))
    assert table.height == 0
    assert buf.getvalue().strip() == f"nothing to rank: every one of the {len(pred.items)} catalogue items is in the request's exclude list"


def test_a_history_over_serve_max_history_is_refused_by_the_cli_as_the_server_refuses_it(trained, tmp_path, monkeypatch):
    """Found by probing: a 600-event history got a ranking from `conrec score --request` and `conrec predict --history`
    while `/v1/score` and `/v1/dislikes` answered 413 (limit serve.max_history = 500), so there was no server answer
    to compare it with. The CLI now refuses it in one line naming the key, before the model loads."""
    from conrec.llm.inference.predict_request import check_predict_request

    cfg, _ = trained
    short = cfg.model_copy(update={"serve": cfg.serve.model_copy(update={"max_history": 3})})
    items = ["i0", "i1", "i2", "i3"]
    monkeypatch.setattr(score_mod, "_load_predictor", lambda *_a, **_k: pytest.fail("the model was loaded"))
    monkeypatch.setattr(predict_mod.Predictor, "from_dir", lambda *_a, **_k: pytest.fail("the model was loaded"))
    limit = "history has 4 events; the limit is serve.max_history = 3"
    req = tmp_path / "req.json"
    req.write_text(json.dumps({"negative": items, "candidates": ["i6"]}))
    with pytest.raises(DataValidationError, match=f"score request {req}: {limit}"):
        score_mod.run(short, request=req, batch=None, out=None, model="sft", threshold=None, explain=False)
    batch = tmp_path / "b.parquet"
    pl.DataFrame({"negative": [items[:3], items], "candidates": [["i6"], ["i6"]]}).write_parquet(batch)
    with pytest.raises(DataValidationError, match=f"^score batch {batch} row 1: {limit}"):  # the label of the file's other row messages
        score_mod.run(short, request=None, batch=batch, out=None, model="sft", threshold=None, explain=False)
    pl.DataFrame({"negative": [items], "candidates": [["i6"]]}).write_parquet(batch)
    with pytest.raises(DataValidationError, match=f"^score batch {batch}: {limit}"):  # one row: no "row 0"
        score_mod.run(short, request=None, batch=batch, out=None, model="sft", threshold=None, explain=False)
    plain, body = tmp_path / "h.json", tmp_path / "body.json"
    plain.write_text(json.dumps({"history": [{"item_id": i, "feedback": -1} for i in items]}))
    body.write_text(json.dumps({"negative": items, "k": 2}))
    for path in (plain, body):
        with pytest.raises(DataValidationError, match=f"history file {path}: {limit}"):
            predict_mod.run(short, history=path, split=None, out=None, model="sft", k=2)
    with pytest.raises(DataValidationError, match=f"history: {limit}"):
        check_predict_request(short, (items, [-1] * 4), None, "sft")
    assert check_predict_request(short, (items[:3], [-1] * 3), None, "sft").history == (items[:3], [-1] * 3)  # at the limit


@pytest.mark.parametrize("history", [{"hist_items": [["i1"], None], "hist_feedback": [[-1], None]}, {"negative": [["i1"], None]}])
def test_a_user_id_beside_history_columns_is_named_as_not_read(history):
    """Found by running the docs: a table with history columns and a user_id column (a user_id alone on row 1) was
    refused as "row 1: the history is empty", which said nothing of the row's user_id: it is not read, as a
    table with history columns takes every row's history from them (the documented rule, kept)."""
    where = "score batch mixed.parquet"
    df = pl.DataFrame({**history, "user_id": [None, "u1"], "candidates": [["i2"], ["i3"]]})
    with pytest.raises(DataValidationError, match=r"^score batch mixed\.parquet row 1: the history is empty and its user_id 'u1' is not read: "
                       r"a table with (hist_items/hist_feedback|negative/positive) columns takes every row's history from them"):
        score_mod.batch_slates(df, where)
    both = df.with_columns(pl.Series("user_id", ["u0", None]))  # a user_id beside a given history is an id, kept
    assert score_mod.batch_slates(both.head(1), where)[0] == [(["i1"], [-1])]


@pytest.mark.parametrize("command", ["predict", "score"])
def test_the_score_column_says_what_the_number_is_under_a_popularity_prior(trained, tmp_path, command):
    """Found by using the library: with ``decode.popularity_prior`` = w > 0 (1 in the demo and full presets) the
    tables headed ``log-prob`` a number that is ``log p(SID | prompt) + w * log prior(item)``, several nats below the
    model's log-probability; the header and a note now follow the config, and the values are unchanged."""
    import io

    from rich.console import Console

    cfg, _ = trained
    write_toy_events(RunDir(cfg.run_dir))  # the prior's training events
    req = tmp_path / "req.json"
    body = {"negative": ["i0", "i4"], "positive": ["i1"]} | ({"candidates": ["i8", "i2", "i5"]} if command == "score" else {})
    req.write_text(json.dumps(body))
    printed = {}
    for w in (0.0, 1.0):
        cfg_w = cfg.model_copy(update={"decode": cfg.decode.model_copy(update={"popularity_prior": w})})
        buf = io.StringIO()
        console = Console(file=buf, width=300, color_system=None)
        if command == "predict":
            table = predict_mod.run(cfg_w, req, None, None, "sft", 3, console=console)
        else:
            table = score_mod.run(cfg_w, request=req, batch=None, out=None, model="sft", threshold=None, explain=False, console=console)
        printed[w] = (buf.getvalue(), table)
    out0, out1 = printed[0.0][0], printed[1.0][0]
    header0 = next(line for line in out0.splitlines() if "item_id" in line)
    header1 = next(line for line in out1.splitlines() if "item_id" in line)
    assert "log-prob" in header0 and "score" not in header0 and "log prior" not in out0
    assert "log-prob" not in header1 and header1.split()[-2:] == ["score", "┃"]
    note = "score: log p(SID | prompt) + w * log prior(item), w = decode.popularity_prior = 1 (a log-probability only when w = 0)"
    assert [line for line in out1.splitlines() if "log prior" in line] == [note]
    if command == "score":  # the prior moved every score by its item's w * log prior: the column is not log p
        assert printed[0.0][1]["score"].to_list() != printed[1.0][1]["score"].to_list()
