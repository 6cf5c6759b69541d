"""Silver tasks from the MEDLINE indexers' own lists: chemical NER and multi-label MeSH, by `prepare`.

chemical-ner (BLURB/CoNLL layout): tasks/chemical-ner/train.tsv, devel.tsv (the val split), test.tsv,
  one `token<TAB>tag` per line and a blank line after every sentence (the last one too). A citation's
  ChemicalList names (NameOfSubstance) are found in its own title and abstract by the rules of
  chemical_mentions.py (tokens `\\w+|[^\\w\\s]`, case-insensitive, whole tokens, leftmost-longest without
  overlaps, short and generic names skipped) and tagged IOB2 (B-Chemical, I-Chemical, O). Sentences:
  split_sentences of the title, then of each abstract section's text (labels such as "METHODS:" are not
  text). A citation enters with all its sentences, those without a mention included (as BC5CDR keeps
  whole abstracts), when at least one of its names is found; a citation whose list is empty or never
  found is left out (its O tags would say nothing). tasks/chemical-ner.meta.json: per split documents,
  sentences, rows (token lines), entities and sentences_with_entities; the sha256 of each file; the
  rules, and the mentions each rule removed.
mesh-labels.jsonl: every document with an abstract and at least one MeSH heading. Row: {"pmid", "text"
  (title + abstract, as publication-types), "labels" (those of its descriptors among the N most frequent
  on the train split, in that order), "mesh" (all its descriptor names), "split"}. A document with none
  of the N keeps its row with "labels": [] (the task is to say which of the N apply, none included); a
  citation not yet indexed (no MeSH) has no row. tasks/mesh-labels.meta.json: {"task", "file", "rows",
  "sha256", "label_names" (the N, most frequent first, ties by name), "labels": {split: {label: n}},
  "rows_per_split", "without_label"}.
Only MEDLINE XML inputs have these lists; a store without the "chemicals" field (prepared before it
was read) is an error, never an empty list. As in tasks.py: a job per unit writes its part of each file
(DIR/.work/silver/), the files are their concatenation in read_documents order, written atomically; the
stamp (.stages/silver-tasks.json) keeps each unit's byte ranges, so a rerun after an input was added
copies the unchanged units' parts from the last files (the MeSH labels are chosen again over all).
"""
from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import shutil
from pathlib import Path

from tqdm import tqdm

from biomamba.io import atomic_open, sha256_file, write_json
from biomamba.data import stages, store
from biomamba.data.chemical_mentions import (ENTITY, GENERIC_NAMES, MIN_NAME_CHARS, Dictionary, kept_names,
                                             name_key, tag_tokens, tokenize)
from biomamba.data.documents import document_text
from biomamba.data.errors import DataError
from biomamba.data.parsing import READER_VERSION
from biomamba.data.pool import run_jobs
from biomamba.data.sentences import split_sentences
from biomamba.data.splits import SPLITS
from biomamba.data.tasks import copy_range

SILVER_FORMAT = 1  # bump when the rows of either task change
DEFAULT_MESH_LABELS = 20
NER_TASK, MESH_TASK = "chemical-ner", "mesh-labels"
NER_FILES = {"train": "train.tsv", "val": "devel.tsv", "test": "test.tsv"}  # BLURB's names
WORK_DIR = ".work/silver"
STAMP = "silver-tasks"
NER_RULES = {
    "text": "title, then each abstract section's text; sentences by biomamba.data.sentences.split_sentences",
    "tokens": r"\w+|[^\w\s] (runs of word characters; any other non-space character alone)",
    "names": "the citation's own ChemicalList NameOfSubstance entries",
    "case": "insensitive (str.lower on text and name tokens)",
    "boundaries": "whole tokens only",
    "overlaps": "leftmost-longest; entities never overlap or nest",
    "skipped": f"names under {MIN_NAME_CHARS} characters; generic group names {list(GENERIC_NAMES)}",
    "citations": "those with at least one mention, with all their sentences",
    "tags": f"IOB2: B-{ENTITY}, I-{ENTITY}, O",
}
_NER_STATS = ("documents", "sentences", "rows", "entities", "sentences_with_entities")
_REMOVED = ("citations_with_list", "citations_without_mention", "skipped_short", "skipped_generic", "overlapping")


def require_chemicals(doc: dict, where) -> list:
    if "chemicals" not in doc:
        raise DataError(where, f"PMID {doc['pmid']} has no chemicals field: this directory was prepared "
                               "before chemical lists were read; rerun `biomamba prepare` on it")
    return doc["chemicals"]


