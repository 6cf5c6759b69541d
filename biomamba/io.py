"""The one way files are written: to a hidden temporary name beside the target, fsynced, renamed
when complete.

    atomic_open(path, mode)   a file object; on success fsync + rename over `path`
    write_text / write_json   whole files (JSON sorted and indented: byte-identical for equal objects)
    write_report(dir, stem, markdown, payload)   STEM.md beside STEM.json
    save_figure(fig, path)    a matplotlib figure as PNG
    fsync_tree(directory)     flush every file of a directory built by other code (save_pretrained)
    replace_dir / discard     swap in or delete a whole directory without a half-deleted state

    reporting_write_errors(what, safe)   a full disk, quota or I/O error inside as one WriteFailed line

A process killed mid-write leaves at most a `.NAME.tmp-PID` file, never a file under the final name,
so nothing that looks complete is ever partial. `sweep_temporaries(dir)` removes such leftovers.
Directories the same way: build one completely, fsync it, then `replace_dir` it over the old one.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
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


def write_json(path, obj, sort_keys: bool = True) -> None:
    """Write `obj` as indented JSON atomically: keys sorted (byte-identical for equal objects) unless
    sort_keys=False keeps the caller's order (results a person reads top to bottom)."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=sort_keys, ensure_ascii=False) + "\n")


def write_text(path, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def write_report(out_dir, stem: str, markdown: str, payload) -> tuple[Path, Path]:
    """A results report as OUT/STEM.md (for people) and OUT/STEM.json (for programs), each atomic."""
    out_dir = Path(out_dir)
    write_text(out_dir / f"{stem}.md", markdown)
    write_text(out_dir / f"{stem}.json", json.dumps(payload, indent=2) + "\n")
    return out_dir / f"{stem}.md", out_dir / f"{stem}.json"


def save_figure(fig, path) -> None:
    """A matplotlib figure as a PNG file, atomically."""
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)


def fsync_tree(directory) -> None:
    """Flush every file under `directory`, then the directories themselves, to disk: what another
    writer (save_pretrained, tokenizers) left there survives a crash once this returns."""
    directory = Path(directory)
    for path in sorted(directory.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        _fsync(path)
    _fsync(directory)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
    _fsync(Path(out).parent)  # the rename itself


def discard(directory) -> None:
    """Delete a directory by renaming it to NAME.trash first (a leftover .trash of a killed run too)."""
    directory = Path(directory)
    trash = directory.with_name(directory.name + ".trash")
    shutil.rmtree(trash, ignore_errors=True)
    if directory.exists():
        directory.rename(trash)
        shutil.rmtree(trash)


# A write that fails for these reasons is the storage's fault, not the program's: the user needs what was
# being written, the reason and what is safe, not a traceback.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG, errno.EROFS})


class WriteFailed(RuntimeError):
    """An output could not be written (full disk, quota, I/O error); str() is one line: what was being
    written, the error, and which complete output is safe. `biomamba` prints it as `error: ...`."""


def write_errno(error: BaseException) -> int | None:
    """The errno of the failed write behind `error`, None if it is not one: an OSError's own, one in its
    chain (torch.save into a file object raises RuntimeError over the file's OSError), or the
    "(os error N)" that Rust writers (safetensors, tokenizers) put in their messages."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in WRITE_ERRNOS:
            return error.errno
        found = re.search(r"os error (\d+)", str(error))
        if found and int(found.group(1)) in WRITE_ERRNOS:
            return int(found.group(1))
        error = error.__cause__ or error.__context__
    return None


def describe_write_error(code: int) -> str:
    return f"{os.strerror(code)} ({errno.errorcode.get(code, code)})"


@contextlib.contextmanager
def reporting_write_errors(what: str, safe):
    """Turn a failed write inside the block into WriteFailed("writing WHAT failed: REASON; SAFE").
    `safe`: a string or a function returning one (evaluated after the failure: which complete
    checkpoint or output survives). Other exceptions, and a WriteFailed from an inner block, pass."""
    try:
        yield
    except WriteFailed:
        raise
    except Exception as error:
        code = write_errno(error)
        if code is None:
            raise
        where = f" ({error.filename})" if isinstance(error, OSError) and error.filename else ""
        raise WriteFailed(f"writing {what} failed{where}: {describe_write_error(code)}; "
                          f"{safe() if callable(safe) else safe}") from error
