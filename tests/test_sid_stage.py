"""The sid stage end to end (fake encoder) and the SidMap contract."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from rich.console import Console

from conrec.config import PipelineConfig
from conrec.errors import ConrecError, DataValidationError, StageInputError
from conrec.io import read_json
from conrec.runs import RunDir
from conrec.sid.sid_map import SidMap
from conrec.sid.tokens import codes_to_sid, parse_sid
from conrec.stages import STAGE_REGISTRY, STAGES

CATEGORIES = ["Comedy", "Drama", "Horror", "Sci-Fi", "Western"]


class GenreEncoder:
    """Fake encoder: a shared direction per category word in the text plus per-title noise."""

    model_id = "fake-genre-encoder"

    def encode(self, texts: list[str]) -> np.ndarray:
        base = np.random.default_rng(0).normal(size=(len(CATEGORIES), 24))
        out = []
        for t in texts:
            noise = np.random.default_rng(zlib.crc32(t.encode())).normal(size=24)
            genre = next(i for i, c in enumerate(CATEGORIES) if c in t)
            out.append(3 * base[genre] + noise)
        return np.stack(out)


def _make_run(tmp_path: Path, n: int = 150, kind: str = "rqvae", name: str = "run") -> PipelineConfig:
    rng = np.random.default_rng(1)
    items = pl.DataFrame(
        {
            "item_id": [f"i{k}" for k in range(n)],
            "title": [f"Title {k}" for k in range(n)],
            "text": [""] * n,
            "category": [CATEGORIES[int(c)] for c in rng.integers(0, len(CATEGORIES), size=n)],
        }
    )
    cfg = PipelineConfig(
        run_dir=tmp_path / name,
        sid={
            "encoder": {"cache_dir": str(tmp_path / "cache")},
            "quantizer": {"kind": kind, "epochs": 15, "hidden_dims": [32], "latent_dim": 8},
        },
    )
    RunDir(cfg.run_dir).data.mkdir(parents=True)
    items.write_parquet(RunDir(cfg.run_dir).items)
    return cfg


def _quiet() -> Console:
    return Console(quiet=True)


@pytest.mark.parametrize("kind", ["rqvae", "rkmeans"])
def test_stage_writes_bijective_map_and_stats(tmp_path: Path, kind: str) -> None:
    torch.set_num_threads(2)
    cfg = _make_run(tmp_path, kind=kind)
    stats = STAGE_REGISTRY["sid"].call(cfg, console=_quiet(), encoder=GenreEncoder())
    rd = RunDir(cfg.run_dir)
    assert rd.is_done("sid")
    for path in (rd.embeddings, rd.quantizer, rd.sid_map, rd.sid / "stats.json"):
        assert path.exists(), path
    assert np.load(rd.embeddings).shape == (150, 24)
    sid_map = SidMap.from_parquet(rd.sid_map)
    assert sid_map.items == [f"i{k}" for k in range(150)]
    codes = sid_map.codes
    assert len({tuple(c) for c in codes.tolist()}) == 150  # bijection
    assert stats["collision_rate_after"] == 0.0
    assert stats["codebook_sizes"] == sid_map.codebook_sizes
    assert stats["items_recoded"] >= max(stats["items_moved"], stats["items_extra_code"])
    assert stats["extra_level"] or stats["items_extra_code"] == 0
    # auto-scaled from 256: max(8, next_pow2(ceil(2 * 150 ** (1/3)) = 11)) = 16
    assert stats["codebook_sizes_quantizer"] == [16, 16, 16]
    assert any("reduced" in note for note in stats["notes"])
    assert stats["purity_lift_level0"] > 1.5  # level 0 follows the genre direction
    assert read_json(rd.sid / "stats.json")["n_items"] == 150
    frame = pl.read_parquet(rd.sid_map)
    assert frame.schema["codes"] == pl.List(pl.Int64) and frame.schema["sid"] == pl.String
    assert all(parse_sid(s) == c for s, c in zip(frame["sid"], frame["codes"].to_list()))
    ckpt = torch.load(rd.quantizer, weights_only=True)
    assert ckpt["quantizer"]["kind"] == kind


def test_stage_same_seed_gives_identical_map(tmp_path: Path) -> None:
    torch.set_num_threads(2)
    a = _make_run(tmp_path, name="a")
    b = _make_run(tmp_path, name="b")
    STAGE_REGISTRY["sid"].call(a, console=_quiet(), encoder=GenreEncoder())
    STAGE_REGISTRY["sid"].call(b, console=_quiet(), encoder=GenreEncoder())
    map_a = SidMap.from_parquet(RunDir(a.run_dir).sid_map)
    assert map_a == SidMap.from_parquet(RunDir(b.run_dir).sid_map)
    STAGE_REGISTRY["sid"].call(a, console=_quiet(), encoder=GenreEncoder())  # rerun in place
    assert SidMap.from_parquet(RunDir(a.run_dir).sid_map) == map_a


def test_stage_without_items_is_a_clear_error(tmp_path: Path) -> None:
    cfg = PipelineConfig(run_dir=tmp_path / "empty")
    with pytest.raises(StageInputError, match="items.parquet"):
        STAGE_REGISTRY["sid"].call(cfg, console=_quiet(), encoder=GenreEncoder())


def test_stage_rejects_empty_titles(tmp_path: Path) -> None:
    cfg = _make_run(tmp_path)
    items = pl.read_parquet(RunDir(cfg.run_dir).items)
    items.with_columns(pl.when(pl.col("item_id") == "i7").then(pl.lit("")).otherwise("title").alias("title")).write_parquet(
        RunDir(cfg.run_dir).items
    )
    with pytest.raises(DataValidationError, match="i7"):
        STAGE_REGISTRY["sid"].call(cfg, console=_quiet(), encoder=GenreEncoder())
    assert not RunDir(cfg.run_dir).is_done("sid")


def test_sid_map_round_trip_and_lookups(tmp_path: Path) -> None:
    codes = np.array([[0, 1, 2], [0, 1, 3], [2, 0, 0]])
    m = SidMap(["x", "y", "z"], codes, [3, 2, 4])
    m.to_parquet(tmp_path / "m.parquet")
    back = SidMap.from_parquet(tmp_path / "m.parquet")
    assert back == m and back.codebook_sizes == [3, 2, 4] and len(back) == 3
    assert back.sid_of("y") == codes_to_sid([0, 1, 3]) == "<a_0><b_1><c_3>"
    assert back.item_of([2, 0, 0]) == "z" and back.item_of([2, 0, 1]) is None and back.item_of([2, 0]) is None
    np.testing.assert_array_equal(back.codes_of(["z", "x"]), codes[[2, 0]])
    assert back.tokens()[:4] == ["<a_0>", "<a_1>", "<a_2>", "<b_0>"] and len(back.tokens()) == 9
    trie = back.trie()
    rows = trie.item_index(torch.tensor(codes)).tolist()
    assert [back.items[r] for r in rows] == ["x", "y", "z"]
    assert trie.allowed(torch.tensor([[0, 1]])).tolist() == [[False, False, True, True]]
    with pytest.raises(DataValidationError, match="nope"):
        back.codes_of(["x", "nope"])


def test_sid_map_rejects_non_bijections(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match="duplicate item id"):
        SidMap(["x", "x"], np.array([[0], [1]]), [2])
    with pytest.raises(DataValidationError, match="not unique"):
        SidMap(["x", "y"], np.array([[1], [1]]), [2])
    pl.DataFrame({"item_id": ["x"], "codes": [[0]]}).write_parquet(tmp_path / "foreign.parquet")
    with pytest.raises(StageInputError, match="metadata"):
        SidMap.from_parquet(tmp_path / "foreign.parquet")
    with pytest.raises(StageInputError, match="not found"):
        SidMap.from_parquet(tmp_path / "absent.parquet")
    # hand-edited maps: a null id became "None", a 0.5 code 0, a null code a TypeError, bad metadata a JSONDecodeError
    good = SidMap(["x", "y"], np.array([[0], [1]]), [2])
    good.to_parquet(tmp_path / "good.parquet")
    table = pl.read_parquet(tmp_path / "good.parquet")
    import pyarrow.parquet as pq

    schema_meta = pq.read_schema(tmp_path / "good.parquet").metadata
    for name, frame, match in (
        ("null_id", table.with_columns(item_id=pl.Series([None, "y"], dtype=pl.String)), "item_id must be text"),
        ("float_code", table.with_columns(codes=pl.Series([[0.5], [1.0]])), "lists of integers"),
        ("null_code", table.with_columns(codes=pl.Series([[None], [1]], dtype=pl.List(pl.Int64))), "lists of integers"),
    ):
        arrow = frame.to_arrow().replace_schema_metadata(schema_meta)
        pq.write_table(arrow, tmp_path / f"{name}.parquet")
        with pytest.raises(StageInputError, match=match):
            SidMap.from_parquet(tmp_path / f"{name}.parquet")
    pq.write_table(table.to_arrow().replace_schema_metadata({b"conrec.codebook_sizes": b"{not json"}), tmp_path / "bad_meta.parquet")
    with pytest.raises(StageInputError, match="metadata is not JSON"):
        SidMap.from_parquet(tmp_path / "bad_meta.parquet")


def test_collaborative_vectors_join_the_text_vectors_from_fit_events_only(tmp_path: Path) -> None:
    """sid.collab: the quantised vectors are text + co-interaction parts, the latter from the events
    before the valid cut-off only (a late event must not change any vector)."""
    from conrec.io import write_json, write_parquet

    def run_with(extra_late_event: bool, name: str) -> np.ndarray:
        cfg = _make_run(tmp_path, n=60, kind="rkmeans", name=name)
        from conrec.sid.config import CollabConfig

        cfg = cfg.model_copy(update={"sid": cfg.sid.model_copy(update={"collab": CollabConfig(dims=4)})})
        rd = RunDir(cfg.run_dir)
        rows = [(f"u{u}", f"i{(u * 7 + k) % 60}", 100 + k, 1 if k % 3 else -1) for u in range(20) for k in range(6)]
        if extra_late_event:
            rows.append(("u0", "i59", 10_000, -1))  # after the cut-off
        events = pl.DataFrame(rows, schema={"user_id": pl.String, "item_id": pl.String, "ts": pl.Int64, "feedback": pl.Int8}, orient="row")
        write_parquet(events, rd.events)
        write_parquet(pl.DataFrame({"split": ["valid"], "ts": [5_000]}), rd.samples)
        write_json({"split_protocol": "global_time", "valid_cutoff_ts": 5_000, "test_cutoff_ts": 8_000}, rd.data / "stats.json")
        stats = STAGE_REGISTRY["sid"].call(cfg, console=_quiet(), encoder=GenreEncoder())
        assert stats["encoder"]["collab_dims"] == 4
        text, both = np.load(rd.text_vectors), np.load(rd.embeddings)
        assert text.shape == (60, 24)  # the content baseline's vectors: the text part alone, unit length
        np.testing.assert_allclose(text, both[:, :24] / np.linalg.norm(both[:, :24], axis=1, keepdims=True), atol=1e-5)
        return both

    with_late = run_with(True, "a")
    without = run_with(False, "b")
    assert with_late.shape == (60, 24 + 4)
    assert np.allclose(np.linalg.norm(with_late, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(with_late, without)


@pytest.mark.parametrize("kind", ["rqvae", "rkmeans"])
def test_category_level_prefixes_each_sid_with_its_category(tmp_path: Path, kind: str) -> None:
    from conrec.llm.training.item_vectors import item_vectors

    torch.set_num_threads(2)
    plain, cat = _make_run(tmp_path, kind=kind, name="plain"), _make_run(tmp_path, kind=kind, name="cat")
    cat = cat.model_copy(update={"sid": cat.sid.model_copy(update={"category_level": True})})
    STAGE_REGISTRY["sid"].call(plain, console=_quiet(), encoder=GenreEncoder())
    stats = STAGE_REGISTRY["sid"].call(cat, console=_quiet(), encoder=GenreEncoder())
    base = SidMap.from_parquet(RunDir(plain.run_dir).sid_map)
    prefixed = SidMap.from_parquet(RunDir(cat.run_dir).sid_map)
    items = pl.read_parquet(RunDir(cat.run_dir).items)
    assert prefixed.codebook_sizes == [len(CATEGORIES), *base.codebook_sizes] == stats["codebook_sizes"]
    assert [CATEGORIES[c] for c in prefixed.codes[:, 0].tolist()] == items["category"].to_list()  # sorted names
    assert np.array_equal(prefixed.codes[:, 1:], base.codes)  # the quantised codes are untouched
    assert len({tuple(c) for c in prefixed.codes.tolist()}) == len(items)
    assert any("category level" in n for n in stats["notes"])
    assert len(stats["usage_after"]) == len(stats["codebook_sizes"])  # one per level, the category level included
    vecs, source = item_vectors(RunDir(cat.run_dir).sid, prefixed.codes)  # the reward's vectors skip the prefix
    ref, _ = item_vectors(RunDir(plain.run_dir).sid, base.codes)
    assert source == "reconstructed" and np.allclose(vecs, ref, atol=1e-5)


def test_category_level_needs_a_category_column(tmp_path: Path) -> None:
    cfg = _make_run(tmp_path)
    rd = RunDir(cfg.run_dir)
    items = pl.read_parquet(rd.items)  # the category word moves into the title, where the fake encoder finds it
    items.with_columns(title=pl.col("title") + " " + pl.col("category")).drop("category").write_parquet(rd.items)
    cfg = cfg.model_copy(update={"sid": cfg.sid.model_copy(update={"category_level": True})})
    with pytest.raises(StageInputError, match="sid.category_level needs a category column"):
        STAGE_REGISTRY["sid"].call(cfg, console=_quiet(), encoder=GenreEncoder())


@pytest.mark.parametrize(
    "sid, match",
    [
        ({"category_level": True}, r"^sid.category_level: none of the 32 items has a category .*--category-col"),
        ({"encoder": {"text_fields": ["text"]}}, r"^items: every one of the 32 items has an empty text in sid.encoder.text_fields \['text'\]"),
        ({"encoder": {"text_fields": ["title", "blurb"]}}, r"^items: column 'blurb' \(sid.encoder.text_fields\) not found"),
    ],
)
def test_a_refused_sid_leaves_a_finished_run_as_it_was(tmp_path: Path, sid: dict[str, object], match: str) -> None:
    """Found by probing: the data stage writes category '' when the items file has none, so the column check never
    fired; every item got the one (none) code and the setting only added a constant token to every SID. Found in
    review: that refusal (and the text_fields ones) came from the runner, after the pipeline had rewritten
    config.yaml and cleared sid, sft, grpo and eval, so a config mistake cost every trained model; the sid stage's
    preflight refuses before the run is touched."""
    from conrec.config import load_config
    from conrec.pipeline import run_stage

    from builders import finished_run, run_files

    cfg, run = finished_run(tmp_path / "run")
    items = pl.read_parquet(run.items)
    items.with_columns(category=pl.lit(""), text=pl.lit("")).write_parquet(run.items)  # as the data stage writes them without columns
    before = run_files(run.root)
    bad = load_config(None, {**cfg.model_dump(mode="json"), "sid": {**cfg.sid.model_dump(mode="json", exclude_none=True), **sid}})
    with pytest.raises(ConrecError, match=match) as err:
        run_stage(bad, "sid", console=_quiet())
    assert "\n" not in str(err.value)
    assert run_files(run.root) == before
    assert all(run.is_done(stage) for stage in STAGES)
    with pytest.raises(ConrecError, match=match):  # a direct call of the runner is refused alike
        STAGE_REGISTRY["sid"].call(bad, console=_quiet(), encoder=GenreEncoder())
    assert run_files(run.root) == before


def test_items_without_categories_write_strict_json_stats(tmp_path: Path) -> None:
    """No category to compare codes with: the purity lift is null, not NaN (which is not JSON: jq and
    browsers refuse such a file), and the table says why."""
    import json

    cfg = _make_run(tmp_path)
    rd = RunDir(cfg.run_dir)
    items = pl.read_parquet(rd.items)
    items.with_columns(title=pl.col("title") + " " + pl.col("category"), category=pl.lit("")).write_parquet(rd.items)  # as the loaders leave it
    console = Console(record=True, width=200)
    stats = STAGE_REGISTRY["sid"].call(cfg, console=console, encoder=GenreEncoder())
    assert stats["purity_lift_level0"] is None
    json.loads((rd.sid / "stats.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in sid/stats.json"))
    assert "n/a (no categories to compare)" in console.export_text()


def test_missing_categories_share_one_code() -> None:
    from conrec.sid.category_level import NO_CATEGORY, category_codes

    codes, order = category_codes(pl.DataFrame({"category": ["b", None, "a", " ", "b"]}))
    assert order == [NO_CATEGORY, "a", "b"] and codes.tolist() == [2, 0, 1, 0, 2]


def test_multi_valued_categories_give_their_first_value_as_the_baselines_split_them() -> None:
    """'Action|Comedy', 'Comedy ' and ' Comedy' were level-0 codes of their own."""
    from conrec.sid.category_level import category_codes

    codes, order = category_codes(pl.DataFrame({"category": ["Action|Comedy", "Comedy ", " Comedy", "Action", " | Drama", None]}))
    assert order == ["(none)", "Action", "Comedy", "Drama"] and codes.tolist() == [1, 2, 2, 1, 3, 0]


def test_one_item_or_identical_texts_write_null_reconstruction_errors(tmp_path: Path) -> None:
    """The relative error divides by the vectors' variance: 0 for one item (NaN in stats.json, not
    JSON) and float noise for identical texts (1e14 printed as a result)."""
    import json

    from conrec.sid.quantize_result import reconstruction_errors

    x = np.tile(np.random.default_rng(0).normal(size=(1, 16)), (40, 1)) + 1e-9
    assert np.isnan(reconstruction_errors(x, x + 1e-3)[1]) and np.isnan(reconstruction_errors(x[:1], x[:1])[1])
    y = np.random.default_rng(1).normal(size=(40, 16))
    assert 0.0 < reconstruction_errors(y, y + 0.1)[1] < 0.1
    cfg = _make_run(tmp_path, n=1, kind="rkmeans")
    stats = STAGE_REGISTRY["sid"].call(cfg, console=_quiet(), encoder=GenreEncoder())
    assert stats["recon_rel"] is None
    json.loads((RunDir(cfg.run_dir).sid / "stats.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in sid/stats.json"))


def test_codebook_sizes_keep_the_level_bound() -> None:
    from conrec.sid.config import QuantizerConfig

    assert QuantizerConfig(codebook_sizes=[2] * 8).levels == 8
    with pytest.raises(ValueError, match="codebook_sizes lists 9 levels; at most 8"):
        QuantizerConfig(codebook_sizes=[2] * 9)


def test_docs_say_a_sid_is_stable_only_for_the_same_items_and_no_path_encodes_new_items():
    """Found by probing: one item added to the items file changed all 60 SIDs of a catalogue, while docs/sids.md
    promised a map "stable across reruns with the same seed" and the stage called quantizer.pt a checkpoint "to
    encode new items later", which nothing does."""
    import conrec.sid.stage as stage

    root = Path(__file__).resolve().parents[1]
    sids = " ".join((root / "docs" / "sids.md").read_text().split())
    assert "same items file" in sids and "re-learns every code" in sids and "retraining the model" in sids
    assert "encode new items later" not in (stage.__doc__ or "")
    # found by an audit: with sid.collab (demo, full) the training events are the quantizer's input too; moving
    # data.split.train_until alone changed all 1,682 demo SIDs, while both texts named the items only
    stable = sids[sids.index("**How stable a SID is.**") :].split("**Collaborative SIDs**")[0]
    assert "`sid.collab`" in stable and "same events file" in stable and "`data.split`" in stable
    assert "sid.collab" in " ".join((stage.__doc__ or "").split()) and "same events file" in " ".join((stage.__doc__ or "").split())


