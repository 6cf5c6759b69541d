"""Resumable stages: a stage that finished leaves a stamp, and a rerun with the same key skips it.

DIR/.stages/NAME.json = {"key": ..., "outputs": {relative path: sha256}, "result": ...} (NAME may
hold a slash: shards/UNIT is one unit's part of the shards stage). A stage is
done when its stamp's key equals the current key and every output still exists with that sha256,
so a file damaged or replaced after the stamp makes the stage run again. The stamp is written after
the outputs, atomically: a kill between the two just reruns the stage.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from biomamba.io import sha256_file, write_json


STAGES_DIR = ".stages"


def stage_key(*parts) -> str:
    """A hash of everything that determines a stage's outputs (JSON-serialisable parts)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _stamp(directory: Path, name: str) -> Path:
    return Path(directory) / STAGES_DIR / f"{name}.json"


def previous(directory, name: str) -> dict | None:
    """The stage's last stamp, whatever its key ({"key", "outputs", "result"}), or None."""
    try:
        return json.loads(_stamp(directory, name).read_text())
    except (OSError, ValueError):
        return None


def done(directory, name: str, key: str):
    """The stage's stored result if it is complete for `key`, else None."""
    stamp = previous(directory, name)
    if stamp is None or stamp.get("key") != key:
        return None
    for rel, sha in stamp["outputs"].items():
        out = Path(directory) / rel
        if not out.is_file() or sha256_file(out) != sha:
            return None
    return stamp.get("result")


def mark_done(directory, name: str, key: str, outputs, result=None, hashes: dict | None = None) -> None:
    """Record that `outputs` (paths relative to directory) are complete for `key`. `hashes` gives
    the sha256 of outputs whose writer computed it already (the others are read and hashed)."""
    directory, hashes = Path(directory), hashes or {}
    found = {str(rel): hashes.get(str(rel)) or sha256_file(directory / rel) for rel in outputs}
    write_json(_stamp(directory, name), {"key": key, "outputs": found, "result": result})
