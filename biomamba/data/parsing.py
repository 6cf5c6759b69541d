"""Parse every input into its unit of DIR/documents/ (see store.py), in parallel over files.

A job hashes its input, and unless the unit's meta already matches that sha256 and reader, reads
the file once (MEDLINE XML with medline.py, dataset rows with hf.py) and writes, atomically:
(general text with hf.py's text reader) the record store (JSONL), the record table (what later stages select on, per record), the meta last.
A rerun reuses every complete unit, so a killed `prepare` resumes here file by file.

Record table columns (npz, one entry per record unless noted):
  pmid            int64 (-1 for a general-text record: its key is a string, and no update rule reads it)
  offset          int64, records + 1: byte offsets of the store's lines
  is_doc          a title or an abstract (a record without either is not a document)
  with_abstract   an abstract section with text (not just a bare label)
  text_bytes      UTF-8 bytes of document_text (what the tokenizer sample counts)
  split_u         splits.unit_hash(pmid): the split is a threshold on it
  sample_bucket   sample.sample_bucket(pmid): the tokenizer sample is a threshold on it
  section_start   int64, records + 1, into section_category: the record's NlmCategory codes
  section_category int16, one per section with an NlmCategory (names in the meta's "categories")
  deleted_pmid, deleted_before   one per PMID of a DeleteCitation block, which came after the
                  file's first `deleted_before` records
"""
from __future__ import annotations

import array
import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from biomamba.io import atomic_open, sha256_file, write_arrays, write_json
from biomamba.data import hf, store
from biomamba.data.documents import document_text
from biomamba.data.errors import DataError
from biomamba.data.inputs import Input
from biomamba.data.medline import Deletion, MedlineRecord, iter_medline
from biomamba.data.pool import run_jobs
from biomamba.data.tokenizer_sample import sample_bucket
from biomamba.data.splits import unit_hash
from biomamba.data.updates import MAX_PMID

READER_VERSION = 3  # 3 added chemicals; bump when MedlineRecord's fields, their extraction or the table's columns change


@dataclasses.dataclass
class ParsedInput:
    """An input and its unit in DIR/documents (or the error that stopped its parse)."""

    input: Input
    sha256: str | None = None
    unit: str | None = None
    meta: dict | None = None
    error: str | None = None


def reader_of(item: Input, hf_fields: dict, text_column: str = "text") -> dict:
    """What, besides the file's bytes, determines its unit."""
    reader = {"kind": item.kind, "version": READER_VERSION}
    if item.kind == "text":
        return dict(reader, column=text_column)
    return reader if item.kind == "medline" else dict(reader, fields=hf_fields)


def _pmid_int(pmid: str, where) -> int:
    if not pmid.isdigit() or int(pmid) >= MAX_PMID:
        raise DataError(where, f"PMID {pmid[:40]!r} is not a number below {MAX_PMID}")
    return int(pmid)


class RecordColumns:
    """The record table, filled one record at a time in typed arrays (8 bytes a value)."""

    def __init__(self, where, keyed_by_pmid: bool = True):
        self.where, self.keyed_by_pmid = where, keyed_by_pmid
        self.pmid, self.offset, self.text_bytes = array.array("q"), array.array("q", [0]), array.array("q")
        self.is_doc, self.with_abstract = array.array("b"), array.array("b")
        self.split_u, self.sample_bucket = array.array("d"), array.array("H")
        self.section_start, self.section_category = array.array("q", [0]), array.array("h")
        self.deleted_pmid, self.deleted_before = array.array("q"), array.array("q")
        self.categories: dict[str, int] = {}

    def add(self, rec: MedlineRecord) -> bytes:
        """Append a record's columns; return its store line."""
        line = (json.dumps(store_record(rec), ensure_ascii=False) + "\n").encode("utf-8")
        abstract = rec.abstract
        self.pmid.append(_pmid_int(rec.pmid, self.where) if self.keyed_by_pmid else -1)
        self.offset.append(self.offset[-1] + len(line))
        self.is_doc.append(bool(rec.title or abstract))
        self.with_abstract.append(any(text for _, _, text in rec.sections))
        self.text_bytes.append(len(document_text({"title": rec.title, "abstract": abstract}).encode("utf-8")))
        self.split_u.append(unit_hash(rec.pmid))
        self.sample_bucket.append(sample_bucket(rec.pmid))
        for _, category, _ in rec.sections:
            if category:
                self.section_category.append(self.categories.setdefault(category, len(self.categories)))
        self.section_start.append(len(self.section_category))
        return line

    def delete(self, pmids) -> None:
        for pmid in pmids:
            self.deleted_pmid.append(_pmid_int(pmid, self.where))
            self.deleted_before.append(len(self.pmid))

    def arrays(self) -> dict[str, np.ndarray]:
        out = {name: np.frombuffer(getattr(self, name), dtype=dtype) if len(getattr(self, name)) else
               np.zeros(0, dtype=dtype) for name, dtype in self.DTYPES.items()}
        out["is_doc"], out["with_abstract"] = out["is_doc"].astype(bool), out["with_abstract"].astype(bool)
        return out

    DTYPES = {"pmid": np.int64, "offset": np.int64, "is_doc": np.int8, "with_abstract": np.int8,
              "text_bytes": np.int64, "split_u": np.float64, "sample_bucket": np.uint16,
              "section_start": np.int64, "section_category": np.int16, "deleted_pmid": np.int64,
              "deleted_before": np.int64}


