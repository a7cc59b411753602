"""The copy bias: a per-level prior that the next disliked item shares codes with earlier dislikes.

Why: a user's dislikes cluster on a few facets (a genre, a tone), and the SIDs carry those facets
in their codes (in the simulator a level-0 code predicts an item's category with 77% purity, a
level-1 code its tone with 84%). A model trained for minutes does not learn to *copy* those codes
from its context: on a simulated world a hand-written rule that boosts items sharing codes with the
user's past dislikes lifted the LM from FHR@20 0.32 to 0.44 (docs/results.md). This module makes
the rule part of the model:

    logit(level l, code c) += beta_l * log(1 + n_l(c))

where ``n_l(c)`` counts the SIDs in dislike context so far whose level-``l`` code is ``c``. It is
added wherever the model scores an SID level: in SFT's level-softmax loss (so the network learns
the *rest* of the signal around it) and in every decoding path (beam search, exhaustive search,
slate scoring), through :class:`conrec.llm.inference.sid_head.SidHead`. The betas are settings
(``sft.copy_bias``), optionally trained with the model, and saved beside the weights in
``conrec_copy_bias.json``; a model without that file has no bias.

Context rules (one left-to-right pass over the token ids; markers of :mod:`conrec.llm.inference.prompts`):

* an SID is *disliked context* after ``<dis>`` or inside ``<neg> ... </neg>``, and only those are counted;
* the bias applies at every position except inside positive context (after ``<like>`` or inside
  ``<pos> ... </pos>``): the answer after ``<dis>`` or after the segmented prompts' ``Answer:`` gets
  it, a positive event of a timeline does not (positives are not predicted from dislikes).

Counts at a position include only tokens at or before it, so training sees exactly what decoding
sees: a prompt's bias is the sequence bias at its last token.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from conrec.errors import StageInputError
from conrec.io import write_json
from conrec.llm.inference.prompts import DISLIKE_TAG, LIKE_TAG, NEG_CLOSE, NEG_OPEN, POS_CLOSE, POS_OPEN, SEQ_CLOSE, SEQ_OPEN
from conrec.llm.model.vocab import SidVocab, embedding_rows

COPY_BIAS_FILE = "conrec_copy_bias.json"
ATTRIBUTE = "conrec_copy_bias"  # the submodule name on the model (so the optimiser and .to() see it)
# The parameter is beta / this: Adam moves a parameter by about the learning rate per step whatever its
# gradient's scale, so at the network's rate (1e-3) beta itself would barely move in a few hundred steps
# (measured: from 0 it reached 0.3 in 450 steps, still climbing). This gives beta 20x the network's rate.
LEARNED_BETA_SCALE = 20.0

# the role of each marker token: what context follows it
_OTHER, _DISLIKED, _POSITIVE, _NEUTRAL = 0, 1, 2, 3
_ROLES = {
    DISLIKE_TAG: _DISLIKED, NEG_OPEN: _DISLIKED, LIKE_TAG: _POSITIVE, POS_OPEN: _POSITIVE,
    NEG_CLOSE: _NEUTRAL, POS_CLOSE: _NEUTRAL, SEQ_OPEN: _NEUTRAL, SEQ_CLOSE: _NEUTRAL,
}


class CopyBias(torch.nn.Module):
    """``beta_l * log1p(count of code c among the disliked SIDs so far)`` for every SID level ``l``."""

    role: torch.Tensor  # (V,) what context each token opens (the _ROLES of the markers, else _OTHER)
    token_level: torch.Tensor  # (V,) SID level of each token, -1 for other tokens
    token_code: torch.Tensor  # (V,) code of each SID token within its level, -1 for other tokens

    def __init__(self, beta: Sequence[float], vocab: SidVocab, tokenizer: Any, learn: bool = False) -> None:
        super().__init__()
        if len(beta) > vocab.levels or not all(math.isfinite(float(b)) for b in beta):
            raise ValueError(f"copy bias: need at most {vocab.levels} finite betas (one per SID level), got {list(beta)}")
        self.sizes = vocab.codebook_sizes
        full = [float(b) for b in beta] + [0.0] * (vocab.levels - len(beta))
        self.raw_beta = torch.nn.Parameter(torch.tensor(full) / LEARNED_BETA_SCALE, requires_grad=learn)
        role = torch.full_like(vocab.token_level, _OTHER)
        for token, r in _ROLES.items():
            role[tokenizer.convert_tokens_to_ids(token)] = r
        self.register_buffer("role", role, persistent=False)
        self.register_buffer("token_level", vocab.token_level.clone(), persistent=False)
        self.register_buffer("token_code", vocab.token_to_code.clone(), persistent=False)

    def _context(self, ids: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(SID level of each token in disliked context, else -1 (B, T); apply the bias (B, T); code of each
        token (B, T)); padding counts as nothing."""
        real = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask.bool()
        ids = ids.clamp(0, self.role.numel() - 1)
        role = torch.where(real, self.role[ids], _OTHER)
        pos = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
        last = torch.where(role > 0, pos, -1).cummax(1).values  # latest marker at or before each position
        state = torch.where(last >= 0, role.gather(1, last.clamp(min=0)), _OTHER)
        level = torch.where(real & (state == _DISLIKED), self.token_level[ids], -1)
        return level, state != _POSITIVE, self.token_code[ids].clamp(min=0)

    def sequence_bias(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Per level, the (B, T, K_l) bias on the logits predicted *at* each position (code order)."""
        level, apply, code = self._context(ids, mask)
        out = []
        for lv, size in enumerate(self.sizes):
            hit = level == lv
            hits = F.one_hot(torch.where(hit, code, 0), size).float() * hit.unsqueeze(-1)
            out.append(self.beta[lv] * torch.log1p(hits.cumsum(1)) * apply.unsqueeze(-1))
        return out

    def prompt_bias(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Per level, the (B, K_l) bias after each whole (left-padded) prompt: what decoding adds."""
        level, apply, code = self._context(ids, mask)
        out = []
        for lv, size in enumerate(self.sizes):
            hit = level == lv
            counts = torch.zeros(ids.shape[0], size, device=ids.device).scatter_add_(1, torch.where(hit, code, 0), hit.float())
            out.append(self.beta[lv] * torch.log1p(counts) * apply[:, -1:])
        return out

    @property
    def beta(self) -> torch.Tensor:
        return self.raw_beta * LEARNED_BETA_SCALE

    def betas(self) -> list[float]:
        return [float(b) for b in self.beta.detach().cpu()]


def copy_bias_of(model: Any) -> CopyBias | None:
    """The model's copy bias (through a DDP ``.module`` or a PEFT wrapper), None when it has none."""
    found = getattr(getattr(model, "module", model), ATTRIBUTE, None)
    return found if isinstance(found, CopyBias) else None


def attach(model: Any, bias: CopyBias) -> None:
    """Make ``bias`` a submodule of ``model``: it moves with ``.to()`` and, when learned, is optimised."""
    model.add_module(ATTRIBUTE, bias)


def detach(model: Any) -> CopyBias | None:
    """Remove and return the copy bias, so ``save_pretrained`` writes a plain Hugging Face model."""
    found = copy_bias_of(model)
    if found is not None:
        delattr(model, ATTRIBUTE)
    return found


def save(model_dir: Path, bias: CopyBias) -> None:
    write_json({"beta": bias.betas()}, Path(model_dir) / COPY_BIAS_FILE)


def saved_betas(model_dir: Path) -> list[float] | None:
    """The betas saved with a model (None when it has no copy bias); a one-line error when the file is bad."""
    path = Path(model_dir) / COPY_BIAS_FILE
    if not path.is_file():
        return None
    try:
        beta = json.loads(path.read_text())["beta"]
        if not isinstance(beta, list) or not all(isinstance(b, (int, float)) and math.isfinite(b) for b in beta):
            raise ValueError("beta must be a list of finite numbers")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise StageInputError(f"model file {path} is corrupt ({exc}); rerun the stage that wrote it") from None
    return [float(b) for b in beta]


def load_into(model: Any, model_dir: Path, tokenizer: Any, codebook_sizes: Sequence[int]) -> None:
    """Attach the copy bias saved in ``model_dir`` (if any) to a freshly loaded ``model``; the SID
    vocabulary lookup is built only for a model that has one."""
    beta = saved_betas(model_dir)
    if beta is None:
        return
    vocab = SidVocab.from_tokenizer(tokenizer, codebook_sizes, embedding_rows(model))
    if len(beta) > vocab.levels:
        raise StageInputError(f"{Path(model_dir) / COPY_BIAS_FILE} has {len(beta)} betas for {vocab.levels} SID levels")
    attach(model, CopyBias(beta, vocab, tokenizer))