def test_the_stage_notes_item_texts_the_encoder_cut(tmp_path: Path) -> None:
    class Cutting(GenreEncoder):
        def truncated(self, texts: list[str]) -> list[int]:
            return [i for i, t in enumerate(texts) if len(t.split(";")[0]) > len("Title 9")]

    cfg = _make_run(tmp_path, n=30, kind="rkmeans")
    stats = STAGE_REGISTRY["sid"].call(cfg, console=_quiet(), encoder=Cutting())
    assert stats["encoder"]["texts_truncated"] == 20  # "Title 10" .. "Title 29"
    assert any(n.startswith("20 item text(s) are longer than the encoder's maximum") and "i10" in n for n in stats["notes"])


def test_codebooks_larger_than_the_catalogue_or_a_poor_fit_are_noted(tmp_path: Path, monkeypatch) -> None:
    """Found by probing: auto_scale false with 100,000 codes for 60 items, and an RQ-VAE fit worse than the mean
    (recon_rel 1.54), passed with no note."""
    import conrec.sid.stage as stage
    from conrec.sid.quantize_result import QuantizeResult

    cfg = _make_run(tmp_path, n=20, kind="rkmeans")
    big = cfg.model_copy(update={"sid": cfg.sid.model_copy(update={"quantizer": cfg.sid.quantizer.model_copy(
        update={"auto_scale": False, "codebook_sizes": [4, 50]})})})
    real = stage.quantize

    def poor(*args, **kwargs) -> QuantizeResult:
        res = real(*args, **kwargs)
        res.recon_rel = 1.54
        return res

    monkeypatch.setattr(stage, "quantize", poor)
    notes = STAGE_REGISTRY["sid"].call(big, console=_quiet(), encoder=GenreEncoder())["notes"]
    assert "codebook sizes [4, 50] exceed the 20 items (sid.quantizer.auto_scale: false): at least 30 SID tokens can never name an item; auto_scale would use [4, 16]" in notes
    assert any(n.startswith("relative reconstruction error 1.54 > 1") for n in notes)


