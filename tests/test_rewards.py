"""Rewards and co-dislike similarity, checked by hand on tiny data."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from conrec.llm.config import RewardConfig
from conrec.llm.training.collab import CoDislike
from conrec.llm.training.rewards import (
    COMPONENTS,
    combine,
    component_weights,
    hit_reward,
    liked_penalty,
    make_reward_funcs,
    next_neg_reward,
    prefix_reward,
    reward_components,
)

CODES = {"a": (0, 0, 0), "b": (0, 0, 1), "c": (0, 1, 0), "d": (1, 0, 0), "e": (1, 1, 1)}


def _events(rows: list[tuple[str, str, int, int]]) -> pl.DataFrame:
    return pl.DataFrame(
        rows, schema={"user_id": pl.String, "item_id": pl.String, "ts": pl.Int64, "feedback": pl.Int8}, orient="row"
    )


@pytest.fixture()
def codislike() -> CoDislike:
    # users u1, u2 dislike a and b; u3 dislikes a and c; u4 dislikes d. Late dislike of e with b is after the cut.
    ev = _events(
        [
            ("u1", "a", 1, -1), ("u1", "b", 2, -1),
            ("u2", "a", 1, -1), ("u2", "b", 3, -1),
            ("u3", "a", 1, -1), ("u3", "c", 2, -1), ("u3", "e", 2, 1),
            ("u4", "d", 1, -1),
            ("u4", "b", 100, -1), ("u4", "e", 100, -1),
        ]
    )
    return CoDislike.fit(ev, top_n=5, before_ts=50, items=list(CODES))


def test_codislike_cosine_by_hand(codislike: CoDislike) -> None:
    # a: {u1,u2,u3}, b: {u1,u2}, c: {u3}; cos(a,b) = 2/sqrt(3*2), cos(a,c) = 1/sqrt(3), cos(b,c) = 0
    assert codislike.similarity_to_set("b", ["a"]) == pytest.approx(2 / math.sqrt(6), rel=1e-5)
    assert codislike.similarity_to_set("c", ["a"]) == pytest.approx(1 / math.sqrt(3), rel=1e-5)
    assert codislike.similarity_to_set("b", ["c"]) == 0.0
    # max over the set; an item is fully similar to itself; empty set and unknown item give 0
    assert codislike.similarity_to_set("a", ["c", "b"]) == pytest.approx(2 / math.sqrt(6), rel=1e-5)
    assert codislike.similarity_to_set("d", ["d"]) == 1.0
    assert codislike.similarity_to_set("a", []) == 0.0
    assert codislike.similarity_to_set("zzz", ["a"]) == 0.0
    # events at/after the cut-off (u4's b, e) and positives (u3's e) are not used
    assert codislike.similarity_to_set("e", ["b", "d"]) == 0.0
    assert codislike.similarity_to_set("d", ["b"]) == 0.0


def test_codislike_keeps_top_n_neighbours() -> None:
    # a co-disliked with b by 3 users, with c by 2, with d by 1: top-1 keeps only b
    rows = [(f"u{k}", "a", 1, -1) for k in range(6)]
    rows += [(f"u{k}", "b", 1, -1) for k in range(3)] + [(f"u{k}", "c", 1, -1) for k in (3, 4)]
    rows += [("u5", "d", 1, -1)]
    cd = CoDislike.fit(_events(rows), top_n=1)
    assert set(cd.neighbours("a")) == {"b"}
    assert cd.similarity_to_set("a", ["c", "d"]) == 0.0
    batch = cd.similarity_to_sets(["a", None, "b"], [["b"], ["a"], []])
    assert batch[0] > 0 and batch[1] == 0 and batch[2] == 0


def test_hit_next_liked_by_hand() -> None:
    items = ["a", "b", None, "d"]
    assert hit_reward(items, [["a", "c"], ["a"], ["a"], []]).tolist() == [1, 0, 0, 0]
    assert next_neg_reward(items, ["a", "c", "a", None]).tolist() == [1, 0, 0, 0]
    assert liked_penalty(items, [[], ["b"], ["a"], ["a"]]).tolist() == [0, -1, 0, 0]


def test_prefix_credit_is_longest_shared_prefix_over_levels() -> None:
    items = ["a", "a", "a", "e", "a", "zzz"]
    future = [["b"], ["c", "b"], ["d"], ["e"], [], ["a"]]
    got = prefix_reward(items, future, CODES)
    assert got.tolist() == pytest.approx([2 / 3, 2 / 3, 0.0, 1.0, 0.0, 0.0])


def test_components_weights_and_empty_future(codislike: CoDislike) -> None:
    items = ["a", "b", "e"]
    future = [["a"], ["a"], []]
    comps = reward_components(items, future, ["a", "x", "y"], [[], [], ["e"]], CODES, codislike)
    assert set(comps) == set(COMPONENTS)
    assert comps["hit"].tolist() == [1, 0, 0]
    assert comps["collab"][0] == 1.0 and comps["collab"][1] == pytest.approx(2 / math.sqrt(6), rel=1e-5)
    assert comps["prefix"].tolist() == pytest.approx([1.0, 2 / 3, 0.0])
    # empty future set: no credit at all; only the liked penalty applies
    assert comps["hit"][2] == comps["collab"][2] == comps["prefix"][2] == 0.0
    cfg = RewardConfig(w_hit=1.0, w_collab=0.5, w_prefix=0.3, w_liked=0.5, w_next=0.0)
    total = combine(comps, component_weights(cfg))
    expect_b = 0.5 * 2 / math.sqrt(6) + 0.3 * 2 / 3
    assert total.tolist() == pytest.approx([1.0 + 0.5 + 0.3, expect_b, -0.5], rel=1e-5)
    # monotone: exact hit > near miss > liked
    assert total[0] > total[1] > total[2]
    nn = combine(comps, component_weights(cfg, "next_neg"))
    assert nn.tolist() == [1.0, 0.0, 0.0]
    # next_neg mode rewards the next negative whatever w_next says: a negative weight would reward avoiding it
    assert component_weights(cfg.model_copy(update={"w_next": -0.5}), "next_neg")["next"] == 1.0
    with pytest.raises(ValueError, match="reward mode"):
        component_weights(cfg, "bogus")  # type: ignore[arg-type]


def test_trl_wrappers_read_columns_and_parse_completions(codislike: CoDislike) -> None:
    funcs, weights = make_reward_funcs(RewardConfig(), CODES, codislike)
    assert [f.__name__ for f in funcs] == list(COMPONENTS)
    assert len(weights) == len(funcs)
    kw = {"future_negs": [["a"], ["a"]], "next_neg": ["a", "a"], "liked_items": [[], ["b"]]}
    completions = ["<a_0><b_0><c_0>", "<a_0><b_0><c_1>"]
    by_name = {f.__name__: f(prompts=["p", "p"], completions=completions, **kw) for f in funcs}
    assert by_name["hit"] == [1.0, 0.0]
    assert by_name["prefix"] == pytest.approx([1.0, 2 / 3])
    assert by_name["liked"] == [0.0, -1.0]
    # the rollout's gen_item field wins over text parsing; a garbled completion scores 0
    by_field = funcs[0](prompts=["p", "p"], completions=["junk", "junk"], gen_item=["b", "a"], **kw)
    assert by_field == [0.0, 1.0]
    assert funcs[0](prompts=["p"], completions=["<a_0>"], future_negs=[["a"]]) == [0.0]
    # weights in TRL order, applied as TRL does
    comps = {f.__name__: np.array(by_name[f.__name__]) for f in funcs}
    trl_total = sum(w * comps[f.__name__] for f, w in zip(funcs, weights))
    assert np.allclose(trl_total, combine(comps, component_weights(RewardConfig())))


def test_wrapper_rejects_misaligned_columns(codislike: CoDislike) -> None:
    funcs, _ = make_reward_funcs(RewardConfig(), CODES, codislike)
    with pytest.raises(ValueError, match="future_negs"):
        funcs[0](prompts=["p", "p"], completions=["<a_0><b_0><c_0>"] * 2, future_negs=[["a"]])


def test_wrappers_accept_a_sid_map(codislike: CoDislike) -> None:
    from conrec.sid.sid_map import SidMap

    sid_map = SidMap(list(CODES), np.array(list(CODES.values())), [2, 2, 2])
    funcs, _ = make_reward_funcs(RewardConfig(), sid_map, codislike)
    prefix = next(f for f in funcs if f.__name__ == "prefix")
    assert prefix(prompts=["p"], completions=[sid_map.sid_of("b")], future_negs=[["a"]]) == pytest.approx([2 / 3])


def test_seen_items_earn_no_positive_credit(codislike: CoDislike) -> None:
    kw = {"future_negs": [["a"], ["a"]], "liked_items": [["b"], []], "seen_items": [["b"], ["a"]]}
    completions = ["<a_0><b_0><c_1>", "<a_0><b_0><c_0>"]  # b (seen and liked), a (seen dislike repeat)
    funcs, _ = make_reward_funcs(RewardConfig(), CODES, codislike)
    by = {f.__name__: f(prompts=["p", "p"], completions=completions, **kw) for f in funcs}
    assert by["prefix"] == [0.0, 0.0] and by["collab"] == [0.0, 0.0] and by["hit"] == [0.0, 0.0]
    assert by["liked"] == [-1.0, 0.0]  # the penalty still applies
    keep, _ = make_reward_funcs(RewardConfig(), CODES, codislike, exclude_seen=False)
    assert keep[0](prompts=["p", "p"], completions=completions, **kw) == [0.0, 1.0]


def test_every_registered_component_has_a_weight_in_the_config_and_a_known_column() -> None:
    from conrec.llm.config import RewardConfig
    from conrec.llm.training.rewards import REWARD_COMPONENTS, component_weights

    fields = set(RewardConfig.model_fields)
    assert all(c.weight_field in fields for c in REWARD_COMPONENTS.values())
    assert {c.column for c in REWARD_COMPONENTS.values()} <= {"future_negs", "next_neg", "liked_items", "sim_targets", "future_pos"}
    assert [n for n, c in REWARD_COMPONENTS.items() if not c.credit] == ["liked", "pos_sim"]  # the penalties
    off = {"sim": 0.0, "pos_sim": 0.0}
    assert component_weights(RewardConfig()) == {"hit": 1.0, "collab": 0.5, "prefix": 0.3, "liked": 0.5, "next": 0.0} | off
    assert component_weights(RewardConfig(), "next_neg") == {"hit": 0.0, "collab": 0.0, "prefix": 0.0, "liked": 0.0, "next": 1.0} | off


# --------------------------------------------------------------------------- similarity reward (CoNRec)
def _item_sim(co_negatives: int):  # -> ItemSimilarity
    import scipy.sparse as sp

    from conrec.llm.training.rewards import ItemSimilarity
    from conrec.swing import Swing

    # unit vectors: a (1, 0), b (.6, .8), c (0, 1), d (-1, 0), e (.8, .6)
    # cosines: ab .6, ac 0, ae .8, bc .8, be .96, ce .6; d is opposite a (-1) and negative to b, e -> clipped to 0
    ids = ["a", "b", "c", "d", "e"]
    vecs = np.array([[1, 0], [0.6, 0.8], [0, 1], [-1, 0], [0.8, 0.6]], dtype=np.float32)
    sim = sp.csr_matrix(([1.0], ([0], [2])), shape=(5, 5))  # Swing: a's only co-negative is c
    return ItemSimilarity(ids, vecs, Swing(ids, {k: i for i, k in enumerate(ids)}, sim), co_negatives)


def test_similarity_reward_and_future_positive_penalty_by_hand() -> None:
    from conrec.llm.training.rewards import future_positive_penalty, similarity_reward

    items = ["b", "d", "e", "c", None]
    future = [["a"], ["a"], [], ["a"], ["a"]]
    pos = [["c"], [], ["b"], [], ["a"]]
    # target = future set only: b -> cos(b, a) = .6; d -> max(0, -1) = 0; e -> empty set 0; c -> cos(c, a) = 0
    assert similarity_reward(items, future, _item_sim(0)).tolist() == pytest.approx([0.6, 0, 0, 0, 0])
    # + Swing co-negative c of a: target {a, c}: b -> max(.6, .8) = .8; c is in the target -> 1
    assert similarity_reward(items, future, _item_sim(1)).tolist() == pytest.approx([0.8, 0, 0, 1.0, 0])
    # penalty: b vs {c} -> -.8; e vs {b} -> -.96; empty sets and unknown (None) items 0
    assert future_positive_penalty(items, pos, _item_sim(1)).tolist() == pytest.approx([-0.8, 0, -0.96, 0, 0])
    comps = reward_components(items, future, ["a"] * 5, [[]] * 5, CODES, None, _item_sim(1), pos)
    cfg = RewardConfig(mode="similarity", w_sim=1.0, gamma=0.5)
    w = component_weights(cfg, "similarity")
    assert {k for k, v in w.items() if v} == {"sim", "pos_sim"}
    # total = sim - gamma * max cos to future positives: b .8 - .4 = .4; d 0; e -.48; c 1
    assert combine(comps, w).tolist() == pytest.approx([0.4, 0.0, -0.48, 1.0, 0.0])
    # next-negative target: the set is {next_neg} (+ its co-negatives)
    nxt = reward_components(["b"], [["e"]], ["a"], [[]], CODES, None, _item_sim(0), [[]], sim_target="next")
    assert nxt["sim"].tolist() == pytest.approx([0.6])


def test_similarity_wrappers_log_components_and_mask_seen() -> None:
    cfg = RewardConfig(mode="similarity", gamma=0.5)
    with pytest.raises(ValueError, match="item vectors"):
        make_reward_funcs(cfg, CODES, None)
    funcs, weights = make_reward_funcs(cfg, CODES, None, item_sim=_item_sim(1))
    assert dict(zip([f.__name__ for f in funcs], weights)) == {
        "hit": 0.0, "collab": 0.0, "prefix": 0.0, "liked": 0.0, "next": 0.0, "sim": 1.0, "pos_sim": 0.5
    }  # fmt: skip
    kw = {"sim_targets": [["a"], ["a"]], "future_pos": [["c"], ["c"]], "seen_items": [[], ["b"]], "gen_item": ["b", "b"]}
    by = {f.__name__: f(prompts=["p"] * 2, completions=["x"] * 2, **kw) for f in funcs}
    # the second row's b is already in the history: no positive credit, the penalty stays
    assert by["sim"] == pytest.approx([0.8, 0.0]) and by["pos_sim"] == pytest.approx([-0.8, -0.8])
    # the component means TRL logs (rewards/sim/mean) are these lists' means; the target set is a column
    # (grpo.stage_records fills it from reward.target: the future negatives, or [next_neg])
    from conrec.llm.training.rewards import sim_targets

    assert sim_targets([["c", "d"], []], ["a", None], "next") == [["a"], []]
    assert sim_targets([["c", "d"], []], ["a", None], "future") == [["c", "d"], []]


def test_item_vectors_reconstructed_from_codebooks_else_encoder(tmp_path) -> None:
    import torch

    from conrec.llm.training.item_vectors import item_vectors, reconstruct

    # residual k-means: item (1, 0) decodes to book0[1] + book1[0] = (3, 0) + (0, 4) = (3, 4) -> unit (.6, .8);
    # a third (disambiguation) level has no codebook and is ignored
    books = [torch.tensor([[0.0, 0.0], [3.0, 0.0]]), torch.tensor([[0.0, 4.0], [1.0, 1.0]])]
    codes = np.array([[1, 0, 5], [0, 1, 0]])
    assert reconstruct({"kind": "rkmeans", "codebooks": books}, codes).tolist() == [[3, 4], [1, 1]]
    torch.save({"quantizer": {"kind": "rkmeans", "codebooks": books}}, tmp_path / "quantizer.pt")
    vecs, source = item_vectors(tmp_path, codes)
    assert source == "reconstructed" and vecs[0].tolist() == pytest.approx([0.6, 0.8])
    (tmp_path / "quantizer.pt").unlink()
    np.save(tmp_path / "embeddings.npy", np.array([[0.0, 2.0], [0.0, 0.0]], dtype=np.float32))
    vecs, source = item_vectors(tmp_path, codes)
    assert source == "encoder" and vecs.tolist() == [[0.0, 1.0], [0.0, 0.0]]  # a zero vector stays zero
    for junk in (b"PK\x03\x04 truncated", b"synthetic run: no quantiser", b"\x80\x02}q\x00."):  # unreadable: the encoder vectors too
        (tmp_path / "quantizer.pt").write_bytes(junk)
        assert item_vectors(tmp_path, codes)[1] == "encoder", junk


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "ran"))


def test_a_quantizer_file_that_would_run_code_is_refused_unread(tmp_path) -> None:
    """GRPO read ``sid/quantizer.pt`` with ``weights_only=False``: a run directory from someone else ran
    their code (here: writing a file) on every GRPO setup."""
    import torch

    from conrec.errors import StageInputError
    from conrec.llm.training.item_vectors import item_vectors

    marker = tmp_path / "marker"
    torch.save({"quantizer": _RunsCode(marker), "prefix_levels": 0}, tmp_path / "quantizer.pt")
    np.save(tmp_path / "embeddings.npy", np.zeros((2, 4), dtype=np.float32))
    with pytest.raises(StageInputError, match=r"quantizer.pt holds objects other than tensors .* rerun `conrec sid`"):
        item_vectors(tmp_path, np.zeros((2, 3), dtype=np.int64))
    assert not marker.exists()
