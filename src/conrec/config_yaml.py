"""How conrec reads a user's YAML config: PyYAML's safe loader, made strict where it was silently wrong.

Why not plain ``yaml.safe_load``: it keeps the last of two equal keys in a mapping, so a section
appended to a copied preset (``sft:`` a second time, to "override" one setting) replaced the
preset's whole section without a word. Merge keys (``<<: *base``) still work: a key written beside
a merge overrides the merged one, as YAML specifies; only keys written twice are refused.
"""

from __future__ import annotations

import re
from typing import Any

import yaml


class DuplicateKeyError(yaml.YAMLError):
    """A mapping of the config names the same key twice (YAML keeps only the last)."""


_MERGE_TAG = "tag:yaml.org,2002:merge"


class ConfigLoader(yaml.SafeLoader):
    """:class:`yaml.SafeLoader` that refuses a key repeated in one mapping (:class:`DuplicateKeyError`, naming
    the key path and both lines) and reads YAML 1.2 exponent floats (``1e-4``) as numbers (see below)."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self.plain_texts: dict[tuple[str | int, ...], str] = {}

    def construct_document(self, node: yaml.Node) -> Any:
        _refuse_repeats(self, node, (), set())
        return super().construct_document(node)


# YAML 1.1 (PyYAML) reads exponent notation as a float only with a dot and a signed exponent (``1.0e-5``):
# ``1e-05``, ``1e-4`` and ``1.0e5`` were strings, which a float setting refused ("must be float, not the string
# '1e-05'"), although the reference prints defaults so (``grpo.learning_rate``). YAML 1.2 reads them as floats, and
# so does a config. Text that is not such a number (``1e``, ``e5``, ``1e-4x``) stays a string.
_EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$")
ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+0123456789."))


_STR_TAG = "tag:yaml.org,2002:str"


def _refuse_repeats(loader: ConfigLoader, node: yaml.Node, path: tuple[str | int, ...], seen: set[int]) -> None:
    """Raise :class:`DuplicateKeyError` for the first key written twice in one mapping under ``node``, a merge key
    ``<<`` included (what a merge brings in may be overridden, by a key beside it). ``seen``: nodes walked already (an
    alias is walked once).

    On the way, note in ``loader.plain_texts`` the text of each unquoted scalar read as something other than a string
    (``0123456``, ``5e10``, ``yes``), by key path: after YAML converted it (42798), what was written is lost, and a
    refusal of it in a text setting should quote what the user wrote."""
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.ScalarNode) and node.style is None and node.tag != _STR_TAG:
        loader.plain_texts[path] = node.value
    if isinstance(node, yaml.MappingNode):
        first: dict[Any, yaml.Node] = {}  # each key (as YAML reads it: yes and true are one key) -> where it was written
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):  # (a mapping as a key: validation refuses it)
                continue
            key = _MERGE_TAG if key_node.tag == _MERGE_TAG else loader.construct_object(key_node)
            if key in first:
                raise DuplicateKeyError(_repeat_message(path, first[key], key_node, merge=key == _MERGE_TAG))
            first[key] = key_node
            if key != _MERGE_TAG:  # what a merge brings in may be overridden: its mapping is not walked from here
                _refuse_repeats(loader, value_node, (*path, str(key)), seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _refuse_repeats(loader, item, (*path, i), seen)


def _repeat_message(path: tuple[str | int, ...], first: yaml.Node, again: yaml.Node, merge: bool) -> str:
    """The refusal of a key written twice in one mapping (pure): the key path as written the second time, and the
    first spelling where it differs (``yes`` and ``true`` are one key to YAML; so are ``null`` and ``~``)."""
    where = ".".join(str(p) for p in (*path, again.value))
    lines = f"lines {first.start_mark.line + 1} and {again.start_mark.line + 1}"
    if merge:  # PyYAML merged both, the second winning each key they share; YAML allows one merge key per mapping
        return (f"merge key {where} is written twice ({lines}); the second would override the first where they share a key: "
                "merge several mappings with one key, <<: [*a, *b] (the first listed wins)")
    spelled = f" (as {first.value} and {again.value}, which YAML reads as one key)" if first.value != again.value else ""
    return (f"key {where} is written twice{spelled} ({lines}); YAML would keep only the last and drop the first without a word: "
            "write each key once (a section once, with all its settings)")


def load_yaml(text: str) -> Any:
    """``text`` read as a conrec config reads it (:class:`ConfigLoader`)."""
    return load_yaml_noting_texts(text)[0]


def load_yaml_noting_texts(text: str) -> tuple[Any, dict[tuple[str | int, ...], str]]:
    """``text`` read as :func:`load_yaml` reads it, and the text of each unquoted scalar YAML read as a number, a
    date, a boolean or null, by key path (list items by index): ``{("serve", "api_key"): "0123456"}``."""
    loader = ConfigLoader(text)
    try:
        return loader.get_single_data(), loader.plain_texts
    finally:
        loader.dispose()


def written_as_text_before(written: str) -> bool:
    """Whether ``written`` is an exponent number that conrec before YAML 1.2 floats read as a string (PyYAML's YAML
    1.1 resolvers: ``5e10``, ``1e-4``, ``1.0e5``), which :class:`ConfigLoader` now reads as a float."""
    return _EXPONENT_FLOAT.match(written) is not None and isinstance(yaml.safe_load(written), str)


class ConfigDumper(yaml.SafeDumper):
    """:class:`yaml.SafeDumper` that decides quoting with :class:`ConfigLoader`'s resolvers, so what conrec writes
    reads back as written.

    Why: the plain SafeDumper resolves as YAML 1.1 does and left ``5e10`` unquoted (a string to YAML 1.1), which the
    loader reads as the number 50000000000.0; a run's ``config.yaml`` with ``serve.api_key: '5e10'`` then could not be
    loaded back (``-r``), nor ``conrec config``'s output. A string is written plain only when these resolvers read it
    back as a string; any other is quoted. The resolver table is the loader's own object, so the two cannot drift."""

    yaml_implicit_resolvers = ConfigLoader.yaml_implicit_resolvers


def dump_yaml(value: Any, **options: Any) -> str:
    """``value`` as YAML that :func:`load_yaml` reads back to ``value`` (:class:`ConfigDumper`; ``options`` as
    :func:`yaml.dump` takes them)."""
    return str(yaml.dump(value, Dumper=ConfigDumper, **options))
