"""What the CLI prints of data (:mod:`conrec.console_text`): Rich markup escaped, and every character a terminal
would show as nothing, or that would break or reorder the line, written as a visible escape."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from conrec.console_text import shown, visible

INVISIBLE = ["\u200b", "\u2060", "\ufeff", "\u2028", "\u2029"]


@pytest.mark.parametrize("char", INVISIBLE)
def test_zero_width_characters_and_line_separators_in_an_id_are_printed_as_visible_escapes(char: str) -> None:
    """Found by probing: the item id ``zw\\u200bsp`` printed as ``zwsp`` in the CLI's tables (typing that got "unknown
    item id"), and a U+2028 in a title broke ``conrec predict``'s reason line, while control and bidi characters were
    already escaped. Now each of them prints as its ``\\uXXXX`` escape, on one line."""
    escape = f"\\u{ord(char):04x}"
    assert visible(f"zw{char}sp") == f"zw{escape}sp" and shown(f"[b]zw{char}sp") == f"\\[b]zw{escape}sp"
    buf = io.StringIO()
    Console(file=buf, width=200, color_system=None).print(shown(f"id zw{char}sp end"))
    assert buf.getvalue() == f"id zw{escape}sp end\n"


def test_the_text_a_terminal_shows_as_it_is_stays_as_it_is() -> None:
    """Letters of any script, emoji, accents and ordinary spaces are not escaped: only what shows as nothing is."""
    text = "Amélie 日本語 emoji🎬 סרט\u00a0x"
    assert visible(text) == text


def test_the_joiners_that_spelling_and_emoji_need_stay_as_they_are() -> None:
    """The zero-width non-joiner and joiner are part of Persian and Indic spelling and of emoji sequences; written as
    escapes they garbled such titles (a family emoji became three faces and two ``\\u200d``)."""
    for text in ("می\u200cخواهم", "क्\u200dष", "👨\u200d👩\u200d👧"):
        assert visible(text) == text


def test_off_a_terminal_a_stage_message_stays_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """Found in a demo's log: off a terminal rich hard-wrapped every line at 80 columns, so a GRPO stage's summary
    broke after "zero-advantage groups 5%,". The stages' console keeps a message on one line there."""
    from conrec.console_text import stage_console

    line = " ".join(f"word{i}" for i in range(40))  # 279 characters
    stage_console().print(line)
    assert capsys.readouterr().out == line + "\n"
