"""`biomamba retrieval eval`: BEIR-style retrieval evaluation of dense (BioMamba), BM25 and their
hybrid, scored by trec_eval.

  biomamba retrieval eval --model runs/retrieval/model --data demo_out/data --out runs/retrieval/eval
  biomamba retrieval eval --model runs/retrieval/model --data prepared:demo_out/data:val --val-split train --out OUT
  biomamba retrieval eval --model M --beir nfcorpus/ --beir scifact/ --out OUT
  biomamba retrieval eval --model M --bioasq BioASQ-training12b.json --corpus demo_out/data --out OUT

Held-out tasks come from the prepared data's test split (or --split), BEIR dirs and BioASQ; dense,
BM25 (bm25s, stemmed), rrf and hybrid in one table of nDCG@10, Recall@10, Recall@100, MRR@10; writes
OUT/retrieval.md and OUT/retrieval.json.

Tasks: biomamba.data.retrieval_tasks (held-out PubMed title-abstract / conclusion-rest /
title-abstract-disjoint, BEIR directories, BioASQ), each queries + corpus + qrels + a query instruction.

Metrics: biomamba.metrics.retrieval (pytrec_eval, i.e. trec_eval's code: nDCG@10, Recall@1/10/100,
MRR@10). Fusion of the dense and BM25 top 100:
  rrf     equal-weight reciprocal rank fusion, score(d) = sum_s 1 / (60 + rank_s(d))
  hybrid  w * minmax(dense) + (1 - w) * minmax(BM25), the dense weight w chosen on validation queries
          of the same task (--val-split of --data, the same kind and distractors; a BEIR dir's
          qrels/--beir-val-split) as the w of 0, 0.05, ..., 1 with the best nDCG@10 (a mix only if it
          beats the better single side by more than 0.005: FUSION_MARGIN), then applied
          unchanged to the evaluated queries. retrieval.json records w and the validation curve; a
          task without validation judgments (BioASQ, a BEIR dir without them) has no hybrid row.
A val task with distractors searches the same documents as its test task: both query sets then go
through one run over that corpus (each passage encoded once), split by query afterwards.

W&B (--no-wandb: none): a run of job_type retrieval-eval named after OUT, files under OUT, offline
unless W&B is configured; summary retrieval-eval/TASK/METHOD/{nDCG@10, Recall@10, Recall@100,
MRR@10} (and TASK/hybrid/dense_weight) and a table retrieval-eval/results (the rows of
retrieval.md). Its group is the one of the run that trained --model (a `biomamba retrieval train`
RUN_DIR/model joins the group of the model it started from; its W&B id is config
model_origin.run_id), else the model directory's name.
"""
# This module is the command's face: `--help` imports it alone, so it loads neither torch nor
# transformers; biomamba.eval.retrieval_eval holds the run and is imported by `run` (biomamba/cli.py).
from biomamba import tracking
from biomamba.data.pairs import PAIR_KINDS


def add_arguments(parser):
    parser.add_argument("--model", help="retrieval model dir (omit for BM25 only)")
    parser.add_argument("--tokenizer", help="tokenizer dir (default: the model dir, else DATA/tokenizer)")
    parser.add_argument("--data", metavar="SPEC",
                        help="prepared data: DIR or prepared:DIR[:SPLIT] (eval-ppl's SPEC grammar); held-out "
                             "tasks from its test split")
    parser.add_argument("--split", help="split of --data to evaluate (default test; or prepared:DIR:SPLIT)")
    parser.add_argument("--kinds", nargs="+", default=list(PAIR_KINDS), choices=list(PAIR_KINDS),
                        help="held-out tasks from --data (default: all)")
    parser.add_argument("--val-split", default="val",
                        help="split of --data whose queries choose the hybrid's fusion weight (default val)")
    parser.add_argument("--max-queries", type=int, help="at most this many queries per held-out task")
    parser.add_argument("--distractors", nargs="+", default=[], metavar="SPLIT",
                        help="add the passages of these splits of --data to the held-out corpora "
                             "(e.g. --distractors train val: the whole prepared data as corpus)")
    parser.add_argument("--beir", action="append", default=[], help="a BEIR directory (repeatable)")
    parser.add_argument("--beir-split", default="test", help="qrels split of the BEIR dirs (default test)")
    parser.add_argument("--beir-val-split", default="dev",
                        help="qrels split of the BEIR dirs that chooses the fusion weight (default dev; "
                             "a dir without it gets no hybrid row)")
    parser.add_argument("--bioasq", help="BioASQ task B JSON (needs --corpus)")
    parser.add_argument("--corpus", help="corpus for --bioasq: a BEIR corpus.jsonl/dir or a prepared dir")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", required=True, help="directory for retrieval.md and retrieval.json")
    tracking.add_arguments(parser)


def run(args) -> int:
    from biomamba.eval.retrieval_eval import run

    return run(args)
