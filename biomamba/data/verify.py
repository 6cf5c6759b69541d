"""Shards checked against their manifest before anything trains on them.

    report = verify_shards(DIR, splits=("train", "val"), vocab_size=len(tokenizer))

Each shard file listed in DIR/manifest.json (of the given splits) is read once, in 8 MiB blocks:
its size must be its token count times the dtype's width, its sha256 the one `prepare` recorded, and
every token id below the vocabulary size. The first file that fails raises DataError naming it and
what is wrong (a flipped byte, a truncated copy, shards from another tokenizer), so a run never trains
on corrupt data without a word. `biomamba pretrain` verifies the train and val shards before its first
step; `biomamba prepare --verify DIR` verifies every split on demand.

sha256 rather than a faster non-cryptographic hash: `prepare` has always recorded it (no manifest
changes), and on this project's machines hashlib's sha256 reads faster than its blake2b (xxhash is not
a dependency). The time it takes is in the report (`seconds`, and the MB/s it implies).

A manifest written without checksums cannot be verified: its shards are listed in `report["unverified"]`
(their sizes and token ids are still checked), and the caller says so (pretrain warns once and records
it in config.yaml; `prepare --verify` fails).
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np

from biomamba.data.errors import DataError
from biomamba.data.manifest import load_manifest
from biomamba.data.splits import SPLITS

BLOCK_BYTES = 8 << 20


def verify_shards(directory, splits=SPLITS, vocab_size: int | None = None) -> dict:
    """Check the shards of `splits` (see the module docstring); return {"files", "tokens", "bytes",
    "seconds", "unverified": [files without a recorded checksum]}. `vocab_size`: the tokenizer's
    (default the manifest's)."""
    directory = Path(directory)
    manifest = load_manifest(directory)
    dtype = np.dtype(manifest["dtype"])
    limit = int(vocab_size if vocab_size is not None else manifest["tokenizer"]["vocab_size"])
    start = time.perf_counter()
    entries = [e for e in manifest["shards"] if e["split"] in splits]
    unverified, total_bytes = [], 0
    for entry in entries:
        total_bytes += _check_file(directory / entry["file"], entry, dtype, limit)
        if not entry.get("sha256"):
            unverified.append(entry["file"])
    return {"files": len(entries), "tokens": sum(int(e["tokens"]) for e in entries), "bytes": total_bytes,
            "seconds": round(time.perf_counter() - start, 3), "unverified": unverified}


def _check_file(path: Path, entry: dict, dtype: np.dtype, limit: int) -> int:
    expected = int(entry["tokens"]) * dtype.itemsize
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise DataError(path, "shard listed in manifest.json is missing; rerun `biomamba prepare` on this "
                              "directory to rewrite it") from None
    if size != expected:
        raise DataError(path, f"{size} bytes, but manifest.json records {entry['tokens']} tokens of {dtype.name} "
                              f"({expected} bytes): the file is truncated or was replaced; rerun `biomamba prepare` "
                              "on this directory to rewrite it")
    digest, highest = hashlib.sha256(), -1
    with open(path, "rb") as f:
        while block := f.read(BLOCK_BYTES):
            digest.update(block)
            tokens = np.frombuffer(block, dtype=dtype)
            if tokens.size:
                highest = max(highest, int(tokens.max()))
    if entry.get("sha256") and digest.hexdigest() != entry["sha256"]:
        raise DataError(path, f"sha256 {digest.hexdigest()[:16]}... differs from the {entry['sha256'][:16]}... "
                              "manifest.json records: the file was changed or corrupted after `prepare` wrote "
                              "it; rerun `biomamba prepare` on this directory to rewrite it")
    if highest >= limit:
        raise DataError(path, f"token id {highest} is outside the tokenizer's vocabulary of {limit}: these "
                              "shards were not made with this directory's tokenizer")
    return size


def describe(report: dict) -> str:
    """One line: what was verified, and how fast."""
    rate = report["bytes"] / 1e6 / max(report["seconds"], 1e-9)
    line = (f"verified {report['files']} shard files ({report['tokens']:,} tokens, {report['bytes'] / 1e6:.1f} MB) "
            f"in {report['seconds']:.2f} s ({rate:.0f} MB/s)")
    if report.get("other_files"):
        line += f", and {report['other_files']} tokenizer and task files"
    if report["unverified"]:
        line += (f"; {len(report['unverified'])} have no checksum in manifest.json (written by an older "
                 "`prepare`), only their sizes and token ids were checked")
    return line


def _silver_files(metas: dict) -> list[tuple[str, str]]:
    """(file, sha256) of the silver tasks: chemical NER has a file per split."""
    found = []
    for meta in metas.values():
        if "files" in meta:
            found += [(meta["files"][split], meta["sha256"][split]) for split in meta["files"]]
        else:
            found.append((meta["file"], meta["sha256"]))
    return found


def verify_prepared(directory) -> dict:
    """`prepare --verify DIR`: every shard (as verify_shards), tokenizer.json and each task file against
    the sha256 manifest.json records. DataError naming the first damaged file; a manifest without shard
    checksums is an error too (nothing could be verified)."""
    from biomamba.io import sha256_file

    directory = Path(directory)
    report = verify_shards(directory)
    if report["unverified"]:
        raise DataError(directory / "manifest.json", f"records no checksum for {len(report['unverified'])} shard "
                        f"files (an older `prepare` wrote it; e.g. {report['unverified'][0]}): they cannot be "
                        "verified; prepare the inputs again into a new directory to have them recorded")
    manifest = load_manifest(directory)
    recorded = [("tokenizer/tokenizer.json", manifest["tokenizer"].get("sha256"))]
    recorded += [(task["file"], task.get("sha256")) for task in manifest.get("tasks", {}).values()]
    recorded += _silver_files(manifest.get("silver_tasks", {}))
    for rel, sha in recorded:
        path = directory / rel
        if not path.is_file():
            raise DataError(path, "listed in manifest.json but missing; rerun `biomamba prepare` on this directory")
        if sha and sha256_file(path) != sha:
            raise DataError(path, "sha256 differs from the one manifest.json records: the file was changed or "
                                  "corrupted after `prepare` wrote it; rerun `biomamba prepare` on this directory")
    report["other_files"] = len(recorded)
    return report
