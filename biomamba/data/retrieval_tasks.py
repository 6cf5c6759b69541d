"""Retrieval tasks (BEIR style: queries, corpus, graded judgments, a query instruction) built from
prepared PubMed data, BEIR directories and BioASQ files.

  title-abstract    held-out PubMed (a split of the prepared data): title -> its abstract
  conclusion-rest   held-out structured abstracts: the CONCLUSIONS sections -> the other sections
  title-abstract-disjoint
                    held-out PubMed: title -> its abstract with every title word taken out (no
                    word BM25 could match: where only a dense retriever can find the document)
  beir:NAME         a BEIR directory (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv)
  bioasq            BioASQ task B JSON: question -> its documents, over a given corpus
Ids: every query id becomes "q:ID" and every document id "d:ID" inside a task, so a query can never
share an id with a document (BEIR's evaluator silently drops such documents).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from biomamba.data.documents import plain_abstract
from biomamba.data.pairs import INSTRUCTIONS, PAIR_KINDS, pubmed_pairs
from biomamba.encoding import DEFAULT_INSTRUCTION
from biomamba.retrievers import RetrievalError


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
    pairs = list(pubmed_pairs(documents, kind))
    corpus = {f"d:{pmid}": passage for pmid, _, passage in pairs}
    for pmid, _, passage in pubmed_pairs(distractors, kind):
        corpus.setdefault(f"d:{pmid}", passage)
    chosen = pairs if max_queries is None else pairs[:max_queries]
    name = kind if not distractors else f"{kind}+distractors"
    return RetrievalTask(name, INSTRUCTIONS[kind], {f"q:{pmid}": q for pmid, q, _ in chosen}, corpus,
                         {f"q:{pmid}": {f"d:{pmid}": 1} for pmid, _, _ in chosen}).check()


HELDOUT_KINDS = tuple(PAIR_KINDS)  # title-abstract, conclusion-rest, title-abstract-disjoint


def heldout_tasks(data_dir, split: str = "test", kinds=HELDOUT_KINDS,
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
    return dict(iter_corpus(path))


def iter_corpus(path):
    """(id, {"title", "text"}) of a prepared data dir's documents (streamed) or a BEIR corpus."""
    from biomamba.data.beir import load_beir
    from biomamba.data.documents import is_prepared

    path = Path(path)
    if path.name == "documents.jsonl":  # a prepared dir named by its documents file
        path = path.parent
    if path.is_dir() and is_prepared(path):
        return ((d["pmid"], {"title": d["title"], "text": plain_abstract(d)}) for d in _prepared(path))
    if path.is_dir():
        path = path / "corpus.jsonl"
    if not path.is_file() or path.name != "corpus.jsonl":
        raise RetrievalError(f"{path}: no such corpus (give a BEIR dir / corpus.jsonl or a prepared data dir)")
    return iter(load_beir(path.parent, qrels=False).corpus.items())


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
