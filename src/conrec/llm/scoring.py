"""Slate scoring: the LM's dislike score of each candidate item, by one teacher-forced pass.

A platform asks "among the items about to be shown to this user, which will they dislike?". The
LM's answer for candidate ``c`` is ``log p(SID(c) | prompt)``: the summed log-probabilities of the
candidate's ``L`` SID tokens after the user's prompt, the same quantity beam search ranks by
(``length_penalty=0``, scores taken before the constraint mask), so a score here equals the score
:func:`conrec.llm.constrained.generate_topk` gives the same item.

Cost: all candidates of a request share one prompt encoding. The prompt minus its last token is
encoded once into a KV cache (:func:`conrec.llm.constrained._shared_prompt_cache`, the machinery beam
search uses), the cache is repeated per candidate, and *one* forward over ``(candidates, L)`` tokens
(the prompt's last token, then the first ``L - 1`` SID tokens) yields every needed log-probability.
Prompts are long (histories) and SIDs are 3 tokens, so a 20-item slate costs about one prompt
forward. Several requests are batched (left-padded prompts; slates padded to the longest by
repeating their first candidate, whose extra scores are dropped).
"""

from __future__ import annotations

from typing import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from conrec.llm.constrained import _encode, _shared_prompt_cache


@torch.no_grad()
def sid_log_probs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    candidates: Sequence[torch.Tensor],
) -> list[torch.Tensor]:
    """For each prompt ``b``, ``log p(candidates[b][c] | prompts[b])`` summed over the SID tokens.

    ``candidates[b]`` is a (C_b, L) long tensor of SID token ids (C_b >= 1, every slate the same
    ``L``). Returns one float32 tensor of shape (C_b,) per prompt, in the candidates' order; a
    candidate's score does not depend on the other candidates of its slate.
    """
    if len(prompts) != len(candidates):
        raise ValueError(f"{len(prompts)} prompts but {len(candidates)} candidate slates")
    if not prompts:
        return []
    lengths = {int(c.shape[1]) for c in candidates if c.dim() == 2}
    if any(c.dim() != 2 or c.shape[0] < 1 for c in candidates) or len(lengths) != 1:
        raise ValueError("every slate must be a non-empty (C, L) tensor of SID token ids with one common L")
    n_tok = lengths.pop()
    device = model.device
    n_cand = max(int(c.shape[0]) for c in candidates)
    padded = torch.stack([torch.cat([c, c[:1].expand(n_cand - c.shape[0], n_tok)]) for c in candidates]).to(device)
    flat = padded.view(-1, n_tok)  # (B * n_cand, L), prompt-major like the repeated cache

    enc = _encode(tokenizer, prompts, device)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    cache = _shared_prompt_cache(model, enc, n_cand)
    if cache is None:  # one-token prompts: nothing to cache, feed the prompt with the candidates
        inp = torch.cat([ids.repeat_interleave(n_cand, 0), flat[:, :-1]], 1)
        att = torch.cat([mask.repeat_interleave(n_cand, 0), torch.ones_like(flat[:, :-1])], 1)
        logits = model(input_ids=inp, attention_mask=att).logits[:, -n_tok:].float()
        picked = logits.gather(-1, flat.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
        return _split(picked.sum(-1), candidates, n_cand)
    inp = torch.cat([ids[:, -1:].repeat_interleave(n_cand, 0), flat[:, :-1]], 1)  # (B * n_cand, L)
    att = torch.cat([mask.repeat_interleave(n_cand, 0), torch.ones_like(flat[:, :-1])], 1)  # past + new
    start = mask.long().sum(-1, keepdim=True).repeat_interleave(n_cand, 0) - 1  # position of the last prompt token
    kwargs = dict(input_ids=inp, attention_mask=att, position_ids=start + torch.arange(n_tok, device=device),
                  past_key_values=cache, use_cache=True)
    split = _decoder_and_head(model)
    if split is None:
        logits = model(**kwargs).logits.float()
        picked = logits.gather(-1, flat.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
        return _split(picked.sum(-1), candidates, n_cand)
    decoder, head = split
    hidden = decoder(**kwargs).last_hidden_state  # (B * n_cand, L, H)
    return _split(_shared_prefix_log_probs(hidden, head, flat, n_cand), candidates, n_cand)


def _split(scores: torch.Tensor, candidates: Sequence[torch.Tensor], n_cand: int) -> list[torch.Tensor]:
    scores = scores.float().view(len(candidates), n_cand).cpu()
    return [scores[b, : int(c.shape[0])] for b, c in enumerate(candidates)]


def _decoder_and_head(model: PreTrainedModel) -> tuple[torch.nn.Module, torch.nn.Module] | None:
    """(decoder body, LM head) when ``logits = head(decoder(...).last_hidden_state)`` exactly (Llama,
    SmolLM2, Qwen...); None for models that rescale or cap their logits, or do not expose both."""
    cfg = model.config
    if getattr(cfg, "final_logit_softcapping", None) is not None or getattr(cfg, "logit_scale", None) is not None:
        return None
    get_decoder, head = getattr(model, "get_decoder", None), model.get_output_embeddings()
    decoder = get_decoder() if callable(get_decoder) else None
    if decoder is None or head is None or decoder is model:
        return None
    return decoder, head


def _shared_prefix_log_probs(hidden: torch.Tensor, head: torch.nn.Module, flat: torch.Tensor, n_cand: int) -> torch.Tensor:
    """Summed SID log-probs per row, computing the LM head once per distinct (prompt, SID prefix).

    Why: with a ~49k-token vocabulary the head and its log-normaliser cost more than a small
    model's layers, and the next-token distribution at SID level ``j`` depends only on the prompt
    and the first ``j`` SID tokens: level 0 is shared by the whole slate, level 1 by candidates with
    the same first code. A 20-item slate needs ~35 head rows instead of 60.
    """
    n_rows, n_tok = flat.shape
    owner = torch.arange(n_rows, device=flat.device) // n_cand  # prompt of each row
    total = torch.zeros(n_rows, dtype=torch.float32, device=flat.device)
    for j in range(n_tok):
        key = torch.cat([owner.unsqueeze(1), flat[:, :j]], 1)
        uniq, inv = torch.unique(key, dim=0, return_inverse=True)
        rep = torch.empty(len(uniq), dtype=torch.long, device=flat.device).scatter_(0, inv, torch.arange(n_rows, device=flat.device))
        logits = head(hidden[rep, j]).float()  # (distinct prefixes, vocab)
        total += logits[inv, flat[:, j]] - torch.logsumexp(logits, dim=-1)[inv]
    return total
