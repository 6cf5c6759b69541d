"""The report layer of fine-tuning results: one run's results.md (results_markdown, written by
`biomamba finetune`), and `biomamba report finetune RUN_DIR [RUN_DIR ...] [--out DIR]`: runs side by side.

One row per run (from RUN_DIR/results.json): model, parameters, seeds, test accuracy, macro-F1 and
weighted-F1 as mean ± sample std over seeds, val macro-F1, the task's own metric (entity F1, micro-F1,
Pearson...), wall time per seed, and the difference in test scores from the first run (the reference).
Then a BLURB-style table: per model, each task type's metric and their macro average, naming the types. Then a line naming the better run
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


NAMES = {"accuracy": "accuracy", "macro_f1": "macro-F1", "weighted_f1": "weighted-F1", "micro_f1": "micro-F1",
         "micro_precision": "micro precision", "micro_recall": "micro recall", "pearson": "Pearson r",
         "threshold": "threshold (chosen on val)", "entity_f1": "entity F1", "entity_precision": "entity precision",
         "entity_recall": "entity recall", "token_f1": "token-level F1"}
CLASSIFICATION_KEYS = ("accuracy", "macro_f1", "weighted_f1")


def _keys(r: dict) -> list[str]:
    """The metrics a run's results hold, in NAMES order (results from before task kinds: classification)."""
    return [k for k in NAMES if k in r["mean"]["test"]]


def _headline(r: dict) -> str:
    return r.get("metric", "macro_f1")


def _random(r: dict) -> str:
    """", random init" for a model.init=random run (results from before the option have no "init")."""
    return ", random init" if r.get("init") == "random" else ""


def results_markdown(r: dict) -> str:
    """RUN_DIR/results.md of one `biomamba finetune` run: all its seeds."""
    b = r["budget"]
    counts = r.get("split_sizes") or {s: sum(c.values()) for s, c in r["examples"].items()}
    params = "-" if r.get("parameters") is None else f"{r['parameters'] / 1e6:.2f}M"
    lines = [f"# Fine-tuning: {r['task']}", "",
             f"model `{r['model']}` ({r['model_family']}{_random(r)}, {params} parameters); seeds {r['seeds']}; "
             f"{b['max_steps']} steps x batch {b['batch_size']}, lr {b['lr']:g} ({b['schedule']}), "
             f"max length {b['max_length']}; examples train {counts['train']:,} / val {counts['val']:,} / "
             f"test {counts['test']:,}. Test scores are those of the step with the best val "
             f"{NAMES[_headline(r)]}; ± is the {r['std_definition']}.", "",
             "| metric | val | test |", "|---|---|---|"]
    keys = _keys(r)
    for key in keys:
        lines.append(f"| {NAMES[key]} | {_pm(r['mean']['val'][key], r['std']['val'][key])} | "
                     f"{_pm(r['mean']['test'][key], r['std']['test'][key])} |")
    lines.append(f"| wall time per seed (s) | {_pm(r['mean']['wall_s'], r['std']['wall_s'], '.1f')} | |")
    lines += ["", f"| seed | best step | val {NAMES[_headline(r)]} | "
              + " | ".join(f"test {NAMES[k]}" for k in keys) + " | wall s |", "|---" * (len(keys) + 4) + "|"]
    for s in r["per_seed"]:
        lines.append(f"| {s['seed']} | {s['best_step']} | {s['val'][_headline(r)]:.4f} | "
                     + " | ".join(f"{s['test'][k]:.4f}" for k in keys) + f" | {s['wall_s']:.1f} |")
    if r["per_class_test_f1"]:
        lines += ["", "Per class (test F1 over seeds):", "", "| class | F1 | support |", "|---|---|---|"]
        for name, c in r["per_class_test_f1"].items():
            lines.append(f"| {name} | {_pm(c['mean'], c['std'])} | {c['support']} |")
    return "\n".join(lines) + "\n"


def comparison(runs: list[dict]) -> list[dict]:
    """Each run against the first on the same task: differences of the mean test scores (macro-F1 and
    accuracy; a BLURB task's own metric), and the pooled standard error of the difference of the
    task's selecting metric (sqrt(s1^2/n1 + s2^2/n2))."""
    ref = runs[0]
    rows = []
    for r in runs:
        same_task = r["task"] == ref["task"]
        key = _headline(r)
        shared = [k for k in dict.fromkeys((key, "macro_f1", "accuracy")) if k in r["mean"]["test"]]
        diff = {k: r["mean"]["test"][k] - ref["mean"]["test"][k] for k in shared} if same_task else {}
        se = math.sqrt(r["std"]["test"][key] ** 2 / len(r["seeds"])
                       + ref["std"]["test"][key] ** 2 / len(ref["seeds"])) if same_task else None
        rows.append({"run": r["run"], "task": r["task"], "model": r["model"],
                     "model_family": r.get("model_family", r.get("model_kind")), "init": r.get("init", "pretrained"),
                     "parameters": r.get("parameters"), "seeds": r["seeds"], "mean": r["mean"], "std": r["std"],
                     "metric": key, "kind": r.get("kind", "classification"),
                     "blurb_type": r.get("blurb_type", "classification"), "blurb_metric": r.get("blurb_metric", key),
                     "bidirectional": r.get("bidirectional", False),
                     "delta_vs_first": diff, "delta_macro_f1_se": se})
    return rows


