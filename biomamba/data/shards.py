"""Packed token shards: each split is one flat token stream, EOS after every document, in files.

Layout in DIR (listed in manifest.json "shards", in stream order: train, val, test; within a split,
units in read order, then k):
  shards/{split}/{UNIT}.{k:04d}.bin   raw little-endian uint16 (vocab <= 65536) or uint32: one
                        unit's (input file's) documents of that split, cut every shard_tokens
                        tokens (a document may continue into the next file). A unit with no
                        document in a split has no file there.
The stream of a split is its documents in read_documents order, excluded PMIDs left out: the same
stream, whatever the number of files. A job makes one unit's files in one pass over its documents,
routing each to its split, writes each file atomically, and stamps the unit when all are done
(.stages/shards/UNIT.json); a rerun reuses a unit whose documents, tokenizer and shard size match.

Reading (for the training loop):
    shards = TokenShards(DIR, "train")
    shards.tokens[i:j]   # np.ndarray of token ids, across file boundaries
    len(shards), shards.dtype, shards.eos_id, shards.manifest
"""
from __future__ import annotations

import collections
import contextlib
import functools
import hashlib
import sys
from pathlib import Path

import numpy as np

from biomamba.io import atomic_open
from biomamba.data import stages, store
from biomamba.data.documents import document_text
from biomamba.data.manifest import load_manifest
from biomamba.data.pool import run_jobs
from biomamba.data.splits import SPLITS

DEFAULT_SHARD_TOKENS = 1 << 26  # 64M tokens: 128 MB of uint16 per file at most
SHARDS_DIR = "shards"
SHARDS_FORMAT = 2  # bump when what goes into a shard changes
ENCODE_BATCH = 1024  # documents per tokenizer call


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def shard_name(split: str, unit: str, k: int) -> str:
    return f"{SHARDS_DIR}/{split}/{unit}.{k:04d}.bin"


class ShardWriter:
    """One unit's token stream of one split, cut into files of `shard_tokens`, each written atomically."""

    def __init__(self, out_dir: Path, split: str, unit: str, shard_tokens: int):
        self.out_dir, self.split, self.unit, self.shard_tokens = out_dir, split, unit, shard_tokens
        self.entries: list[dict] = []
        self._stack = self._file = self._hash = None
        self._count = 0

    def write(self, tokens: np.ndarray) -> None:
        while tokens.size:
            if self._file is None:
                self._start()
            part, tokens = tokens[:self.shard_tokens - self._count], tokens[self.shard_tokens - self._count:]
            data = part.tobytes()
            self._file.write(data)
            self._hash.update(data)
            self._count += part.size
            if self._count == self.shard_tokens:
                self._finish()

    def close(self) -> list[dict]:
        if self._file is not None:
            self._finish()
        return self.entries

    def abort(self) -> None:
        """Drop the file being written (its temporary name), as an exception passes."""
        if self._stack is not None:
            self._stack.__exit__(*sys.exc_info())
            self._stack = self._file = None

    def _start(self) -> None:
        self._name = shard_name(self.split, self.unit, len(self.entries))
        self._stack = contextlib.ExitStack()
        self._file = self._stack.enter_context(atomic_open(self.out_dir / self._name, "wb"))
        self._hash, self._count = hashlib.sha256(), 0

    def _finish(self) -> None:
        self._stack.close()  # fsync and rename: the file now exists under its final name
        self.entries.append({"file": self._name, "split": self.split, "tokens": self._count,
                             "sha256": self._hash.hexdigest()})
        self._stack = self._file = None


WORD_CACHE = 200_000  # BPE results kept per word: 10k (the default) misses often on PubMed's vocabulary


@functools.lru_cache(maxsize=2)
def _tokenizer(path: str, sha256: str):
    from tokenizers import Tokenizer
    tokenizer = Tokenizer.from_file(path)
    if hasattr(tokenizer.model, "_resize_cache"):  # tokenizers >= 0.20 (BPE); ~15% faster encoding here
        tokenizer.model._resize_cache(WORD_CACHE)
    return tokenizer


def _encode(tokenizer, texts: list[str], eos_id: int) -> list[list[int]]:
    # encode_batch_fast skips the character offsets we never use (~25% faster); same ids.
    encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)
    return [enc.ids + [eos_id] for enc in encode(texts, add_special_tokens=False)]


def _write_unit(out: Path, entry: dict, tok: dict, dtype: np.dtype, shard_tokens: int) -> list[dict]:
    """Encode one unit's documents (excluded left out), each to its split's writer."""
    tokenizer = _tokenizer(tok["path"], tok["sha256"])
    writers = {s: ShardWriter(out, s, entry["unit"], shard_tokens) for s in SPLITS}
    docs = store.iter_unit_documents(out / store.DOCUMENTS_DIR, entry, include_excluded=False)
    try:
        while batch := [doc for _, doc in zip(range(ENCODE_BATCH), docs)]:
            by_split = collections.defaultdict(list)
            for doc, ids in zip(batch, _encode(tokenizer, [document_text(d) for d in batch], tok["eos_id"])):
                by_split[doc["split"]].extend(ids)
            for split, ids in by_split.items():
                writers[split].write(np.asarray(ids, dtype=dtype))
        return [e for s in SPLITS for e in writers[s].close()]
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise


