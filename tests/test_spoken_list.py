"""The one English list joiner of conrec's messages (:func:`conrec.errors.spoken_list`)."""

from __future__ import annotations

from conrec.errors import spoken_list


def test_a_list_reads_as_a_message_says_it() -> None:
    """No serial comma, as every message that spelt its own joiner wrote it; one word alone, none empty."""
    assert spoken_list([]) == ""
    assert spoken_list(["sft"]) == "sft"
    assert spoken_list(["sft", "grpo"]) == "sft and grpo"
    assert spoken_list(("data", "sid", "sft")) == "data, sid and sft"
    assert spoken_list(["'u5'", "'u5 '", "' u5'", "'u5  '"]) == "'u5', 'u5 ', ' u5' and 'u5  '"
