"""The special tokens a tokenizer puts before a text (its BOS), found without loading transformers.

Why: inference prompts carry that prefix since conrec encodes them as SFT trains them
(:mod:`conrec.llm.inference.prompt_ids`). GRPO models and eval results made before that, with a tokenizer that
has one (Llama-3, Gemma, Mistral), were made from prompts without it, so :meth:`conrec.runs.RunDir.stale_reason`
asks whether a run's tokenizer has one; a run whose tokenizer adds nothing (the SmolLM2 tokenizer of the
shipped presets) made the same prompts before and after, and stays current. The question is asked of every such
older run each time it is checked (the inspector, ``conrec serve``, ``conrec demo``'s skip), so it reads the
model directory's ``tokenizer.json`` with the ``tokenizers`` library (milliseconds) rather than importing
transformers (seconds). The tokenizer SFT saves there is the one every stage encodes with.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

PROBE = "Answer:"  # any plain text: only the special tokens around its ids matter


def prefix_before(full: list[int], plain: list[int]) -> list[int]:
    """The ids ``full`` (a text encoded with special tokens) has before ``plain`` (the same text without them)
    (pure); ``[]`` when ``plain`` is not inside ``full`` (special tokens that change the text's own ids: none known)."""
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return full[:start]
    return []


def adds_special_prefix(model_dir: Path) -> bool:
    """Whether the tokenizer saved in ``model_dir`` puts special tokens before a text: :func:`prefix_before` of its
    ``tokenizer.json``, or, without one, its ``tokenizer_config.json``'s ``add_bos_token`` (a slow tokenizer's
    switch). False when neither file is there or readable. Cached per file state, so a rewritten model directory is
    read again."""
    files = (model_dir / "tokenizer.json", model_dir / "tokenizer_config.json")
    return _adds_special_prefix(tuple((str(p), _state(p)) for p in files))


def _state(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


@functools.lru_cache(maxsize=16)
def _adds_special_prefix(files: tuple[tuple[str, tuple[int, int] | None], ...]) -> bool:
    (fast, fast_state), (config, config_state) = files
    if fast_state is not None:
        try:
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(fast)
            return bool(prefix_before(tok.encode(PROBE).ids, tok.encode(PROBE, add_special_tokens=False).ids))
        except Exception:  # an unreadable file (the tokenizers library raises its own types): read as no prefix
            return False
    if config_state is not None:
        try:
            cfg = json.loads(Path(config).read_text())
        except (OSError, ValueError):
            return False
        return isinstance(cfg, dict) and cfg.get("add_bos_token") is True
    return False
