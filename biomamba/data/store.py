"""The documents directory, DIR/documents/: what `prepare` keeps of each input, and documents read back.

Per input file, a unit named UNIT = "{input name}.{first 16 hex digits of its sha256}":
  UNIT.jsonl       the record store: one parsed record per line, in file order: {"pmid", "title",
                   "sections": [[label, nlm_category, text]], "languages", "year",
                   "publication_types", "mesh": [[ui, name, major]], "journal", "chemicals":
                   [[ui, name]]}. The abstract is not stored: it is joined from the sections when a
                   document is read. A store written before chemicals were parsed (reader version
                   < 3) has no "chemicals": its documents lack the key (never an empty list), and
                   `prepare` reparses such a unit, since its meta's reader differs.
  UNIT.table.npz   per record (see parsing.py): pmid, byte offset in the store, is_doc,
                   with_abstract, text_bytes, split_u, sample_bucket, section NlmCategory codes;
                   and the PMIDs of the file's DeleteCitation blocks with their positions
  UNIT.meta.json   written last (its presence means the unit is complete): input, sha256, reader,
                   records, category names
  UNIT.docs-H.npy  the unit's documents, in record order: (row, split, excluded) per record that
                   is its PMID's final version and has a title or an abstract. H hashes the content,
                   so the catalog never names a file that a later run is rewriting.
  catalog.json     the units in read order and their docs files, written last by the documents stage
The store is the only copy of the text: token shards and task files are made from it.
"""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Iterator

import numpy as np

from biomamba.io import atomic_open, write_json
from biomamba.data.errors import DataError
from biomamba.data.medline import join_sections
from biomamba.data.splits import SPLITS

DOCUMENTS_DIR = "documents"
CATALOG = "catalog.json"
DOC_DTYPE = np.dtype([("row", "<u4"), ("split", "u1"), ("excluded", "?")])
SPLIT_CODE = {s: i for i, s in enumerate(SPLITS)}


def unit_id(name: str, sha: str) -> str:
    return f"{name}.{sha[:16]}"


def store_path(docs_dir, unit: str) -> Path:
    return Path(docs_dir) / f"{unit}.jsonl"


def table_path(docs_dir, unit: str) -> Path:
    return Path(docs_dir) / f"{unit}.table.npz"


def meta_path(docs_dir, unit: str) -> Path:
    return Path(docs_dir) / f"{unit}.meta.json"


def load_table(docs_dir, unit: str, *columns: str) -> dict[str, np.ndarray]:
    with np.load(table_path(docs_dir, unit)) as table:
        return {c: table[c] for c in columns}


def write_docs_index(docs_dir, unit: str, index: np.ndarray) -> str:
    """Write a unit's documents (a DOC_DTYPE array) under a content-addressed name; return the name."""
    buffer = io.BytesIO()
    np.save(buffer, index.astype(DOC_DTYPE, copy=False), allow_pickle=False)
    data = buffer.getvalue()
    name = f"{unit}.docs-{hashlib.sha256(data).hexdigest()[:16]}.npy"
    path = Path(docs_dir) / name
    if not path.is_file() or path.read_bytes() != data:
        with atomic_open(path, "wb") as f:
            f.write(data)
    return name


def load_docs_index(docs_dir, entry: dict) -> np.ndarray:
    return np.load(Path(docs_dir) / entry["docs"])


def write_catalog(docs_dir, units: list[dict], options: dict) -> None:
    """units: [{"unit", "input", "docs", "documents"}] in read order."""
    write_json(Path(docs_dir) / CATALOG, {"format": 2, "units": units, "options": options})


def read_catalog(docs_dir) -> dict:
    path = Path(docs_dir) / CATALOG
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataError(path, f"unreadable documents catalog ({err})") from None


def _document(record: dict, split: str, excluded: bool) -> dict:
    doc = {"pmid": record["pmid"], "title": record["title"], "abstract": join_sections(record["sections"]),
           "sections": record["sections"], "year": record["year"], "journal": record["journal"],
           "languages": record["languages"], "publication_types": record["publication_types"],
           "mesh": record["mesh"], "split": split, "excluded": excluded}
    if "chemicals" in record:  # absent from stores of reader version < 3: missing, not empty
        doc["chemicals"] = record["chemicals"]
    return doc


def select(index: np.ndarray, split: str | None = None, include_excluded: bool = True) -> np.ndarray:
    keep = np.ones(len(index), dtype=bool)
    if split is not None:
        keep &= index["split"] == SPLIT_CODE[split]
    if not include_excluded:
        keep &= ~index["excluded"]
    return index[keep]


def iter_unit_documents(docs_dir, entry: dict, split: str | None = None, include_excluded: bool = True,
                        index: np.ndarray | None = None) -> Iterator[dict]:
    """The documents of one catalog entry, in record order (optionally one split, without excluded)."""
    docs_dir = Path(docs_dir)
    index = select(load_docs_index(docs_dir, entry) if index is None else index, split, include_excluded)
    if not len(index):
        return
    offsets = load_table(docs_dir, entry["unit"], "offset")["offset"].tolist()
    with open(store_path(docs_dir, entry["unit"]), "rb") as store:
        for row, code, excluded in index.tolist():
            store.seek(offsets[row])  # within the read buffer when rows are near: no system call
            record = json.loads(store.read(offsets[row + 1] - offsets[row]))
            yield _document(record, SPLITS[code], excluded)
