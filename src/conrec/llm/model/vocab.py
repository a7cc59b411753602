"""The SID vocabulary: SID and prompt-marker tokens inside the LM's tokenizer and embeddings.

Why ordinary (non-special) added tokens: TRL decodes completions with ``skip_special_tokens=True``;
special SID tokens would vanish from the text the GRPO reward functions see. Added tokens are still
never split by the tokenizer, so every SID token is exactly one token id.

Embedding initialisation of the new rows (documented choice): an SID token ``<x_c>`` (level ``l``,
code ``c``) starts from the mean title embedding of the catalogue items whose level-``l`` code is
``c`` (each title embedded as the mean of its tokens' input embeddings, at most 64 titles per
token); a marker starts from the embedding of its description (``MARKER_DESCRIPTIONS``); a code no
item uses starts from the mean of all original rows. Every new row is then rescaled to the average
norm of the original rows (an average of many vectors is much shorter than a real token's vector,
which would make the new tokens nearly unreachable at the output layer). So before any training
``<a_3>`` already "means" the genre/topic of its cluster, which makes SFT converge faster than
random or mean initialisation.

The model directory also records what vocabulary it was built for: ``conrec_vocab.json``
(codebook sizes, a digest of the item<->SID map) and a copy of ``sid_map.parquet``.
:func:`assert_model_fits` compares them with the run's SID map, so a model is never used with a map
it was not trained on (re-tokenised catalogue, different levels or codebook sizes).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from conrec.errors import StageInputError
from conrec.io import write_json
from conrec.llm.inference.prompts import MARKER_DESCRIPTIONS, MARKER_TOKENS
from conrec.sid.sid_map import SidMap
from conrec.sid.tokens import all_sid_tokens, item_token, sid_token

VOCAB_META_FILE = "conrec_vocab.json"
SID_MAP_FILE = "sid_map.parquet"
_TITLES_PER_TOKEN = 64


@dataclass(frozen=True)
class SidVocab:
    """Token ids of the SID vocabulary in one tokenizer.

    ``level_ids[l][c]`` is the token id of code ``c`` at level ``l``; ``token_to_code`` maps every
    token id of the (model) vocabulary to its code (-1 for non-SID tokens) and ``token_level`` to its
    level (-1 for non-SID tokens). Built once, used by the constrained-decoding logits processor.
    """

    codebook_sizes: tuple[int, ...]
    level_ids: tuple[torch.Tensor, ...]
    token_to_code: torch.Tensor
    token_level: torch.Tensor

    @property
    def levels(self) -> int:
        return len(self.codebook_sizes)

    def token_ids(self, codes: torch.Tensor) -> torch.Tensor:
        """The SID token ids (N, L) of full codes (N, L): an item's SID as the model reads it."""
        return torch.stack([self.level_ids[lv][codes[:, lv]] for lv in range(self.levels)], 1)

    @classmethod
    def from_tokenizer(
        cls, tokenizer: PreTrainedTokenizerBase, codebook_sizes: Sequence[int], vocab_size: int | None = None
    ) -> SidVocab:
        """Look the SID tokens up in ``tokenizer``; ``vocab_size`` = the model's (possibly padded) vocab size."""
        sizes = tuple(int(s) for s in codebook_sizes)
        assert_tokenizer_fits(tokenizer, sizes)
        n = max(vocab_size or 0, len(tokenizer))
        to_code = torch.full((n,), -1, dtype=torch.long)
        to_level = torch.full((n,), -1, dtype=torch.long)
        level_ids = []
        for level, size in enumerate(sizes):
            ids = torch.tensor(tokenizer.convert_tokens_to_ids([sid_token(level, c) for c in range(size)]), dtype=torch.long)
            to_code[ids] = torch.arange(size)
            to_level[ids] = level
            level_ids.append(ids)
        return cls(sizes, tuple(level_ids), to_code, to_level)


