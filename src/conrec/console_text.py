"""User-provided text (item ids, titles, reasons quoting titles, paths) made safe to print through Rich.

Rich reads ``[...]`` in printed strings and table cells as markup: a title such as ``Heat [/i]`` raised
``MarkupError`` (a traceback) and ``Up [bold red]LOUD`` was restyled. Control characters (NUL, BEL, ESC sequences,
right-to-left overrides) reached the operator's terminal raw. :func:`shown` escapes the markup and writes those
characters as visible ``\\x01`` / ``\\u202e`` escapes; the data itself is not changed.
"""

from __future__ import annotations

import re

from rich.markup import escape

# C0 and C1 controls (tab and newline included: one table cell stays one line), DEL and the bidirectional
# overrides / isolates that reorder what a terminal shows.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


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
