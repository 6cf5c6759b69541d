"""BEIR-style retrieval evaluation: dense (BioMamba), BM25 and their hybrid, scored by trec_eval.

Tasks (each a RetrievalTask: queries, corpus, qrels, query instruction):
  title-abstract    held-out PubMed (the prepared data's test split): title -> its abstract
  conclusion-rest   held-out structured abstracts: the CONCLUSIONS sections -> the other sections
  beir:NAME         a BEIR directory (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv)
  bioasq            BioASQ task B JSON: question -> its documents, over a given corpus
Ids: every query id becomes "q:ID" and every document id "d:ID" inside a task, so a query can never
share an id with a document (BEIR's evaluator silently drops such documents).

Metrics (pytrec_eval, i.e. trec_eval's code): nDCG@10 = ndcg_cut_10, Recall@10 = recall_10,
Recall@100 = recall_100, MRR@10 = recip_rank over each query's top 10. trec_eval ranks a run by
score descending and breaks score ties by document id descending (string order); MRR@10 truncates
each run to its first 10 documents in that same order before recip_rank. A query with judgments but
no retrieved documents scores 0 (trec_eval itself would skip it); queries without a positive
judgment are left out. Hybrid = reciprocal rank fusion, score(d) = sum_s 1 / (60 + rank_s(d)) over
the dense and BM25 top 100.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from biomamba.data.documents import plain_abstract
from biomamba.data.pairs import INSTRUCTIONS, pubmed_pairs
from biomamba.encoding import DEFAULT_INSTRUCTION
from biomamba.retrieval import BM25, RetrievalError, top_k

METRICS = {"nDCG@10": "ndcg_cut_10", "Recall@1": "recall_1", "Recall@10": "recall_10", "Recall@100": "recall_100"}
MEASURES = {"ndcg_cut.10", "recall.1,10,100", "recip_rank"}
DEPTH = 100  # documents retrieved per query
RRF_K = 60


# ----------------------------------------------------------------------------- metrics

def trec_order(scores: dict) -> list[tuple[str, float]]:
    """A query's run {doc: score} in trec_eval's order: score descending, ties by doc id descending."""
    return sorted(scores.items(), key=lambda item: (item[1], item[0]), reverse=True)


def truncate_run(run: dict, depth: int) -> dict:
    return {qid: dict(trec_order(docs)[:depth]) for qid, docs in run.items()}


def evaluate_run(qrels: dict, run: dict) -> dict:
    """Mean nDCG@10, Recall@1/10/100, MRR@10 over the queries with a positive judgment.

    qrels {qid: {doc: int grade}}, run {qid: {doc: float score}}. Returns the means plus "queries"
    and "per_query" {qid: {metric: value}}. Raises RetrievalError on run queries absent from qrels.
    """
    import pytrec_eval

    qrels = {q: {d: int(g) for d, g in docs.items()} for q, docs in qrels.items()
             if any(g > 0 for g in docs.values())}
    if not qrels:
        raise RetrievalError("the qrels hold no query with a relevant (grade > 0) document")
    unknown = sorted(set(run) - set(qrels))
    if unknown:
        raise RetrievalError(f"{len(unknown)} run queries are not in the qrels, e.g. {unknown[:3]}")
    run = {q: {d: float(s) for d, s in docs.items()} for q, docs in run.items() if docs}
    full = pytrec_eval.RelevanceEvaluator(qrels, MEASURES).evaluate(run)
    top10 = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(truncate_run(run, 10))
    per_query = {}
    for qid in qrels:
        row = {name: full.get(qid, {}).get(key, 0.0) for name, key in METRICS.items()}
        row["MRR@10"] = top10.get(qid, {}).get("recip_rank", 0.0)
        per_query[qid] = row
    names = [*METRICS, "MRR@10"]
    means = {name: float(np.mean([row[name] for row in per_query.values()])) for name in names}
    return {**means, "queries": len(per_query), "per_query": per_query}


def reciprocal_rank_fusion(runs: list[dict], k: int = RRF_K, depth: int = DEPTH) -> dict:
    """Fuse runs by RRF: each document scores sum over runs of 1 / (k + its 1-based rank)."""
    fused: dict = {}
    for run in runs:
        for qid, docs in run.items():
            target = fused.setdefault(qid, {})
            for rank, (doc, _) in enumerate(trec_order(docs)[:depth], start=1):
                target[doc] = target.get(doc, 0.0) + 1.0 / (k + rank)
    return truncate_run(fused, depth)


# ----------------------------------------------------------------------------- tasks

@dataclasses.dataclass
class RetrievalTask:
    name: str
    instruction: str
    queries: dict  # "q:ID" -> text
    corpus: dict  # "d:ID" -> {"title", "text"}
    qrels: dict  # "q:ID" -> {"d:ID": grade}

    def check(self) -> "RetrievalTask":
        """Refuse empty tasks and qrels naming unknown queries or documents."""
        if not self.queries or not self.corpus or not self.qrels:
            raise RetrievalError(f"task {self.name}: {len(self.queries)} queries, {len(self.corpus)} "
                                 f"documents, {len(self.qrels)} judged queries; all must be > 0")
        bad_q = sorted(q for q in self.qrels if q not in self.queries)
        bad_d = sorted({d for docs in self.qrels.values() for d in docs if d not in self.corpus})
        if bad_q or bad_d:
            raise RetrievalError(f"task {self.name}: qrels name {len(bad_q)} unknown query ids "
                                 f"{[q[2:] for q in bad_q[:3]]} and {len(bad_d)} unknown document ids "
                                 f"{[d[2:] for d in bad_d[:3]]}")
        self.queries = {q: t for q, t in self.queries.items() if q in self.qrels}
        return self


def pubmed_task(documents, kind: str, max_queries: int | None = None, distractors=()) -> RetrievalTask:
    """A held-out task from document rows: each pair's query against all pairs' passages.

    distractors: more document rows (e.g. other splits) whose passages of the same kind join the
    corpus, never as a relevant document; a larger corpus makes a lexically easy task harder.
    """
    pairs = pubmed_pairs(documents, kind)
    corpus = {f"d:{pmid}": passage for pmid, _, passage in pairs}
    for pmid, _, passage in pubmed_pairs(distractors, kind):
        corpus.setdefault(f"d:{pmid}", passage)
    chosen = pairs if max_queries is None else pairs[:max_queries]
    name = kind if not distractors else f"{kind}+distractors"
    return RetrievalTask(name, INSTRUCTIONS[kind], {f"q:{pmid}": q for pmid, q, _ in chosen}, corpus,
                         {f"q:{pmid}": {f"d:{pmid}": 1} for pmid, _, _ in chosen}).check()


def heldout_tasks(data_dir, split: str = "test", kinds=("title-abstract", "conclusion-rest"),
                  max_queries: int | None = None, distractor_splits=()) -> list[RetrievalTask]:
    """Queries from one split of a prepared dir; the corpus is that split plus distractor_splits."""
    if split in distractor_splits:
        raise RetrievalError(f"distractor splits {list(distractor_splits)} must not include the query split {split!r}")
    docs = list(_prepared(data_dir, split))
    distractors = [d for s in distractor_splits for d in _prepared(data_dir, s)]
    return [pubmed_task(docs, kind, max_queries, distractors) for kind in kinds]


def beir_task(directory, split: str = "test", instruction: str | None = None) -> RetrievalTask:
    from biomamba.data.beir import load_beir
    from biomamba.data.errors import DataError

    directory = Path(directory)
    qrels_file = directory / "qrels" / f"{split}.tsv"
    if not qrels_file.is_file():
        found = sorted(p.name for p in (directory / "qrels").glob("*.tsv")) if (directory / "qrels").is_dir() else []
        raise RetrievalError(f"{directory}: missing qrels/{split}.tsv (found: {', '.join(found) or 'none'})")
    try:
        data = load_beir(directory)
    except DataError as error:
        raise RetrievalError(str(error)) from None
    name = directory.name.lower()
    return RetrievalTask(
        f"beir:{directory.name}", instruction or INSTRUCTIONS.get(name, DEFAULT_INSTRUCTION),
        {f"q:{q}": t for q, t in data.queries.items()}, {f"d:{d}": doc for d, doc in data.corpus.items()},
        {f"q:{q}": {f"d:{d}": g for d, g in docs.items()} for q, docs in data.qrels[split].items()}).check()


def _prepared(data_dir, split=None):
    """Documents of a prepared dir; its DataError as a RetrievalError (the command's one error type)."""
    from biomamba.data.documents import read_documents
    from biomamba.data.errors import DataError

    try:
        return read_documents(data_dir, split)
    except DataError as error:
        raise RetrievalError(str(error)) from None


def load_corpus(path) -> dict:
    """{id: {"title", "text"}} from a BEIR dir / corpus.jsonl, or a prepared data dir."""
    from biomamba.data.beir import load_beir
    from biomamba.data.documents import is_prepared

    path = Path(path)
    if path.name == "documents.jsonl":  # a prepared dir named by its documents file
        path = path.parent
    if path.is_dir() and is_prepared(path):
        return {d["pmid"]: {"title": d["title"], "text": plain_abstract(d)} for d in _prepared(path)}
    if path.is_dir():
        path = path / "corpus.jsonl"
    if not path.is_file() or path.name != "corpus.jsonl":
        raise RetrievalError(f"{path}: no such corpus (give a BEIR dir / corpus.jsonl or a prepared data dir)")
    return load_beir(path.parent, qrels=False).corpus


def bioasq_task(path, corpus_path) -> RetrievalTask:
    """BioASQ questions -> their documents; questions with no document in the corpus are dropped."""
    from biomamba.data.bioasq import load_bioasq
    from biomamba.data.errors import DataError

    try:
        questions = load_bioasq(path)
    except DataError as error:
        raise RetrievalError(str(error)) from None
    corpus = load_corpus(corpus_path)
    queries, qrels = {}, {}
    for q in questions:
        docs = [d for d in q.documents if d in corpus]
        if docs:
            queries[f"q:{q.id}"] = q.body
            qrels[f"q:{q.id}"] = {f"d:{d}": 1 for d in docs}
    if not qrels:
        raise RetrievalError(f"{path}: none of its {len(questions)} questions has a document in {corpus_path}")
    return RetrievalTask("bioasq", INSTRUCTIONS["bioasq"], queries,
                         {f"d:{d}": doc for d, doc in corpus.items()}, qrels).check()


# ----------------------------------------------------------------------------- runs

def _run_from(qids, doc_ids, scores, indices) -> dict:
    return {qid: {doc_ids[j]: float(s) for s, j in zip(row_s, row_i)}
            for qid, row_s, row_i in zip(qids, scores, indices)}


def passage_text(doc: dict) -> str:
    return " ".join(part for part in (doc.get("title"), doc.get("text")) if part)


def bm25_run(task: RetrievalTask, depth: int = DEPTH) -> dict:
    doc_ids, qids = list(task.corpus), list(task.queries)
    scores, indices = BM25([passage_text(task.corpus[d]) for d in doc_ids]).search(
        [task.queries[q] for q in qids], depth)
    return _run_from(qids, doc_ids, scores, indices)


def dense_run(encoder, task: RetrievalTask, depth: int = DEPTH, batch_size: int = 32,
              progress: bool = False) -> tuple[dict, dict]:
    """The dense run and timings {"encode_docs_per_s", "encode_queries_per_s"}."""
    doc_ids, qids = list(task.corpus), list(task.queries)
    start = time.perf_counter()
    docs = encoder.encode_corpus([task.corpus[d] for d in doc_ids], batch_size=batch_size, progress=progress)
    doc_seconds = time.perf_counter() - start
    start = time.perf_counter()
    queries = encoder.encode([task.queries[q] for q in qids], batch_size=batch_size,
                             instruction=task.instruction, progress=progress)
    query_seconds = time.perf_counter() - start
    scores, indices = top_k(queries, docs, depth)
    return _run_from(qids, doc_ids, scores, indices), {
        "encode_docs_per_s": len(doc_ids) / max(doc_seconds, 1e-9),
        "encode_queries_per_s": len(qids) / max(query_seconds, 1e-9)}


def evaluate_task(task: RetrievalTask, encoder=None, batch_size: int = 32, progress: bool = False) -> dict:
    """{"task", "queries", "documents", "bm25": metrics, and with an encoder "dense", "hybrid", timings}."""
    lexical = bm25_run(task)
    out = {"task": task.name, "queries": len(task.queries), "documents": len(task.corpus),
           "bm25": evaluate_run(task.qrels, lexical)}
    if encoder is not None:
        dense, timing = dense_run(encoder, task, batch_size=batch_size, progress=progress)
        out["dense"] = evaluate_run(task.qrels, dense)
        out["hybrid"] = evaluate_run(task.qrels, reciprocal_rank_fusion([dense, lexical]))
        out.update(timing)
    return out


# ----------------------------------------------------------------------------- reporting

COLUMNS = ("nDCG@10", "Recall@10", "Recall@100", "MRR@10")


def markdown_table(results: list[dict]) -> str:
    lines = ["| task | method | " + " | ".join(COLUMNS) + " | queries | docs |",
             "|---|---|" + "---:|" * (len(COLUMNS) + 2)]
    for result in results:
        for method in ("dense", "bm25", "hybrid"):
            if method in result:
                m = result[method]
                lines.append(f"| {result['task']} | {method} | " + " | ".join(f"{m[c]:.4f}" for c in COLUMNS)
                             + f" | {result['queries']} | {result['documents']} |")
    speeds = [f"{r['task']}: {r['encode_docs_per_s']:.1f} docs/s" for r in results if "encode_docs_per_s" in r]
    if speeds:
        lines += ["", "Dense encode throughput: " + "; ".join(speeds)]
    return "\n".join(lines) + "\n"


def without_per_query(results: list[dict]) -> list[dict]:
    return [{k: ({m: v for m, v in val.items() if m != "per_query"} if isinstance(val, dict) else val)
             for k, val in r.items()} for r in results]


def write_results(out_dir, results: list[dict], extra: dict | None = None) -> str:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = markdown_table(results)
    (out_dir / "retrieval.md").write_text(table)
    (out_dir / "retrieval.json").write_text(json.dumps({**(extra or {}), "results": without_per_query(results)},
                                                       indent=2) + "\n")
    return table
