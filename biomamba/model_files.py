"""A model directory's files checked before a loader reads them: one line naming a damaged file.

    check_model_dir(DIR)        config.json, model.safetensors (or its shards), tokenizer.json
    check_tokenizer_dir(DIR)    tokenizer.json, tokenizer_config.json

A copy cut short, a file of zeros or a config edited into invalid JSON otherwise surfaces as a loader's
traceback (safetensors: "SafetensorError: incomplete metadata"; tokenizers: "expected `,` or `}` at
line 1 column 5"). Here each becomes a ModelSpecError, "FILE: what is wrong", which every command
prints as one line. The checks are structural and cheap (JSON parses, a safetensors file's length
equals what its header describes), not a checksum: safetensors stores none, so a flipped byte inside
a tensor is not caught. Read only the headers: no tensor is loaded, nothing is executed.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

from biomamba.resolve import ModelSpecError

JSON_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json",
              "model.safetensors.index.json", "adapter_config.json")
MAX_HEADER = 100 << 20  # safetensors' own limit on the header size


def check_model_dir(directory) -> None:
    """Every model and tokenizer file `directory` holds, as the module docstring says."""
    directory = Path(directory)
    if not directory.is_dir():
        return  # the loader says what is missing
    for name in JSON_FILES:
        if (directory / name).is_file():
            check_json(directory / name)
    for weights in sorted(directory.glob("*.safetensors")):
        check_safetensors(weights)


def check_tokenizer_dir(directory) -> None:
    directory = Path(directory)
    for name in ("tokenizer.json", "tokenizer_config.json", "config.json"):  # AutoTokenizer reads config.json too
        if (directory / name).is_file():
            check_json(directory / name)


def check_json(path: Path) -> None:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ModelSpecError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}): the file is corrupt") from None
    if not text.strip():
        raise ModelSpecError(f"{path}: empty file (a copy cut short?)")
    try:
        json.loads(text)
    except json.JSONDecodeError as err:
        raise ModelSpecError(f"{path}: invalid JSON at line {err.lineno} column {err.colno} ({err.msg}); "
                             f"{len(text):,} characters: truncated or corrupt") from None


def check_safetensors(path: Path) -> None:
    """The file is an 8-byte little-endian header length, a JSON header listing each tensor's byte range
    (data_offsets), then exactly those bytes."""
    size = path.stat().st_size
    if size < 8:
        raise ModelSpecError(f"{path}: {size} bytes, too short for a safetensors file (truncated)")
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        if header_len > min(MAX_HEADER, size - 8):
            raise ModelSpecError(f"{path}: truncated or not a safetensors file: its header claims {header_len:,} "
                                 f"bytes but the file has {size:,}")
        try:
            header = json.loads(f.read(header_len))
        except (ValueError, UnicodeDecodeError):
            raise ModelSpecError(f"{path}: corrupt safetensors header (not valid JSON)") from None
    if not isinstance(header, dict):
        raise ModelSpecError(f"{path}: corrupt safetensors header (not a JSON object)")
    try:
        data_end = max((int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"), default=0)
    except (TypeError, KeyError, IndexError, ValueError):
        raise ModelSpecError(f"{path}: corrupt safetensors header (a tensor without data_offsets)") from None
    expected = 8 + header_len + data_end
    if size < expected:
        raise ModelSpecError(f"{path}: truncated: {size:,} bytes, but its header describes {expected:,} "
                             f"({expected - size:,} bytes of tensor data missing); copy the file again")
    if size > expected:
        raise ModelSpecError(f"{path}: {size - expected:,} bytes after the tensor data its header describes: "
                             "corrupt or not one safetensors file")
