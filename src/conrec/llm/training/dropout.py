"""Residual-stream dropout while training (``sft.train.dropout``).

Why: the timeline corpus of a small log is a few thousand windows, and a model trained on it overfits
within a few epochs (the valid curve peaks, then falls). SASRec, the strongest sequential baseline,
trains with dropout 0.2–0.5 for that reason, while Llama-style backbones ship without any. Dropout is
added through forward hooks on the input embeddings and on each decoder layer's output, so it works
for any Hugging Face causal LM without touching its code, is active only in training mode (valid
scoring and inference are unaffected) and is never saved with the model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F


def decoder_layers(model: Any) -> nn.ModuleList:
    """The decoder's list of transformer blocks (``get_decoder().layers``; a PEFT wrapper forwards the call).

    The SFT stage adds the hooks before the Trainer wraps the model for distributed training, so no
    DDP wrapper is ever seen here."""
    get_decoder = getattr(model, "get_decoder", None)
    decoder = get_decoder() if callable(get_decoder) else None
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise TypeError(f"{type(model).__name__} has no decoder layer list (get_decoder().layers); sft.train.dropout needs one")
    return layers


def _dropout_hook(p: float) -> Any:
    def hook(module: nn.Module, args: Any, output: Any) -> Any:
        if not module.training:
            return None
        if isinstance(output, torch.Tensor):
            return F.dropout(output, p, training=True)
        if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
            return (F.dropout(output[0], p, training=True), *output[1:])
        return None

    return hook


def add_training_dropout(model: Any, p: float) -> list[torch.utils.hooks.RemovableHandle]:
    """Dropout with probability ``p`` on the embedding output and every decoder layer's output.

    Returns the hook handles (``handle.remove()`` takes the dropout away again); ``p == 0`` adds none.
    """
    if not 0 <= p < 1:
        raise ValueError(f"dropout must be in [0, 1), got {p}")
    if p == 0:
        return []
    layers = decoder_layers(model)
    hook = _dropout_hook(p)
    modules = [model.get_input_embeddings(), *layers]
    return [m.register_forward_hook(hook) for m in modules]
