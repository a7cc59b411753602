"""Beam search over the SID tokens alone: ``L`` steps, each a softmax over one level's codes.

Why not Hugging Face ``generate``: a SID is exactly ``L`` tokens, each drawn from one level's few
dozen codes, yet ``generate`` scores, sorts and copies the whole ~49k-token vocabulary for every
beam at every step. With a small model that full-vocabulary bookkeeping is most of the cost, and it
grows linearly with the batch, so batching concurrent requests gained nothing
(docs/serving-performance.md). Here each step computes the head on the level's code rows only
(:class:`conrec.llm.inference.sid_head.SidHead`), masks with the same constraint the logits
processor uses (:class:`conrec.llm.inference.sid_constraint.SidConstraint`), and picks the next beams
with one ``topk`` over ``beams x codes`` per prompt: vectorised over prompts and beams, no loop
over beams, no fallback. The ranking is the one ``generate`` produces with ``length_penalty=0``:
beams ordered by the sum over levels of ``log P(code | prompt, prefix)`` (a log-softmax over the
level's codes, taken before masking); a test checks both agree.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from conrec.llm.inference.item_prior import TriePrior
from conrec.llm.inference.packed_prefill import ATTN_IMPLEMENTATION, full_attention_only
from conrec.llm.inference.sid_constraint import SidConstraint
from conrec.llm.inference.sid_head import SidHead
from conrec.llm.model.vocab import SidVocab
from conrec.sid.trie import SidTrie

_NEG_INF = float("-inf")


class _Beams(NamedTuple):
    """The hypotheses of a search, (B, H) each: their scores, last codes and trie nodes (CPU), and the hypothesis of
    the previous step each one extends.

    Why nodes: each step asks the trie what may follow every hypothesis; from its node that is one lookup
    (:meth:`conrec.sid.trie.SidTrie.children`), from its codes a walk from the root for every code."""

    scores: torch.Tensor
    code: torch.Tensor
    nodes: torch.Tensor
    origin: torch.Tensor

    @classmethod
    def root(cls, b: int, device: torch.device) -> _Beams:
        """One hypothesis per prompt: the prompt itself, at the trie's root, with no code yet."""
        zeros = torch.zeros(b, 1, dtype=torch.long)
        return cls(torch.zeros(b, 1, device=device), zeros, zeros, zeros)