def verdicts(rows) -> list[str]:
    lines = []
    ref = rows[0]
    for row in rows[1:]:
        if not row["delta_vs_first"]:
            continue
        key = row["metric"]
        d, se = row["delta_vs_first"][key], row["delta_macro_f1_se"]
        better, worse = (row, ref) if d > 0 else (ref, row)
        clear = "more than" if se is not None and abs(d) > 2 * se else "within"
        accuracy = row["delta_vs_first"].get("accuracy") if key != "accuracy" else None
        also = "" if accuracy is None else \
            f" ({abs(accuracy):.4f} accuracy {'higher' if (accuracy > 0) == (d > 0) else 'lower'})"
        lines.append(f"{row['task']}: {better['run']} is better than {worse['run']} by {abs(d):.4f} test "
                     f"{NAMES[key]}{also}; {clear} 2 standard errors ({2 * (se or 0):.4f}) of the seeds' spread.")
    return lines


def _cell(m, s, split, key):
    return _pm(m[split][key], s[split][key]) if key in m[split] else "-"


def _model_name(r) -> str:
    both = ", bidirectional" if r.get("bidirectional") else ""
    return f"{r['model_family']}{_random(r)}{both} `{Path(r['model']).name or r['model']}`"


def table(rows) -> str:
    """Classification runs in full (accuracy, macro-F1, weighted-F1); a BLURB task's run shows its own
    metric in the last score columns."""
    lines = ["| run | task | model | parameters | seeds | test accuracy | test macro-F1 | test weighted-F1 | "
             "val macro-F1 | task metric: test | Δ task metric vs first | Δ accuracy vs first | wall s / seed |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m, s = r["mean"], r["std"]
        params = "-" if r["parameters"] is None else f"{r['parameters'] / 1e6:.2f}M"
        delta = r["delta_vs_first"]
        d_metric = f"{delta[r['metric']]:+.4f}" if delta else "-"
        d_acc = f"{delta['accuracy']:+.4f}" if "accuracy" in delta else "-"
        lines.append(
            f"| {r['run']} | {r['task']} | {_model_name(r)} | {params} | {len(r['seeds'])} | "
            f"{_cell(m, s, 'test', 'accuracy')} | {_cell(m, s, 'test', 'macro_f1')} | "
            f"{_cell(m, s, 'test', 'weighted_f1')} | {_cell(m, s, 'val', 'macro_f1')} | "
            f"{NAMES[r['metric']]} {_cell(m, s, 'test', r['metric'])} | {d_metric} | {d_acc} | "
            f"{_pm(m['wall_s'], s['wall_s'], '.1f')} |")
    return "\n".join(lines) + "\n"


def blurb_rows(rows) -> list[dict]:
    """One row per model (family, init, direction, path): each BLURB task type's test metric (mean ±
    std over seeds; the mean over that type's tasks when it has several) and the macro average over
    the task types that model has runs for, naming them."""
    from biomamba.metrics.blurb import blurb_average
    models = {}
    for r in rows:
        name = _model_name(r)
        per_type = models.setdefault(name, {})
        per_type.setdefault(r["blurb_type"], []).append(
            (r["task"], r["blurb_metric"], r["mean"]["test"][r["blurb_metric"]], r["std"]["test"][r["blurb_metric"]]))
    out = []
    for name, per_type in models.items():
        average = blurb_average({t: [x[2] for x in v] for t, v in per_type.items()})
        out.append({"model": name, "per_type": {t: {"tasks": [x[0] for x in v], "metric": v[0][1],
                                                    "mean": sum(x[2] for x in v) / len(v),
                                                    "std": sum(x[3] for x in v) / len(v)}
                                                for t, v in per_type.items()},
                    "blurb_average": average["score"], "types_included": average["types_included"]})
    return out


def blurb_table(rows) -> str:
    models = blurb_rows(rows)
    types = sorted({t for m in models for t in m["per_type"]})
    metric = {t: next(m["per_type"][t]["metric"] for m in models if t in m["per_type"]) for t in types}
    lines = ["| model | " + " | ".join(f"{t} ({NAMES[metric[t]]})" for t in types) + " | BLURB-style average | over |",
             "|---" * (len(types) + 3) + "|"]
    for m in models:
        cells = [_pm(m["per_type"][t]["mean"], m["per_type"][t]["std"]) if t in m["per_type"] else "-" for t in types]
        lines.append(f"| {m['model']} | " + " | ".join(cells) + f" | {m['blurb_average']:.4f} | "
                     f"{', '.join(m['types_included'])} |")
    return "\n".join(lines) + "\n"


def run(args) -> int:
    try:
        runs = [load_results(r) for r in args.runs]
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    rows = comparison(runs)
    text = "# Fine-tuning runs\n\nMean ± sample standard deviation over seeds; test scores at the step " \
           "with the best val score of the task's metric (macro-F1 for classification).\n\n" + table(rows) + "\n" \
           + "\n".join(verdicts(rows)) + "\n\n## BLURB-style score\n\nEach task type's test metric (ner: " \
           "entity F1, pico: token F1, relation and document: micro-F1, similarity: Pearson, qa: accuracy, " \
           "classification: macro-F1), and their macro average over the types each model has runs for " \
           "(the types are named: an average over other types is not comparable).\n\n" + blurb_table(rows)
    out = Path(args.out or args.runs[0])
    write_report(out, "finetune_report", text, {"runs": rows, "verdicts": verdicts(rows), "blurb": blurb_rows(rows)})
    print(text)
    return 0
