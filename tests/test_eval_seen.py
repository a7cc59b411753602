"""Every item a user rated before an evaluation point is excluded from every model's top-K, not only the newest
``max_history`` events the models read (:mod:`conrec.eval.seen`)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from rich.console import Console

from conrec.config import load_config
from conrec.data.config import SplitConfig
from conrec.data.splits import build_samples
from conrec.eval.seen import SEEN_COLUMN, exclusion_sets, with_seen_items
from conrec.io import write_parquet
from conrec.runs import RunDir
from conrec.stages import STAGE_REGISTRY

from builders import eval_run_dir


def _events() -> pl.DataFrame:
    rows = [("u", "old", 10, -1), ("u", "a", 20, 1), ("u", "b", 30, -1), ("u", "c", 40, -1), ("u", "d", 40, -1),
            ("v", "x", 5, -1), ("u", "later", 50, 1)]
    return pl.DataFrame(rows, schema={"user_id": pl.String, "item_id": pl.String, "ts": pl.Int64, "feedback": pl.Int8}, orient="row")


def test_the_seen_set_is_every_earlier_event_of_the_user_plus_the_window() -> None:
    samples = pl.DataFrame(
        {"sample_id": [7, 8], "user_id": ["u", "v"], "ts": [40, 5], "hist_items": [["a", "b"], []]},
        schema={"sample_id": pl.Int64, "user_id": pl.String, "ts": pl.Int64, "hist_items": pl.List(pl.String)},
    )
    out = with_seen_items(samples, _events())
    assert out.columns == [*samples.columns, SEEN_COLUMN] and out["sample_id"].to_list() == [7, 8]
    # u at t=40: "old" (before the 2-event window) is in; c/d at t itself and "later" are not; v's own point has none
    assert out[SEEN_COLUMN].to_list() == [["a", "b", "old"], []]
    assert exclusion_sets(out) == [{"a", "b", "old"}, set()]
    assert exclusion_sets(samples) == [{"a", "b"}, set()]  # no seen column (predict, serving): the window given


def test_an_item_rated_before_the_window_never_appears_in_a_top_k(tmp_path: Path) -> None:
    """The samples keep 2 events of history (data.split.max_history): before, the items rated earlier were eligible,
    and on a 15-item catalogue popularity put them in its top-5 (a certain miss where nobody rates an item twice)."""
    run, _ = eval_run_dir(tmp_path / "run")
    events = pl.read_parquet(run.events)
    write_parquet(build_samples(events, SplitConfig(valid_frac=0.2, test_frac=0.2, horizon_days=3, max_horizon_days=10,
                                                    max_history=2)), run.samples)
    baselines = ["popularity", "itemknn", "category", "ease"]
    cfg = load_config(None, {"run_dir": str(run.root), "data": {"split": {"horizon_days": 3, "max_horizon_days": 10, "max_history": 2}},
                             "eval": {"baselines": baselines, "models": [], "ks": [2, 5], "horizons": [], "tune": False,
                                      "context_swap": True, "bootstrap": {"resamples": 20}}})
    STAGE_REGISTRY["eval"].call(cfg, console=Console(quiet=True))
    test = pl.read_parquet(run.samples).filter(pl.col("split") == "test")
    earlier = {  # every item of the user's events before the point, computed here without conrec.eval.seen
        sid: set(events.filter((pl.col("user_id") == u) & (pl.col("ts") < ts))["item_id"].to_list())
        for sid, u, ts in test.select("sample_id", "user_id", "ts").iter_rows()
    }
    beyond_window = sum(len(seen - set(h)) for seen, h in zip(earlier.values(), test["hist_items"].to_list()))
    assert beyond_window > 0  # the case is there
    for name in baselines:
        preds = pl.read_parquet(RunDir(run.root).predictions / f"{name}.parquet")
        assert preds.height == test.height
        for sid, items in preds.select("sample_id", "items").iter_rows():
            assert not set(items) & earlier[sid], (name, sid)


def test_exclusion_indices_are_the_exclusion_sets_as_catalogue_indices() -> None:
    """The baselines read each point's exclusions as catalogue indices built once per frame (the seen column is an
    Enum, mapped through its categories), not as a Python string set per point and call: the same items, ids outside
    the catalogue dropped, on the eval stage's frame, a slice of it in another order and one without the seen column."""
    from conrec.eval.seen import exclusion_indices

    samples = pl.DataFrame(
        {"sample_id": [7, 8, 9], "user_id": ["u", "v", "u"], "ts": [40, 5, 51], "hist_items": [["a", "b"], [], ["zz"]],
         "hist_feedback": [[1, -1], [], [-1]]},
        schema={"sample_id": pl.Int64, "user_id": pl.String, "ts": pl.Int64, "hist_items": pl.List(pl.String),
                "hist_feedback": pl.List(pl.Int8)},
    )
    out = with_seen_items(samples, _events())
    assert isinstance(out.schema[SEEN_COLUMN], pl.List) and isinstance(out.schema[SEEN_COLUMN].inner, pl.Enum)
    index = {it: j for j, it in enumerate(["later", "old", "a", "b", "c", "d", "x"])}  # no "zz": not in the catalogue
    for frame in (out, out.reverse().slice(1), samples):
        want = [sorted(index[i] for i in ex if i in index) for ex in exclusion_sets(frame)]
        assert [sorted(x.tolist()) for x in exclusion_indices(frame, index)] == want
    assert exclusion_sets(out)[2] == {"zz", "old", "a", "b", "c", "d", "later"}