def _shards_job(job) -> list[dict]:
    out, entry, tok, dtype, shard_tokens = job
    name, key = f"{SHARDS_DIR}/{entry['unit']}", unit_key(entry, tok, dtype, shard_tokens)
    entries = stages.done(out, name, key)
    if entries is None:
        entries = _write_unit(out, entry, tok, dtype, shard_tokens)
        stages.mark_done(out, name, key, [e["file"] for e in entries], entries,
                         hashes={e["file"]: e["sha256"] for e in entries})
    return entries


def unit_key(entry: dict, tok: dict, dtype: np.dtype, shard_tokens: int) -> str:
    """Everything a unit's shards depend on: its documents (content-addressed), tokenizer, format."""
    return stages.stage_key("shards", SHARDS_FORMAT, entry["docs"], tok["sha256"], tok["eos_id"],
                            dtype.str, shard_tokens)


def write_shards(out, units: list[dict], tok: dict, dtype, shard_tokens: int = DEFAULT_SHARD_TOKENS,
                 workers: int = 1, progress: bool = False) -> list[dict]:
    """Every unit's shards (made or reused), in parallel; return the manifest's entries in stream order.

    tok: {"path": tokenizer.json, "sha256", "eos_id"}. Files and stamps of units not in `units` go.
    """
    out = Path(out)
    jobs = [(out, entry, tok, np.dtype(dtype), shard_tokens) for entry in units]
    per_unit = run_jobs(_shards_job, jobs, workers, "shards", progress,
                        weights=[e["documents"] for e in units], unit="doc")
    entries = [e for split in SPLITS for unit in per_unit for e in unit if e["split"] == split]
    _remove_stale(out, {e["file"] for e in entries}, {entry["unit"] for entry in units})
    return entries


def _remove_stale(out: Path, files: set[str], units: set[str]) -> None:
    for path in (out / SHARDS_DIR).rglob("*.bin"):
        if str(path.relative_to(out)) not in files:
            path.unlink()
    for stamp in (out / stages.STAGES_DIR / SHARDS_DIR).glob("*.json"):
        if stamp.stem not in units:
            stamp.unlink()


class ConcatTokens:
    """Read-only view of several token files as one array: len() and [i] / [i:j] (step 1).

    A file is memory-mapped when first read, at most MAX_OPEN at a time: a full baseline has
    thousands of files, more than a process may hold open.
    """

    MAX_OPEN = 64

    def __init__(self, files: list[Path], sizes: list[int], dtype):
        self.files, self.dtype = list(files), np.dtype(dtype)
        self.offsets = np.cumsum([0] + [int(s) for s in sizes])
        self._open: collections.OrderedDict = collections.OrderedDict()

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getstate__(self):  # pickled (e.g. into a DataLoader worker) without its open maps
        return dict(self.__dict__, _open=collections.OrderedDict())

    def __getitem__(self, key):
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step != 1:
                raise ValueError("ConcatTokens supports step-1 slices only")
            return self._range(start, max(start, stop))
        i = int(key) + (len(self) if int(key) < 0 else 0)
        if not 0 <= i < len(self):
            raise IndexError(key)
        return self._range(i, i + 1)[0]

    def _part(self, k: int) -> np.ndarray:
        if k in self._open:
            self._open.move_to_end(k)
        else:
            self._open[k] = np.memmap(self.files[k], dtype=self.dtype, mode="r")
            if len(self._open) > self.MAX_OPEN:
                self._open.popitem(last=False)
        return self._open[k]

    def _range(self, start: int, stop: int) -> np.ndarray:
        out = []
        k = int(np.searchsorted(self.offsets, start, side="right")) - 1
        while k < len(self.files) and self.offsets[k] < stop:
            lo, size = int(self.offsets[k]), int(self.offsets[k + 1] - self.offsets[k])
            a, b = max(start - lo, 0), min(stop - lo, size)
            if a < b:
                out.append(self._part(k)[a:b])
            k += 1
        return np.concatenate(out) if out else np.zeros(0, self.dtype)


class TokenShards:
    """A split's packed tokens, memory-mapped. `.tokens`: the whole stream, sliceable."""

    def __init__(self, directory, split: str):
        self.directory = Path(directory)
        self.manifest = load_manifest(self.directory)
        self.split = split
        self.dtype = np.dtype(self.manifest["dtype"])
        self.eos_id = self.manifest["tokenizer"]["eos_id"]
        entries = [e for e in self.manifest["shards"] if e["split"] == split and e["tokens"]]
        self.files = [self.directory / e["file"] for e in entries]
        self.tokens = ConcatTokens(self.files, [e["tokens"] for e in entries], self.dtype)

    def __len__(self) -> int:
        return len(self.tokens)

    def __repr__(self) -> str:
        return f"TokenShards({str(self.directory)!r}, {self.split!r}: {len(self)} tokens in {len(self.files)} files)"
