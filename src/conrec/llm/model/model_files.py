"""Cheap integrity checks of a saved Hugging Face model directory, before anything loads it.

Why: a truncated ``model.safetensors`` or a broken ``tokenizer.json``/``config.json`` (a full disk, a
copy cut short, a hand edit) makes transformers raise a SafetensorError or JSON traceback deep in
its loaders. Checking the files first turns that into one :class:`StageInputError` line naming the
file, and costs only reading JSON files and the safetensors headers (never the weights).

A file that passed is not parsed again while its inode, size, modification and change times stay
the same: the SmolLM2 tokenizer's ``tokenizer.json`` is 3.5 MB, and every stage start, model load and
``RunDir.output_problem`` check parsed it again (about 0.1 s each; 160 times in one ablation ladder).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from conrec.errors import StageInputError

# JSON files that transformers parses when loading a model or tokenizer (checked if present).
_JSON_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "model.safetensors.index.json",
    "conrec_vocab.json",
    "conrec_copy_bias.json",
)
_MAX_HEADER = 100 * 1024 * 1024  # the safetensors format's own limit on the header size
_PASSED: dict[Path, tuple[int, int, int, int]] = {}  # a file that passed -> its stat signature then
_MAX_PASSED = 4096


def _signature(path: Path) -> tuple[int, int, int, int]:
    """What changes when a file is rewritten, truncated, replaced or edited in place."""
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _passed_before(path: Path) -> bool:
    return _PASSED.get(path.absolute()) == _signature(path)


def _remember_passed(path: Path, signature: tuple[int, int, int, int]) -> None:
    if len(_PASSED) >= _MAX_PASSED:
        _PASSED.clear()
    _PASSED[path.absolute()] = signature


def verify_safetensors(path: Path) -> None:
    """Raise :class:`StageInputError` unless ``path`` holds a whole safetensors file.

    Reads the 8-byte header length and the JSON header, and checks that the tensors' byte ranges end
    exactly at the end of the file: a truncated or padded file fails without reading any weights.
    """
    if _passed_before(path):
        return
    signature = _signature(path)
    size = signature[1]
    try:
        with open(path, "rb") as fh:
            raw_len = fh.read(8)
            if len(raw_len) < 8:
                raise ValueError("shorter than its 8-byte header length")
            (n,) = struct.unpack("<Q", raw_len)
            if n > _MAX_HEADER or 8 + n > size:
                raise ValueError(f"header length {n} does not fit a {size}-byte file")
            header = json.loads(fh.read(n))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
        expected = 8 + n + (max(ends) if ends else 0)
        if expected != size:
            raise ValueError(f"{size} bytes on disk, the header describes {expected} (truncated or overwritten)")
    except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError) as exc:
        raise StageInputError(f"model file {path} is corrupt: {exc}; rerun the stage that wrote it") from None
    _remember_passed(path, signature)


def verify_model_dir(model_dir: str | Path, need_weights: bool = True) -> Path:
    """Check a model dir's JSON files and safetensors files; return it as a Path.

    ``need_weights=False`` checks only the files that are there (tokenizer-only dirs: no
    ``config.json`` or weights required). Raises :class:`StageInputError` with one line naming the
    first missing or corrupt file.
    """
    p = Path(model_dir)
    if need_weights and not (p / "config.json").is_file():
        raise StageInputError(f"model dir {p} has no config.json (not a Hugging Face model directory)")
    for name in _JSON_FILES:
        f = p / name
        if f.is_file() and not _passed_before(f):
            signature = _signature(f)
            try:
                json.loads(f.read_bytes())
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise StageInputError(f"model file {f} is not valid JSON ({exc}); rerun the stage that wrote it") from None
            _remember_passed(f, signature)
    shards = sorted(p.glob("*.safetensors"))
    if need_weights and not shards and not any(p.glob("*.bin")):
        raise StageInputError(f"model dir {p} has no weights file (model.safetensors)")
    for shard in shards:
        verify_safetensors(shard)
    return p