@torch.no_grad()
def sid_beam_search(
    model: Any,  # a transformers PreTrainedModel (Any: torch's Module.__getattr__ hides its methods' types)
    enc: dict[str, torch.Tensor],
    trie: SidTrie,
    vocab: SidVocab,
    num_beams: int,
    num_return: int,
    excluded: torch.Tensor | None = None,
    prior: TriePrior | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(trie rows (B, num_return), -1 = no item; log-probabilities (B, num_return)), best first.

    ``enc`` is the left-padded tokenised prompts (``input_ids``, ``attention_mask``); ``excluded``
    (B, n_items) bool: items each prompt may not get. A prompt with fewer reachable items than
    ``num_return`` gets -1 rows (score -inf) for the rest. ``prior`` (``decode.popularity_prior``)
    adds its per-level increments, so a score is ``log p(SID | prompt) + w * log prior(item)``.
    """
    if num_return > num_beams:
        raise ValueError(f"num_return ({num_return}) must be <= num_beams ({num_beams})")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    b, levels, device = ids.shape[0], trie.levels, ids.device
    head = SidHead(model, vocab.level_ids)
    head.bind_prompts(ids, mask)
    constraint = SidConstraint(trie, excluded)
    feats, cache = head.prefill(ids, mask)
    # level 0: one hypothesis per prompt (the prompt itself, at the trie's root)
    beams = _step_beams(
        head.logits(feats, 0).unsqueeze(1), _Beams.root(b, device), constraint, torch.arange(b), 0, num_beams, prior
    )
    extend = _extend_tree if tree_attention_ok(model) else _extend_copied
    beams = extend(head, cache, mask, vocab, beams, constraint, num_beams, levels, prior)
    scores, rows = beams.scores, trie.item_of_node(beams.nodes)
    scores = scores.float().cpu()
    rows = torch.where(torch.isfinite(scores), rows, torch.full_like(rows, -1))
    return rows[:, :num_return], scores[:, :num_return]


def tree_attention_ok(model: Any) -> bool:
    """Whether the model takes a custom 4D attention mask with plain causal semantics: eager or SDPA
    attention (conrec's packing-aware SDPA included) and no sliding-window layers (whose own window a custom mask would override)."""
    cfg = model.config
    return getattr(cfg, "_attn_implementation", None) in ("sdpa", "eager", ATTN_IMPLEMENTATION) and full_attention_only(cfg)


def _extend_tree(
    head: SidHead, cache: Any, mask: torch.Tensor, vocab: SidVocab, beams: _Beams,
    constraint: SidConstraint, num_beams: int, levels: int, prior: TriePrior | None,
) -> _Beams:
    """Levels 1..L-1 with every beam of a prompt in the prompt's own row ("tree attention").

    Why: the prompt's KV cache is shared, never copied per beam. Step ``l`` appends one block of
    ``num_beams`` tokens (each beam's level ``l-1`` code) to the prompt's row, and a 4D mask lets
    each new token see the prompt (minus padding), its own ancestors in the earlier blocks and
    itself, at the position it would have in its own sequence. Copying a 300-token prompt's cache
    40 times per history made batched decoding cost as much as decoding one history at a time.
    """
    b, device = mask.shape[0], mask.device
    n_real = mask.long().sum(-1, keepdim=True)  # (B, 1): position of the first SID token
    eye = torch.eye(num_beams, dtype=torch.bool, device=device)
    anc = torch.zeros(b, num_beams, 0, dtype=torch.long)  # index of each beam's ancestor in every earlier block
    prompt_of_row = torch.arange(b).repeat_interleave(num_beams)
    for level in range(1, levels):
        tokens = vocab.level_ids[level - 1].to(device)[beams.code]  # (B, beams): block level - 1
        seen = [mask.bool().unsqueeze(1).expand(b, num_beams, mask.shape[1])]
        seen += [eye[anc[:, :, m].to(device)] for m in range(level - 1)]  # one ancestor per earlier block
        seen.append(eye.expand(b, num_beams, num_beams))  # itself
        attn = head.additive_mask(torch.cat(seen, -1))  # (B, 1, beams, kv)
        feats, cache = head.features(
            slice(None), input_ids=tokens, attention_mask=attn, position_ids=(n_real + level - 1).expand(b, num_beams),
            past_key_values=cache, use_cache=True,
        )
        logits = head.logits(feats, level)  # (B, beams, C)
        beams = _step_beams(logits, beams, constraint, prompt_of_row, level, num_beams, prior)
        origin = beams.origin
        anc = torch.cat([anc.gather(1, origin.unsqueeze(-1).expand(b, num_beams, level - 1)), origin.unsqueeze(-1)], -1)
    return beams


def _extend_copied(
    head: SidHead, cache: Any, mask: torch.Tensor, vocab: SidVocab, beams: _Beams,
    constraint: SidConstraint, num_beams: int, levels: int, prior: TriePrior | None,
) -> _Beams:
    """Levels 1..L-1 with the prompt's cache repeated per beam and reordered after each step: for
    models that cannot take a custom 4D mask (:func:`tree_attention_ok`)."""
    b, device = mask.shape[0], mask.device
    if levels > 1:
        cache.batch_repeat_interleave(num_beams)
    prompt_of_row = torch.arange(b).repeat_interleave(num_beams)
    next_pos = mask.long().sum(-1).repeat_interleave(num_beams).unsqueeze(1)  # position of the first SID token
    past_mask = mask.repeat_interleave(num_beams, 0)
    for level in range(1, levels):
        tokens = vocab.level_ids[level - 1].to(device)[beams.code.reshape(-1)].unsqueeze(1)  # (B * beams, 1)
        past_mask = torch.cat([past_mask, torch.ones_like(past_mask[:, :1])], 1)
        feats, cache = head.features(
            -1, input_ids=tokens, attention_mask=past_mask, position_ids=next_pos + level - 1, past_key_values=cache, use_cache=True
        )
        logits = head.logits(feats, level).view(b, num_beams, -1)
        beams = _step_beams(logits, beams, constraint, prompt_of_row, level, num_beams, prior)
        if level < levels - 1:
            cache.reorder_cache((torch.arange(b).unsqueeze(1) * num_beams + beams.origin).reshape(-1).to(device))
    return beams


def _step_beams(
    logits: torch.Tensor,
    beams: _Beams,
    constraint: SidConstraint,
    prompt_of_row: torch.Tensor,
    level: int,
    num_beams: int,
    prior: TriePrior | None = None,
) -> _Beams:
    """Extend (B, H) hypotheses by one code: the best ``num_beams`` of ``H x C`` per prompt.

    ``logits`` (B, H, C); ``beams`` the (B, H) hypotheses at depth ``level``. Returns the (B, beams) new ones, each
    with the hypothesis it extends (``origin``). Hypotheses at -inf (dead, or padding) stay at -inf; the nodes under
    them are never read as items.
    """
    b, h, c = logits.shape
    logp = torch.log_softmax(logits, -1)
    nodes = beams.nodes.reshape(b * h)
    children = constraint.trie.children(nodes, level)  # (B * H, C): the node each code leads to, -1 = none
    if prior is not None:
        logp = logp + prior.increments_below(nodes, children).view(b, h, c).to(logp.device)
    allowed = constraint.allowed_children(children, prompt_of_row).view(b, h, c).to(logp.device)
    total = torch.where(allowed, beams.scores.unsqueeze(-1) + logp, torch.full_like(logp, _NEG_INF)).view(b, h * c)
    k = min(num_beams, h * c)
    top, idx = total.topk(k, dim=1)  # sorted, best first
    if k < num_beams:  # fewer hypotheses than beams: pad with dead ones
        top = torch.cat([top, top.new_full((b, num_beams - k), _NEG_INF)], 1)
        idx = torch.cat([idx, idx[:, :1].expand(b, num_beams - k)], 1)
    idx = idx.cpu()
    return _Beams(top, idx % c, children.view(b, h * c).gather(1, idx), idx // c)