def test_the_stage_notes_items_with_no_text_to_encode(tmp_path: Path) -> None:
    """Found by probing: items whose text_fields are all blank were encoded as '' without a note."""

    class Blank(GenreEncoder):
        def encode(self, texts: list[str]) -> np.ndarray:
            return super().encode([t or "Comedy" for t in texts])

    cfg = _make_run(tmp_path, n=30, kind="rkmeans")
    rd = RunDir(cfg.run_dir)
    items = pl.read_parquet(rd.items)
    items.with_columns(text=pl.when(pl.col("item_id").is_in(["i3", "i4"])).then(pl.lit("")).otherwise(pl.col("category"))).write_parquet(rd.items)
    cfg = cfg.model_copy(update={"sid": cfg.sid.model_copy(update={"encoder": cfg.sid.encoder.model_copy(update={"text_fields": ["text"]})})})
    stats = STAGE_REGISTRY["sid"].call(cfg, console=_quiet(), encoder=Blank())
    assert stats["encoder"]["texts_empty"] == 2
    assert any(n.startswith("2 item(s) have no text in sid.encoder.text_fields ['text']") and "'i3', 'i4'" in n for n in stats["notes"])
    assert read_json(rd.sid / "stats.json")["encoder"]["texts_empty"] == 2


def test_the_stage_notes_items_with_identical_texts(tmp_path: Path) -> None:
    """Found by an audit: items with one (non-blank) text share one vector like blank ones, but had no note."""
    cfg = _make_run(tmp_path, n=30, kind="rkmeans")
    rd = RunDir(cfg.run_dir)
    items = pl.read_parquet(rd.items)
    items.with_columns(title=pl.when(pl.col("item_id").is_in(["i5", "i7", "i9"])).then(pl.lit("Same Title")).otherwise(pl.col("title"))).write_parquet(rd.items)
    cfg = cfg.model_copy(update={"sid": cfg.sid.model_copy(update={"encoder": cfg.sid.encoder.model_copy(update={"text_fields": ["title"]})})})

    class TitleOnly(GenreEncoder):
        def encode(self, texts: list[str]) -> np.ndarray:
            return super().encode([f"{t} Comedy" for t in texts])

    stats = STAGE_REGISTRY["sid"].call(cfg, console=_quiet(), encoder=TitleOnly())
    assert stats["encoder"]["texts_duplicate"] == 3 and stats["encoder"]["texts_empty"] == 0
    note = next(n for n in stats["notes"] if n.startswith("3 item(s) have the same text in sid.encoder.text_fields ['title'] as another item"))
    assert "'i5', 'i7', 'i9'" in note and "encoded once" not in note  # found by a review: each item is encoded
    assert "get the same vector (up to float rounding between encoder batches) and their SIDs are set apart only" in note
    assert read_json(rd.sid / "stats.json")["encoder"]["texts_duplicate"] == 3
    assert len({tuple(c) for c in SidMap.from_parquet(rd.sid_map).codes.tolist()}) == 30
    # with a collaborative part the items no longer share their whole vector: the note says what they do share
    from conrec.sid.config import CollabConfig
    from conrec.sid.stage import _shared_text_consequence
    from conrec.stages import SidSections

    collab = SidSections(sid=cfg.sid.model_copy(update={"collab": CollabConfig(dims=4)}), seed=0, split=cfg.data.split)
    assert _shared_text_consequence(collab).startswith("they get the same text vector (up to float rounding between encoder batches), and only")