def add_sid_vocabulary(
    model: Any,  # a transformers PreTrainedModel (Any: torch's Module.__getattr__ hides its methods' types from mypy)
    tokenizer: PreTrainedTokenizerBase,
    sid_map: SidMap,
    titles: Mapping[str, str] | None = None,
    item_vectors: np.ndarray | None = None,
    item_tokens: bool = False,
) -> SidVocab:
    """Add every SID token and the prompt markers as ordinary tokens, resize and initialise embeddings.

    ``item_tokens`` (``sft.prompt.item_id_tokens``) also adds one token per item
    (:func:`conrec.sid.tokens.item_token`), each starting from the mean of its SID tokens' rows, so
    before training it says what its SID says.

    Idempotent: tokens already in the tokenizer are kept with their trained embeddings. ``titles``
    (item id -> title) drives the initialisation of SID rows; without it they start from the mean.
    ``item_vectors`` (the item-text encoder's vectors, rows in ``sid_map.items`` order) replaces the
    title initialisation of SID rows by :func:`encoder_token_rows`: for a model trained from scratch
    the backbone's own title embeddings are random, the encoder's are not.
    """
    sid_tokens = sid_map.tokens()
    own = [item_token(c) for c in sid_map.codes.tolist()] if item_tokens else []
    have = tokenizer.get_vocab()
    new_tokens = [t for t in [*sid_tokens, *MARKER_TOKENS, *own] if t not in have]
    old_emb = model.get_input_embeddings().weight.detach().clone()
    n_old = old_emb.shape[0]
    tokenizer.add_tokens(new_tokens, special_tokens=False)
    if len(tokenizer) > n_old:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    if new_tokens:
        init = _initial_rows(new_tokens, tokenizer, old_emb, sid_map, titles or {})
        if item_vectors is not None:
            from_encoder = encoder_token_rows(sid_map, item_vectors, old_emb)
            for i, tok in enumerate(new_tokens):
                if tok in from_encoder:
                    init[i] = from_encoder[tok]
        ids = torch.tensor(tokenizer.convert_tokens_to_ids(new_tokens), dtype=torch.long)
        with torch.no_grad():
            model.get_input_embeddings().weight[ids] = init
            out = model.get_output_embeddings()
            if out is not None and out.weight.data_ptr() != model.get_input_embeddings().weight.data_ptr():
                out.weight[ids] = init
                if getattr(out, "bias", None) is not None:
                    out.bias[ids] = 0.0
    vocab = SidVocab.from_tokenizer(tokenizer, sid_map.codebook_sizes, embedding_rows(model))
    fresh = set(new_tokens)
    added = [n for n, t in enumerate(own) if t in fresh]  # own is in SID-map row order
    if added:
        _init_item_rows(model, tokenizer, vocab, sid_map, added)
    return vocab


def _init_item_rows(model: Any, tokenizer: PreTrainedTokenizerBase, vocab: SidVocab, sid_map: SidMap, items: list[int]) -> None:
    """The item tokens of SID-map rows ``items``: each input row = the mean of its item's SID token rows,
    at their average norm."""
    emb = model.get_input_embeddings().weight
    codes = torch.as_tensor(sid_map.codes[items], dtype=torch.long)
    sid_ids = vocab.token_ids(codes)
    ids = torch.tensor(tokenizer.convert_tokens_to_ids([item_token(c) for c in codes.tolist()]), dtype=torch.long)
    with torch.no_grad():
        sid_rows = emb[sid_ids]  # (n, L, H)
        rows = sid_rows.mean(1)
        rows = rows / rows.norm(dim=1, keepdim=True).clamp(min=1e-8) * sid_rows.norm(dim=2).mean()
        emb[ids] = rows.to(emb.dtype)


def item_token_flags(tokenizer: PreTrainedTokenizerBase, sid_map: SidMap, vocab_size: int) -> torch.Tensor:
    """A bool per token id: True for the item tokens of ``sid_map`` (never training targets)."""
    flags = torch.zeros(max(vocab_size, len(tokenizer)), dtype=torch.bool)
    flags[torch.tensor(tokenizer.convert_tokens_to_ids([item_token(c) for c in sid_map.codes.tolist()]), dtype=torch.long)] = True
    return flags


def has_item_tokens(tokenizer: PreTrainedTokenizerBase, sid_map: SidMap) -> bool:
    """Whether ``tokenizer`` holds the item tokens of ``sid_map`` (checked on its first and last item)."""
    if len(sid_map) == 0:
        return False
    vocab = tokenizer.get_vocab()
    codes = sid_map.codes
    return item_token(codes[0].tolist()) in vocab and item_token(codes[-1].tolist()) in vocab


