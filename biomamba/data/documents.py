"""Merge parsed MEDLINE files into the corpus: documents.jsonl, one final document per PMID.

PubMed's update rules, applied over files in name order and events in file order: a PMID's last
event wins; a record event keeps that record, a DeleteCitation event removes the PMID. Documents
are written in the order of their winning records (files in name order, records in file order),
which streams from the per-file caches without holding the corpus in memory.

Each line of documents.jsonl:
  {"pmid", "title", "abstract", "sections": [[label, nlm_category, text]], "year", "journal",
   "languages", "publication_types", "mesh": [[ui, name, major]], "split", "excluded"}
A record with neither title nor abstract is not a document. `excluded` marks PMIDs named by
--exclude-pmids: they keep their hash split (tasks use it) but never enter tokenizer or shards.
"""
from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Iterator

import numpy as np

from biomamba.io import atomic_open
from biomamba.data.errors import DataError
from biomamba.data.medline import MedlineRecord
from biomamba.data.parsing import ParsedFile
from biomamba.data.splits import SPLITS, split_of


def document_text(doc: dict) -> str:
    """The text a language model sees: title, newline, abstract (either may be empty)."""
    return "\n".join(part for part in (doc["title"], doc["abstract"]) if part)


def plain_abstract(doc: dict, keep=lambda category: True) -> str:
    """The abstract's section texts joined by spaces, without labels (what retrievers index), keeping
    the sections whose NlmCategory passes `keep`."""
    return " ".join(text for _, category, text in doc.get("sections", []) if text and keep(category))


def _pmid_ints(pmids, path) -> np.ndarray:
    try:
        return np.array([int(p) for p in pmids], dtype=np.int64)
    except ValueError:
        raise DataError(path, "a PMID is not a number") from None


def survivors(parsed: list[ParsedFile]) -> list[np.ndarray]:
    """Per file, a bool mask over its records: True where the record is its PMID's last event."""
    pmids, is_record, owner = [], [], []
    for f, pf in enumerate(parsed):
        events, kinds = [], []
        deletions = collections.deque(pf.meta["deletions"])
        for k, pmid in enumerate(pf.meta["pmids"] + [None]):
            while deletions and deletions[0][0] <= k:  # deletions that came before record k
                dels = deletions.popleft()[1]
                events += dels
                kinds += [-1] * len(dels)
            if pmid is not None:
                events.append(pmid)
                kinds.append(k)
        pmids.append(_pmid_ints(events, pf.path))
        is_record.append(np.array(kinds, dtype=np.int64))
        owner.append(np.full(len(events), f, dtype=np.int64))
    pmids, kinds, owner = (np.concatenate(a) if a else np.zeros(0, np.int64) for a in (pmids, is_record, owner))
    # Last occurrence of each PMID = first occurrence in the reversed event stream.
    _, first_rev = np.unique(pmids[::-1], return_index=True)
    last = len(pmids) - 1 - first_rev
    last = last[kinds[last] >= 0]  # drop PMIDs whose last event is a deletion
    masks = [np.zeros(pf.meta["records"], dtype=bool) for pf in parsed]
    for f, k in zip(owner[last], kinds[last]):
        masks[f][k] = True
    return masks


def _document(rec: MedlineRecord, split: str, excluded: bool) -> dict:
    return {"pmid": rec.pmid, "title": rec.title, "abstract": rec.abstract,
            "sections": [list(s) for s in rec.sections], "year": rec.year, "journal": rec.journal,
            "languages": rec.languages, "publication_types": rec.publication_types,
            "mesh": [list(m) for m in rec.mesh], "split": split, "excluded": excluded}


def _new_stats() -> dict:
    return {"documents": 0, "with_abstract": 0, "excluded": 0, "sections": collections.Counter(),
            "splits": {s: 0 for s in SPLITS}}


def write_documents(parsed: list[ParsedFile], out: Path, val_fraction: float, test_fraction: float,
                    exclude: set[str]) -> dict:
    """Write documents.jsonl; return counts {documents, with_abstract, excluded, sections, splits}."""
    masks = survivors(parsed)
    stats = _new_stats()
    with atomic_open(out, "w") as f:
        for pf, mask in zip(parsed, masks):
            with open(pf.records_path, encoding="utf-8") as lines:
                for keep, line in zip(mask, lines):
                    if keep:
                        _emit(MedlineRecord.from_json(json.loads(line)), f, stats, val_fraction,
                              test_fraction, exclude)
    stats["sections"] = dict(sorted(stats["sections"].items()))
    return stats


def _emit(rec, f, stats, val_fraction, test_fraction, exclude) -> None:
    if not rec.title and not rec.abstract:
        return
    split, excluded = split_of(rec.pmid, val_fraction, test_fraction), rec.pmid in exclude
    f.write(json.dumps(_document(rec, split, excluded), ensure_ascii=False) + "\n")
    stats["documents"] += 1
    stats["with_abstract"] += any(text for _, _, text in rec.sections)  # not just bare labels
    stats["sections"].update(s[1] for s in rec.sections if s[1])
    if excluded:
        stats["excluded"] += 1
    else:
        stats["splits"][split] += 1


DOCUMENTS = "documents.jsonl"


def is_prepared(data_dir) -> bool:
    """Whether `data_dir` holds documents written by `biomamba prepare`."""
    return (Path(data_dir) / DOCUMENTS).is_file()


def read_documents(data_dir, split: str | None = None, include_excluded: bool = True) -> Iterator[dict]:
    """The documents of a prepared directory, streamed in their stored order: the one way every
    consumer (tasks, evaluation, retrieval) reads them, whatever the layout on disk.

    `split`: train, val or test (None: all); `include_excluded=False` drops --exclude-pmids documents.
    Raises DataError at once when `data_dir` was never prepared.
    """
    if not is_prepared(data_dir):
        raise DataError(data_dir, f"not a prepared data directory (no {DOCUMENTS}); "
                                  "run `biomamba prepare --out DIR` first")
    return iter_documents(Path(data_dir) / DOCUMENTS, split, include_excluded)


def iter_documents(path, split: str | None = None, include_excluded: bool = True) -> Iterator[dict]:
    """Stream documents.jsonl, optionally only one split and/or without excluded PMIDs."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            doc = json.loads(line)
            if split is not None and doc["split"] != split:
                continue
            if not include_excluded and doc["excluded"]:
                continue
            yield doc
