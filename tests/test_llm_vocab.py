"""SID vocabulary: ordinary single tokens, resized embeddings, model <-> SID map fit checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conrec.errors import StageInputError
from conrec.llm.config import ModelConfig, TinyModelConfig
from conrec.llm.inference.prompts import MARKER_TOKENS
from conrec.llm.model.backbone import load_backbone
from conrec.llm.model.toy import toy_tables
from conrec.llm.model.vocab import add_sid_vocabulary, assert_model_fits, save_vocab_meta
from conrec.sid.sid_map import SidMap


@pytest.fixture(scope="module")
def built():
    items, _, sid_map = toy_tables(n_items=40, codebook_sizes=(4, 4, 4))
    model, tok = load_backbone(ModelConfig(tiny=TinyModelConfig(seed=1)))
    n_before = len(tok)
    emb_before = model.get_input_embeddings().weight.detach().clone()
    vocab = add_sid_vocabulary(model, tok, sid_map, dict(zip(items["item_id"], items["title"])))
    return model, tok, sid_map, vocab, n_before, emb_before


def test_every_sid_and_marker_is_one_ordinary_token(built):
    model, tok, sid_map, vocab, n_before, _ = built
    new = [*sid_map.tokens(), *MARKER_TOKENS]
    assert len(tok) == n_before + len(new)
    special = set(tok.all_special_tokens)
    for t in new:
        ids = tok(t, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and ids[0] >= n_before, t
        assert t not in special
    sid = sid_map.sid_of(sid_map.items[3])
    ids = tok(f"Answer:{sid}", add_special_tokens=False)["input_ids"]
    # decoding as TRL does (special tokens skipped) keeps the SID text intact
    assert tok.decode(ids, skip_special_tokens=True) == f"Answer:{sid}"
    assert [vocab.token_to_code[i].item() for i in ids[-3:]] == sid_map.codes_of([sid_map.items[3]])[0].tolist()


def test_embeddings_resized_and_old_rows_kept(built):
    model, tok, _, vocab, n_before, emb_before = built
    emb = model.get_input_embeddings().weight
    assert emb.shape[0] == len(tok)
    assert torch.equal(emb[:n_before], emb_before)
    new_rows = emb[n_before:]
    assert torch.isfinite(new_rows).all()
    # rescaled to the typical norm of the original rows
    assert new_rows.norm(dim=1).mean().item() == pytest.approx(emb_before.norm(dim=1).mean().item(), rel=1e-3)
    # items of different level-0 codes (genres) start with different level-0 token embeddings
    a0, a1 = vocab.level_ids[0][:2].tolist()
    assert not torch.allclose(emb[a0], emb[a1])


def test_adding_twice_is_idempotent(built):
    model, tok, sid_map, _, _, _ = built
    n = len(tok)
    emb = model.get_input_embeddings().weight.detach().clone()
    add_sid_vocabulary(model, tok, sid_map)
    assert len(tok) == n and torch.equal(model.get_input_embeddings().weight, emb)


def test_assert_model_fits(built, tmp_path):
    model, tok, sid_map, _, _, _ = built
    d = tmp_path / "m"
    d.mkdir()
    tok.save_pretrained(d)
    save_vocab_meta(d, sid_map)
    assert_model_fits(d, sid_map)  # fits its own map

    other_sizes = SidMap(sid_map.items, sid_map.codes, [4, 4, 8])
    with pytest.raises(StageInputError, match="codebook sizes"):
        assert_model_fits(d, other_sizes)
    codes = sid_map.codes
    codes[[0, 1]] = codes[[1, 0]]  # same token set, two items swapped
    with pytest.raises(StageInputError, match="different item <-> SID assignment"):
        assert_model_fits(d, SidMap(sid_map.items, codes, sid_map.codebook_sizes))
    with pytest.raises(StageInputError, match="conrec_vocab.json"):
        assert_model_fits(tmp_path, sid_map)


def test_tokenizer_without_sid_tokens_is_rejected(built, tmp_path):
    _, tok, sid_map, _, _, _ = built
    bigger = SidMap(sid_map.items, sid_map.codes, [4, 4, 5])
    d = tmp_path / "m2"
    d.mkdir()
    tok.save_pretrained(d)
    save_vocab_meta(d, bigger)  # metadata says 5 codes at level 2 but the tokenizer has 4
    with pytest.raises(StageInputError, match="lacks 1 SID"):
        assert_model_fits(d, bigger)


def test_encoder_init_is_the_residual_quantisation_projected_and_scaled():
    """Hand-checked: 4 items in 2-d, SIDs (a, b) = (0,0) (0,1) (1,0) (1,1).

    Centred vectors: (1,1) (1,-1) (-1,1) (-1,-1) (mean 0). Level 0: code 0 = mean of the first two
    = (1,0), code 1 = (-1,0). Residuals (0,1) (0,-1) (0,1) (0,-1); level 1: code 0 = (0,1), code 1 =
    (0,-1). Both principal directions are kept (width 2 = encoder dim), so dot products survive:
    within a level the two codes point in opposite directions, across levels they are orthogonal,
    and each level is scaled to the backbone rows' mean norm (here 3).
    """
    from conrec.llm.model.vocab import encoder_token_rows
    from conrec.sid.tokens import sid_token

    sid_map = SidMap(["a", "b", "c", "d"], np.array([[0, 0], [0, 1], [1, 0], [1, 1]]), [2, 2])
    vectors = np.array([[3.0, 5.0], [3.0, 3.0], [1.0, 5.0], [1.0, 3.0]])  # mean (2, 4)
    emb = torch.full((5, 2), 3.0 / np.sqrt(2))  # every row has norm 3
    rows = encoder_token_rows(sid_map, vectors, emb)
    a0, a1, b0, b1 = (rows[sid_token(lv, c)] for lv, c in ((0, 0), (0, 1), (1, 0), (1, 1)))
    for v in (a0, a1, b0, b1):
        assert float(v.norm()) == pytest.approx(3.0)
    assert float(a0 @ a1) == pytest.approx(-9.0)
    assert float(b0 @ b1) == pytest.approx(-9.0)
    assert float(a0 @ b0) == pytest.approx(0.0, abs=1e-9)


def test_encoder_init_wider_lm_keeps_dot_products_and_rejects_misaligned_vectors():
    from conrec.llm.model.vocab import encoder_token_rows
    from conrec.sid.tokens import sid_token

    sid_map = SidMap(["a", "b", "c", "d"], np.array([[0, 0], [0, 1], [1, 0], [1, 1]]), [2, 2])
    vectors = np.array([[3.0, 5.0], [3.0, 3.0], [1.0, 5.0], [1.0, 3.0]])
    rows = encoder_token_rows(sid_map, vectors, torch.ones(3, 8))  # width 8 > encoder dim 2
    assert rows[sid_token(0, 0)].shape == (8,)
    assert float(rows[sid_token(0, 0)] @ rows[sid_token(0, 1)]) == pytest.approx(-8.0)  # norm sqrt(8) each
    with pytest.raises(StageInputError, match="one row per SID-map item"):
        encoder_token_rows(sid_map, vectors[:3], torch.ones(3, 8))


def test_add_sid_vocabulary_with_item_vectors_uses_them_for_sid_rows():
    items, _, sid_map = toy_tables(n_items=40, codebook_sizes=(4, 4, 4))
    model, tok = load_backbone(ModelConfig(tiny=TinyModelConfig(seed=1)))
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((len(sid_map.items), 16))
    add_sid_vocabulary(model, tok, sid_map, dict(zip(items["item_id"], items["title"])), item_vectors=vectors)
    from conrec.llm.model.vocab import encoder_token_rows

    expected = encoder_token_rows(sid_map, vectors, model.get_input_embeddings().weight[: len(tok) - len(sid_map.tokens()) - len(MARKER_TOKENS)])
    emb = model.get_input_embeddings().weight
    for t in sid_map.tokens()[:5]:
        if t in expected:
            assert torch.allclose(emb[tok.convert_tokens_to_ids(t)], expected[t], atol=1e-5)
