"""`biomamba retrieval eval`: BEIR-style retrieval evaluation of dense (BioMamba), BM25 and their
hybrid, scored by trec_eval.

  biomamba retrieval eval --model runs/retrieval/model --data demo_out/data --out runs/retrieval/eval
  biomamba retrieval eval --model M --beir nfcorpus/ --beir scifact/ --out OUT
  biomamba retrieval eval --model M --bioasq BioASQ-training12b.json --corpus demo_out/data --out OUT

Held-out tasks come from the prepared data's test split (or --split), BEIR dirs and BioASQ; dense,
BM25 (bm25s, stemmed) and hybrid in one table of nDCG@10, Recall@10, Recall@100, MRR@10; writes
OUT/retrieval.md and OUT/retrieval.json.

Tasks: biomamba.data.retrieval_tasks (held-out PubMed title-abstract / conclusion-rest, BEIR
directories, BioASQ), each queries + corpus + qrels + a query instruction.

Metrics: biomamba.metrics.retrieval (pytrec_eval, i.e. trec_eval's code: nDCG@10, Recall@1/10/100,
MRR@10). Hybrid = reciprocal rank fusion, score(d) = sum_s 1 / (60 + rank_s(d)) over the dense and
BM25 top 100.

W&B (--no-wandb: none): a run of job_type retrieval-eval named after OUT, files under OUT, offline
unless W&B is configured; summary retrieval-eval/TASK/METHOD/{nDCG@10, Recall@10, Recall@100,
MRR@10} and a table retrieval-eval/results (the rows of retrieval.md). Its group is the one of the
run that trained --model (a `biomamba retrieval train` RUN_DIR/model joins the group of the model it
started from; its W&B id is config model_origin.run_id), else the model directory's name.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from biomamba import tracking
from biomamba.checkpoints import CheckpointError
from biomamba.data.errors import DataError
from biomamba.data.retrieval_tasks import beir_task, bioasq_task, heldout_tasks
from biomamba.io import write_report
from biomamba.metrics.retrieval import evaluate_run, reciprocal_rank_fusion
from biomamba.resolve import ModelSpecError
from biomamba.retrieval import RetrievalError, bm25_run, dense_run, load_encoder


def add_arguments(parser):
    parser.add_argument("--model", help="retrieval model dir (omit for BM25 only)")
    parser.add_argument("--tokenizer", help="tokenizer dir (default: the model dir, else DATA/tokenizer)")
    parser.add_argument("--data", help="prepared data dir: held-out tasks from its test split")
    parser.add_argument("--split", default="test", help="split of --data to evaluate (default test)")
    parser.add_argument("--kinds", nargs="+", default=["title-abstract", "conclusion-rest"],
                        choices=["title-abstract", "conclusion-rest"], help="held-out tasks from --data")
    parser.add_argument("--max-queries", type=int, help="at most this many queries per held-out task")
    parser.add_argument("--distractors", nargs="+", default=[], metavar="SPLIT",
                        help="add the passages of these splits of --data to the held-out corpora "
                             "(e.g. --distractors train val: the whole prepared data as corpus)")
    parser.add_argument("--beir", action="append", default=[], help="a BEIR directory (repeatable)")
    parser.add_argument("--beir-split", default="test", help="qrels split of the BEIR dirs (default test)")
    parser.add_argument("--bioasq", help="BioASQ task B JSON (needs --corpus)")
    parser.add_argument("--corpus", help="corpus for --bioasq: a BEIR corpus.jsonl/dir or a prepared dir")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", required=True, help="directory for retrieval.md and retrieval.json")
    tracking.add_arguments(parser)


def run(args) -> int:
    try:
        return _run(args)
    except (RetrievalError, CheckpointError, DataError, ModelSpecError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


def _run(args) -> int:
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
    track(args, results)
    return 0

def evaluate_task(task, encoder=None, batch_size: int = 32, progress: bool = False) -> dict:
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
METHODS = ("dense", "bm25", "hybrid")


def markdown_table(results: list[dict]) -> str:
    lines = ["| task | method | " + " | ".join(COLUMNS) + " | queries | docs |",
             "|---|---|" + "---:|" * (len(COLUMNS) + 2)]
    for result in results:
        for method in METHODS:
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
    table = markdown_table(results)
    write_report(out_dir, "retrieval", table, {**(extra or {}), "results": without_per_query(results)})
    return table


# ----------------------------------------------------------------------------- W&B

def track(args, results: list[dict]):
    """retrieval.json's scores as a W&B run (job_type retrieval-eval) in the group of the model's training run."""
    scores = {r["task"]: {m: {c: r[m][c] for c in COLUMNS} for m in METHODS if m in r} for r in results}
    rows = [[r["task"], m, *(r[m][c] for c in COLUMNS), r["queries"], r["documents"]]
            for r in results for m in METHODS if m in r]
    config = {k: v for k, v in vars(args).items() if not k.startswith("wandb")}
    origin = tracking.model_origin(args.model) if args.model else None
    with tracking.start_for_command(args, job_type="retrieval-eval", name=Path(args.out).name, directory=args.out,
                                    config=config, origin=origin) as tracker:
        tracker.summarize(scores, prefix="retrieval-eval/")
        tracker.log_table("retrieval-eval/results", ["task", "method", *COLUMNS, "queries", "documents"], rows)
