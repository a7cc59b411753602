"""The LM head restricted to one SID level's codes.

Why: every SID score conrec computes (beam search, slate scoring, exhaustive search) is a softmax
over *one level's codes* (``sft.train.sid_softmax``), never over the whole vocabulary. With the
SmolLM2 tokenizer the vocabulary has ~49k tokens and a level has a few dozen codes, so applying
the head only to those rows saves nearly all of the head's cost, which for a small model is most of
a decoding step. Models whose logits are not ``head(hidden)`` (soft-capped or rescaled logits, or
no separable head) get the full logits and are indexed afterwards: same numbers, no shortcut.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from conrec.llm.inference.packed_prefill import packed_prefill, packs, worth_packing
from conrec.llm.model.copy_bias import copy_bias_of


class SidHead:
    """Run the decoder and turn chosen positions into per-level code logits."""

    def __init__(self, model: Any, level_ids: Sequence[torch.Tensor]) -> None:
        self.model = model
        self.levels = [ids.to(model.device) for ids in level_ids]
        self._split = decoder_and_head(model)
        self._copy = copy_bias_of(model)
        self._bias: list[torch.Tensor] | None = None

    def bind_prompts(self, ids: torch.Tensor, mask: torch.Tensor) -> None:
        """Fix the prompts (B, T left-padded) whose rows :meth:`logits` scores next: a model with a copy
        bias (:mod:`conrec.llm.model.copy_bias`) adds each prompt's bias to its rows' logits."""
        self._bias = None if self._copy is None else [b.float() for b in self._copy.prompt_bias(ids, mask)]

    def features(self, positions: int | slice, **kwargs: Any) -> tuple[torch.Tensor, Any]:
        """(features at ``positions`` of the sequence, the KV cache) for one forward with ``kwargs``.

        Features are hidden states when the head is separable, else full-vocabulary logits; pass
        them to :meth:`logits` only.
        """
        if self._split is None:
            out = self.model(**kwargs)
            return out.logits[:, positions], out.past_key_values
        decoder, _ = self._split
        out = decoder(**kwargs)
        return out.last_hidden_state[:, positions], out.past_key_values

    def prefill(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """(features of each left-padded prompt's last token, the prompts' KV cache): one forward,
        positions counted from each prompt's first real token.

        Prompts of unequal lengths are packed without padding when the model allows it
        (:mod:`conrec.llm.inference.packed_prefill`); the cache comes out as the padded one would.
        """
        if self._split is not None and packs(self.model) and worth_packing(mask):
            return packed_prefill(self._split[0], self.model.config, ids, mask)
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
        return self.features(-1, input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)

    def additive_mask(self, seen: torch.Tensor) -> torch.Tensor:
        """(B, 1, q, kv) attention mask in the model's dtype from a (B, q, kv) bool "may attend":
        0 where allowed, the dtype's minimum elsewhere (what eager and SDPA attention both add)."""
        dtype = next(self.model.parameters()).dtype
        return torch.where(seen, 0.0, torch.finfo(dtype).min).to(dtype).unsqueeze(1)

    def logits(self, features: torch.Tensor, level: int) -> torch.Tensor:
        """float32 logits over level ``level``'s codes (the code order of ``level_ids[level]``).

        ``features`` rows are prompt-major: (B, ...) for the B bound prompts, or (B * r, ...) with
        each prompt's r rows (beams, candidates) together; the copy bias follows that layout.
        """
        ids = self.levels[level]
        if self._split is None:
            out = features[..., ids].float()
        else:
            _, head = self._split
            bias = getattr(head, "bias", None)
            out = torch.nn.functional.linear(features, head.weight[ids], None if bias is None else bias[ids]).float()
        if self._bias is None:
            return out
        prompt_bias = self._bias[level]  # (B, C)
        rows = out.shape[0] // prompt_bias.shape[0]
        if rows * prompt_bias.shape[0] != out.shape[0]:
            raise ValueError(f"{out.shape[0]} rows of features for {prompt_bias.shape[0]} bound prompts")
        return out + prompt_bias.repeat_interleave(rows, 0).view(out.shape[0], *([1] * (out.dim() - 2)), -1)


def decoder_and_head(model: Any) -> tuple[torch.nn.Module, torch.nn.Linear] | None:
    """(decoder body, LM head) when ``logits = head(decoder(...).last_hidden_state)`` exactly (Llama,
    SmolLM2, Qwen...); None for models that rescale or cap their logits, or do not expose both."""
    cfg = model.config
    if getattr(cfg, "final_logit_softcapping", None) is not None or getattr(cfg, "logit_scale", None) is not None:
        return None
    get_decoder, head = getattr(model, "get_decoder", None), model.get_output_embeddings()
    decoder = get_decoder() if callable(get_decoder) else None
    if decoder is None or head is None or decoder is model or not isinstance(head, torch.nn.Linear):
        return None
    return decoder, head
