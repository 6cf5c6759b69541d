"""Dense retrieval with BioMamba: an encoder with its templates, an index of float16 shards, search,
and BM25 for comparison.

Texts are embedded BMRetriever-style by biomamba.encoding (templates, EOS appended, pooling, L2
normalisation); relevance is the dot product (= cosine) of two embeddings.

    encoder = Encoder.from_pretrained("runs/retrieval/model")
    q = encoder.encode(["statins and myopathy"], instruction=DEFAULT_INSTRUCTION)   # (1, dim)
    d = encoder.encode_corpus([{"title": "...", "text": "..."}])                    # (1, dim)

Index layout (`write_index` / `DenseIndex`):
    INDEX/meta.json        {"count", "dim", "shards": [file, ...], "model", "dtype": "float16", ...}
    INDEX/docs.jsonl       one {"id", "title"} per row, in embedding order
    INDEX/emb_00000.npy    (rows, dim) float16, SHARD_ROWS rows per shard
Search is exact (a float32 matrix product) unless faiss is importable, in which case an exact
faiss IndexFlatIP gives the same ranking faster; `DenseIndex(..., backend="exact")` forces numpy.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from biomamba.encoding import DEFAULT_INSTRUCTION, PASSAGE_TEMPLATE, QUERY_TEMPLATE, encode, format_passage
from biomamba.io import discard, fsync_tree, replace_dir, write_text
from biomamba.modeling import BioMambaForEmbedding
from biomamba.resolve import find_tokenizer_dir, load_tokenizer

SHARD_ROWS = 65536


class RetrievalError(ValueError):
    """A retrieval input that cannot be used (missing index files, unknown ids, empty corpus)."""


# ----------------------------------------------------------------------------- encoding

class Encoder:
    """A BioMambaForEmbedding with its tokenizer and templates: the sentence-transformers-like API."""

    def __init__(self, model, tokenizer, query_template=QUERY_TEMPLATE, passage_template=PASSAGE_TEMPLATE,
                 max_length: int = 256):
        self.model, self.tokenizer = model, tokenizer
        self.query_template, self.passage_template, self.max_length = query_template, passage_template, max_length

    @classmethod
    def from_pretrained(cls, model_dir, tokenizer_dir=None, pooling=None, embedding_dim=None, **kwargs):
        """Any Mamba checkpoint dir; the tokenizer from tokenizer_dir, else the model dir."""
        model = load_embedding_model(model_dir, pooling=pooling, embedding_dim=embedding_dim)
        return cls(model, load_tokenizer(find_tokenizer_dir(model_dir, tokenizer_dir)), **kwargs)

    def encode(self, texts, batch_size: int = 32, instruction: str | None = None, progress: bool = False,
               convert_to_numpy: bool = True):
        return encode(self.model, self.tokenizer, texts, batch_size, instruction, self.max_length,
                      progress, self.query_template, convert_to_numpy)

    def encode_queries(self, queries, instruction: str = DEFAULT_INSTRUCTION, **kwargs):
        return self.encode(queries, instruction=instruction, **kwargs)

    def encode_corpus(self, docs, **kwargs):
        """docs: [{"title", "text"}] (BEIR rows) or plain strings."""
        texts = [d if isinstance(d, str) else format_passage(d.get("title", ""), d.get("text", ""),
                                                               self.passage_template) for d in docs]
        return self.encode(texts, instruction=None, **kwargs)


def load_encoder(model_dir, tokenizer_dir=None, data_dir=None) -> "Encoder":
    """An Encoder for a model dir; its tokenizer from tokenizer_dir, the model dir, or a prepared
    data dir's tokenizer/."""
    fallbacks = [Path(data_dir) / "tokenizer"] if data_dir else []
    tokenizer = load_tokenizer(find_tokenizer_dir(model_dir, tokenizer_dir, fallbacks, hint="pass --tokenizer DIR"))
    return Encoder(load_embedding_model(model_dir), tokenizer)


