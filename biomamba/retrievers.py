"""The retrievers: dense retrieval with BioMamba (an encoder with its templates, an index of float16
shards, search) and BM25 for comparison; `biomamba retrieval eval` and `retrieval train` run them.

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
from biomamba.resolve import find_tokenizer_dir, load_tokenizer, model_dir_of

SHARD_ROWS = 65536
ENCODE_PART = 16384  # documents encoded before they are searched (memory: their embeddings)


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
    model_dir = model_dir_of(model_dir)  # a retrieval training run dir holds its model in model/
    fallbacks = [Path(data_dir) / "tokenizer"] if data_dir else []
    tokenizer = load_tokenizer(find_tokenizer_dir(model_dir, tokenizer_dir, fallbacks, hint="pass --tokenizer DIR"))
    return Encoder(load_embedding_model(model_dir), tokenizer)


def load_embedding_model(model_dir, pooling=None, embedding_dim=None):
    kwargs = {k: v for k, v in (("pooling", pooling), ("embedding_dim", embedding_dim)) if v is not None}
    return BioMambaForEmbedding.from_pretrained(str(model_dir), **kwargs).eval()


# ----------------------------------------------------------------------------- exact search

def top_k(queries: np.ndarray, docs: np.ndarray, k: int):
    """Exact maximum inner product: (scores, indices), each (m, min(k, n)), best first.

    Ties keep the lower document index first (a stable order, independent of chunking).
    """
    best = TopK(len(queries), k)
    best.add(queries, docs)
    return best.result()


class TopK:
    """Each query's k best documents over a corpus seen in parts (exact, streaming): add(queries,
    docs_part) with the parts in corpus order; memory is the queries' k best, not the corpus.
    Ties keep the lower document index first, however the corpus is cut."""

    def __init__(self, n_queries: int, k: int):
        self.k, self.seen = k, 0
        self.scores = torch.empty((n_queries, 0), dtype=torch.float32)
        self.index = torch.empty((n_queries, 0), dtype=torch.long)

    def add(self, queries: np.ndarray, docs: np.ndarray, chunk: int = 1024):
        docs_t = torch.from_numpy(np.ascontiguousarray(docs, dtype=np.float32))
        q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
        for start in range(0, len(docs_t), chunk * 16):
            part = docs_t[start:start + chunk * 16]
            scores = torch.cat([self.scores, q @ part.T], dim=1)  # (m, kept + part)
            index = torch.cat([self.index, self.seen + torch.arange(len(part)).expand(len(q), -1)], dim=1)
            order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :self.k]
            self.scores, self.index = torch.gather(scores, 1, order), torch.gather(index, 1, order)
            self.seen += len(part)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        return self.scores.numpy(), self.index.numpy()


# ----------------------------------------------------------------------------- the index

def write_index(out, ids, titles, embeddings: np.ndarray, meta: dict | None = None,
                shard_rows: int = SHARD_ROWS) -> Path:
    """An index of one batch of embeddings (see IndexWriter)."""
    if len(ids) != len(embeddings) or len(ids) != len(titles):
        raise RetrievalError(f"{len(ids)} ids, {len(titles)} titles, {len(embeddings)} embeddings")
    with IndexWriter(out, meta, shard_rows) as writer:
        writer.add(ids, titles, embeddings)
    return Path(out)


class IndexWriter:
    """Writes an index batch by batch (memory: one shard): float16 shards + docs.jsonl + meta.json,
    built in OUT.tmp and renamed over OUT in whole on a clean exit, so an interrupted run leaves the
    previous index (or none), never a half-written one."""

    def __init__(self, out, meta: dict | None = None, shard_rows: int = SHARD_ROWS, lock=None):
        """`lock`: the caller's biomamba.locking lock on `out`, kept across the swap to the new index."""
        self.out, self.meta, self.shard_rows, self.lock = Path(out), dict(meta or {}), shard_rows, lock
        self.tmp = self.out.with_name(self.out.name + ".tmp")
        self.buffer, self.shards, self.ids, self.dim = [], [], set(), 0

    def __enter__(self):
        discard(self.tmp)
        self.tmp.mkdir(parents=True)
        self.docs = open(self.tmp / "docs.jsonl", "w", encoding="utf-8")
        return self

    def add(self, ids, titles, embeddings: np.ndarray):
        for doc_id, title in zip(ids, titles):
            if str(doc_id) in self.ids:
                raise RetrievalError(f"document id {doc_id!r} repeats; each indexed document needs a distinct id")
            self.ids.add(str(doc_id))
            self.docs.write(json.dumps({"id": str(doc_id), "title": title}, ensure_ascii=False) + "\n")
        self.dim = int(embeddings.shape[1]) if len(embeddings) else self.dim
        self.buffer.append(np.asarray(embeddings, dtype=np.float16))
        while sum(len(b) for b in self.buffer) >= self.shard_rows:
            self._flush(self.shard_rows)

    def _flush(self, rows: int):
        block = np.concatenate(self.buffer)
        name = f"emb_{len(self.shards):05d}.npy"
        np.save(self.tmp / name, block[:rows])
        self.shards.append(name)
        self.buffer = [block[rows:]] if rows < len(block) else []

    def __exit__(self, kind, error, trace):
        self.docs.close()
        if kind is not None:
            discard(self.tmp)
            return
        if self.buffer and sum(len(b) for b in self.buffer):
            self._flush(sum(len(b) for b in self.buffer))
        write_text(self.tmp / "meta.json", json.dumps({**self.meta, "count": len(self.ids), "dim": self.dim,
                                                       "dtype": "float16", "shards": self.shards,
                                                       "shard_rows": self.shard_rows}, indent=2) + "\n")
        if self.lock is not None:
            self.lock.carry_into(self.tmp)
        fsync_tree(self.tmp)
        replace_dir(self.tmp, self.out)


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
        self.shards = [np.load(self.path / s, mmap_mode="r") for s in self.meta["shards"]]  # read when searched
        rows = sum(len(shard) for shard in self.shards)
        with open(self.path / "docs.jsonl", encoding="utf-8") as f:
            self.docs = [json.loads(line) for line in f if line.strip()]
        if len(self.docs) != rows or len(self.docs) != self.meta["count"]:
            raise RetrievalError(f"{self.path}: {len(self.docs)} docs but {rows} "
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
        if self.backend == "exact":  # shard by shard: memory is one shard, not the index
            best = TopK(len(queries), k)
            for shard in self.shards:
                best.add(queries, shard)
            return best.result()
        import faiss
        if self._faiss is None:
            self._faiss = faiss.IndexFlatIP(self.meta["dim"])
            for shard in self.shards:
                self._faiss.add(np.asarray(shard, dtype=np.float32))
        return self._faiss.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, len(self)))

    def search(self, queries: np.ndarray, k: int = 10):
        if len(self) == 0:
            raise RetrievalError(f"{self.path}: the index is empty")
        queries = np.atleast_2d(queries)
        if queries.shape[1] != self.meta["dim"]:
            raise RetrievalError(f"query dimension {queries.shape[1]} != index dimension "
                                 f"{self.meta['dim']} (was the index built with another model?)")
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
    queries = encoder.encode([task.queries[q] for q in qids], batch_size=batch_size,
                             instruction=task.instruction, progress=progress)
    query_seconds = time.perf_counter() - start
    start = time.perf_counter()
    best = TopK(len(qids), depth)
    for part in range(0, len(doc_ids), ENCODE_PART):  # the corpus is encoded and searched in parts
        docs = encoder.encode_corpus([task.corpus[d] for d in doc_ids[part:part + ENCODE_PART]],
                                     batch_size=batch_size, progress=progress)
        best.add(queries, docs)
    doc_seconds = time.perf_counter() - start
    scores, indices = best.result()
    return _run_from(qids, doc_ids, scores, indices), {
        "encode_docs_per_s": len(doc_ids) / max(doc_seconds, 1e-9),
        "encode_queries_per_s": len(qids) / max(query_seconds, 1e-9)}
