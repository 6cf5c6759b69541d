"""RUN_DIR/results.json and results.md of a fine-tuning run (all seeds)."""
import json
from pathlib import Path

NAMES = {"accuracy": "accuracy", "macro_f1": "macro-F1", "weighted_f1": "weighted-F1"}


def pm(mean, std, spec=".4f") -> str:
    return f"{format(mean, spec)} ± {format(std, spec)}"


def results_markdown(r: dict) -> str:
    b = r["budget"]
    counts = {s: sum(c.values()) for s, c in r["examples"].items()}
    params = "-" if r.get("parameters") is None else f"{r['parameters'] / 1e6:.2f}M"
    lines = [f"# Fine-tuning: {r['task']}", "",
             f"model `{r['model']}` ({r['model_kind']}, {params} parameters); seeds {r['seeds']}; "
             f"{b['max_steps']} steps x batch {b['batch_size']}, lr {b['lr']:g} ({b['schedule']}), "
             f"max length {b['max_length']}; examples train {counts['train']:,} / val {counts['val']:,} / "
             f"test {counts['test']:,}. Test scores are those of the step with the best val macro-F1; "
             f"± is the {r['std_definition']}.", "",
             "| metric | val | test |", "|---|---|---|"]
    for key, name in NAMES.items():
        lines.append(f"| {name} | {pm(r['mean']['val'][key], r['std']['val'][key])} | "
                     f"{pm(r['mean']['test'][key], r['std']['test'][key])} |")
    lines.append(f"| wall time per seed (s) | {pm(r['mean']['wall_s'], r['std']['wall_s'], '.1f')} | |")
    lines += ["", "| seed | best step | val macro-F1 | test accuracy | test macro-F1 | test weighted-F1 | wall s |",
              "|---|---|---|---|---|---|---|"]
    for s in r["per_seed"]:
        t = s["test"]
        lines.append(f"| {s['seed']} | {s['best_step']} | {s['val']['macro_f1']:.4f} | {t['accuracy']:.4f} | "
                     f"{t['macro_f1']:.4f} | {t['weighted_f1']:.4f} | {s['wall_s']:.1f} |")
    lines += ["", "Per class (test F1 over seeds):", "", "| class | F1 | support |", "|---|---|---|"]
    for name, c in r["per_class_test_f1"].items():
        lines.append(f"| {name} | {pm(c['mean'], c['std'])} | {c['support']} |")
    return "\n".join(lines) + "\n"


def write_results(run_dir: Path, results: dict):
    for name, text in (("results.json", json.dumps(results, indent=2) + "\n"),
                       ("results.md", results_markdown(results))):
        tmp = Path(run_dir) / (name + ".tmp")
        tmp.write_text(text)
        tmp.replace(Path(run_dir) / name)
