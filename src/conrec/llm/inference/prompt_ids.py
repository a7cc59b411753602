"""Prompt text -> token ids, the same way for training and for every inference path.

Why: SFT hands TRL's ``SFTTrainer`` plain ``prompt``/``completion`` strings, and TRL 1.16 tokenizes
them with the tokenizer's special tokens (``trl.data_utils._tokenize`` calls
``processing_class(text=...)``). A backbone whose tokenizer prepends a BOS token (Llama-3, Gemma,
Mistral) is therefore trained on ``<bos> Predict an item ...``, as its pretraining expects. Every
path that asks the model (beam search, exhaustive search, slate scoring, GRPO rollouts, so eval,
``conrec predict``/``score``, ``/v1/*``, early stopping, discernment) must feed it the same ids, so
all of them encode prompts here: the special tokens the tokenizer puts *in front of* a text, then
the text without special tokens. Tokens a tokenizer appends after a text (an EOS some
post-processors add) are left out: in training they follow the completion, never the prompt.

A tokenizer that adds nothing (the SmolLM2 tokenizer of the shipped models) gives exactly
``tokenizer(text, add_special_tokens=False)``, so those models' ids are unchanged.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import torch

from conrec.llm.model.tokenizer_prefix import PROBE, prefix_before

_PREFIXES: weakref.WeakKeyDictionary[Any, list[int]] = weakref.WeakKeyDictionary()  # per tokenizer: two encodings per request otherwise


def special_prefix(tokenizer: Any) -> list[int]:
    """The special-token ids ``tokenizer`` puts before a text when it adds special tokens (``[bos]`` or ``[]``).

    Found by encoding a probe text with and without special tokens and locating the plain ids in
    the full ones; a tokenizer whose special tokens change the text's own ids (none known) gets
    ``[]``, the encoding every path used before. Cached per tokenizer object (a served request would
    otherwise pay two extra encodings, about 0.14 ms).
    """
    try:
        return list(_PREFIXES[tokenizer])
    except (KeyError, TypeError):
        pass
    prefix = _find_prefix(tokenizer)
    try:
        _PREFIXES[tokenizer] = prefix
    except TypeError:  # an object that cannot be weakly referenced: computed each time
        pass
    return list(prefix)


def _find_prefix(tokenizer: Any) -> list[int]:
    return prefix_before(list(tokenizer(PROBE)["input_ids"]), list(tokenizer(PROBE, add_special_tokens=False)["input_ids"]))


def prompt_token_ids(tokenizer: Any, prompts: Sequence[str]) -> list[list[int]]:
    """Each prompt's ids as SFT trains them: :func:`special_prefix` + the text without special tokens."""
    prefix = special_prefix(tokenizer)
    if not prompts:
        return []
    return [prefix + list(ids) for ids in tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]


def encode_prompts(tokenizer: Any, prompts: Sequence[str], device: torch.device) -> dict[str, torch.Tensor]:
    """Left-padded ``input_ids``/``attention_mask`` of :func:`prompt_token_ids` (generated tokens follow every prompt directly).

    The padding is the tokenizer's pad id, or 0 for a tokenizer without one (a raw backbone tokenizer handed to a
    :class:`~conrec.llm.inference.predict.Predictor`): the mask hides it, so its id never matters (it raised a bare
    ``TypeError``, a served request's 500)."""
    rows = prompt_token_ids(tokenizer, prompts)
    width = max((len(r) for r in rows), default=0)
    pad = tokenizer.pad_token_id
    ids = torch.full((len(rows), width), 0 if pad is None else int(pad), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[i, width - len(row) :] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
