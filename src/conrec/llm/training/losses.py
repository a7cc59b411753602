"""SFT losses computed from hidden states: a per-level softmax for SID targets, dense enough for
whole timelines.

Why from hidden states: a timeline window supervises hundreds of positions per row. Vocabulary
logits there (49k text tokens x every position) would cost more than the model; an SID target only
needs its level's codes, a feedback tag only the two tags. So the model is asked for its final
hidden states, and each supervised position is projected onto just the rows of the output matrix
its target competes with:

* an SID token of level ``l``: the level's codes (the choices constrained decoding has, and the
  per-level softmax whose log-probabilities rank items at inference);
* a feedback tag (``<dis>`` / ``<like>``): the two tags ("is the next event a dislike?");
* any other token (alignment titles, categories): the whole vocabulary.

Weights (the timeline task's ``sft.timeline``): an SID whose latest *supervised* feedback tag is
``<dis>`` gets ``dislike_weight``, after ``<like>`` ``positive_weight``, the tags themselves
``feedback_weight``, the end-of-sequence token after them 0; targets of the other tasks (no supervised tag
before them) weigh 1. The sum is
divided like the causal-LM loss (``num_items_in_batch`` or the number of supervised tokens), so
with unit weights this is exactly :func:`conrec.llm.training.sft.completion_loss`'s level-softmax objective.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F


@dataclass(frozen=True)
class TargetWeights:
    """Token ids of the two feedback tags and the weights of the targets they govern."""

    dislike_id: int
    like_id: int
    dislike: float = 1.0
    positive: float = 1.0
    feedback: float = 1.0
    eos_id: int | None = None  # the end-of-sequence token TRL appends to every completion (see target_weights)


@dataclass(frozen=True)
class CodeBias:
    """Additive logits per SID level: ``per_level[l]`` (B, T, K_l) in code order, and the code of
    every token id (``token_code``) to line them up with a level's token ids."""

    per_level: list[torch.Tensor]
    token_code: torch.Tensor


def target_weights(targets: torch.Tensor, weights: TargetWeights | None) -> torch.Tensor:
    """(B, T) float weight of each target token (0 where ``targets == -100``; pure, vectorised).

    Forward-fills the latest supervised feedback tag along each row: an SID after ``<dis>`` weighs
    ``weights.dislike``, after ``<like>`` ``weights.positive``; the tags weigh ``weights.feedback``.
    An end-of-sequence target after a tag (a timeline window's end, where TRL appends one) weighs 0: a
    window ends at an arbitrary stride boundary, and no prompt at inference asks whether a timeline ends;
    it weighed the last event's weight (up to 3 in the simulator recipe).
    """
    out = (targets != -100).float()
    if weights is None:
        return out
    is_dis, is_like = targets == weights.dislike_id, targets == weights.like_id
    tag = is_dis | is_like
    pos = torch.arange(targets.shape[1], device=targets.device).expand_as(targets)
    last = torch.where(tag, pos, torch.full_like(pos, -1)).cummax(dim=1).values  # latest tag position, -1 = none
    last_is_dis = is_dis.gather(1, last.clamp(min=0)) & (last >= 0)
    last_is_like = is_like.gather(1, last.clamp(min=0)) & (last >= 0)
    out = torch.where(last_is_dis, out * weights.dislike, out)
    out = torch.where(last_is_like, out * weights.positive, out)
    if weights.eos_id is not None:
        out = torch.where((targets == weights.eos_id) & (last >= 0), torch.zeros_like(out), out)
    return torch.where(tag, (targets != -100).float() * weights.feedback, out)


def level_softmax_loss(
    hidden: torch.Tensor,
    targets: torch.Tensor,
    head: torch.Tensor,
    token_level: torch.Tensor,
    weights: TargetWeights | None = None,
    bias: CodeBias | None = None,
) -> torch.Tensor:
    """Weighted summed cross-entropy of every supervised target (``targets != -100``).

    ``hidden`` (B, T, H) are the final hidden states whose position ``t`` predicts ``targets[:, t]``
    (the caller shifts), ``head`` the output embedding matrix (V, H), ``token_level`` the SID level
    of every token id (-1 for other tokens). ``bias`` is added to the SID levels' logits (the copy
    bias, aligned with ``targets``). Returns a scalar sum (divide by the token count).
    """
    w = target_weights(targets, weights)
    rows, cols = (targets != -100).nonzero(as_tuple=True)
    if len(rows) == 0:
        return hidden.sum() * 0.0  # keeps the graph (DDP needs every parameter used)
    h = hidden[rows, cols].float()
    tgt = targets[rows, cols]
    wt = w[rows, cols]
    levels = token_level.to(tgt.device)
    tgt_level = levels[tgt]
    total = h.new_zeros(())
    tags = torch.tensor([weights.dislike_id, weights.like_id], device=tgt.device) if weights is not None else None
    is_tag = (tgt == tags[0]) | (tgt == tags[1]) if tags is not None else torch.zeros_like(tgt, dtype=torch.bool)
    for lv in range(int(levels.max()) + 1):
        sel = tgt_level == lv
        if bool(sel.any()):
            ids = (levels == lv).nonzero().squeeze(1)
            logits = h[sel] @ head[ids].float().T
            if bias is not None:  # the bias is in code order, the logits in token-id order
                logits = logits + bias.per_level[lv][rows[sel], cols[sel]][:, bias.token_code.to(ids.device)[ids]]
            index = torch.searchsorted(ids, tgt[sel])  # position of each target among its level's ids
            total = total + (F.cross_entropy(logits, index, reduction="none") * wt[sel]).sum()
    if tags is not None and bool(is_tag.any()):
        logits = h[is_tag] @ head[tags].float().T
        index = (tgt[is_tag] == tags[1]).long()
        total = total + (F.cross_entropy(logits, index, reduction="none") * wt[is_tag]).sum()
    text = (tgt_level < 0) & ~is_tag
    if bool(text.any()):
        logits = h[text] @ head.float().T
        total = total + (F.cross_entropy(logits, tgt[text], reduction="none") * wt[text]).sum()
    return total
