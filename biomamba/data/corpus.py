"""The documents stage: from every unit's records to the corpus's documents, and their counts.

First one cheap pass over all PMIDs (updates.keep_masks) applies PubMed's update rules (general-text
units keep every record: no update rules, their keys are not PMIDs); then, in
parallel, a job per unit, from the record table alone (no text is read): which kept records are
documents, their split (a threshold on the stored PMID hash, exactly splits.split_of), whether
--exclude-pmids names them, the unit's counts and its train text bytes per tokenizer-sample bucket.
Each unit's documents go to a content-addressed docs file; the catalog, written last, lists them.
Rerunning it is cheap and rewrites only docs files whose content changed.
"""
from __future__ import annotations

import collections
from pathlib import Path

import numpy as np

from biomamba.data import store
from biomamba.data.pool import run_jobs
from biomamba.data.tokenizer_sample import SAMPLE_BUCKETS
from biomamba.data.splits import SPLITS
from biomamba.data.updates import keep_masks

_exclude = np.zeros(0, dtype=np.int64)  # sorted PMIDs of --exclude-pmids, set once per worker


def _set_exclusions(pmids: np.ndarray) -> None:
    global _exclude
    _exclude = pmids


def exclusion_array(pmids) -> np.ndarray:
    return np.array(sorted({int(p) for p in pmids if str(p).isdigit()}), dtype=np.int64)


def _split_codes(u: np.ndarray, val_fraction: float, test_fraction: float) -> np.ndarray:
    """splits.split_of on stored unit hashes: test below test_fraction, then val, then train."""
    codes = np.full(u.shape, store.SPLIT_CODE["train"], dtype=np.uint8)
    codes[u < test_fraction + val_fraction] = store.SPLIT_CODE["val"]
    codes[u < test_fraction] = store.SPLIT_CODE["test"]
    return codes


def _documents_job(job) -> dict:
    docs_dir, unit, categories, packed_mask, val_fraction, test_fraction = job
    t = store.load_table(docs_dir, unit, "pmid", "is_doc", "with_abstract", "text_bytes", "split_u",
                         "sample_bucket", "section_start", "section_category")
    mask = np.unpackbits(packed_mask, count=t["pmid"].size).astype(bool)
    rows = np.flatnonzero(mask & t["is_doc"])
    index = np.empty(rows.size, dtype=store.DOC_DTYPE)
    index["row"], index["split"] = rows, _split_codes(t["split_u"][rows], val_fraction, test_fraction)
    index["excluded"] = np.isin(t["pmid"][rows], _exclude)
    is_document = np.zeros(mask.size, dtype=bool)
    is_document[rows] = True
    sections = np.bincount(t["section_category"][np.repeat(is_document, np.diff(t["section_start"]))],
                           minlength=len(categories))
    pretrain = index["excluded"] == 0
    train = rows[pretrain & (index["split"] == store.SPLIT_CODE["train"])]
    histogram = np.bincount(t["sample_bucket"][train], weights=t["text_bytes"][train], minlength=SAMPLE_BUCKETS)
    return {"unit": unit, "docs": store.write_docs_index(docs_dir, unit, index), "documents": int(rows.size),
            "with_abstract": int(t["with_abstract"][rows].sum()), "excluded": int((~pretrain).sum()),
            "splits": np.bincount(index["split"][pretrain], minlength=len(SPLITS)).tolist(),
            "sections": {c: int(n) for c, n in zip(categories, sections) if n},
            "sample_histogram": histogram.astype(np.int64)}


def _load_events(docs_dir):
    def load(unit):
        t = store.load_table(docs_dir, unit, "pmid", "deleted_pmid", "deleted_before")
        return t["pmid"], t["deleted_pmid"], t["deleted_before"]
    return load


def documents_stage(out, parsed, val_fraction: float, test_fraction: float, exclude, workers: int = 1,
                    progress: bool = False) -> dict:
    """Write every unit's docs file and the catalog; return the counts, the catalog's units and the
    sample histogram: {documents, with_abstract, excluded, deleted, sections, splits, units, sample_histogram}."""
    docs_dir = Path(out) / store.DOCUMENTS_DIR
    pubmed = [p for p in parsed if p.input.kind != "text"]
    pubmed_masks, deleted = keep_masks([p.unit for p in pubmed], _load_events(docs_dir))
    keep = dict(zip((p.unit for p in pubmed), pubmed_masks))
    masks = [keep[p.unit] if p.unit in keep else np.packbits(np.ones(p.meta["records"], dtype=bool))
             for p in parsed]
    jobs = [(docs_dir, p.unit, p.meta["categories"], mask, val_fraction, test_fraction)
            for p, mask in zip(parsed, masks)]
    results = run_jobs(_documents_job, jobs, workers, "documents", progress,
                       weights=[p.meta["records"] for p in parsed], unit="record",
                       initializer=_set_exclusions, initargs=(exclusion_array(exclude),))
    catalog = [{"unit": r["unit"], "input": p.input.name, "kind": p.input.kind, "docs": r["docs"],
                "documents": r["documents"]}
               for p, r in zip(parsed, results)]
    store.write_catalog(docs_dir, catalog, {"val_fraction": val_fraction, "test_fraction": test_fraction})
    _remove_stale(docs_dir, catalog)
    sections = sum((collections.Counter(r["sections"]) for r in results), collections.Counter())
    return {"documents": sum(r["documents"] for r in results),
            "with_abstract": sum(r["with_abstract"] for r in results),
            "excluded": sum(r["excluded"] for r in results), "deleted": deleted,
            "sections": dict(sorted(sections.items())),
            "splits": {s: sum(r["splits"][i] for r in results) for i, s in enumerate(SPLITS)},
            "units": catalog,
            "sample_histogram": sum((r["sample_histogram"] for r in results), np.zeros(SAMPLE_BUCKETS, np.int64))}


def _remove_stale(docs_dir: Path, catalog: list[dict]) -> None:
    """Units of inputs no longer given, and docs files the catalog no longer names."""
    keep = {store.CATALOG} | {e["docs"] for e in catalog}
    for entry in catalog:
        keep |= {store.store_path(docs_dir, entry["unit"]).name, store.table_path(docs_dir, entry["unit"]).name,
                 store.meta_path(docs_dir, entry["unit"]).name}
    for path in docs_dir.iterdir():
        if path.is_file() and path.name not in keep:
            path.unlink()
