"""Fine-tuning tasks built from the prepared MEDLINE documents, split by the same PMID hash.

sentence-roles.jsonl (PubMed-RCT style): every sentence of a structured abstract, labelled with its
  section's NlmCategory (BACKGROUND, OBJECTIVE, METHODS, RESULTS, CONCLUSIONS; UNASSIGNED and
  uncategorised sections dropped). Row: {"pmid", "position", "sentence", "label", "split"}, position =
  0-based index of the sentence among the abstract's kept sentences.
publication-types.jsonl: title + abstract of every document with an abstract, labelled with the
  first of PUBLICATION_CLASSES its publication types match (else "Journal Article", i.e. a primary
  research article). Row: {"pmid", "text", "label", "publication_types", "split"}.
Each task writes tasks/NAME.meta.json: {"task", "file", "rows", "sha256", "labels": {split: {label: n}}}.
Excluded PMIDs (--exclude-pmids) keep their rows: the exclusion is for pretraining only. Rows come in
read_documents order: a job per unit writes that unit's rows (DIR/.work/tasks/, until the files are
assembled), then each task file is their concatenation, written atomically; the stamp
(.stages/tasks.json) records each unit's byte range, so a rerun after an input was added copies
the unchanged units' rows from the last file instead of making them again.
"""
from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import shutil
from pathlib import Path
from typing import Iterable, Iterator

from tqdm import tqdm

from biomamba.io import atomic_open, sha256_file, write_json
from biomamba.data import stages, store
from biomamba.data.documents import document_text
from biomamba.data.pool import run_jobs
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


TASKS_FORMAT = 2  # bump when the rows of a task change
WORK_DIR = ".work/tasks"


def _fragment(out: Path, entry: dict, name: str) -> tuple[Path, Path]:
    """A unit's rows of one task, and their meta, named by the unit's (content-addressed) docs file."""
    stem = Path(entry["docs"]).stem
    return out / WORK_DIR / name / f"{stem}.jsonl", out / WORK_DIR / name / f"{stem}.meta.json"


def _fragment_job(job) -> None:
    """Write one unit's rows of every task (all its documents, excluded ones too), unless done."""
    out, entry = job
    if all(_fragment(out, entry, name)[1].is_file() for name in TASKS):
        return
    counts = {name: {s: collections.Counter() for s in SPLITS} for name in TASKS}
    with contextlib.ExitStack() as stack:
        files = {name: stack.enter_context(atomic_open(_fragment(out, entry, name)[0], "w")) for name in TASKS}
        docs = store.iter_unit_documents(out / store.DOCUMENTS_DIR, entry)
        for doc in docs:
            for name, make_rows in TASKS.items():
                for row in make_rows(doc):
                    files[name].write(json.dumps(row, ensure_ascii=False) + "\n")
                    counts[name][row["split"]][row["label"]] += 1
    for name in TASKS:
        labels = {s: dict(sorted(c.items())) for s, c in counts[name].items()}
        write_json(_fragment(out, entry, name)[1], {"rows": sum(sum(c.values()) for c in labels.values()),
                                                    "labels": labels})


def copy_range(src, start: int, length: int, dst, digest, bar) -> None:
    """Copy `length` bytes of `src` from `start` into `dst`, hashing and counting them."""
    src.seek(start)
    while length:
        block = src.read(min(length, 1 << 24))
        dst.write(block)
        digest.update(block)
        bar.update(len(block))
        length -= len(block)


def _reusable(out: Path, name: str, stamp: dict | None) -> dict:
    """{docs file: its range} of the task file the last run left, if that file is intact."""
    if not stamp or name not in (stamp.get("result") or {}).get("ranges", {}):
        return {}
    rel = f"tasks/{name}.jsonl"
    intact = (out / rel).is_file() and sha256_file(out / rel) == stamp["outputs"].get(rel)
    return {r["docs"]: r for r in stamp["result"]["ranges"][name]} if intact else {}


def _assemble(out: Path, name: str, units: list[dict], old: dict, progress: bool = False) -> tuple[dict, list[dict]]:
    """tasks/NAME.jsonl from each unit's rows: the last run's file range where the unit is
    unchanged, else its fragment. Returns the meta and the units' ranges."""
    path, digest, ranges, offset = out / "tasks" / f"{name}.jsonl", hashlib.sha256(), [], 0
    labels = {s: collections.Counter() for s in SPLITS}
    with contextlib.ExitStack() as stack:
        bar = stack.enter_context(tqdm(desc=f"write tasks/{name}.jsonl", unit="B", unit_scale=True,
                                       disable=not progress))
        previous = stack.enter_context(open(path, "rb")) if old else None
        f = stack.enter_context(atomic_open(path, "wb"))
        for entry in units:
            if entry["docs"] in old:
                part = dict(old[entry["docs"]], offset=offset)
                copy_range(previous, old[entry["docs"]]["offset"], part["length"], f, digest, bar)
            else:
                rows_path, meta_path = _fragment(out, entry, name)
                part = dict(json.loads(meta_path.read_text()), docs=entry["docs"], offset=offset,
                            length=rows_path.stat().st_size)
                with open(rows_path, "rb") as rows:
                    copy_range(rows, 0, part["length"], f, digest, bar)
            for split, counts in part["labels"].items():
                labels[split].update(counts)
            ranges.append(part)
            offset += part["length"]
    meta = {"task": name, "file": f"tasks/{name}.jsonl", "rows": sum(r["rows"] for r in ranges),
            "sha256": digest.hexdigest(), "labels": {s: dict(sorted(c.items())) for s, c in labels.items()}}
    write_json(out / "tasks" / f"{name}.meta.json", meta)
    return meta, ranges


def write_tasks(out, units: list[dict], workers: int = 1, progress: bool = False) -> dict:
    """Every task file from the catalog's units (made, reused or patched); return {name: meta}.

    Rows are made per unit in parallel, then concatenated in unit order into one file per task.
    A unit whose documents did not change since the last run is copied from that run's file.
    """
    out = Path(out)
    key = stages.stage_key("tasks", TASKS_FORMAT, [e["docs"] for e in units])
    metas = stages.done(out, "tasks", key)
    if metas is not None:
        return metas["metas"]
    stamp = stages.previous(out, "tasks")
    old = {name: _reusable(out, name, stamp) for name in TASKS}
    todo = [e for e in units if any(e["docs"] not in old[name] for name in TASKS)]
    run_jobs(_fragment_job, [(out, e) for e in todo], workers, "tasks", progress,
             weights=[e["documents"] for e in todo], unit="doc")
    metas, ranges = {}, {}
    for name in TASKS:
        metas[name], ranges[name] = _assemble(out, name, units, old[name], progress)
    outputs = [m["file"] for m in metas.values()] + [f"tasks/{n}.meta.json" for n in metas]
    stages.mark_done(out, "tasks", key, outputs, {"metas": metas, "ranges": ranges},
                     hashes={m["file"]: m["sha256"] for m in metas.values()})
    shutil.rmtree(out / WORK_DIR, ignore_errors=True)
    return metas


def read_task(path, split: str | None = None) -> Iterator[dict]:
    """Stream a task file's rows, optionally one split."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if split is None or row["split"] == split:
                yield row