def _tuned_eval(root: Path) -> dict:
    """An eval with tuning (test and valid points) whose 2-event windows leave earlier items out; its metrics.json."""
    import json

    run, _ = eval_run_dir(root)
    events = pl.read_parquet(run.events)
    write_parquet(build_samples(events, SplitConfig(valid_frac=0.2, test_frac=0.2, horizon_days=3, max_horizon_days=10,
                                                    max_history=2)), run.samples)
    cfg = load_config(None, {"run_dir": str(run.root), "data": {"split": {"horizon_days": 3, "max_horizon_days": 10, "max_history": 2}},
                             "eval": {"baselines": ["popularity", "itemknn", "category"], "models": [], "ks": [2, 5],
                                      "horizons": [], "tune": True, "tune_k": 5, "context_swap": True,
                                      "popularity": {"grid": {"half_life_days": [None, 1.0]}},
                                      "bootstrap": {"resamples": 20}}})
    STAGE_REGISTRY["eval"].call(cfg, console=Console(quiet=True))
    return json.loads((run.eval / "metrics.json").read_text())


def test_an_eval_with_tuning_builds_the_seen_sets_in_one_pass_over_the_events(tmp_path: Path, monkeypatch) -> None:
    """Found in review: the eval stage attached the seen set to its test points and, with eval.tune, to its valid points
    apart, grouping and sorting the whole events table twice from the same events. Now once per eval."""
    import conrec.eval.seen as seen

    builds: list[int] = []
    real = seen._earlier_items

    def counted(samples: pl.DataFrame, events: pl.DataFrame, vocab: pl.Series) -> pl.Series:
        builds.append(samples.height)
        return real(samples, events, vocab)

    monkeypatch.setattr(seen, "_earlier_items", counted)
    _tuned_eval(tmp_path / "run")
    assert len(builds) == 1


def test_one_pass_gives_the_metrics_of_one_pass_per_split(tmp_path: Path, monkeypatch) -> None:
    """The guard of the one pass: the whole metrics.json is that of the seen sets built for each split apart."""
    import conrec.eval.seen as seen
    import conrec.eval.stage as eval_stage

    once = _tuned_eval(tmp_path / "once")
    monkeypatch.setattr(eval_stage, "with_seen_items_each", lambda frames, events: [seen.with_seen_items(f, events) for f in frames])
    assert _tuned_eval(tmp_path / "apart") == once


def test_the_seen_sets_of_frames_built_together_are_those_built_apart() -> None:
    """Each frame's lists, in its own order; a frame given twice is computed once and returned twice."""
    from conrec.eval.seen import with_seen_items_each

    schema = {"sample_id": pl.Int64, "user_id": pl.String, "ts": pl.Int64, "hist_items": pl.List(pl.String)}
    first = pl.DataFrame({"sample_id": [7, 8], "user_id": ["u", "v"], "ts": [40, 5], "hist_items": [["a", "b"], []]}, schema=schema)
    second = pl.DataFrame({"sample_id": [9, 3], "user_id": ["u", "u"], "ts": [51, 21], "hist_items": [["zz"], ["a"]]}, schema=schema)
    together = with_seen_items_each([first, second, first], _events())
    for got, frame in zip(together, [first, second, first]):
        apart = with_seen_items(frame, _events())
        assert got.drop(SEEN_COLUMN).equals(frame)
        assert got[SEEN_COLUMN].cast(pl.List(pl.String)).to_list() == apart[SEEN_COLUMN].cast(pl.List(pl.String)).to_list()
    assert together[0] is together[2] and with_seen_items_each([], _events()) == []


def test_a_runs_points_read_only_their_users_events_and_get_the_same_seen_sets(tmp_path: Path) -> None:
    """``predict --split`` and SFT early stopping attach the seen sets from the run's events file, reading only the
    points' users' rows (a few hundred points of a 20M-event log read the whole table: 15 s, 3.5 GB); a point's set
    depends on its own user's events alone, so the sets are those of the whole table."""
    from conrec.llm.inference.predict import split_samples_seen

    run = RunDir(tmp_path / "run")
    write_parquet(_events(), run.events)
    samples = pl.DataFrame(
        {"sample_id": [7], "user_id": ["u"], "ts": [40], "hist_items": [["a", "b"]]},
        schema={"sample_id": pl.Int64, "user_id": pl.String, "ts": pl.Int64, "hist_items": pl.List(pl.String)},
    )
    out = split_samples_seen(run, samples)
    assert exclusion_sets(out) == exclusion_sets(with_seen_items(samples, _events())) == [{"a", "b", "old"}]
    assert "x" not in out[SEEN_COLUMN].dtype.inner.categories.to_list()  # type: ignore[union-attr]  # v's rows not read