def assert_item_tokens_match(tokenizer: PreTrainedTokenizerBase, sid_map: SidMap, wanted: bool, where: str = "model") -> None:
    """A model trained with item tokens must be prompted with them, and one trained without, without."""
    has = has_item_tokens(tokenizer, sid_map)
    if has != wanted:
        raise StageInputError(
            f"{where} was trained {'with' if has else 'without'} item tokens but sft.prompt.item_id_tokens is {wanted}: "
            "prompt it the way it was trained, or retrain SFT"
        )


def embedding_rows(model: Any) -> int:
    """Rows of a model's input embedding table (can exceed ``len(tokenizer)``: padded vocabularies)."""
    return int(model.get_input_embeddings().weight.shape[0])


def _initial_rows(
    new_tokens: list[str],
    tokenizer: PreTrainedTokenizerBase,
    emb: torch.Tensor,
    sid_map: SidMap,
    titles: Mapping[str, str],
) -> torch.Tensor:
    mean = emb.mean(0)
    target_norm = emb.norm(dim=1).mean()

    def text_vec(text: str) -> torch.Tensor | None:
        ids = [i for i in tokenizer(text, add_special_tokens=False)["input_ids"] if i < emb.shape[0]]
        return emb[ids].mean(0) if ids else None

    codes = sid_map.codes
    items = sid_map.items
    title_vecs: dict[int, torch.Tensor] = {}

    def title_vec(row: int) -> torch.Tensor:
        if row not in title_vecs:
            t = titles.get(items[row])
            v = text_vec(" " + t) if t else None
            title_vecs[row] = v if v is not None else mean
        return title_vecs[row]

    by_token: dict[str, list[int]] = {}
    for level in range(codes.shape[1]):
        for code in np.unique(codes[:, level]).tolist():
            rows = np.flatnonzero(codes[:, level] == code)[:_TITLES_PER_TOKEN].tolist()
            by_token[sid_token(level, int(code))] = rows

    out = []
    for tok in new_tokens:
        vec: torch.Tensor | None = None
        if tok in MARKER_DESCRIPTIONS:
            vec = text_vec(MARKER_DESCRIPTIONS[tok])
        elif tok in by_token and titles:
            vec = torch.stack([title_vec(r) for r in by_token[tok]]).mean(0)
        if vec is None:
            vec = mean
        out.append(vec / vec.norm().clamp(min=1e-8) * target_norm)
    return torch.stack(out)


def encoder_token_rows(sid_map: SidMap, item_vectors: np.ndarray, emb: torch.Tensor, seed: int = 0) -> dict[str, torch.Tensor]:
    """Embedding rows for the SID tokens from the item-text encoder's vectors.

    The empirical residual quantisation of the SID map: a level-1 token is the mean of its items'
    centred vectors, a level-``l`` token the mean of what the earlier levels' tokens leave of them.
    The token vectors are projected on the items' principal directions (a seeded random orthonormal
    map spreads them when the LM is wider than the encoder) and each level is scaled to the average
    norm of the backbone's rows: item similarity in text becomes dot-product similarity of the SID
    tokens at the input and, through the tied output layer, at the output. Codes no item uses are
    left out (they keep the default initialisation).
    """
    x = np.asarray(item_vectors, dtype=np.float64)
    codes = sid_map.codes
    if x.ndim != 2 or x.shape[0] != codes.shape[0]:
        raise StageInputError(
            f"item vectors have shape {tuple(x.shape)}, expected ({codes.shape[0]}, dim): one row per SID-map item"
        )
    width = int(emb.shape[1])
    resid = x - x.mean(0)
    _, _, vt = np.linalg.svd(resid, full_matrices=False)
    k = min(width, vt.shape[0])
    proj = vt[:k].T  # (dim, k): principal directions of the catalogue
    if k < width:  # wider LM than encoder: an orthonormal (k -> width) map keeps dot products
        q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((width, k)))
        proj = proj @ q.T
    target = float(emb.detach().norm(dim=1).mean())
    rows: dict[str, torch.Tensor] = {}
    for level in range(codes.shape[1]):
        used = np.unique(codes[:, level])
        means = np.stack([resid[codes[:, level] == c].mean(0) for c in used])
        lookup = np.zeros((int(used.max()) + 1, x.shape[1]))
        lookup[used] = means
        resid = resid - lookup[codes[:, level]]
        z = means @ proj
        z *= target / max(float(np.linalg.norm(z, axis=1).mean()), 1e-12)
        for c, v in zip(used.tolist(), z):
            rows[sid_token(level, int(c))] = torch.as_tensor(v, dtype=emb.dtype)
    return rows


