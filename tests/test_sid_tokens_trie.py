"""SID tokens round-trip and the vectorised prefix trie against a brute-force oracle."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conrec.errors import DataValidationError
from conrec.sid.tokens import all_sid_tokens, codes_to_sid, parse_sid, sid_token
from conrec.sid.trie import SidTrie


def test_token_format_and_round_trip() -> None:
    assert sid_token(0, 12) == "<a_12>"
    assert sid_token(1, 7) == "<b_7>"
    assert sid_token(3, 0) == "<d_0>"
    assert codes_to_sid([12, 7, 200]) == "<a_12><b_7><c_200>"
    rng = np.random.default_rng(0)
    for _ in range(200):
        codes = rng.integers(0, 1000, size=rng.integers(1, 6)).tolist()
        assert parse_sid(codes_to_sid(codes)) == codes


@pytest.mark.parametrize(
    "text",
    ["", "<a_1><c_2>", "<b_1>", "<a_1>x<b_2>", "<a_01>", "<a_-1>", "a_1", "<a_1><a_2>", "<a_1><b_2>junk", "<A_1>"],
)
def test_parse_sid_rejects_malformed(text: str) -> None:
    assert parse_sid(text) is None


def test_all_sid_tokens_level_major() -> None:
    toks = all_sid_tokens([3, 2, 4])
    assert toks[:3] == ["<a_0>", "<a_1>", "<a_2>"]
    assert toks[3:5] == ["<b_0>", "<b_1>"]
    assert toks[5:] == [f"<c_{i}>" for i in range(4)]
    assert len(set(toks)) == len(toks)


def _random_catalog(rng: np.random.Generator, n: int, sizes: list[int]) -> np.ndarray:
    rows: set[tuple[int, ...]] = set()
    while len(rows) < n:
        rows.add(tuple(int(rng.integers(0, s)) for s in sizes))
    return np.array(sorted(rows, key=lambda _: rng.random()), dtype=np.int64)


def _oracle_allowed(catalog: set[tuple[int, ...]], prefix: tuple[int, ...], size: int) -> np.ndarray:
    out = np.zeros(size, dtype=bool)
    for row in catalog:
        if row[: len(prefix)] == prefix:
            out[row[len(prefix)]] = True
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_trie_matches_bruteforce_oracle(seed: int) -> None:
    rng = np.random.default_rng(seed)
    sizes = [int(x) for x in rng.integers(2, 9, size=rng.integers(2, 5))]
    n = int(min(np.prod(sizes), rng.integers(5, 120)))
    codes = _random_catalog(rng, n, sizes)
    catalog = {tuple(r) for r in codes.tolist()}
    trie = SidTrie(codes, sizes)
    assert len(trie) == n and trie.levels == len(sizes) and trie.codebook_sizes == sizes
    b = 1000
    for depth in range(len(sizes)):
        # half the prefixes are taken from real items (valid), half are random (often invalid,
        # sometimes out of range: -1 or == size)
        real = codes[rng.integers(0, n, size=b // 2), :depth]
        rand = np.stack([rng.integers(-1, s + 1, size=b - b // 2) for s in sizes[:depth]], axis=1) if depth else (
            np.zeros((b - b // 2, 0), dtype=np.int64)
        )
        prefix = np.concatenate([real, rand]).astype(np.int64)
        got = trie.allowed(torch.from_numpy(prefix))
        assert got.dtype == torch.bool and got.shape == (b, sizes[depth])
        want = np.stack([_oracle_allowed(catalog, tuple(p), sizes[depth]) for p in prefix.tolist()])
        np.testing.assert_array_equal(got.numpy(), want)
        assert got[: b // 2].any(dim=1).all()  # real prefixes always continue
    # item_index: real codes map to their rows, random codes to -1 unless they hit a real item
    idx = trie.item_index(torch.from_numpy(codes))
    np.testing.assert_array_equal(idx.numpy(), np.arange(n))
    rand = np.stack([rng.integers(-1, s + 1, size=b) for s in sizes], axis=1)
    row_of = {tuple(r): i for i, r in enumerate(codes.tolist())}
    want = np.array([row_of.get(tuple(r), -1) for r in rand.tolist()])
    np.testing.assert_array_equal(trie.item_index(torch.from_numpy(rand)).numpy(), want)


@pytest.mark.parametrize("seed", [0, 1])
def test_children_of_a_node_are_the_nodes_its_prefix_plus_each_code_walks_to(seed: int) -> None:
    """Beam search descends by node (SidTrie.children) instead of walking every prefix + code from the root: both
    must reach the same node, -1 alike, and a leaf reached by descending is its item's row."""
    rng = np.random.default_rng(seed)
    sizes = [int(x) for x in rng.integers(2, 7, size=3)]
    codes = _random_catalog(rng, int(min(np.prod(sizes), 60)), sizes)
    trie = SidTrie(codes, sizes)
    prefixes = [np.zeros((1, 0), dtype=np.int64)]
    for depth in range(len(sizes)):
        prefix = torch.from_numpy(prefixes[-1])
        nodes = trie.node_of(prefix)
        got = trie.children(torch.cat([nodes, torch.tensor([-1])]), depth)  # and a dead hypothesis
        assert got[-1].tolist() == [-1] * sizes[depth]
        for code in range(sizes[depth]):
            extended = torch.cat([prefix, torch.full((len(prefix), 1), code)], 1)
            np.testing.assert_array_equal(got[:-1, code].numpy(), trie.node_of(extended).numpy())
        np.testing.assert_array_equal(got[:-1].numpy(), trie.child_nodes(prefix).numpy())
        # every (prefix, code) pair, the valid and the invalid ones, as the next level's prefixes
        pairs = [np.concatenate([prefixes[-1], np.full((len(prefixes[-1]), 1), c)], 1) for c in range(sizes[depth])]
        prefixes.append(np.concatenate(pairs))
    leaves = trie.node_of(torch.from_numpy(prefixes[-1]))
    np.testing.assert_array_equal(trie.item_of_node(leaves).numpy(), trie.item_index(torch.from_numpy(prefixes[-1])).numpy())
    assert sorted(r for r in trie.item_of_node(leaves).tolist() if r >= 0) == list(range(len(codes)))
    assert trie.item_of_node(torch.tensor([0, -1])).tolist() == [-1, -1]  # the root and no node are no item


