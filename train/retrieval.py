"""Dense retrieval with BioMamba: train, evaluate against BM25, index a corpus, search it.

  biomamba retrieval train --config configs/retrieval-tiny.yaml --out runs/retrieval \\
      model.init_from=demo_out/tiny/model data.dir=demo_out/data
  biomamba retrieval eval --model runs/retrieval/model --data demo_out/data --out runs/retrieval/eval
  biomamba retrieval eval --model M --beir nfcorpus/ --beir scifact/ --out OUT
  biomamba retrieval eval --model M --bioasq BioASQ-training12b.json --corpus demo_out/data --out OUT
  biomamba retrieval index --model runs/retrieval/model --corpus demo_out/data --out runs/index
  biomamba retrieval search --index runs/index --query "statin induced myopathy" -k 10

train: InfoNCE with in-batch (and optional BM25 hard) negatives on pairs from the prepared PubMed
  data (title -> abstract, CONCLUSIONS -> rest of a structured abstract), BEIR training qrels and
  BioASQ; BMRetriever's templates; the shared loop (resumable), checkpointer and logger (metrics.jsonl,
  W&B prefix "retrieval"). Writes RUN_DIR/model (with tokenizer), config.yaml, results.json.
eval: held-out tasks from the prepared data's test split, BEIR dirs, BioASQ; dense, BM25 (bm25s,
  stemmed) and hybrid (reciprocal rank fusion) in one table of nDCG@10, Recall@10, Recall@100,
  MRR@10 computed by pytrec_eval; writes OUT/retrieval.md and OUT/retrieval.json.
index: float16 embedding shards + ids; search: exact inner product (faiss when installed).
"""
import argparse
import json
import sys
import time
from pathlib import Path

from biomamba.encoding import DEFAULT_INSTRUCTION
from biomamba.retrieval import RetrievalError

ACTIONS = ("train", "eval", "index", "search")


def add_arguments(parser):
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    t = sub.add_parser("train", help="contrastive training from a pretrained checkpoint")
    t.add_argument("--config", help="YAML config (e.g. configs/retrieval-tiny.yaml)")
    t.add_argument("--out", required=True, help="run directory (resumed when it has checkpoints)")
    t.add_argument("overrides", nargs="*", metavar="key=value",
                   help="dotted overrides, e.g. model.init_from=DIR data.dir=DIR train.max_steps=50")

    e = sub.add_parser("eval", help="dense vs BM25 vs hybrid on held-out, BEIR and BioASQ tasks")
    e.add_argument("--model", help="retrieval model dir (omit for BM25 only)")
    e.add_argument("--tokenizer", help="tokenizer dir (default: the model dir, else DATA/tokenizer)")
    e.add_argument("--data", help="prepared data dir: held-out tasks from its test split")
    e.add_argument("--split", default="test", help="split of --data to evaluate (default test)")
    e.add_argument("--kinds", nargs="+", default=["title-abstract", "conclusion-rest"],
                   choices=["title-abstract", "conclusion-rest"], help="held-out tasks from --data")
    e.add_argument("--max-queries", type=int, help="at most this many queries per held-out task")
    e.add_argument("--distractors", nargs="+", default=[], metavar="SPLIT",
                   help="add the passages of these splits of --data to the held-out corpora "
                        "(e.g. --distractors train val: the whole prepared data as corpus)")
    e.add_argument("--beir", action="append", default=[], help="a BEIR directory (repeatable)")
    e.add_argument("--beir-split", default="test", help="qrels split of the BEIR dirs (default test)")
    e.add_argument("--bioasq", help="BioASQ task B JSON (needs --corpus)")
    e.add_argument("--corpus", help="corpus for --bioasq: a BEIR corpus.jsonl/dir or a prepared dir")
    e.add_argument("--batch-size", type=int, default=32)
    e.add_argument("--out", required=True, help="directory for retrieval.md and retrieval.json")

    i = sub.add_parser("index", help="embed a corpus into float16 shards + ids")
    i.add_argument("--model", required=True, help="retrieval model dir")
    i.add_argument("--tokenizer", help="tokenizer dir (default: the model dir)")
    i.add_argument("--corpus", required=True, help="a prepared data dir or a BEIR dir / corpus.jsonl")
    i.add_argument("--out", required=True, help="index directory")
    i.add_argument("--batch-size", type=int, default=32)

    s = sub.add_parser("search", help="search an index; prints rank, score, PMID and title")
    s.add_argument("--index", required=True)
    s.add_argument("--query", action="append", required=True, help="a query (repeatable)")
    s.add_argument("-k", type=int, default=10)
    s.add_argument("--model", help="default: the model the index was built with")
    s.add_argument("--instruction", default=DEFAULT_INSTRUCTION)
    s.add_argument("--backend", default="auto", choices=["auto", "exact", "faiss"])
    s.add_argument("--json", action="store_true", help="print JSON lines instead of a table")


