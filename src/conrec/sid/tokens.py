"""SID tokens: the text form of semantic item IDs inside the LLM vocabulary.

An item's SID is a short code tuple ``(c_0, c_1, ..., c_{L-1})``; level ``l`` uses the letter
``a + l`` so that the same code number at different levels is a *different* token (``<a_7>`` and
``<b_7>`` mean different things: the first is a coarse cluster, the second a refinement). The
tokens are added to the tokenizer as ordinary added tokens (TRL decodes completions with special
tokens skipped, so they must not be "special").
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from functools import lru_cache

_LETTERS = string.ascii_lowercase
_TOKEN_RE = re.compile(r"<([a-z])_(0|[1-9][0-9]*)>")


def sid_token(level: int, code: int) -> str:
    """The token of ``code`` at ``level``: ``sid_token(0, 12) == "<a_12>"``, ``sid_token(1, 7) == "<b_7>"``."""
    if not 0 <= level < len(_LETTERS):
        raise ValueError(f"SID level must be in [0, {len(_LETTERS)}), got {level}")
    if code < 0:
        raise ValueError(f"SID code must be >= 0, got {code}")
    return f"<{_LETTERS[level]}_{int(code)}>"


def all_sid_tokens(codebook_sizes: Sequence[int]) -> list[str]:
    """Every SID token, level-major: all level-0 tokens in code order, then level 1, ...

    The order is fixed so that tokenizer extension is reproducible (same sizes -> same token ids).
    """
    return [sid_token(level, code) for level, size in enumerate(codebook_sizes) for code in range(int(size))]


def codes_to_sid(codes: Sequence[int]) -> str:
    """``[12, 7, 200] -> "<a_12><b_7><c_200>"``."""
    return "".join(sid_token(level, int(code)) for level, code in enumerate(codes))


def parse_sid(text: str) -> list[int] | None:
    """Inverse of :func:`codes_to_sid`; ``None`` if ``text`` is not exactly a well-formed SID.

    Well-formed means: one or more tokens, nothing between or around them (surrounding whitespace
    is tolerated), and levels in order a, b, c, ... with no gap or repeat.
    """
    s = text.strip()
    if not s:
        return None
    codes: list[int] = []
    pos = 0
    for level, m in enumerate(_TOKEN_RE.finditer(s)):
        if m.start() != pos or level >= len(_LETTERS) or m.group(1) != _LETTERS[level]:
            return None
        codes.append(int(m.group(2)))
        pos = m.end()
    if pos != len(s) or not codes:
        return None
    return codes


def item_token(codes: Sequence[int]) -> str:
    """The item's own token for hybrid ID + SID prompts: ``[12, 7, 200] -> "<item_12_7_200>"``.

    Named after the SID because a SID map is collision-free: one token per item, and a prompt can
    write it from the SID alone. It never matches an SID token (``parse_sid`` rejects it).
    """
    return "<item_" + "_".join(str(int(c)) for c in codes) + ">"


@lru_cache(maxsize=1 << 18)
def item_token_of_sid(sid: str) -> str:
    """:func:`item_token` of a SID string (``"<a_12><b_7><c_200>" -> "<item_12_7_200>"``)."""
    codes = parse_sid(sid)
    if codes is None:
        raise ValueError(f"not a well-formed SID: {sid!r}")
    return item_token(codes)
