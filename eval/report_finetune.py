"""The report layer of fine-tuning results: one run's results.md (results_markdown, written by
`biomamba finetune`), and `biomamba report finetune RUN_DIR [RUN_DIR ...] [--out DIR]`: runs side by side.

One row per run (from RUN_DIR/results.json): model, parameters, seeds, test accuracy, macro-F1 and
weighted-F1 as mean ± sample std over seeds, val macro-F1, wall time per seed, and the difference in
test macro-F1 and accuracy from the first run (the reference). Then a line naming the better run
per task and by how much, with whether the gap exceeds the seeds' spread. Writes
finetune_report.md and finetune_report.json to --out (default: the first run directory).
"""
import json
import math
import sys
from pathlib import Path

from biomamba.io import write_report


def add_arguments(parser):
    parser.add_argument("runs", nargs="+", help="fine-tuning run directories (with results.json)")
    parser.add_argument("--out", help="where to write finetune_report.md/.json (default: the first run)")


def load_results(run_dir) -> dict:
    path = Path(run_dir) / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (is {run_dir} a finished `biomamba finetune` run?)")
    results = json.loads(path.read_text())
    if "per_seed" not in results or "mean" not in results:
        raise ValueError(f"{path}: not a fine-tuning results file")
    return {**results, "run": Path(run_dir).name}


def _pm(mean, std, spec=".4f"):
    return f"{format(mean, spec)} ± {format(std, spec)}"


NAMES = {"accuracy": "accuracy", "macro_f1": "macro-F1", "weighted_f1": "weighted-F1"}


def _random(r: dict) -> str:
    """", random init" for a model.init=random run (results from before the option have no "init")."""
    return ", random init" if r.get("init") == "random" else ""


def results_markdown(r: dict) -> str:
    """RUN_DIR/results.md of one `biomamba finetune` run: all its seeds."""
    b = r["budget"]
    counts = {s: sum(c.values()) for s, c in r["examples"].items()}
    params = "-" if r.get("parameters") is None else f"{r['parameters'] / 1e6:.2f}M"
    lines = [f"# Fine-tuning: {r['task']}", "",
             f"model `{r['model']}` ({r['model_family']}{_random(r)}, {params} parameters); seeds {r['seeds']}; "
             f"{b['max_steps']} steps x batch {b['batch_size']}, lr {b['lr']:g} ({b['schedule']}), "
             f"max length {b['max_length']}; examples train {counts['train']:,} / val {counts['val']:,} / "
             f"test {counts['test']:,}. Test scores are those of the step with the best val macro-F1; "
             f"± is the {r['std_definition']}.", "",
             "| metric | val | test |", "|---|---|---|"]
    for key, name in NAMES.items():
        lines.append(f"| {name} | {_pm(r['mean']['val'][key], r['std']['val'][key])} | "
                     f"{_pm(r['mean']['test'][key], r['std']['test'][key])} |")
    lines.append(f"| wall time per seed (s) | {_pm(r['mean']['wall_s'], r['std']['wall_s'], '.1f')} | |")
    lines += ["", "| seed | best step | val macro-F1 | test accuracy | test macro-F1 | test weighted-F1 | wall s |",
              "|---|---|---|---|---|---|---|"]
    for s in r["per_seed"]:
        t = s["test"]
        lines.append(f"| {s['seed']} | {s['best_step']} | {s['val']['macro_f1']:.4f} | {t['accuracy']:.4f} | "
                     f"{t['macro_f1']:.4f} | {t['weighted_f1']:.4f} | {s['wall_s']:.1f} |")
    lines += ["", "Per class (test F1 over seeds):", "", "| class | F1 | support |", "|---|---|---|"]
    for name, c in r["per_class_test_f1"].items():
        lines.append(f"| {name} | {_pm(c['mean'], c['std'])} | {c['support']} |")
    return "\n".join(lines) + "\n"


def comparison(runs: list[dict]) -> list[dict]:
    """Each run against the first on the same task: differences of mean test macro-F1 and accuracy,
    and the pooled standard error of the macro-F1 difference (sqrt(s1^2/n1 + s2^2/n2))."""
    ref = runs[0]
    rows = []
    for r in runs:
        same_task = r["task"] == ref["task"]
        diff = {k: r["mean"]["test"][k] - ref["mean"]["test"][k] for k in ("macro_f1", "accuracy")} if same_task else {}
        se = math.sqrt(r["std"]["test"]["macro_f1"] ** 2 / len(r["seeds"])
                       + ref["std"]["test"]["macro_f1"] ** 2 / len(ref["seeds"])) if same_task else None
        rows.append({"run": r["run"], "task": r["task"], "model": r["model"],
                     "model_family": r.get("model_family", r.get("model_kind")), "init": r.get("init", "pretrained"),
                     "parameters": r.get("parameters"), "seeds": r["seeds"], "mean": r["mean"], "std": r["std"],
                     "delta_vs_first": diff, "delta_macro_f1_se": se})
    return rows


def verdicts(rows) -> list[str]:
    lines = []
    ref = rows[0]
    for row in rows[1:]:
        if not row["delta_vs_first"]:
            continue
        d, se = row["delta_vs_first"]["macro_f1"], row["delta_macro_f1_se"]
        better, worse = (row, ref) if d > 0 else (ref, row)
        clear = "more than" if se is not None and abs(d) > 2 * se else "within"
        lines.append(f"{row['task']}: {better['run']} is better than {worse['run']} by {abs(d):.4f} test "
                     f"macro-F1 ({abs(row['delta_vs_first']['accuracy']):.4f} accuracy "
                     f"{'higher' if (row['delta_vs_first']['accuracy'] > 0) == (d > 0) else 'lower'}); "
                     f"{clear} 2 standard errors ({2 * (se or 0):.4f}) of the seeds' spread.")
    return lines


def table(rows) -> str:
    lines = ["| run | task | model | parameters | seeds | test accuracy | test macro-F1 | test weighted-F1 | "
             "val macro-F1 | Δ macro-F1 vs first | Δ accuracy vs first | wall s / seed |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m, s = r["mean"], r["std"]
        params = "-" if r["parameters"] is None else f"{r['parameters'] / 1e6:.2f}M"
        delta = r["delta_vs_first"]
        d_f1 = f"{delta['macro_f1']:+.4f}" if delta else "-"
        d_acc = f"{delta['accuracy']:+.4f}" if delta else "-"
        lines.append(
            f"| {r['run']} | {r['task']} | {r['model_family']}{_random(r)} `{Path(r['model']).name or r['model']}` | "
            f"{params} | "
            f"{len(r['seeds'])} | {_pm(m['test']['accuracy'], s['test']['accuracy'])} | "
            f"{_pm(m['test']['macro_f1'], s['test']['macro_f1'])} | "
            f"{_pm(m['test']['weighted_f1'], s['test']['weighted_f1'])} | "
            f"{_pm(m['val']['macro_f1'], s['val']['macro_f1'])} | "
            f"{d_f1} | {d_acc} | "
            f"{_pm(m['wall_s'], s['wall_s'], '.1f')} |")
    return "\n".join(lines) + "\n"


def run(args) -> int:
    try:
        runs = [load_results(r) for r in args.runs]
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    rows = comparison(runs)
    text = "# Fine-tuning runs\n\nMean ± sample standard deviation over seeds; test scores at the step " \
           "with the best val macro-F1.\n\n" + table(rows) + "\n" + "\n".join(verdicts(rows)) + "\n"
    out = Path(args.out or args.runs[0])
    write_report(out, "finetune_report", text, {"runs": rows, "verdicts": verdicts(rows)})
    print(text)
    return 0