# --- what a model dir was built for


def sid_map_digest(sid_map: SidMap) -> str:
    """A fingerprint of the item <-> SID bijection and the codebook sizes."""
    h = hashlib.sha256()
    h.update(json.dumps(sid_map.codebook_sizes).encode())
    for item, codes in zip(sid_map.items, sid_map.codes.tolist()):
        h.update(f"{item}\t{codes}\n".encode())
    return h.hexdigest()[:20]


def save_vocab_meta(model_dir: Path, sid_map: SidMap) -> None:
    """Record in ``model_dir`` which SID map the model was trained with (call inside its atomic write)."""
    model_dir = Path(model_dir)
    sid_map.to_parquet(model_dir / SID_MAP_FILE)
    write_json(
        {
            "codebook_sizes": sid_map.codebook_sizes,
            "n_items": len(sid_map),
            "sid_map_digest": sid_map_digest(sid_map),
            "marker_tokens": list(MARKER_TOKENS),
        },
        model_dir / VOCAB_META_FILE,
    )


def read_vocab_meta(model_dir: Path) -> dict:
    p = Path(model_dir) / VOCAB_META_FILE
    if not p.exists():
        raise StageInputError(
            f"model dir {model_dir} has no {VOCAB_META_FILE}: it was not written by `conrec sft`/`grpo`, "
            "so its SID vocabulary is unknown"
        )
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise StageInputError(f"{p} is not valid JSON: {exc}") from exc


def assert_model_fits(model_dir: Path, sid_map: SidMap) -> None:
    """Raise :class:`StageInputError` unless the model in ``model_dir`` was built for ``sid_map``.

    Checks levels, codebook sizes and the item <-> SID assignment (a re-run of the SID stage that
    reassigns codes makes the model's knowledge of what each SID means wrong, even if the token set
    is the same), then that the saved tokenizer holds every SID token as a single token.
    """
    from conrec.llm.model.model_files import verify_model_dir

    verify_model_dir(model_dir, need_weights=False)  # a corrupt file is one clear error, not a loader traceback
    meta = read_vocab_meta(model_dir)
    have = [int(s) for s in meta.get("codebook_sizes", [])]
    want = sid_map.codebook_sizes
    if have != want:
        raise StageInputError(
            f"model {model_dir} was built for SIDs with {len(have)} level(s) and codebook sizes {have}, "
            f"but the run's SID map has {len(want)} level(s) and sizes {want}: retrain SFT on this SID map"
        )
    if meta.get("sid_map_digest") != sid_map_digest(sid_map):
        raise StageInputError(
            f"model {model_dir} was trained on a different item <-> SID assignment ({meta.get('n_items')} items) "
            f"than the run's SID map ({len(sid_map)} items): the SID stage was rerun; retrain SFT on this SID map"
        )
    from conrec.llm.model.backbone import load_model_tokenizer

    assert_tokenizer_fits(load_model_tokenizer(model_dir), want, where=str(model_dir))


def assert_tokenizer_fits(tokenizer: PreTrainedTokenizerBase, codebook_sizes: Sequence[int], where: str = "tokenizer") -> None:
    """Every SID token of ``codebook_sizes`` and every marker must be one ordinary token of ``tokenizer``."""
    vocab = tokenizer.get_vocab()
    missing = [t for t in [*all_sid_tokens(codebook_sizes), *MARKER_TOKENS] if t not in vocab]
    if missing:
        raise StageInputError(
            f"{where} lacks {len(missing)} SID/marker token(s), e.g. {missing[:5]}: the model was not built for "
            f"codebook sizes {list(codebook_sizes)}"
        )
    special = set(tokenizer.all_special_tokens)
    bad = [t for t in all_sid_tokens(codebook_sizes)[:1] + list(MARKER_TOKENS)[:1] if t in special]
    if bad:
        raise StageInputError(f"{where}: SID/marker tokens {bad} are special tokens; they must be ordinary added tokens")
