"""The tokenizer's training text: a deterministic hash sample of the train documents, capped in bytes.

Every PMID falls in one of SAMPLE_BUCKETS buckets by a hash independent of the split hash
(sha256 of "tokenizer-sample:" + PMID). The documents stage counts the train text's UTF-8 bytes
per bucket; the sample is every train document (excluded PMIDs left out) in the first `buckets`
buckets, `buckets` the largest number whose text fits in the cap. So the sample never exceeds
the cap, takes all the text when all of it fits (then the tokenizer is the one trained on the
whole train split), and, like the splits, does not depend on file order or worker count.
A job writes its unit's sampled texts, one JSON string a line, in document order; the trainer
streams them back in unit order.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterator

import numpy as np

from biomamba.io import atomic_open
from biomamba.data import store
from biomamba.data.documents import document_text
from biomamba.data.pool import run_jobs

SAMPLE_BUCKETS = 4096
DEFAULT_SAMPLE_BYTES = 1_000_000_000  # ~1 GB of text: the BPE trainer's memory grows with it
RULE = "train documents (excluded left out) whose sha256('tokenizer-sample:'+PMID) bucket of 4096 is below `buckets`"


def sample_bucket(pmid: str) -> int:
    digest = hashlib.sha256(b"tokenizer-sample:" + str(pmid).strip().encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") * SAMPLE_BUCKETS >> 64


def sample_buckets(histogram: np.ndarray, cap_bytes: int) -> int:
    """How many buckets, from the first, the sample takes: the most whose bytes fit in `cap_bytes`."""
    return int(np.searchsorted(np.cumsum(histogram), cap_bytes, side="right"))


def sample_path(work_dir: Path, entry: dict, buckets: int) -> Path:
    return Path(work_dir) / f"{Path(entry['docs']).stem}.b{buckets}.jsonl"


def _sample_job(job) -> tuple[int, int]:
    """Write one unit's sampled texts (unless already there); return (documents, bytes)."""
    docs_dir, entry, buckets, work_dir = job
    out = sample_path(work_dir, entry, buckets)
    index = store.select(store.load_docs_index(docs_dir, entry), "train", include_excluded=False)
    bucket_of = store.load_table(docs_dir, entry["unit"], "sample_bucket")["sample_bucket"]
    index = index[bucket_of[index["row"]] < buckets]
    if not out.is_file():
        with atomic_open(out, "w") as f:
            for doc in store.iter_unit_documents(docs_dir, entry, index=index):
                f.write(json.dumps(document_text(doc), ensure_ascii=False) + "\n")
    text_bytes = store.load_table(docs_dir, entry["unit"], "text_bytes")["text_bytes"]
    return len(index), int(text_bytes[index["row"]].sum())


def write_sample(docs_dir, units: list[dict], buckets: int, work_dir, workers: int, progress: bool):
    """Every unit's sample file, in parallel; return ([paths in unit order], documents, bytes)."""
    jobs = [(Path(docs_dir), entry, buckets, Path(work_dir)) for entry in units]
    counts = run_jobs(_sample_job, jobs, workers, "tokenizer sample", progress,
                      weights=[e["documents"] for e in units], unit="doc")
    paths = [sample_path(work_dir, entry, buckets) for entry in units]
    return paths, sum(c[0] for c in counts), sum(c[1] for c in counts)


def sample_texts(paths) -> Iterator[str]:
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)