def load_embedding_model(model_dir, pooling=None, embedding_dim=None):
    kwargs = {k: v for k, v in (("pooling", pooling), ("embedding_dim", embedding_dim)) if v is not None}
    return BioMambaForEmbedding.from_pretrained(str(model_dir), **kwargs).eval()


# ----------------------------------------------------------------------------- exact search

def top_k(queries: np.ndarray, docs: np.ndarray, k: int, chunk: int = 1024):
    """Exact maximum inner product: (scores, indices), each (m, min(k, n)), best first.

    Ties keep the lower document index first (a stable order, independent of chunking).
    """
    k = min(k, len(docs))
    docs_t = torch.from_numpy(np.ascontiguousarray(docs, dtype=np.float32))
    scores_out, index_out = [], []
    for start in range(0, len(queries), chunk):
        q = torch.from_numpy(np.ascontiguousarray(queries[start:start + chunk], dtype=np.float32))
        scores = q @ docs_t.T  # (m, n)
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
        scores_out.append(torch.gather(scores, 1, order).numpy())
        index_out.append(order.numpy())
    if not scores_out:
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    return np.concatenate(scores_out), np.concatenate(index_out)


# ----------------------------------------------------------------------------- the index

def write_index(out, ids, titles, embeddings: np.ndarray, meta: dict | None = None,
                shard_rows: int = SHARD_ROWS) -> Path:
    """Write float16 shards + docs.jsonl + meta.json into OUT.tmp, then rename it over OUT in whole:
    an interrupted run leaves the previous index (or none), never a half-written one."""
    out = Path(out)
    if len(ids) != len(embeddings) or len(ids) != len(titles):
        raise RetrievalError(f"{len(ids)} ids, {len(titles)} titles, {len(embeddings)} embeddings")
    if len(set(ids)) != len(ids):
        raise RetrievalError("document ids repeat; each indexed document needs a distinct id")
    tmp = out.with_name(out.name + ".tmp")
    discard(tmp)
    tmp.mkdir(parents=True)
    shards = []
    for number, start in enumerate(range(0, len(ids), shard_rows)):
        name = f"emb_{number:05d}.npy"
        np.save(tmp / name, np.asarray(embeddings[start:start + shard_rows], dtype=np.float16))
        shards.append(name)
    write_text(tmp / "docs.jsonl", "".join(json.dumps({"id": str(doc_id), "title": title}, ensure_ascii=False) + "\n"
                                           for doc_id, title in zip(ids, titles)))
    info = {**(meta or {}), "count": len(ids), "dim": int(embeddings.shape[1]) if len(ids) else 0,
            "dtype": "float16", "shards": shards, "shard_rows": shard_rows}
    write_text(tmp / "meta.json", json.dumps(info, indent=2) + "\n")
    fsync_tree(tmp)
    replace_dir(tmp, out)
    return out


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


