"""A BEIR-format retrieval dataset: corpus.jsonl, queries.jsonl, qrels/{split}.tsv.

  corpus.jsonl   {"_id", "title", "text", ...}      -> corpus[id] = {"title", "text"}
  queries.jsonl  {"_id", "text", ...}               -> queries[id] = text
  qrels/S.tsv    "query-id  corpus-id  score" rows (a header line is skipped) -> qrels[S][qid][did] = score
Ids are kept as strings. BEIR's evaluator drops a retrieved document whose id equals the query id, so
`check_ids` refuses datasets where a query shares an id with one of its relevant documents.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from biomamba.data.errors import DataError


@dataclasses.dataclass
class BeirDataset:
    corpus: dict  # id -> {"title", "text"}
    queries: dict  # id -> text
    qrels: dict  # split -> {query id -> {doc id -> int score}}


def _jsonl(path: Path):
    if not path.is_file():
        raise DataError(path, "missing")
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except ValueError as err:
                raise DataError(path, f"line {lineno}: not JSON ({err})") from None


def _qrels(path: Path) -> dict:
    out: dict = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            cols = line.rstrip("\n").split("\t")
            if not line.strip() or (lineno == 1 and not cols[-1].strip().lstrip("-").isdigit()):
                continue  # blank line or header ("query-id corpus-id score")
            if len(cols) < 3:
                raise DataError(path, f"line {lineno}: expected query-id, corpus-id, score")
            out.setdefault(cols[0], {})[cols[1]] = int(cols[-1])
    return out


def load_beir(directory, qrels: bool = True) -> BeirDataset:
    """Load a BEIR dataset directory (qrels=False reads only the corpus and queries)."""
    d = Path(directory)
    corpus = {str(r["_id"]): {"title": r.get("title") or "", "text": r.get("text") or ""} for r in _jsonl(d / "corpus.jsonl")}
    queries = {str(r["_id"]): r.get("text") or "" for r in _jsonl(d / "queries.jsonl")} if (d / "queries.jsonl").exists() else {}
    splits = {}
    if qrels:
        splits = {p.stem: _qrels(p) for p in sorted((d / "qrels").glob("*.tsv"))}
    return BeirDataset(corpus, queries, splits)


def corpus_pmids(dataset: BeirDataset) -> set[str]:
    """Corpus ids that are PMIDs (all digits), e.g. BEIR's BioASQ corpus."""
    return {i for i in dataset.corpus if i.isdigit()}


def check_ids(dataset: BeirDataset) -> None:
    """Raise if a query id equals one of its relevant documents' ids (BEIR would silently drop it)."""
    for split, qrels in dataset.qrels.items():
        for qid, docs in qrels.items():
            if qid in docs:
                raise DataError(f"qrels/{split}.tsv", f"query {qid!r} shares its id with a relevant document")
