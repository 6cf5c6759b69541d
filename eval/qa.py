"""Multiple-choice biomedical QA accuracy of any local causal LM, by lm-eval's protocol and BioMamba's.

  biomamba eval-qa --model RUN_DIR --task pubmedqa:ori_pqal.json --task medqa:test.jsonl:train.jsonl \\
      --out qa.json [--num-fewshot 2] [--protocol lm-eval --protocol biomamba] [--device auto] [--precision fp32]

Tasks (--task KIND:FILE[:FEWSHOT_FILE], repeatable; formats in biomamba/data/qa_formats.py):
  pubmedqa, bioasq (yes/no), medqa, medmcqa, mmlu, mc (generic multiple choice jsonl).
Models: as eval-ppl (biomamba/resolve.py): a pretraining run dir, our / HF Mamba / state-spaces dirs, any
transformers causal-LM dir; the tokenizer beside the model or --tokenizer DIR.

Protocols (one result row each per task; never compare numbers across protocols):
  lm-eval    lm-eval 0.4.x: its prompts (eval/qa_prompts.py), the loglikelihood of " " + each choice as
             a continuation, acc (argmax) and acc_norm (argmax of loglikelihood / choice length in
             characters), --num-fewshot k examples drawn as lm-eval draws them (seed 1234).
  biomamba   BioMamba's: the same prompt, the next-token probabilities of the answers' first tokens
             (yes/no/maybe, or the letters) renormalised over those tokens; acc only (not for titles).
BioMamba models score the lm-eval protocol by shared state (each item's context run once, every
choice from a copy of its conv/SSM cache; exact); other models by full sequences (--scoring full
forces it).

OUT.json: {"model", "results": [{task, protocol, prompt, split, num_fewshot, n, acc, acc_norm,
stderr, ci95, ...}]}; model.trained_by names the biomamba run that wrote the model (run dir, job,
objective, task, seed, LoRA or full, steps: a `finetune --objective causal-lm` RUN_DIR or
RUN_DIR/seed_N is scored as it is given, see train/finetune_cli.py); beside it OUT.predictions.jsonl
(one line per item and protocol) and OUT.md (the table printed). W&B: a run of job_type eval-qa in the model's group (as eval-ppl).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from biomamba import flags, tracking
from biomamba.data.qa_formats import QAFormatError, parse_task_spec
from biomamba.io import write_text

PROTOCOLS = ("lm-eval", "biomamba")
BIOMAMBA_KINDS = ("pubmedqa", "bioasq", "medqa", "medmcqa", "mmlu", "mc")  # answers: a word or a letter
DEFAULT_MAX_LENGTH = 2048  # lm-eval HFLM's when the model config states no positional limit


def add_arguments(parser):
    flags.add_scored_model(parser)  # --model, --tokenizer, --device, --precision, as eval-ppl's
    parser.add_argument("--task", required=True, action="append", metavar="SPEC",
                        help="KIND:FILE[:FEWSHOT_FILE] (repeatable); KIND pubmedqa, bioasq, medqa, medmcqa, mmlu, mc")
    parser.add_argument("--out", required=True, metavar="OUT.json", help="results JSON (.md and .predictions.jsonl beside)")
    parser.add_argument("--protocol", action="append", metavar="P",
                        help="lm-eval or biomamba (repeatable, as eval-ppl's; default both, side by side)")
    parser.add_argument("--num-fewshot", type=int, default=0, metavar="K", help="few-shot examples (default 0)")
    parser.add_argument("--max-length", type=int, metavar="N",
                        help="tokens per sequence, left-truncated beyond (default the model's positions, else 2048)")
    parser.add_argument("--batch-size", type=int, default=8, help="items (shared state) or rows per pass (default 8)")
    parser.add_argument("--scoring", default="auto", choices=["auto", "shared", "full"],
                        help="auto: shared state for BioMamba models, full sequences otherwise")
    parser.add_argument("--no-progress", action="store_true", help="no progress output")
    tracking.add_arguments(parser, files_in="OUT.json's directory")


def protocols_of(given) -> list:
    """The --protocol values (repeatable; default every protocol), each known."""
    names = list(dict.fromkeys(given or PROTOCOLS))
    bad = [p for p in names if p not in PROTOCOLS]
    if bad:
        raise ValueError(f"--protocol: unknown {', '.join(bad)}; choose from {', '.join(PROTOCOLS)} "
                         "(repeat the flag for several)")
    return names


def run(args) -> int:
    import torch
    with torch.no_grad():
        return _run(args)


def _run(args) -> int:
    from biomamba.eval.ppl_models import ModelSpecError
    try:
        protocols = protocols_of(args.protocol)
        if args.num_fewshot < 0 or args.batch_size < 1:
            raise ValueError("--num-fewshot must be >= 0 and --batch-size >= 1")
        tasks = [parse_task_spec(spec) for spec in args.task]  # cheap checks before the model loads
        setup = load_scorer(args)
        results, predictions = [], []
        for task in tasks:
            for protocol in protocols:
                if protocol == "biomamba" and task.kind not in BIOMAMBA_KINDS:
                    print(f"{task.name}: no biomamba protocol (its answers are texts, not one word or letter)")
                    continue
                row, preds = evaluate(setup, task, protocol, args.num_fewshot)
                results.append(row)
                predictions += preds
                print(summary_line(row), flush=True)
    except (QAFormatError, ModelSpecError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    payload = {"model": setup.model_entry, "results": results}
    write_outputs(Path(args.out), payload, predictions)
    track(args, payload)
    return 0


def load_scorer(args):
    from biomamba.eval.qa_runner import Scorer
    return Scorer.load(args)


def evaluate(setup, task, protocol: str, k: int):
    from biomamba.eval.qa_runner import evaluate_task
    return evaluate_task(setup, task, protocol, k)


def summary_line(r: dict) -> str:
    norm = f" | acc_norm {r['acc_norm']:.4f}" if r.get("acc_norm") is not None else ""
    lo, hi = r["ci95"]
    return (f"{r['task']} [{r['protocol']}, {r['num_fewshot']}-shot]: n {r['n']} | acc {r['acc']:.4f} "
            f"(95% CI {lo:.3f}-{hi:.3f}){norm} | {r['tokens_per_s']:.0f} tok/s")


def markdown_table(results) -> str:
    lines = ["| task | protocol | prompt | split | shots | n | acc | 95% CI | acc_norm |", "|---" * 9 + "|"]
    for r in results:
        norm = "-" if r.get("acc_norm") is None else f"{r['acc_norm']:.4f}"
        lines.append(f"| {r['task']} | {r['protocol']} | {r['prompt']} | {r['split']} | {r['num_fewshot']} | "
                     f"{r['n']} | {r['acc']:.4f} | {r['ci95'][0]:.3f}-{r['ci95'][1]:.3f} | {norm} |")
    return "\n".join(lines) + "\n"


def write_outputs(out: Path, payload: dict, predictions) -> None:
    write_text(out, json.dumps(payload, indent=2) + "\n")
    write_text(out.with_suffix(".predictions.jsonl"), "".join(json.dumps(p) + "\n" for p in predictions))
    table = markdown_table(payload["results"])
    write_text(out.with_suffix(".md"), f"# eval-qa: {payload['model']['name']}\n\n"
               + provenance_line(payload["model"].get("trained_by")) + table)
    print(table, end="")
    print(f"wrote {out}, {out.with_suffix('.md')}, {out.with_suffix('.predictions.jsonl')}")


def provenance_line(trained_by: dict | None) -> str:
    """The training run a model came from, one line above the table (empty for outside models)."""
    if not trained_by:
        return ""
    if trained_by.get("job") == "finetune":
        how = "LoRA" if trained_by.get("lora") else "full"
        return (f"Fine-tuned by {trained_by['run_dir']}: {trained_by.get('objective')} on {trained_by.get('task')}, "
                f"seed {trained_by.get('seed')}, {how}, {trained_by.get('steps')} steps, "
                f"from {trained_by.get('from_model')} (init {trained_by.get('init')}).\n\n")
    return f"Trained by {trained_by['run_dir']} ({trained_by.get('job')}, {trained_by.get('arch')}).\n\n"


QA_METRICS = ("acc", "acc_norm", "n")


def track(args, payload: dict):
    """OUT.json's results as a W&B run (job_type eval-qa) in the group of the model's training run."""
    config = {"model": payload["model"], "tasks": args.task, "num_fewshot": args.num_fewshot,
              "protocols": args.protocol}
    summary = {f"{r['task']}/{r['protocol']}/{r['num_fewshot']}shot": {k: r[k] for k in QA_METRICS if r.get(k) is not None}
               for r in payload["results"]}
    columns = ["task", "protocol", "prompt", "split", "num_fewshot", "n", "acc", "acc_norm", "ci95_low", "ci95_high"]
    rows = [[r["task"], r["protocol"], r["prompt"], r["split"], r["num_fewshot"], r["n"], r["acc"], r.get("acc_norm"),
             *r["ci95"]] for r in payload["results"]]
    with tracking.start_for_command(args, job_type="eval-qa", name=Path(args.out).stem,
                                    directory=Path(args.out).parent, config=config,
                                    origin=tracking.model_origin(args.model)) as tracker:
        tracker.summarize(summary, prefix="eval-qa/")
        tracker.log_table("eval-qa/results", columns, rows)
