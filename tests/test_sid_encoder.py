"""Item text encoder: texts, validation, cache, extra vectors and fusion; one real MiniLM run."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from conrec.errors import ConfigError, DataValidationError
from conrec.sid.config import EncoderConfig
from conrec.sid.encoder import encode_items, item_texts, load_extra_vectors


class CountingEncoder:
    """Deterministic fake encoder: a seeded random vector per text; counts calls."""

    model_id = "fake-encoder-v1"

    def __init__(self, dim: int = 16) -> None:
        self.dim = dim
        self.calls = 0

    def encode(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        return np.stack([np.random.default_rng(zlib.crc32(t.encode())).normal(size=self.dim) for t in texts])


def _items(n: int = 6) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "item_id": [str(i) for i in range(n)],
            "title": [f"Movie {i}" for i in range(n)],
            "text": ["" if i % 2 else f"about {i}" for i in range(n)],
            "category": ["Drama" if i % 2 else "Comedy" for i in range(n)],
        }
    )


def test_item_texts_joins_non_empty_fields() -> None:
    texts = item_texts(_items(2), ["title", "category", "text"])
    assert texts == ["Movie 0; Comedy; about 0", "Movie 1; Drama"]


@pytest.mark.parametrize(
    ("items", "match"),
    [
        (_items().with_columns(pl.when(pl.col("item_id") == "3").then(pl.lit("  ")).otherwise("title").alias("title")),
         r"empty title.*'3'"),
        (_items().with_columns(pl.when(pl.col("item_id") == "4").then(pl.lit("1")).otherwise("item_id").alias("item_id")),
         r"duplicate item id.*'1'"),
        (_items().drop("category"), "'category'"),
    ],
)
def test_item_texts_bad_inputs(items: pl.DataFrame, match: str) -> None:
    with pytest.raises(DataValidationError, match=match):
        item_texts(items, ["title", "category"])


def test_encode_items_normalises_and_caches(tmp_path: Path) -> None:
    enc = CountingEncoder()
    cfg = EncoderConfig(cache_dir=tmp_path / "cache", batch_size=4)
    v1, info1 = encode_items(_items(), cfg, encoder=enc)
    assert v1.shape == (6, 16) and np.allclose(np.linalg.norm(v1, axis=1), 1.0, atol=1e-5)
    assert enc.calls == 2 and not info1["cache_hit"]  # 6 items in batches of 4
    v2, info2 = encode_items(_items(), cfg, encoder=enc)
    assert enc.calls == 2 and info2["cache_hit"]
    np.testing.assert_array_equal(v1, v2)
    # any text change is a cache miss
    changed = _items().with_columns(pl.when(pl.col("item_id") == "0").then(pl.lit("Other")).otherwise("title").alias("title"))
    encode_items(changed, cfg, encoder=enc)
    assert enc.calls == 4
    # cache off: always encodes, writes nothing
    off = EncoderConfig(cache=False, cache_dir=tmp_path / "off", batch_size=4)
    encode_items(_items(), off, encoder=enc)
    assert enc.calls == 6 and not (tmp_path / "off").exists()


def _write_extra(path: Path, ids: list[str], dim: int = 4, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    pl.DataFrame({"item_id": ids, "vec": rng.normal(size=(len(ids), dim)).tolist()}).write_parquet(path)


@pytest.mark.parametrize("fusion", ["concat", "projection"])
def test_extra_vectors_fusion(tmp_path: Path, fusion: str) -> None:
    ids = [str(i) for i in range(6)]
    _write_extra(tmp_path / "extra.parquet", list(reversed(ids)))  # order need not match
    cfg = EncoderConfig(
        cache_dir=tmp_path / "cache", extra_vectors_path=tmp_path / "extra.parquet", fusion=fusion, projection_dim=5
    )
    v, info = encode_items(_items(), cfg, encoder=CountingEncoder())
    assert v.shape == (6, 20 if fusion == "concat" else 5)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    if fusion == "concat":  # both halves weigh the same after fusion
        assert np.allclose(np.linalg.norm(v[:, :16], axis=1), np.sqrt(0.5), atol=1e-5)
    else:
        assert info["fusion_state"]["components"].shape == (5, 20)
        v_again, _ = encode_items(_items(), cfg, encoder=CountingEncoder())
        np.testing.assert_array_equal(v, v_again)


def test_extra_vectors_errors(tmp_path: Path) -> None:
    ids = [str(i) for i in range(6)]
    _write_extra(tmp_path / "missing.parquet", ids[:4])
    with pytest.raises(DataValidationError, match=r"no vector for 2 item\(s\).*'4'"):
        load_extra_vectors(tmp_path / "missing.parquet", ids)
    _write_extra(tmp_path / "ok.parquet", ids, dim=4)
    with pytest.raises(DataValidationError, match="dimension 4, expected 8"):
        load_extra_vectors(tmp_path / "ok.parquet", ids, expected_dim=8)
    ragged = pl.DataFrame({"item_id": ids, "vec": [[1.0, 2.0]] * 5 + [[1.0, 2.0, 3.0]]})
    ragged.write_parquet(tmp_path / "ragged.parquet")
    with pytest.raises(DataValidationError, match=r"different lengths.*'5'"):
        load_extra_vectors(tmp_path / "ragged.parquet", ids)
    np.save(tmp_path / "short.npy", np.ones((5, 3)))
    with pytest.raises(DataValidationError, match=r"shape \(6, dim\)"):
        load_extra_vectors(tmp_path / "short.npy", ids)
    with pytest.raises(ConfigError, match="not found"):
        load_extra_vectors(tmp_path / "nope.npy", ids)


def test_real_minilm_encoder_on_a_dozen_items(tmp_path: Path) -> None:
    titles = ["Toy Story", "Toy Story 2", "Aladdin", "The Lion King", "Alien", "Aliens",
              "Heat", "Casino", "Scream", "Halloween", "Babe", "Fargo"]
    cats = ["Animation"] * 4 + ["Sci-Fi"] * 2 + ["Crime"] * 2 + ["Horror"] * 2 + ["Comedy", "Crime"]
    items = pl.DataFrame({"item_id": [f"m{i}" for i in range(12)], "title": titles, "text": [""] * 12, "category": cats})
    v, info = encode_items(items, EncoderConfig(cache_dir=tmp_path / "cache"))
    assert v.shape == (12, 384) and "MiniLM" in str(info["model_id"])
    sims = v @ v.T
    assert sims[0, 1] > sims[0, 4]  # "Toy Story" is closer to its sequel than to "Alien"
    assert sims[4, 5] > sims[4, 10]


def test_a_local_encoder_changed_in_a_subdirectory_is_another_cache_key(tmp_path: Path) -> None:
    """Found by probing: the cache key read only the model directory's top-level files, by size and whole
    second, so an edited ``1_Pooling/config.json`` (CLS instead of mean pooling) kept serving the old vectors,
    even under ``--force``."""
    import os

    from conrec.sid.encoder import SentenceTransformerEncoder

    model = tmp_path / "enc"
    (model / "1_Pooling").mkdir(parents=True)
    (model / "config.json").write_text("{}")
    pooling = model / "1_Pooling" / "config.json"
    mean = '{"pooling_mode_cls_token": false, "pooling_mode_mean_tokens": true }'
    cls_ = '{"pooling_mode_cls_token": true , "pooling_mode_mean_tokens": false}'
    assert len(mean) == len(cls_)
    pooling.write_text(mean)
    before = SentenceTransformerEncoder(model).model_id
    st = pooling.stat()
    pooling.write_text(cls_)  # the same size
    os.utime(pooling, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the same modification time
    assert SentenceTransformerEncoder(model).model_id != before
    pooling.write_text(mean)
    assert SentenceTransformerEncoder(model).model_id == before  # the same contents: the same key (a copy, a touch)


def test_texts_cut_at_the_encoders_maximum_length_are_counted(tmp_path: Path) -> None:
    """Found by probing: a multi-word title past 256 word pieces pushed the category out of MiniLM's window
    without a word ('horror' and 'comedy' items got identical vectors). The tokenizer alone counts them."""
    from conrec.sid.encoder import SentenceTransformerEncoder

    enc = SentenceTransformerEncoder()
    long_title = "Epic saga " + "lorem ipsum " * 300
    texts = ["Toy Story; Animation", long_title + "; horror", "x" * 10_000, "word " * 200]
    assert enc.truncated(texts) == [1]  # one 10,000-char word is one [UNK]; 200 words fit
    assert enc._model is None  # the tokenizer only, no model load
    items = pl.DataFrame({"item_id": ["a", "b"], "title": ["Toy Story", long_title], "category": ["Animation", "Horror"], "text": ["", ""]})

    class Fake(CountingEncoder):
        truncated = staticmethod(enc.truncated)

    _, info = encode_items(items, EncoderConfig(cache=False), encoder=Fake())
    assert info["texts_truncated"] == 1 and info["texts_truncated_examples"] == ["b"]
    _, plain = encode_items(items, EncoderConfig(cache=False), encoder=CountingEncoder())
    assert "texts_truncated" not in plain  # an encoder that cannot say


def test_empty_item_texts_are_refused_when_all_and_counted_when_some() -> None:
    """Found by probing: text_fields [text] on an items file without descriptions encoded every item as '', so all
    shared one vector, collided 100% and got arbitrary SIDs, with no word of the cause."""
    items = _items(6)  # odd items have text ''
    with pytest.raises(DataValidationError, match=r"every one of the 3 items has an empty text in sid.encoder.text_fields \['text'\]"):
        item_texts(items.filter(pl.col("item_id").cast(pl.Int64) % 2 == 1), ["text"])
    _, info = encode_items(items, EncoderConfig(cache=False, text_fields=["text"]), encoder=CountingEncoder())
    assert info["texts_empty"] == 3 and info["texts_empty_examples"] == ["1", "3", "5"]
    _, full = encode_items(items, EncoderConfig(cache=False), encoder=CountingEncoder())
    assert full["texts_empty"] == 0 and full["texts_empty_examples"] == []


def test_identical_item_texts_are_counted_like_empty_ones() -> None:
    """Found by an audit: 40 items all titled "Same Title" shared one vector and collided 90% like blank texts, but
    only blank texts were counted. Blank ones stay with texts_empty; the examples keep each group together."""
    items = _items(8).with_columns(title=pl.Series(["A", "B", "A", "C", "B", "A", "D", "E"]))
    _, info = encode_items(items, EncoderConfig(cache=False, text_fields=["title"]), encoder=CountingEncoder())
    assert info["texts_duplicate"] == 5 and info["texts_duplicate_examples"] == ["0", "2", "5", "1", "4"]
    _, blank = encode_items(items, EncoderConfig(cache=False, text_fields=["text"]), encoder=CountingEncoder())
    assert blank["texts_empty"] == 4 and blank["texts_duplicate"] == 0  # the four '' are blanks, not duplicates
    _, unique = encode_items(items, EncoderConfig(cache=False), encoder=CountingEncoder())
    assert unique["texts_duplicate"] == 0 and unique["texts_duplicate_examples"] == []


def test_the_default_cache_is_in_conrecs_cache_which_the_same_variables_move(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The vectors stayed in ``~/.cache/conrec/embeddings`` whatever ``$CONREC_CACHE`` or ``$XDG_CACHE_HOME`` said, so a
    read-only home failed the sid stage though the model cache had been moved."""
    from conrec.llm.model.backbones import cache_root
    from conrec.sid.encoder import default_cache_dir

    monkeypatch.delenv("CONREC_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "conrec" / "embeddings" and cache_root().parent == default_cache_dir().parent
    monkeypatch.setenv("CONREC_CACHE", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine" / "embeddings" and cache_root() == tmp_path / "mine" / "models"
    _, info = encode_items(_items(), EncoderConfig(batch_size=4), encoder=CountingEncoder())
    assert not info["cache_hit"] and len(list((tmp_path / "mine" / "embeddings").glob("*.npy"))) == 1


@pytest.mark.parametrize("where", ["a file", "read-only"])
def test_a_cache_that_cannot_be_written_is_one_note_and_the_vectors_are_still_returned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """A file at ``cache_dir`` (a FileExistsError traceback) or a read-only one (an error naming a hidden temporary file)
    failed the whole sid stage after every item was encoded; the cache is only a cache."""
    import errno

    import conrec.io

    cache = tmp_path / "cache"
    if where == "a file":
        cache.write_text("x")
    else:
        def mkdtemp(prefix: str, suffix: str, dir: Path) -> str:
            raise OSError(errno.EROFS, "Read-only file system", str(Path(dir) / f"{prefix}cm_6f0yl{suffix}"))

        monkeypatch.setattr(conrec.io.tempfile, "mkdtemp", mkdtemp)
    vectors, info = encode_items(_items(), EncoderConfig(cache_dir=cache, batch_size=4), encoder=CountingEncoder())
    assert vectors.shape == (6, 16) and not info["cache_hit"]
    [note] = info["cache_notes"]  # type: ignore[misc]
    assert note.startswith(f"sid.encoder.cache_dir {cache} cannot be written (") and "cm_6f0yl" not in note
    assert "\n" not in note and note.endswith("set sid.encoder.cache_dir to a writable directory (or sid.encoder.cache: false)")


def test_a_cache_that_cannot_be_searched_is_one_note_and_the_vectors_are_still_returned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cache directory without search permission makes Path.exists raise EACCES (for any user but root): that was a
    traceback before the encoder ran; the cache is only a cache, so it is one note and the items are encoded."""
    import errno

    cache = tmp_path / "cache"
    real_exists = Path.exists

    def exists(self: Path, *args, **kwargs) -> bool:  # type: ignore[no-untyped-def]
        if self.parent == cache:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_exists(self, *args, **kwargs)

    monkeypatch.setattr(Path, "exists", exists)
    vectors, info = encode_items(_items(), EncoderConfig(cache_dir=cache, batch_size=4), encoder=CountingEncoder())
    assert vectors.shape == (6, 16) and not info["cache_hit"]
    [note] = info["cache_notes"]  # type: ignore[misc]
    assert note.startswith(f"sid.encoder.cache_dir {cache} cannot be read (Permission denied)") and "\n" not in note


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (np.zeros_like, "6 row(s) are not of unit length (e.g. row 0: 0)"),  # zero-filled by a crash before it reached disk
        (lambda v: np.where(np.arange(len(v))[:, None] == 2, np.nan, v), "1 row(s) hold NaN or infinite values"),
        (lambda v: v * 3, "6 row(s) are not of unit length"),
        (lambda v: v[:4], "of shape (4, 16), not (6, dim) floats"),
        (lambda v: (v > 0).astype(np.int64), "an array of int64"),
    ],
)
def test_a_damaged_cache_entry_is_said_encoded_again_and_rewritten(tmp_path: Path, damage, problem: str) -> None:  # type: ignore[no-untyped-def]
    """A cache hit was checked for its shape alone: a zeroed entry gave every item the same vector (SIDs with no
    content, "collision rate 100.0% -> 0.0%", no word), a NaN row a faiss traceback."""
    enc = CountingEncoder()
    cfg = EncoderConfig(cache_dir=tmp_path / "cache", batch_size=4)
    fresh, _ = encode_items(_items(), cfg, encoder=enc)
    [entry] = list((tmp_path / "cache").glob("*.npy"))
    np.save(entry, damage(np.load(entry)))
    again, info = encode_items(_items(), cfg, encoder=enc)
    assert not info["cache_hit"] and enc.calls == 4  # encoded again
    np.testing.assert_array_equal(again, fresh)
    [note] = info["cache_notes"]  # type: ignore[misc]
    assert note.startswith(f"the cached item vectors {entry} (sid.encoder.cache_dir) are not usable (") and problem in note
    np.testing.assert_array_equal(np.load(entry), fresh)  # rewritten: the next run is a hit, without a note
    _, info = encode_items(_items(), cfg, encoder=enc)
    assert info["cache_hit"] and "cache_notes" not in info and enc.calls == 4