def citation_sentences(doc: dict) -> list[list[str]]:
    """The tokens of each sentence of the title, then of each abstract section."""
    texts = [doc["title"]] + [text for _, _, text in doc["sections"]]
    return [tokens for text in texts for sentence in split_sentences(text) if (tokens := tokenize(sentence))]


def _mentions_of(names: list[str], sentences: list[list[str]]) -> int:
    dictionary = Dictionary.of_names(names)
    return sum(len(dictionary.candidates(list(name_key(tokens)))) for tokens in sentences) if names else 0


def chemical_sentences(doc: dict, removed: collections.Counter, where=None) -> list[tuple[list[str], list[str]]]:
    """(tokens, tags) of every sentence of a citation with a mention, else []; `removed` counts what
    each rule took away (mentions, or citations)."""
    chemicals = require_chemicals(doc, where)
    if not chemicals:
        return []
    removed["citations_with_list"] += 1
    kept, skipped = kept_names(name for _, name in chemicals)
    sentences = citation_sentences(doc)
    for reason, names in skipped.items():
        removed[f"skipped_{reason}"] += _mentions_of(names, sentences)
    dictionary, tagged = Dictionary.of_names(kept), []
    for tokens in sentences:
        tags, overlapping = tag_tokens(tokens, dictionary)
        removed["overlapping"] += overlapping
        tagged.append((tokens, tags))
    if not any(tag != "O" for _, tags in tagged for tag in tags):
        removed["citations_without_mention"] += 1
        return []
    return tagged


def conll_block(tokens: list[str], tags: list[str]) -> str:
    """One sentence in the BLURB/CoNLL layout: `token<TAB>tag` lines, then a blank line."""
    return "".join(f"{token}\t{tag}\n" for token, tag in zip(tokens, tags)) + "\n"


def mesh_row(doc: dict) -> dict | None:
    """A document's row without its labels (they depend on the train split's counts), or None."""
    if not any(text for _, _, text in doc["sections"]) or not doc["mesh"]:
        return None
    names = list(dict.fromkeys(name for _, name, _ in doc["mesh"]))
    return {"pmid": doc["pmid"], "text": document_text(doc), "mesh": names, "split": doc["split"]}


def labelled(row: dict, label_names: list[str]) -> dict:
    have = set(row["mesh"])
    return {"pmid": row["pmid"], "text": row["text"], "labels": [n for n in label_names if n in have],
            "mesh": row["mesh"], "split": row["split"]}


