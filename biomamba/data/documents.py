"""What a document is, and the one way to read the documents of a prepared directory.

A document is the final version of a PMID (PubMed's update rules, see updates.py) that has a title
or an abstract. `read_documents(data_dir, split, include_excluded)` streams them as dicts:
  {"pmid", "title", "abstract", "sections": [[label, nlm_category, text]], "year", "journal",
   "languages", "publication_types", "mesh": [[ui, name, major]], "chemicals": [[ui, name]],
   "split", "excluded"}
("chemicals" is absent, not empty, in a directory prepared before chemical lists were read: a
consumer that needs it says so, see silver_tasks.require_chemicals.)
in the order of their winning records (inputs in name order, records in file order), whatever the
layout on disk (store.py: per-input record stores; a directory prepared before that layout holds
one documents.jsonl, which is read as it is). `excluded` marks PMIDs named by --exclude-pmids:
they keep their hash split (tasks use it) but never enter the tokenizer or the shards.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from biomamba.data import store
from biomamba.data.errors import DataError
from biomamba.data.splits import SPLITS

LEGACY_DOCUMENTS = "documents.jsonl"


def document_text(doc: dict) -> str:
    """The text a language model sees: title, newline, abstract (either may be empty)."""
    return "\n".join(part for part in (doc["title"], doc["abstract"]) if part)


def plain_abstract(doc: dict, keep=lambda category: True) -> str:
    """The abstract's section texts joined by spaces, without labels (what retrievers index), keeping
    the sections whose NlmCategory passes `keep`."""
    return " ".join(text for _, category, text in doc.get("sections", []) if text and keep(category))


def _catalog_path(data_dir) -> Path:
    return Path(data_dir) / store.DOCUMENTS_DIR / store.CATALOG


def is_prepared(data_dir) -> bool:
    """Whether `data_dir` holds documents written by `biomamba prepare`."""
    return _catalog_path(data_dir).is_file() or (Path(data_dir) / LEGACY_DOCUMENTS).is_file()


def read_documents(data_dir, split: str | None = None, include_excluded: bool = True) -> Iterator[dict]:
    """The documents of a prepared directory, streamed in their stored order: the one way every
    consumer (tasks, evaluation, retrieval) reads them, whatever the layout on disk.

    `split`: train, val or test (None: all); `include_excluded=False` drops --exclude-pmids documents.
    Raises DataError at once when `data_dir` was never prepared or `split` is not a split.
    """
    if split is not None and split not in SPLITS:
        raise DataError(data_dir, f"unknown split {split!r} (expected one of {', '.join(SPLITS)})")
    if _catalog_path(data_dir).is_file():
        return _read_units(Path(data_dir) / store.DOCUMENTS_DIR, split, include_excluded)
    if (Path(data_dir) / LEGACY_DOCUMENTS).is_file():
        return iter_documents(Path(data_dir) / LEGACY_DOCUMENTS, split, include_excluded)
    raise DataError(data_dir, f"not a prepared data directory (no {store.DOCUMENTS_DIR}/{store.CATALOG}); "
                              "run `biomamba prepare --out DIR` first")


def _read_units(docs_dir: Path, split, include_excluded) -> Iterator[dict]:
    for entry in store.read_catalog(docs_dir)["units"]:
        yield from store.iter_unit_documents(docs_dir, entry, split, include_excluded)


def iter_documents(path, split: str | None = None, include_excluded: bool = True) -> Iterator[dict]:
    """Stream a documents.jsonl of the earlier layout, optionally one split and/or without excluded."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            doc = json.loads(line)
            if split is not None and doc["split"] != split:
                continue
            if not include_excluded and doc["excluded"]:
                continue
            yield doc
