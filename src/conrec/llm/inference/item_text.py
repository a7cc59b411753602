"""Item text inside model input: text that reads as one of the model's control tokens is broken first.

Why: SID tokens (``<a_3>``), item tokens (``<item_3_1_2>``), the prompt markers (``<dis>``, ``<neg>``, ``<hist>``, ...)
and a backbone's special tokens (``<|endoftext|>``) are added tokens, which a tokenizer matches anywhere in a text. An
item titled ``<a_3><b_1><c_2> Film`` was tokenized as three SID tokens and the word, so the alignment tasks taught the
model that another item's SID is this item's title. Every item text that enters a prompt or a completion (the SFT
alignment tasks' titles and categories, and the titles that initialise the SID rows) goes through :func:`neutralise`
first: a space after the first character of every match (``<a_3>`` -> ``< a_3>``), which no tokenizer matches as the
token and a reader still recognises. Text without such matches (every MovieLens title) is returned unchanged, so the
prompts of existing runs are the same.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

import polars as pl

from conrec.llm.inference.prompts import MARKER_TOKENS

_Text = TypeVar("_Text", str, str | None)

CONTROL_TEXT = re.compile(r"<[a-z]_[0-9]+>|<item_[0-9]+(?:_[0-9]+)*>|" + "|".join(re.escape(t) for t in MARKER_TOKENS))
"""conrec's own control tokens: SID tokens, item tokens and the prompt markers (any backbone)."""


def looks_like_control(token: str) -> bool:
    """Whether a tokenizer's added or special token is control text to break in item text: no whitespace and not a
    plain word (a whitespace run or a word added as a token reads the same whole or split, and is left alone)."""
    return len(token) >= 2 and not any(c.isspace() for c in token) and not token.isalnum()


def tokenizer_control_tokens(tokenizer: Any) -> list[str]:
    """A tokenizer's special tokens and added tokens that :func:`looks_like_control` (``<|endoftext|>``, ``<s>``)."""
    tokens = [*getattr(tokenizer, "all_special_tokens", []), *tokenizer.get_added_vocab()]
    return sorted({t for t in tokens if isinstance(t, str) and looks_like_control(t)})


def control_pattern(extra: Iterable[str] = ()) -> re.Pattern[str]:
    """:data:`CONTROL_TEXT` and the literal tokens ``extra`` (longest first, so a token is matched whole)."""
    literals = sorted({t for t in extra if looks_like_control(t)}, key=lambda t: (-len(t), t))
    if not literals:
        return CONTROL_TEXT
    return re.compile(CONTROL_TEXT.pattern + "|" + "|".join(re.escape(t) for t in literals))


def neutralise(text: str, pattern: re.Pattern[str] = CONTROL_TEXT) -> str:
    """``text`` with a space after the first character of every control-token match (pure; repeated until nothing
    matches, since breaking one match may not break an overlapping one)."""
    for _ in range(len(text)):
        broken = pattern.sub(lambda m: m.group(0)[0] + " " + m.group(0)[1:], text)
        if broken == text:
            break
        text = broken
    return text


def with_control_text(texts: Sequence[str | None], pattern: re.Pattern[str] = CONTROL_TEXT) -> list[int]:
    """Indices of the ``texts`` that :func:`neutralise` changes (what the sid stage and sft count)."""
    return [i for i, t in enumerate(texts) if t and pattern.search(t)]


def neutralise_all(texts: Iterable[_Text], pattern: re.Pattern[str] = CONTROL_TEXT) -> list[_Text]:
    """Each of ``texts`` through :func:`neutralise`, a missing or empty one as it is: the one way a column of item
    text (titles, categories) enters a prompt."""
    return [neutralise(t, pattern) if t else t for t in texts]


def items_with_control_text(items: pl.DataFrame, pattern: re.Pattern[str] = CONTROL_TEXT) -> list[int]:
    """Rows of ``items`` whose title or category (where the table has one) :func:`neutralise` changes, sorted: what
    the sid stage's note and SFT's ``items_control_text`` count."""
    columns = [c for c in ("title", "category") if c in items.columns]
    return sorted({i for c in columns for i in with_control_text(items[c].cast(pl.String).to_list(), pattern)})