def test_invalid_prefix_is_all_false_not_everything() -> None:
    trie = SidTrie(np.array([[0, 1], [1, 0]]), [2, 2])
    got = trie.allowed(torch.tensor([[0], [1], [2], [-5]]))
    assert got.tolist() == [[False, True], [True, False], [False, False], [False, False]]
    with pytest.raises(ValueError):
        trie.allowed(torch.tensor([[0, 1]]))  # full code: nothing left to decode


def test_trie_rejects_duplicates_and_bad_codes() -> None:
    with pytest.raises(DataValidationError, match=r"<a_1><b_2>"):
        SidTrie(np.array([[0, 0], [1, 2], [1, 2]]), [2, 3])
    with pytest.raises(DataValidationError, match="out of range at level 1"):
        SidTrie(np.array([[0, 3]]), [2, 3])
    with pytest.raises(DataValidationError, match="2 level"):
        SidTrie(np.array([[0, 1, 0]]), [2, 3])


def test_trie_scales_to_many_items() -> None:
    rng = np.random.default_rng(0)
    n = 200_000
    codes = np.stack([rng.integers(0, 256, n), rng.integers(0, 256, n), np.arange(n) % 256], axis=1)
    codes = np.unique(codes, axis=0)
    trie = SidTrie(codes, [256, 256, 256])
    prefix = torch.from_numpy(codes[:512, :2])
    assert trie.allowed(prefix).any(dim=1).all()
    assert (trie.item_index(torch.from_numpy(codes[:1000])).numpy() == np.arange(1000)).all()
