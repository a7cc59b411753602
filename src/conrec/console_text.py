"""User-provided text (item ids, titles, reasons quoting titles, paths) made safe to print through Rich.

Rich reads ``[...]`` in printed strings and table cells as markup: a title such as ``Heat [/i]`` raised
``MarkupError`` (a traceback) and ``Up [bold red]LOUD`` was restyled. Control characters (NUL, BEL, ESC sequences,
right-to-left overrides) reached the operator's terminal raw, and invisible ones showed as nothing: the item id
``zw\\u200bsp`` (a zero-width space inside) read as ``zwsp``, which the API then did not know. :func:`shown` escapes
the markup and writes those characters as visible ``\\x01`` / ``\\u202e`` / ``\\u200b`` escapes; the data itself
is not changed.
"""

from __future__ import annotations

import re

from rich.console import Console
from rich.markup import escape

# C0 and C1 controls (tab and newline included: one table cell stays one line), DEL, the line and paragraph
# separators (U+2028, U+2029: line breaks too), the bidirectional marks, overrides and isolates that reorder what a
# terminal shows, and the characters that show as nothing: zero-width space (U+200B), word joiner (U+2060) and the
# byte order mark (U+FEFF, a zero-width no-break space inside a text). Not the zero-width non-joiner and joiner
# (U+200C, U+200D): Persian and Indic spelling and emoji sequences (a family emoji) need them, and they join or
# part the letters they stand between, so they do not hide inside a word.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200b\u200e\u200f\u2028-\u202e\u2060\u2066-\u2069\ufeff]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def visible(value: object) -> str:
    """``value`` as text with its control characters written as visible escapes (no markup escaped): the part of
    :func:`shown` that any other writer of data (the evaluation report's Markdown) needs as well."""
    return _UNPRINTABLE.sub(_visible, str(value))


def shown(value: object) -> str:
    """``value`` as text for a Rich console or table cell: markup escaped, control characters made visible."""
    return escape(visible(value))


def stage_console() -> Console:
    """The console stages print on when the caller gives none: on a terminal as rich makes it; off one (a log file, a
    pipe, ``nohup``) lines are not hard-wrapped at rich's 80 columns, so that one message stays one line (a GRPO stage's
    summary broke after "zero-advantage groups 5%,"). Tables keep their width."""
    console = Console()
    console.soft_wrap = not console.is_terminal
    return console


def error_console() -> Console:
    """The console errors, warnings about a run and the Ctrl-C line go to: stderr (``conrec config > eff.yaml`` wrote an
    error into the file), never hard-wrapped (a piped error broke at 80 columns, mid-path). One place for the CLI, the
    pipeline's module entry points and a run's stale-report warning."""
    return Console(stderr=True, soft_wrap=True)
