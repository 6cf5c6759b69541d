"""Packed token shards: each split is one flat token stream, EOS after every document, cut into files.

Layout in DIR (listed in manifest.json "shards", in stream order):
  {split}_{k:05d}.bin   raw little-endian uint16 (vocab <= 65536) or uint32; shard_tokens per file,
                        the last one shorter. A document may continue from one shard into the next.
The stream of a split is its documents in documents.jsonl order (see documents.py), excluded PMIDs
left out. Each file is written under a temporary name and renamed when complete.

Reading (for the training loop):
    shards = TokenShards(DIR, "train")
    shards.tokens[i:j]   # np.ndarray of token ids, across shard boundaries
    len(shards), shards.dtype, shards.eos_id, shards.manifest
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from tqdm import tqdm

from biomamba.io import atomic_open
from biomamba.data.manifest import load_manifest

DEFAULT_SHARD_TOKENS = 1 << 26  # 64M tokens: 128 MB of uint16 per file


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def shard_name(split: str, k: int) -> str:
    return f"{split}_{k:05d}.bin"


def encode_documents(tokenizer, texts: Iterable[str], eos_id: int, dtype, batch: int = 1024) -> Iterator[np.ndarray]:
    """Yield one token array per batch of documents: doc1 EOS doc2 EOS ... (no other specials)."""
    buf = []
    for text in texts:
        buf.append(text)
        if len(buf) == batch:
            yield _encode_batch(tokenizer, buf, eos_id, dtype)
            buf = []
    if buf:
        yield _encode_batch(tokenizer, buf, eos_id, dtype)


def _encode_batch(tokenizer, texts, eos_id, dtype) -> np.ndarray:
    encodings = tokenizer.encode_batch(texts, add_special_tokens=False)  # threads inside tokenizers
    ids = []
    for enc in encodings:
        ids.extend(enc.ids)
        ids.append(eos_id)
    return np.asarray(ids, dtype=dtype)


def _write_shard(out_dir: Path, split: str, k: int, tokens: np.ndarray) -> dict:
    name = shard_name(split, k)
    data = tokens.tobytes()
    with atomic_open(out_dir / name, "wb") as f:
        f.write(data)
    return {"file": name, "split": split, "tokens": int(tokens.size), "sha256": hashlib.sha256(data).hexdigest()}


def write_split(out_dir, split: str, chunks: Iterable[np.ndarray], shard_tokens: int = DEFAULT_SHARD_TOKENS,
                total_docs: int | None = None, progress: bool = True, docs_per_chunk: int = 1024) -> list[dict]:
    """Pack a split's token chunks into shards of `shard_tokens`; return their manifest entries."""
    out_dir = Path(out_dir)
    entries, pending, size = [], [], 0
    bar = tqdm(total=total_docs, unit="doc", desc=f"pack {split}", disable=not progress)
    for chunk in chunks:
        pending.append(chunk)
        size += chunk.size
        bar.update(min(docs_per_chunk, bar.total - bar.n) if bar.total else docs_per_chunk)
        while size >= shard_tokens:
            stream = np.concatenate(pending)
            entries.append(_write_shard(out_dir, split, len(entries), stream[:shard_tokens]))
            pending, size = [stream[shard_tokens:]], stream.size - shard_tokens
    if size or not entries:
        stream = np.concatenate(pending) if pending else np.zeros(0, dtype=np.uint16)
        entries.append(_write_shard(out_dir, split, len(entries), stream))
    bar.close()
    return entries


class ConcatTokens:
    """Read-only view of several 1-D memmaps as one array: len() and [i] / [i:j] (step 1)."""

    def __init__(self, parts: list[np.ndarray], dtype):
        self.parts, self.dtype = parts, np.dtype(dtype)
        self.offsets = np.cumsum([0] + [p.size for p in parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

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

    def _range(self, start: int, stop: int) -> np.ndarray:
        out = []
        for p, lo in zip(self.parts, self.offsets[:-1]):
            a, b = max(start - lo, 0), min(stop - lo, p.size)
            if a < b:
                out.append(p[a:b])
        return np.concatenate(out) if out else np.zeros(0, self.dtype)


class TokenShards:
    """A split's packed tokens, memory-mapped. `.tokens`: the whole stream, sliceable."""

    def __init__(self, directory, split: str):
        self.directory = Path(directory)
        self.manifest = load_manifest(self.directory)
        self.split = split
        self.dtype = np.dtype(self.manifest["dtype"])
        self.eos_id = self.manifest["tokenizer"]["eos_id"]
        entries = [e for e in self.manifest["shards"] if e["split"] == split]
        self.files = [self.directory / e["file"] for e in entries]
        parts = [np.memmap(f, dtype=self.dtype, mode="r") if e["tokens"] else np.zeros(0, self.dtype)
                 for f, e in zip(self.files, entries)]
        self.tokens = ConcatTokens(parts, self.dtype)

    def __len__(self) -> int:
        return len(self.tokens)

    def __repr__(self) -> str:
        return f"TokenShards({str(self.directory)!r}, {self.split!r}: {len(self)} tokens in {len(self.files)} files)"