def test_the_summary_says_why_the_purity_lift_is_undefined(tmp_path: Path) -> None:
    """Found by probing: every item with a category of its own was summarised as "no categories to compare"."""
    cfg = _make_run(tmp_path, n=40, kind="rkmeans")
    rd = RunDir(cfg.run_dir)
    items = pl.read_parquet(rd.items)
    items.with_columns(title=pl.col("title") + " " + pl.col("category"), category=pl.col("item_id")).write_parquet(rd.items)
    console = Console(record=True, width=200)
    stats = STAGE_REGISTRY["sid"].call(cfg, console=console, encoder=GenreEncoder())
    assert stats["purity_lift_level0"] is None and stats["purity_lift_level0_na"] == "no two items share a category"
    assert "n/a (no two items share a category)" in console.export_text()


def test_the_summary_reports_usage_for_the_levels_of_its_codebook_sizes(tmp_path: Path) -> None:
    """Found by probing: "codebook sizes [5, 16, 16, 16]" (category level) sat next to three "codes used per level"
    entries, the quantizer's levels before collision resolution."""
    cfg = _make_run(tmp_path, n=60, kind="rkmeans")
    cfg = cfg.model_copy(update={"sid": cfg.sid.model_copy(update={"category_level": True})})
    console = Console(record=True, width=300)
    stats = STAGE_REGISTRY["sid"].call(cfg, console=console, encoder=GenreEncoder())
    row = next(line for line in console.export_text().splitlines() if "codes used per level" in line)
    assert len(stats["codebook_sizes"]) == 4 and row.count("(ppl") == 4
    assert [int(u.split("/")[1].split()[0]) for u in row.split("│")[2].split(",")] == stats["codebook_sizes"]