class DenseIndex:
    """A written index in memory; `search(query_embeddings, k)` -> [[(id, title, score)]]."""

    def __init__(self, path, backend: str = "auto"):
        self.path = Path(path)
        meta_file = self.path / "meta.json"
        if not meta_file.is_file():
            raise RetrievalError(f"{self.path}: not an index (no meta.json; build one with "
                                 "`biomamba retrieval index`)")
        self.meta = json.loads(meta_file.read_text())
        missing = [s for s in self.meta["shards"] if not (self.path / s).is_file()]
        if missing or not (self.path / "docs.jsonl").is_file():
            raise RetrievalError(f"{self.path}: missing index files {missing or ['docs.jsonl']}")
        parts = [np.load(self.path / s) for s in self.meta["shards"]]
        self.embeddings = (np.concatenate(parts) if parts else np.zeros((0, self.meta["dim"]))).astype(np.float32)
        with open(self.path / "docs.jsonl", encoding="utf-8") as f:
            self.docs = [json.loads(line) for line in f if line.strip()]
        if len(self.docs) != len(self.embeddings) or len(self.docs) != self.meta["count"]:
            raise RetrievalError(f"{self.path}: {len(self.docs)} docs but {len(self.embeddings)} "
                                 f"embeddings (meta says {self.meta['count']}); rebuild the index")
        if backend not in ("auto", "exact", "faiss"):
            raise RetrievalError(f"backend must be auto, exact or faiss; got {backend!r}")
        if backend == "faiss" and not faiss_available():
            raise RetrievalError("backend=faiss but faiss is not installed (pip install faiss-cpu)")
        self.backend = "faiss" if backend == "faiss" or (backend == "auto" and faiss_available()) else "exact"
        self._faiss = None

    def __len__(self):
        return len(self.docs)

    def _scores(self, queries: np.ndarray, k: int):
        if self.backend == "exact":
            return top_k(queries, self.embeddings, k)
        import faiss
        if self._faiss is None:
            self._faiss = faiss.IndexFlatIP(self.embeddings.shape[1])
            self._faiss.add(self.embeddings)
        return self._faiss.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, len(self)))

    def search(self, queries: np.ndarray, k: int = 10):
        if len(self) == 0:
            raise RetrievalError(f"{self.path}: the index is empty")
        queries = np.atleast_2d(queries)
        if queries.shape[1] != self.embeddings.shape[1]:
            raise RetrievalError(f"query dimension {queries.shape[1]} != index dimension "
                                 f"{self.embeddings.shape[1]} (was the index built with another model?)")
        scores, index = self._scores(queries, k)
        return [[(self.docs[j]["id"], self.docs[j].get("title", ""), float(s)) for s, j in zip(row_s, row_i)]
                for row_s, row_i in zip(scores, index)]


# ----------------------------------------------------------------------------- BM25

class BM25:
    """Lexical BM25 (bm25s, Lucene variant k1=1.5 b=0.75) over English-stemmed, stopword-free tokens."""

    def __init__(self, texts, k1: float = 1.5, b: float = 0.75):
        import bm25s

        if not texts:
            raise RetrievalError("BM25 needs a non-empty corpus")
        self.size = len(texts)
        self.retriever = bm25s.BM25(k1=k1, b=b)
        self.retriever.index(self._tokens(texts), show_progress=False)

    @staticmethod
    def _tokens(texts):
        import bm25s
        import Stemmer

        return bm25s.tokenize(list(texts), stopwords="en", stemmer=Stemmer.Stemmer("english"),
                              show_progress=False)

    def search(self, queries, k: int):
        """(scores, indices), each (m, min(k, corpus size)), best first."""
        k = min(k, self.size)
        if not queries:
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
        indices, scores = self.retriever.retrieve(self._tokens(queries), k=k, show_progress=False, n_threads=1)
        return np.asarray(scores), np.asarray(indices)


# ----------------------------------------------------------------------------- runs over a task

def _run_from(qids, doc_ids, scores, indices) -> dict:
    return {qid: {doc_ids[j]: float(s) for s, j in zip(row_s, row_i)}
            for qid, row_s, row_i in zip(qids, scores, indices)}


def passage_text(doc: dict) -> str:
    return " ".join(part for part in (doc.get("title"), doc.get("text")) if part)


def bm25_run(task, depth: int = 100) -> dict:
    """BM25's top `depth` documents of each query of a RetrievalTask: {qid: {doc: score}}."""
    doc_ids, qids = list(task.corpus), list(task.queries)
    scores, indices = BM25([passage_text(task.corpus[d]) for d in doc_ids]).search(
        [task.queries[q] for q in qids], depth)
    return _run_from(qids, doc_ids, scores, indices)


def dense_run(encoder, task, depth: int = 100, batch_size: int = 32,
              progress: bool = False) -> tuple[dict, dict]:
    """The encoder's top `depth` documents of each query of a RetrievalTask, and timings
    {"encode_docs_per_s", "encode_queries_per_s"}."""
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
