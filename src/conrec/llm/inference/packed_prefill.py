"""Padding-free prefill: a batch of prompts encoded as one packed row, attention kept inside each prompt.

Why: prompts are user histories of very different lengths (69 to 345 tokens on MovieLens-100K), and
the prefill over them is most of a batched request's cost. Left-padded to the longest, a batch of 8
spends about a third of that prefill on padding (docs/serving-performance.md). Packed end to end in
one row, with the rotary positions restarting at every prompt and attention computed prompt by
prompt, a batch costs its real tokens only. The KV cache is then laid out exactly as the left-padded
batch's would be (zeros under the padding, which the attention mask hides), so the SID beam search
and slate scoring continue unchanged, and a packed batch gives each prompt the numbers it gets alone.

How: the model's attention implementation is switched, through transformers' ``AttentionInterface``
(no fork, no patching of model code), to :data:`ATTN_IMPLEMENTATION`: plain SDPA for every ordinary
call, and prompt-by-prompt causal SDPA when the forward carries the packed prompts' boundaries.
Only models whose attention goes through that interface with plain SDPA can switch
(:func:`enable_packed_prefill`); the others keep the padded prefill.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, DynamicCache
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

ATTN_IMPLEMENTATION = "conrec_packed_sdpa"
_SEGMENTS = "conrec_packed_segments"  # forward kwarg: [(start, end)] of each prompt in the packed row
MIN_PADDING_SHARE = 0.1  # below this share of padded tokens the padded prefill is as cheap (one SDPA call per layer)


def _packed_sdpa(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """SDPA; with the packed prompts' boundaries, causal attention within each prompt only."""
    segments = kwargs.get(_SEGMENTS)
    if segments is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    if query.shape[0] != 1 or key.shape[2] != query.shape[2]:
        raise ValueError("a packed prefill is one row with no earlier cache")
    if kwargs.get("sliding_window") is not None or kwargs.get("softcap") is not None:
        raise ValueError("a packed prefill computes plain causal attention: no sliding window, no soft-capping")
    groups = query.shape[1] // key.shape[1]
    if groups > 1:  # grouped-query attention: one key/value head per group of query heads
        key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    out = torch.empty_like(query)
    for start, end in segments:
        out[:, :, start:end] = F.scaled_dot_product_attention(
            query[:, :, start:end], key[:, :, start:end], value[:, :, start:end], is_causal=True, scale=scaling
        )
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(ATTN_IMPLEMENTATION, _packed_sdpa)
AttentionMaskInterface.register(ATTN_IMPLEMENTATION, sdpa_mask)  # ordinary calls get SDPA's own masks


def enable_packed_prefill(model: Any) -> bool:
    """Switch an SDPA model to :data:`ATTN_IMPLEMENTATION` (same numbers for every ordinary call);
    False, and nothing changed, for a model with another attention or one that cannot switch.

    Only for models loaded for inference: the switch is on the model's config, which training
    code does not expect to change under it.
    """
    cfg = model.config
    if getattr(cfg, "_attn_implementation", None) != "sdpa" or not full_attention_only(cfg) or not model._can_set_attn_implementation():
        return False
    model.set_attn_implementation(ATTN_IMPLEMENTATION)
    return packs(model)


def full_attention_only(cfg: Any) -> bool:
    """No sliding-window layers: every layer's attention is plain causal attention over the whole
    sequence (what a custom mask or a prompt-by-prompt causal SDPA reproduces exactly)."""
    layer_types = getattr(cfg, "layer_types", None)
    if layer_types is not None and any(t != "full_attention" for t in layer_types):
        return False
    return getattr(cfg, "sliding_window", None) is None or getattr(cfg, "use_sliding_window", True) is False


def packs(model: Any) -> bool:
    """Whether ``model`` takes a packed prefill (:func:`enable_packed_prefill` was applied)."""
    return getattr(model.config, "_attn_implementation", None) == ATTN_IMPLEMENTATION


def worth_packing(mask: torch.Tensor) -> bool:
    """More than one prompt, and at least :data:`MIN_PADDING_SHARE` of the padded batch is padding."""
    b, t = mask.shape
    return b > 1 and int(mask.sum()) <= (1 - MIN_PADDING_SHARE) * b * t


def packed_prefill(decoder: Any, config: Any, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, DynamicCache]:
    """(last hidden state of each prompt (B, H), KV cache laid out as for the left-padded batch).

    ``decoder`` is the model's decoder body (hidden states out, :func:`conrec.llm.inference.sid_head.decoder_and_head`),
    ``ids`` and ``mask`` the left-padded batch. Positions count from each prompt's first real token,
    as :meth:`conrec.llm.inference.sid_head.SidHead.prefill` gives them.
    """
    b, t = ids.shape
    real = mask.bool()
    lengths = real.sum(-1)
    ends = lengths.cumsum(0)
    starts = ends - lengths
    # the padded batch's positions (SidHead.prefill's), kept at the real tokens in the packed row's order
    positions = (mask.long().cumsum(-1) - 1)[real].unsqueeze(0)
    # a prepared 4D mask is passed through as is (no dense packed mask is built); the attention ignores it
    no_mask = torch.zeros(1, 1, 1, 1, dtype=next(decoder.parameters()).dtype, device=ids.device)
    out = decoder(
        input_ids=ids[real].unsqueeze(0),
        attention_mask=no_mask,
        position_ids=positions,
        use_cache=True,
        **{_SEGMENTS: list(zip(starts.tolist(), ends.tolist()))},
    )
    last = out.last_hidden_state[0, ends - 1]
    # the packed row lists the real tokens in row-major order, so each goes back to its flat index in the (b, t) layout
    dest = real.reshape(-1).nonzero().squeeze(1)
    layers = []
    for layer in out.past_key_values.layers:
        padded = []
        for packed in (layer.keys, layer.values):  # (1, heads, tokens, dim)
            heads, dim = packed.shape[1], packed.shape[3]
            flat = packed.new_zeros(b * t, heads, dim)
            flat[dest] = packed[0].transpose(0, 1)
            padded.append(flat.view(b, t, heads, dim).transpose(1, 2))
        layers.append((padded[0], padded[1]))
    return last, DynamicCache(ddp_cache_data=layers, config=config)
