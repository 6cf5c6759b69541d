"""Retrieval evaluation behind `biomamba retrieval eval` (its command line and usage: eval/retrieval_eval_cli.py)."""
from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from biomamba import tracking
from biomamba.checkpoints import CheckpointError
from biomamba.data.errors import DataError
from biomamba.eval.ppl_data import prepared_split
from biomamba.data.retrieval_tasks import beir_task, bioasq_task, heldout_tasks
from biomamba.io import write_report
from biomamba.metrics.retrieval import (FUSION_MARGIN, FUSION_METRIC, choose_fusion_weight, convex_fusion, evaluate_run,
                                        reciprocal_rank_fusion)
from biomamba.resolve import ModelSpecError
from biomamba.retrievers import RetrievalError, bm25_run, dense_run, load_encoder
from biomamba.eval.retrieval_eval_cli import add_arguments  # noqa: F401  (the command's arguments, re-exported)


def run(args) -> int:
    try:
        return _run(args)
    except (RetrievalError, CheckpointError, DataError, ModelSpecError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


def _run(args) -> int:
    if args.data:  # one --data grammar in every command: DIR or prepared:DIR[:SPLIT]
        data, args.split = prepared_split(args.data, args.split, "test")
        args.data = str(data)
    else:
        args.split = args.split or "test"
    if not (args.data or args.beir or args.bioasq):
        raise RetrievalError("nothing to evaluate: give --data, --beir or --bioasq")
    if args.bioasq and not args.corpus:
        raise RetrievalError("--bioasq needs --corpus (the documents its questions are searched in)")
    tasks = with_val_tasks(args)
    encoder = load_encoder(args.model, args.tokenizer, args.data) if args.model else None
    results = []
    for task, val in tasks:
        start = time.perf_counter()
        results.append(evaluate_task(task, encoder, args.batch_size, progress=sys.stderr.isatty(), val=val))
        print(f"{task.name}: {len(task.queries)} queries, {len(task.corpus)} documents, "
              f"{time.perf_counter() - start:.1f} s", file=sys.stderr)
    table = write_results(args.out, results, {"model": args.model, "data": args.data, "split": args.split})
    print(table, end="")
    track(args, results)
    return 0

def evaluate_task(task, encoder=None, batch_size: int = 32, progress: bool = False, val=None) -> dict:
    """{"task", "queries", "documents", "bm25": metrics, and with an encoder "dense", "rrf", timings, and
    given `val` (a ValTask) "hybrid" with its "fusion" record}."""
    val_task = val.task if val is not None else None
    lexical, val_lexical, _ = with_val_run(lambda t: (bm25_run(t), None), task, val_task)
    out = {"task": task.name, "queries": len(task.queries), "documents": len(task.corpus),
           "bm25": evaluate_run(task.qrels, lexical)}
    if encoder is not None:
        dense, val_dense, timing = with_val_run(
            lambda t: dense_run(encoder, t, batch_size=batch_size, progress=progress), task, val_task)
        out["dense"] = evaluate_run(task.qrels, dense)
        out["rrf"] = evaluate_run(task.qrels, reciprocal_rank_fusion([dense, lexical]))
        out.update(timing)
        if val is not None:
            out.update(tuned_hybrid(task, dense, lexical, val, val_dense, val_lexical))
    return out


# ----------------------------------------------------------------------------- the fusion weight

@dataclass
class ValTask:
    """The validation counterpart of an evaluated task, whose queries choose the fusion weight."""
    task: object  # a RetrievalTask
    source: str  # where its queries come from, e.g. "split val of demo_out/data"


def with_val_tasks(args) -> list[tuple]:
    """[(task, ValTask or None)]: every evaluated task with its validation counterpart, if it has one."""
    pairs = []
    if args.data:
        if args.val_split == args.split:
            raise RetrievalError(f"--val-split must differ from --split (both {args.split!r}): the fusion "
                                 "weight is chosen on other queries than those it is scored on")
        tests = heldout_tasks(args.data, args.split, args.kinds, args.max_queries, args.distractors)
        # the same corpus for val as for test: the query split's passages plus the others given
        mirrored = [args.split if s == args.val_split else s for s in args.distractors]
        vals = heldout_tasks(args.data, args.val_split, args.kinds, args.max_queries, mirrored)
        source = f"split {args.val_split} of {args.data}"
        pairs += [(test, ValTask(val, source)) for test, val in zip(tests, vals)]
    for directory in args.beir:
        has_val = (Path(directory) / "qrels" / f"{args.beir_val_split}.tsv").is_file()
        val = ValTask(beir_task(directory, args.beir_val_split), f"qrels/{args.beir_val_split}.tsv") if has_val else None
        pairs.append((beir_task(directory, args.beir_split), val))
    if args.bioasq:
        pairs.append((bioasq_task(args.bioasq, args.corpus), None))
    return pairs


def with_val_run(run, task, val_task) -> tuple:
    """(run of task, run of val_task or None, what else run(task) returned), run(t) -> (run, extra). When
    both search the same corpus with the same instruction and distinct query ids, one run serves both
    query sets (the corpus is indexed or encoded once); `extra` (timings) then covers both."""
    shared = val_task is not None and (val_task.corpus == task.corpus and val_task.instruction == task.instruction
                                       and not set(val_task.queries) & set(task.queries))
    if not shared:
        ours, extra = run(task)
        return ours, run(val_task)[0] if val_task is not None else None, extra
    both = dataclasses.replace(task, queries={**task.queries, **val_task.queries})
    joint, extra = run(both)
    return {q: joint[q] for q in task.queries}, {q: joint[q] for q in val_task.queries}, extra


def tuned_hybrid(task, dense: dict, lexical: dict, val: ValTask, val_dense: dict, val_lexical: dict) -> dict:
    """The hybrid of `task` at the dense weight its validation queries choose, and the record of that choice."""
    weight, curve = choose_fusion_weight(val.task.qrels, val_dense, val_lexical)
    return {"hybrid": evaluate_run(task.qrels, convex_fusion(dense, lexical, weight)),
            "fusion": {"method": "convex combination of min-max scaled scores", "dense_weight": weight,
                       "chosen_by": f"val {FUSION_METRIC}; a mix only if it beats the better single side by "
                                    f"more than {FUSION_MARGIN}", "val": f"{val.task.name}, {val.source}",
                       "val_queries": len(val.task.queries), "val_documents": len(val.task.corpus),
                       "val_curve": {f"{w:.2f}": score for w, score in curve.items()}}}


# ----------------------------------------------------------------------------- reporting

COLUMNS = ("nDCG@10", "Recall@10", "Recall@100", "MRR@10")
METHODS = ("dense", "bm25", "rrf", "hybrid")


def markdown_table(results: list[dict]) -> str:
    lines = ["| task | method | " + " | ".join(COLUMNS) + " | queries | docs |",
             "|---|---|" + "---:|" * (len(COLUMNS) + 2)]
    for result in results:
        for method in METHODS:
            if method in result:
                m = result[method]
                lines.append(f"| {result['task']} | {method} | " + " | ".join(f"{m[c]:.4f}" for c in COLUMNS)
                             + f" | {result['queries']} | {result['documents']} |")
    lines += fusion_notes(results)
    speeds = [f"{r['task']}: {r['encode_docs_per_s']:.1f} docs/s" for r in results if "encode_docs_per_s" in r]
    if speeds:
        lines += ["", "Dense encode throughput: " + "; ".join(speeds)]
    return "\n".join(lines) + "\n"


def fusion_notes(results: list[dict]) -> list[str]:
    """What rrf and hybrid are, each task's chosen dense weight and the tasks left without a hybrid."""
    if not any("rrf" in r for r in results):
        return []
    lines = ["", "rrf: equal-weight reciprocal rank fusion (k 60). hybrid: w x min-max(dense) + (1 - w) x "
                 f"min-max(BM25), the dense weight w in 0, 0.05, ..., 1 with the best val {FUSION_METRIC} (a mix "
                 f"only if it beats the better single side by more than {FUSION_MARGIN}):"]
    for r in results:
        if "fusion" in r:
            f, curve = r["fusion"], r["fusion"]["val_curve"]
            at_weight = curve[f"{f['dense_weight']:.2f}"]
            lines.append(f"- {r['task']}: w {f['dense_weight']:.2f} (val {FUSION_METRIC} {at_weight:.4f}, "
                         f"best on the curve {max(curve.values()):.4f}; "
                         f"dense alone {curve['1.00']:.4f}, BM25 alone {curve['0.00']:.4f}; {f['val_queries']} "
                         f"queries of {f['val']})")
        elif "rrf" in r:
            lines.append(f"- {r['task']}: no validation judgments, no hybrid")
    return lines


def without_per_query(results: list[dict]) -> list[dict]:
    return [{k: ({m: v for m, v in val.items() if m != "per_query"} if isinstance(val, dict) else val)
             for k, val in r.items()} for r in results]


def write_results(out_dir, results: list[dict], extra: dict | None = None) -> str:
    table = markdown_table(results)
    write_report(out_dir, "retrieval", table, {**(extra or {}), "results": without_per_query(results)})
    return table


# ----------------------------------------------------------------------------- W&B

def summary_names(results: list[dict]) -> list[str]:
    """Each result's task name, with #2, #3, ... on repeats (two BEIR dirs of the same name)."""
    seen, names = {}, []
    for r in results:
        seen[r["task"]] = seen.get(r["task"], 0) + 1
        names.append(r["task"] if seen[r["task"]] == 1 else f"{r['task']}#{seen[r['task']]}")
    return names


def track(args, results: list[dict]):
    """retrieval.json's scores as a W&B run (job_type retrieval-eval) in the group of the model's training run."""
    scores = {}
    for name, r in zip(summary_names(results), results):
        scores[name] = {m: {c: r[m][c] for c in COLUMNS} for m in METHODS if m in r}
        if "fusion" in r:  # the val-chosen fusion weight sits beside the hybrid scores it gave
            scores[name]["hybrid"]["dense_weight"] = r["fusion"]["dense_weight"]
    rows = [[r["task"], m, *(r[m][c] for c in COLUMNS), r["queries"], r["documents"]]
            for r in results for m in METHODS if m in r]
    config = {k: v for k, v in vars(args).items() if not k.startswith("wandb")}
    origin = tracking.model_origin(args.model) if args.model else None
    with tracking.start_for_command(args, job_type="retrieval-eval", name=Path(args.out).name, directory=args.out,
                                    config=config, origin=origin) as tracker:
        tracker.summarize(scores, prefix="retrieval-eval/")
        tracker.log_table("retrieval-eval/results", ["task", "method", *COLUMNS, "queries", "documents"], rows)
