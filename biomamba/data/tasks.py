"""Fine-tuning tasks built from the prepared MEDLINE documents, split by the same PMID hash.

sentence-roles.jsonl (PubMed-RCT style): every sentence of a structured abstract, labelled with its
  section's NlmCategory (BACKGROUND, OBJECTIVE, METHODS, RESULTS, CONCLUSIONS; UNASSIGNED and
  uncategorised sections dropped). Row: {"pmid", "position", "sentence", "label", "split"}, position =
  0-based index of the sentence among the abstract's kept sentences.
publication-types.jsonl: title + abstract of every document with an abstract, labelled with the
  first of PUBLICATION_CLASSES its publication types match (else "Journal Article", i.e. a primary
  research article). Row: {"pmid", "text", "label", "publication_types", "split"}.
Each task writes tasks/NAME.meta.json: {"task", "file", "rows", "sha256", "labels": {split: {label: n}}}.
Excluded PMIDs (--exclude-pmids) keep their rows: the exclusion is for pretraining only.
"""
from __future__ import annotations

import collections
import hashlib
import json
from pathlib import Path
from typing import Iterable, Iterator

from biomamba.io import atomic_open, write_json
from biomamba.data.documents import document_text, iter_documents
from biomamba.data.sentences import split_sentences
from biomamba.data.splits import SPLITS

ROLE_LABELS = ("BACKGROUND", "OBJECTIVE", "METHODS", "RESULTS", "CONCLUSIONS")
# Priority order: a Randomized Controlled Trial is also a Clinical Trial and a Journal Article.
PUBLICATION_CLASSES = ("Meta-Analysis", "Systematic Review", "Randomized Controlled Trial",
                       "Clinical Trial", "Review", "Case Reports", "Comparative Study", "Letter",
                       "Editorial", "Comment")
DEFAULT_CLASS = "Journal Article"


def sentence_role_rows(doc: dict) -> list[dict]:
    """Rows of one document; none unless it has a section with a role label."""
    rows = []
    for _, category, text in doc["sections"]:
        if category not in ROLE_LABELS:
            continue
        for sentence in split_sentences(text):
            rows.append({"pmid": doc["pmid"], "position": len(rows), "sentence": sentence,
                         "label": category, "split": doc["split"]})
    return rows


def publication_class(types: Iterable[str]) -> str:
    types = list(types)
    for cls in PUBLICATION_CLASSES:
        # "Clinical Trial, Phase II" counts as "Clinical Trial".
        if any(t == cls or t.startswith(cls + ",") for t in types):
            return cls
    return DEFAULT_CLASS


def publication_type_rows(doc: dict) -> list[dict]:
    if not any(text for _, _, text in doc["sections"]):
        return []
    return [{"pmid": doc["pmid"], "text": document_text(doc), "label": publication_class(doc["publication_types"]),
             "publication_types": doc["publication_types"], "split": doc["split"]}]


TASKS = {"sentence-roles": sentence_role_rows, "publication-types": publication_type_rows}


def write_task(name: str, documents: Iterator[dict], out_dir) -> dict:
    """Write tasks/NAME.jsonl and tasks/NAME.meta.json; return the meta."""
    out_dir = Path(out_dir)
    counts = {s: collections.Counter() for s in SPLITS}
    h, rows = hashlib.sha256(), 0
    with atomic_open(out_dir / f"{name}.jsonl", "w") as f:
        for doc in documents:
            for row in TASKS[name](doc):
                line = json.dumps(row, ensure_ascii=False) + "\n"
                f.write(line)
                h.update(line.encode("utf-8"))
                counts[row["split"]][row["label"]] += 1
                rows += 1
    meta = {"task": name, "file": f"tasks/{name}.jsonl", "rows": rows, "sha256": h.hexdigest(),
            "labels": {s: dict(sorted(c.items())) for s, c in counts.items()}}
    write_json(out_dir / f"{name}.meta.json", meta)
    return meta


def write_tasks(documents_path, out_dir) -> dict:
    """Build every task from documents.jsonl; return {name: meta}."""
    return {name: write_task(name, iter_documents(documents_path), out_dir) for name in TASKS}


def read_task(path, split: str | None = None) -> Iterator[dict]:
    """Stream a task file's rows, optionally one split."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if split is None or row["split"] == split:
                yield row