# ----------------------------------------------------------------------------- actions

def load_encoder(model_dir, tokenizer=None, data=None):
    from biomamba.retrieval import Encoder

    if tokenizer is None and not (Path(model_dir) / "tokenizer.json").is_file() and data:
        tokenizer = str(Path(data) / "tokenizer")
    return Encoder.from_pretrained(model_dir, tokenizer_dir=tokenizer)


def run_eval(args) -> int:
    from biomamba.eval.retrieval import beir_task, bioasq_task, evaluate_task, heldout_tasks, write_results

    if not (args.data or args.beir or args.bioasq):
        raise RetrievalError("nothing to evaluate: give --data, --beir or --bioasq")
    if args.bioasq and not args.corpus:
        raise RetrievalError("--bioasq needs --corpus (the documents its questions are searched in)")
    tasks = heldout_tasks(args.data, args.split, args.kinds, args.max_queries,
                           args.distractors) if args.data else []
    tasks += [beir_task(b, args.beir_split) for b in args.beir]
    tasks += [bioasq_task(args.bioasq, args.corpus)] if args.bioasq else []
    encoder = load_encoder(args.model, args.tokenizer, args.data) if args.model else None
    results = []
    for task in tasks:
        start = time.perf_counter()
        results.append(evaluate_task(task, encoder, args.batch_size, progress=sys.stderr.isatty()))
        print(f"{task.name}: {len(task.queries)} queries, {len(task.corpus)} documents, "
              f"{time.perf_counter() - start:.1f} s", file=sys.stderr)
    table = write_results(args.out, results, {"model": args.model, "data": args.data, "split": args.split})
    print(table, end="")
    return 0


def corpus_rows(path):
    """(ids, titles, {"title", "text"} passages) of a corpus file or directory."""
    from biomamba.eval.retrieval import load_corpus

    corpus = load_corpus(path)
    if not corpus:
        raise RetrievalError(f"{path}: the corpus is empty")
    ids = list(corpus)
    return ids, [corpus[i]["title"] for i in ids], [corpus[i] for i in ids]


def run_index(args) -> int:
    from biomamba.retrieval import write_index

    encoder = load_encoder(args.model, args.tokenizer)
    ids, titles, docs = corpus_rows(args.corpus)
    start = time.perf_counter()
    embeddings = encoder.encode_corpus(docs, batch_size=args.batch_size, progress=sys.stderr.isatty())
    seconds = time.perf_counter() - start
    write_index(args.out, ids, titles, embeddings, {"model": str(Path(args.model).resolve()),
                                                     "corpus": str(args.corpus),
                                                     "passage_template": encoder.passage_template})
    print(f"indexed {len(ids):,} documents in {seconds:.1f} s ({len(ids) / max(seconds, 1e-9):.1f} docs/s) "
          f"-> {args.out}")
    return 0


def run_search(args) -> int:
    from biomamba.retrieval import DenseIndex

    index = DenseIndex(args.index, backend=args.backend)
    model = args.model or index.meta.get("model")
    if not model:
        raise RetrievalError(f"{args.index}: meta.json names no model; pass --model")
    encoder = load_encoder(model)
    queries = encoder.encode(args.query, instruction=args.instruction)
    for query, hits in zip(args.query, index.search(queries, args.k)):
        if args.json:
            print(json.dumps({"query": query, "hits": [{"id": i, "title": t, "score": s} for i, t, s in hits]}))
            continue
        print(f"query: {query}")
        for rank, (doc_id, title, score) in enumerate(hits, start=1):
            label = f"PMID {doc_id}" if doc_id.isdigit() else doc_id
            print(f"{rank:3d}  {score:.4f}  {label}  {title}")
    return 0


def run(args) -> int:
    from biomamba.checkpoints import CheckpointError
    from biomamba.data.errors import DataError

    if args.action == "train":
        from biomamba.train.retrieval_train import run_train
        return run_train(args)
    action = {"eval": run_eval, "index": run_index, "search": run_search}[args.action]
    try:
        return action(args)
    except (RetrievalError, CheckpointError, DataError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # python -m biomamba.train.retrieval ...
    parser = argparse.ArgumentParser(prog="biomamba retrieval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    raise SystemExit(run(parser.parse_args()))
