"""Train/val/test membership as a pure function of the PMID, so splits never move when files are added.

u = first 8 bytes of sha256(key, stripped, UTF-8) / 2**64 (uniform in [0, 1)); u < test -> "test",
u < test + val -> "val", else "train". Test is carved first so changing the val fraction never
moves a document into or out of test. The key is a PMID for documents; fine-tuning files without a
split column use the same rule on an example id (biomamba.data.task_loaders).
"""
from __future__ import annotations

import hashlib

SPLITS = ("train", "val", "test")


def unit_hash(key) -> float:
    """The key's position in [0, 1), stable across runs, machines and Python versions (a PMID is
    ASCII, so its UTF-8 bytes are the ASCII ones the prepared splits were drawn with)."""
    digest = hashlib.sha256(str(key).strip().encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_of(key, val_fraction: float = 0.05, test_fraction: float = 0.05) -> str:
    check_fractions(val_fraction, test_fraction)
    u = unit_hash(key)
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"need 0 <= val, test and val + test < 1; got val={val_fraction}, test={test_fraction}")