def store_record(rec: MedlineRecord) -> dict:
    """A record as its store line holds it (no abstract string: the sections are the abstract)."""
    return {"pmid": rec.pmid, "title": rec.title, "sections": [list(s) for s in rec.sections],
            "languages": rec.languages, "year": rec.year, "publication_types": rec.publication_types,
            "mesh": [list(m) for m in rec.mesh], "journal": rec.journal,
            "chemicals": [list(c) for c in rec.chemicals]}


def _items(item: Input, reader: dict):
    if item.kind == "medline":
        return iter_medline(item.path)
    if item.kind == "text":
        return hf.iter_text_records(item.path, reader["column"])
    return hf.iter_records(item.path, reader["fields"])


def parse_unit(item: Input, sha: str, docs_dir: Path, reader: dict) -> dict:
    """Read one input into its unit; return the meta. Raises DataError for a bad file."""
    unit = store.unit_id(item.name, sha)
    columns = RecordColumns(item.path, keyed_by_pmid=item.kind != "text")
    with atomic_open(store.store_path(docs_dir, unit), "wb") as out:
        for found in _items(item, reader):
            if isinstance(found, Deletion):
                columns.delete(found.pmids)
            else:
                out.write(columns.add(found))
    write_arrays(store.table_path(docs_dir, unit), **columns.arrays())
    meta = {"input": item.name, "sha256": sha, "reader": reader, "records": len(columns.pmid),
            "deletions": len(columns.deleted_pmid), "categories": list(columns.categories)}
    write_json(store.meta_path(docs_dir, unit), meta)
    return meta


def _complete_meta(docs_dir: Path, unit: str, sha: str, reader: dict) -> dict | None:
    try:
        meta = json.loads(store.meta_path(docs_dir, unit).read_text())
    except (OSError, ValueError):
        return None
    complete = meta.get("sha256") == sha and meta.get("reader") == reader
    return meta if complete and store.store_path(docs_dir, unit).is_file() else None


def _parse_job(job) -> ParsedInput:
    item, docs_dir, reader, skip_bad_files = job
    result = ParsedInput(item)
    try:
        try:
            result.sha256 = sha256_file(item.path)
        except OSError as err:
            raise DataError(item.path, f"cannot read: {err.strerror or err}") from None
        result.unit = store.unit_id(item.name, result.sha256)
        result.meta = (_complete_meta(docs_dir, result.unit, result.sha256, reader)
                       or parse_unit(item, result.sha256, docs_dir, reader))
    except DataError as err:
        if not skip_bad_files:
            raise
        result.meta, result.error = None, str(err)
    return result


def parse_inputs(inputs: list[Input], docs_dir, workers: int = 1, progress: bool = False,
                 skip_bad_files: bool = False, hf_fields: dict | None = None,
                 text_column: str = "text") -> list[ParsedInput]:
    """Parse (or reuse) every input; return a ParsedInput per input, in the given order.

    A bad file raises DataError, unless skip_bad_files, in which case its ParsedInput carries `error`.
    """
    docs_dir = Path(docs_dir)
    docs_dir.mkdir(parents=True, exist_ok=True)
    fields = hf_fields or hf.parse_fields(None)
    jobs = [(item, docs_dir, reader_of(item, fields, text_column), skip_bad_files) for item in inputs]
    sizes = [os.path.getsize(item.path) if item.path.is_file() else 0 for item in inputs]
    return run_jobs(_parse_job, jobs, workers, "parse", progress, weights=sizes, unit="B")