def top_labels(train_counts: collections.Counter, n: int) -> list[str]:
    """The n descriptors on the most train documents; ties broken by name."""
    return [name for name, _ in sorted(train_counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


# ---- the prepare stage: a part per unit, then one file per task and split ----

def _part(out: Path, entry: dict, name: str) -> Path:
    """A unit's part of one output (named by its content-addressed docs file): chemical-ner.SPLIT.tsv,
    mesh-labels.jsonl, or meta.json (written last: the part is complete)."""
    return out / WORK_DIR / Path(entry["docs"]).stem / name


def _ner_part(split: str) -> str:
    return f"{NER_TASK}.{split}.tsv"


def _count_sentences(stats: collections.Counter, tagged) -> None:
    stats["documents"] += 1
    for tokens, tags in tagged:
        entities = sum(tag.startswith("B-") for tag in tags)
        stats["sentences"] += 1
        stats["rows"] += len(tokens)
        stats["entities"] += entities
        stats["sentences_with_entities"] += entities > 0


def _part_job(job) -> None:
    """Write one unit's parts of both tasks (all its documents, excluded ones too), unless done."""
    out, entry = job
    if _part(out, entry, "meta.json").is_file():
        return
    docs_dir = out / store.DOCUMENTS_DIR
    where = store.store_path(docs_dir, entry["unit"])
    ner = {s: collections.Counter() for s in SPLITS}
    descriptors = {s: collections.Counter() for s in SPLITS}
    removed = collections.Counter()
    with contextlib.ExitStack() as stack:
        files = {s: stack.enter_context(atomic_open(_part(out, entry, _ner_part(s)), "w")) for s in SPLITS}
        mesh = stack.enter_context(atomic_open(_part(out, entry, f"{MESH_TASK}.jsonl"), "w"))
        for doc in store.iter_unit_documents(docs_dir, entry):
            tagged = chemical_sentences(doc, removed, where)
            if tagged:
                files[doc["split"]].write("".join(conll_block(*sentence) for sentence in tagged))
                _count_sentences(ner[doc["split"]], tagged)
            row = mesh_row(doc)
            if row is not None:
                mesh.write(json.dumps(row, ensure_ascii=False) + "\n")
                descriptors[doc["split"]].update(row["mesh"])
    write_json(_part(out, entry, "meta.json"), {
        "ner": {s: {k: ner[s][k] for k in _NER_STATS} for s in SPLITS},
        "removed": {k: removed[k] for k in _REMOVED},
        "train_descriptors": dict(descriptors["train"])})


def _intact(out: Path, stamp: dict | None) -> dict:
    """{docs file: its ranges} from the last run's stamp, if that run used these rules and reader
    and its files are intact; else {}."""
    result = (stamp or {}).get("result") or {}
    if result.get("format") != [SILVER_FORMAT, READER_VERSION]:
        return {}
    for rel, sha in stamp["outputs"].items():
        if rel.endswith((".tsv", ".jsonl")) and (not (out / rel).is_file() or sha256_file(out / rel) != sha):
            return {}
    return result["units"]


def _ner_file(split: str) -> str:
    return f"tasks/{NER_TASK}/{NER_FILES[split]}"


def _concatenate(out: Path, rel: str, units: list[dict], old: dict, part_name: str, key: str,
                 progress: bool) -> tuple[str, dict]:
    """Write `rel` as the units' parts in order (the last run's range of a reused unit, else its part
    file); return its sha256 and {docs: (offset, length)}."""
    digest, ranges, offset = hashlib.sha256(), {}, 0
    with contextlib.ExitStack() as stack:
        bar = stack.enter_context(tqdm(desc=f"write {rel}", unit="B", unit_scale=True, disable=not progress))
        previous = stack.enter_context(open(out / rel, "rb")) if any(e["docs"] in old for e in units) else None
        f = stack.enter_context(atomic_open(out / rel, "wb"))
        for entry in units:
            if entry["docs"] in old:
                start, length = old[entry["docs"]][key]
                copy_range(previous, start, length, f, digest, bar)
            else:
                part = _part(out, entry, part_name)
                length = part.stat().st_size
                with open(part, "rb") as src:
                    copy_range(src, 0, length, f, digest, bar)
            ranges[entry["docs"]] = (offset, length)
            offset += length
    return digest.hexdigest(), ranges


def _unit_summaries(out: Path, units: list[dict], old: dict) -> dict:
    """{docs: {"ner", "removed", "train_descriptors"?}}: the stamp's for a reused unit, else its part's
    meta (train descriptors of a reused unit are counted from the last file, see _train_descriptors)."""
    return {e["docs"]: old[e["docs"]]["summary"] if e["docs"] in old
            else json.loads(_part(out, e, "meta.json").read_text()) for e in units}


def _write_ner(out: Path, units: list[dict], old: dict, summaries: dict, progress: bool) -> tuple[dict, dict]:
    meta = {"task": NER_TASK, "format": "BLURB/CoNLL: token<TAB>tag per line, a blank line after every sentence",
            "files": {}, "sha256": {}, "splits": {}, "rules": NER_RULES,
            "removed": {k: sum(summaries[e["docs"]]["removed"][k] for e in units) for k in _REMOVED}}
    ranges = {}
    for split in SPLITS:
        rel = meta["files"][split] = _ner_file(split)
        meta["sha256"][split], ranges[split] = _concatenate(out, rel, units, old, _ner_part(split), split, progress)
        meta["splits"][split] = {k: sum(summaries[e["docs"]]["ner"][split][k] for e in units) for k in _NER_STATS}
    write_json(out / "tasks" / f"{NER_TASK}.meta.json", meta)
    return meta, ranges


def _train_descriptors(out: Path, units: list[dict], old: dict, summaries: dict) -> collections.Counter:
    """Documents per descriptor on the train split: from each new part's meta, and from the last
    file's rows for a reused unit (the stamp does not keep every unit's descriptor counts)."""
    counts = collections.Counter()
    previous = None
    with contextlib.ExitStack() as stack:
        for entry in units:
            if entry["docs"] not in old:
                counts.update(summaries[entry["docs"]]["train_descriptors"])
                continue
            previous = previous or stack.enter_context(open(out / "tasks" / f"{MESH_TASK}.jsonl", "rb"))
            start, length = old[entry["docs"]]["mesh"]
            previous.seek(start)
            for line in previous.read(length).splitlines():
                row = json.loads(line)
                if row["split"] == "train":
                    counts.update(row["mesh"])
    return counts


def _labelled_lines(out: Path, units: list[dict], old: dict, label_names: list[str], stack):
    """(docs, row) in file order: a reused unit's rows from the last file, a new unit's from its part."""
    previous = None
    for entry in units:
        if entry["docs"] in old:
            previous = previous or stack.enter_context(open(out / "tasks" / f"{MESH_TASK}.jsonl", "rb"))
            start, length = old[entry["docs"]]["mesh"]
            previous.seek(start)
            lines = previous.read(length).splitlines()
        else:
            lines = _part(out, entry, f"{MESH_TASK}.jsonl").read_bytes().splitlines()
        for line in lines:
            yield entry["docs"], labelled(json.loads(line), label_names)


def _write_mesh(out: Path, units: list[dict], old: dict, summaries: dict, n_labels: int) -> tuple[dict, dict]:
    label_names = top_labels(_train_descriptors(out, units, old, summaries), n_labels)
    labels = {s: collections.Counter() for s in SPLITS}
    rows, without = collections.Counter(), collections.Counter()
    digest, ranges, offset = hashlib.sha256(), {}, 0
    with contextlib.ExitStack() as stack:
        # rows are read from the last file while the new one is written beside it, then renamed over it
        f = stack.enter_context(atomic_open(out / "tasks" / f"{MESH_TASK}.jsonl", "wb"))
        for docs, row in _labelled_lines(out, units, old, label_names, stack):
            line = (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
            f.write(line)
            digest.update(line)
            start = ranges.setdefault(docs, [offset, 0])
            start[1] += len(line)
            offset += len(line)
            rows[row["split"]] += 1
            without[row["split"]] += not row["labels"]
            labels[row["split"]].update(row["labels"])
    for entry in units:
        ranges.setdefault(entry["docs"], [offset, 0])
    meta = {"task": MESH_TASK, "file": f"tasks/{MESH_TASK}.jsonl", "rows": sum(rows.values()),
            "sha256": digest.hexdigest(), "label_names": label_names, "chosen_on": "train",
            "labels": {s: {n: labels[s][n] for n in label_names} for s in SPLITS},
            "rows_per_split": {s: rows[s] for s in SPLITS}, "without_label": {s: without[s] for s in SPLITS}}
    write_json(out / "tasks" / f"{MESH_TASK}.meta.json", meta)
    return meta, ranges


def write_silver_tasks(out, units: list[dict], workers: int = 1, progress: bool = False,
                       mesh_labels: int = DEFAULT_MESH_LABELS) -> dict:
    """Both silver tasks from the catalog's MEDLINE units (made, reused or patched); return {name: meta}."""
    out = Path(out)
    key = stages.stage_key(STAMP, SILVER_FORMAT, READER_VERSION, mesh_labels, [(e["unit"], e["docs"]) for e in units])
    result = stages.done(out, STAMP, key)
    if result is not None:
        return result["metas"]
    old = _intact(out, stages.previous(out, STAMP))
    todo = [e for e in units if e["docs"] not in old]
    run_jobs(_part_job, [(out, e) for e in todo], workers, "silver tasks", progress,
             weights=[e["documents"] for e in todo], unit="doc")
    summaries = _unit_summaries(out, units, old)
    ner, ner_ranges = _write_ner(out, units, old, summaries, progress)
    mesh, mesh_ranges = _write_mesh(out, units, old, summaries, mesh_labels)
    kept = {e["docs"]: {"summary": {k: v for k, v in summaries[e["docs"]].items() if k != "train_descriptors"},
                        "mesh": mesh_ranges[e["docs"]], **{s: ner_ranges[s][e["docs"]] for s in SPLITS}}
            for e in units}
    metas = {NER_TASK: ner, MESH_TASK: mesh}
    outputs = [_ner_file(s) for s in SPLITS] + [mesh["file"]] + [f"tasks/{n}.meta.json" for n in metas]
    hashes = {**{_ner_file(s): ner["sha256"][s] for s in SPLITS}, mesh["file"]: mesh["sha256"]}
    stages.mark_done(out, STAMP, key, outputs, {"metas": metas, "units": kept,
                                                "format": [SILVER_FORMAT, READER_VERSION]}, hashes=hashes)
    shutil.rmtree(out / WORK_DIR, ignore_errors=True)
    return metas
