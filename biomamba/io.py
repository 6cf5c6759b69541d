"""Atomic file writes: write to a hidden temporary name beside the target, rename when complete.

A process killed mid-write leaves at most a `.NAME.tmp-PID` file, never a file under the final name,
so nothing that looks complete is ever partial. `sweep_temporaries(dir)` removes such leftovers.
Directories the same way: build one completely, then `replace_dir` it over the old one.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path


def sha256_file(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_open(path, mode: str = "wb"):
    """Open a temporary file for writing; on success fsync and rename it to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    try:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": "\n"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path, obj) -> None:
    """Write `obj` as sorted, indented JSON atomically (byte-identical for equal objects)."""
    with atomic_open(path, "w") as f:
        f.write(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def write_arrays(path, **arrays) -> None:
    """Write numpy arrays as an .npz that `np.load` reads, atomically, and byte-identical for equal
    arrays (numpy's own savez stamps every member with the current time)."""
    import zipfile

    import numpy as np

    with atomic_open(path, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            member = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(member, "w", force_zip64=True) as out:
                np.lib.format.write_array(out, np.ascontiguousarray(array), allow_pickle=False)


def sweep_temporaries(directory) -> None:
    """Delete `.NAME.tmp-PID` leftovers of killed runs under `directory`."""
    for tmp in Path(directory).rglob(".*.tmp-*"):
        if tmp.is_file():
            tmp.unlink()


def replace_dir(complete, out) -> None:
    """Rename the finished directory `complete` to `out`. The old `out` is renamed aside before it is
    deleted, so an interruption leaves `out` whole or absent, never partly written or deleted."""
    discard(out)
    Path(complete).rename(out)


def discard(directory) -> None:
    """Delete a directory by renaming it to NAME.trash first (a leftover .trash of a killed run too)."""
    directory = Path(directory)
    trash = directory.with_name(directory.name + ".trash")
    shutil.rmtree(trash, ignore_errors=True)
    if directory.exists():
        directory.rename(trash)
        shutil.rmtree(trash)