def test_the_stage_notes_item_text_that_reads_as_a_control_token(tmp_path: Path) -> None:
    """Found by probing: a title '<a_3><b_1><c_2> Film' becomes three SID tokens in the SFT prompts (which now break
    it); the stage counted nothing."""
    cfg = _make_run(tmp_path, n=30, kind="rkmeans")
    rd = RunDir(cfg.run_dir)
    items = pl.read_parquet(rd.items)
    odd = {"i2": ("<a_3><b_1><c_2> Film", None), "i5": (None, "<dis>")}
    items.with_columns(
        title=pl.struct("item_id", "title").map_elements(lambda r: (odd.get(r["item_id"], (None, None))[0] or r["title"]) + " Comedy", return_dtype=pl.String),
        category=pl.struct("item_id", "category").map_elements(lambda r: odd.get(r["item_id"], (None, None))[1] or r["category"], return_dtype=pl.String),
    ).write_parquet(rd.items)
    stats = STAGE_REGISTRY["sid"].call(cfg, console=_quiet(), encoder=GenreEncoder())
    assert stats["items_control_text"] == 2
    assert any(n.startswith("2 item(s) have a title or category containing a model control token's text") and "['i2', 'i5']" in n for n in stats["notes"])
    plain = _make_run(tmp_path, n=30, kind="rkmeans", name="plain")
    assert STAGE_REGISTRY["sid"].call(plain, console=_quiet(), encoder=GenreEncoder())["items_control_text"] == 0


def test_an_embedding_cache_that_cannot_be_written_is_a_note_and_the_stage_finishes(tmp_path: Path) -> None:
    """A file where ``sid.encoder.cache_dir`` goes failed the sid stage with a FileExistsError traceback, after every
    item was encoded."""
    cfg = _make_run(tmp_path, kind="rkmeans")
    (tmp_path / "cache").write_text("not a directory")
    stats = STAGE_REGISTRY["sid"].call(cfg, console=_quiet(), encoder=GenreEncoder())
    assert RunDir(cfg.run_dir).is_done("sid")
    assert [n for n in stats["notes"] if n.startswith(f"sid.encoder.cache_dir {tmp_path / 'cache'} cannot be written")]
    assert "cache_notes" not in stats["encoder"]
