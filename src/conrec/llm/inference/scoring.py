"""Slate scoring: the LM's dislike score of each candidate item, by one teacher-forced pass.

A platform asks "among the items about to be shown to this user, which will they dislike?". The
LM's answer for candidate ``c`` is ``log p(SID(c) | prompt)``: the sum over the candidate's ``L``
SID tokens of ``log p(code | prompt, prefix)``, each a softmax over that level's codes: the same
quantity beam search ranks by (``length_penalty=0``, per-level renormalisation, scores taken before
the constraint mask; see :mod:`conrec.llm.inference.constrained`), so a score here equals the score
:func:`conrec.llm.inference.constrained.generate_topk` gives the same item.

Cost: all candidates of a request share one prompt encoding. The prompt minus its last token is
encoded once into a KV cache (:func:`conrec.llm.inference.constrained._shared_prompt_cache`, the machinery beam
search uses), the cache is repeated per candidate, and *one* forward over ``(candidates, L)`` tokens
(the prompt's last token, then the first ``L - 1`` SID tokens) yields every needed log-probability.
Prompts are long (histories) and SIDs are 3 tokens, so a 20-item slate costs about one prompt
forward; the LM head is applied to each level's code rows only (a few dozen, not the ~49k-token
vocabulary). Several requests are batched (left-padded prompts; slates padded to the longest by
repeating their first candidate, whose extra scores are dropped).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from conrec.llm.inference.constrained import _shared_prompt_cache
from conrec.llm.inference.prompt_ids import encode_prompts
from conrec.llm.inference.sid_beam import tree_attention_ok
from conrec.llm.inference.sid_head import SidHead

_TREE_CHUNK = 512  # candidates per forward in the tree-attention path (its mask is quadratic in the block)


@torch.no_grad()
def sid_log_probs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    candidates: Sequence[torch.Tensor],
    level_ids: Sequence[torch.Tensor],
) -> list[torch.Tensor]:
    """For each prompt ``b``, ``log p(candidates[b][c] | prompts[b])`` summed over the SID tokens.

    ``candidates[b]`` is a (C_b, L) long tensor of SID token ids (C_b >= 1, every slate the same
    ``L``); ``level_ids[l]`` holds the token ids of level ``l``'s codes (:class:`conrec.llm.model.vocab.SidVocab`),
    and the ``l``-th token of every candidate must be one of them. Returns one float32 tensor of
    shape (C_b,) per prompt, in the candidates' order; a candidate's score does not depend on the
    other candidates of its slate.
    """
    if len(prompts) != len(candidates):
        raise ValueError(f"{len(prompts)} prompts but {len(candidates)} candidate slates")
    if not prompts:
        return []
    lengths = {int(c.shape[1]) for c in candidates if c.dim() == 2}
    if any(c.dim() != 2 or c.shape[0] < 1 for c in candidates) or len(lengths) != 1:
        raise ValueError("every slate must be a non-empty (C, L) tensor of SID token ids with one common L")
    n_tok = lengths.pop()
    if len(level_ids) != n_tok:
        raise ValueError(f"candidates have {n_tok} SID tokens but level_ids names {len(level_ids)} levels")
    device = model.device
    n_cand = max(int(c.shape[0]) for c in candidates)
    padded = torch.stack([torch.cat([c, c[:1].expand(n_cand - c.shape[0], n_tok)]) for c in candidates]).to(device)
    flat = padded.view(-1, n_tok)  # (B * n_cand, L), prompt-major like the repeated cache
    levels = [ids.to(device) for ids in level_ids]
    codes = torch.stack([_code_of(flat[:, j], levels[j], j) for j in range(n_tok)], 1)  # (rows, L)

    enc = encode_prompts(tokenizer, prompts, device)
    head = SidHead(model, level_ids)
    head.bind_prompts(enc["input_ids"], enc["attention_mask"])
    if tree_attention_ok(model):
        level_logits = _tree_level_logits(head, enc, flat, n_cand, n_tok)
    else:
        level_logits = _copied_level_logits(head, model, enc, flat, n_cand, n_tok)
    total = sum(torch.log_softmax(lg, -1).gather(1, codes[:, j : j + 1]).squeeze(1) for j, lg in enumerate(level_logits))
    return _split(cast(torch.Tensor, total), candidates, n_cand)


def _tree_level_logits(head: SidHead, enc: dict[str, torch.Tensor], flat: torch.Tensor, n_cand: int, n_tok: int) -> list[torch.Tensor]:
    """Per-level code logits of every candidate, all candidates in their prompt's own row.

    The prompt is encoded once (its last hidden state gives level 0 for every candidate); then one
    forward appends each candidate's first ``L - 1`` SID tokens to the prompt's row, with a 4D mask
    that lets a candidate's token see the prompt (minus padding) and its own earlier SID tokens
    only, at the positions it would have in its own sequence. The prompt's KV cache is never copied
    per candidate (the cost that made slates and exhaustive search grow with the prompt length).
    """
    ids, mask = enc["input_ids"], enc["attention_mask"]
    b, t, device = ids.shape[0], ids.shape[1], ids.device
    feats, cache = head.prefill(ids, mask)
    out = [head.logits(feats, 0).repeat_interleave(n_cand, 0)]
    if n_tok == 1:
        return out
    per = n_tok - 1
    tokens = flat.view(b, n_cand, n_tok)[:, :, :-1]
    levels: list[list[torch.Tensor]] = [[] for _ in range(per)]
    for lo in range(0, n_cand, _TREE_CHUNK):  # the mask grows with the square of the block: bound it
        chunk = tokens[:, lo : lo + _TREE_CHUNK]
        q = chunk.shape[1] * per  # candidate-major: query j is candidate j // per, SID token j % per
        cand, lvl = torch.arange(q, device=device) // per, torch.arange(q, device=device) % per
        own = (cand.unsqueeze(1) == cand.unsqueeze(0)) & (lvl.unsqueeze(0) <= lvl.unsqueeze(1))  # (q, q)
        seen = torch.cat([mask.bool().unsqueeze(1).expand(b, q, t), own.expand(b, q, q)], -1)
        attn = head.additive_mask(seen)  # (B, 1, q, t + q)
        pos = mask.long().sum(-1, keepdim=True) + lvl.unsqueeze(0)  # (B, q)
        feats, cache = head.features(
            slice(None), input_ids=chunk.reshape(b, q), attention_mask=attn, position_ids=pos, past_key_values=cache, use_cache=True
        )
        cache.crop(-q)  # back to the prompt alone for the next chunk
        feats = feats.view(b, -1, per, feats.shape[-1])
        for j in range(per):
            levels[j].append(head.logits(feats[:, :, j], j + 1))  # (B, chunk, C)
    out += [torch.cat(lv, 1).reshape(b * n_cand, -1) for lv in levels]
    return out


def _copied_level_logits(
    head: SidHead, model: PreTrainedModel, enc: dict[str, torch.Tensor], flat: torch.Tensor, n_cand: int, n_tok: int
) -> list[torch.Tensor]:
    """Per-level code logits with the prompt's cache repeated per candidate: for models that cannot
    take a custom 4D mask (:func:`conrec.llm.inference.sid_beam.tree_attention_ok`)."""
    device = flat.device
    ids, mask = enc["input_ids"], enc["attention_mask"]
    cache = _shared_prompt_cache(model, enc, n_cand)
    kwargs: dict[str, Any]
    if cache is None:  # one-token prompts: nothing to cache, feed the prompt with the candidates
        kwargs = dict(
            input_ids=torch.cat([ids.repeat_interleave(n_cand, 0), flat[:, :-1]], 1),
            attention_mask=torch.cat([mask.repeat_interleave(n_cand, 0), torch.ones_like(flat[:, :-1])], 1),
        )
    else:
        start = mask.long().sum(-1, keepdim=True).repeat_interleave(n_cand, 0) - 1  # position of the last prompt token
        kwargs = dict(
            input_ids=torch.cat([ids[:, -1:].repeat_interleave(n_cand, 0), flat[:, :-1]], 1),  # (B * n_cand, L)
            attention_mask=torch.cat([mask.repeat_interleave(n_cand, 0), torch.ones_like(flat[:, :-1])], 1),  # past + new
            position_ids=start + torch.arange(n_tok, device=device),
            past_key_values=cache,
            use_cache=True,
        )
    feats, _ = head.features(slice(-n_tok, None), **kwargs)  # (B * n_cand, L, H or V)
    return [head.logits(feats[:, j], j) for j in range(n_tok)]


def _code_of(tokens: torch.Tensor, level_tokens: torch.Tensor, level: int) -> torch.Tensor:
    """Index of each token within its level's code tokens (an error if one is not of that level)."""
    match = tokens.unsqueeze(1) == level_tokens.unsqueeze(0)
    if not bool(match.any(1).all()):
        raise ValueError(f"a candidate's SID token {level} is not a level-{level} code")
    return match.long().argmax(1)


def _split(scores: torch.Tensor, candidates: Sequence[torch.Tensor], n_cand: int) -> list[torch.Tensor]:
    scores = scores.float().view(len(candidates), n_cand).cpu()
    return [scores[b, : int(c.shape[0])] for b, c in enumerate(candidates)]
