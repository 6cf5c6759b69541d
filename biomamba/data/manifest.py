"""DIR/manifest.json: what `prepare` produced, written last, so its presence means "complete".

Keys (all required by `load_manifest`):
  records        PubmedArticle records read (all files, repeats included)
  documents      unique, non-deleted PMIDs with a title or an abstract
  with_abstract  of those, with a non-empty abstract
  deleted        PMIDs named by DeleteCitation
  excluded       documents named by --exclude-pmids (in no split's shards)
  sections       {NlmCategory: abstract sections among documents}
  splits         {"train"|"val"|"test": {"documents", "tokens"}}
  tokenizer      {"vocab_size", "sha256", "eos_token", "eos_id", "source"}
  dtype          "uint16" | "uint32" (little-endian)
  shards         [{"file", "split", "tokens", "sha256"}] in stream order
  inputs         [{"file", "sha256"}] in read order;  skipped_files: [{"file", "error"}]
  tasks          {name: {"file", "rows", "sha256", "labels": {split: {label: count}}}}
  options        the options that shaped the outputs;  document_order: how documents are ordered
"""
from __future__ import annotations

import json
from pathlib import Path

from biomamba.data.errors import DataError

REQUIRED = ("records", "documents", "with_abstract", "deleted", "splits", "tokenizer", "shards",
            "inputs", "dtype")
MANIFEST = "manifest.json"


def load_manifest(directory) -> dict:
    """Read and check DIR/manifest.json; DataError naming the file if it is missing or incomplete."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise DataError(path, "missing: run `biomamba prepare --out DIR` (to completion) first")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise DataError(path, f"not valid JSON: {err}") from None
    missing = [k for k in REQUIRED if k not in manifest]
    if missing:
        raise DataError(path, f"incomplete manifest, missing keys: {', '.join(missing)}")
    absent = [s["file"] for s in manifest["shards"] if not (path.parent / s["file"]).is_file()]
    if absent:
        raise DataError(path, f"shard files listed but absent: {', '.join(absent)}")
    return manifest
