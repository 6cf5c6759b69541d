"""`biomamba report qa OUT.json [OUT.json ...] [--out DIR]`: eval-qa results of several models side by side.

One markdown table per (task, protocol, shots): a row per model with n, acc, its 95% interval and
acc_norm, so numbers of different protocols never share a table; qa_report.md and the same rows as
qa_report.json.
"""
import json
from pathlib import Path

from biomamba.eval.report import report_results_files


def add_arguments(parser):
    parser.add_argument("results", nargs="+", help="OUT.json files written by `biomamba eval-qa`")
    parser.add_argument("--out", help="where to write qa_report.md / .json (default: the first file's directory)")


def model_label(model: dict) -> str:
    """The model's name, and for a fine-tuned one the run, seed and kind of fine-tuning (model.trained_by)."""
    trained = model.get("trained_by") or {}
    if trained.get("job") != "finetune":
        return model["name"]
    how = "LoRA" if trained.get("lora") else "full"
    return f"{model['name']} ({trained.get('objective')} {how}, seed {trained.get('seed')}, {trained['run_dir']})"


def load_rows(paths) -> list[dict]:
    rows = []
    for path in paths:
        try:
            payload = json.loads(Path(path).read_text())
            model, results = model_label(payload["model"]), payload["results"]
            rows += [{"model": model, **{k: r[k] for k in ("task", "protocol", "prompt", "split", "num_fewshot",
                                                            "n", "acc", "ci95")}, "acc_norm": r.get("acc_norm")}
                     for r in results]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: not an eval-qa results file ({type(err).__name__}: {err})") from None
    return rows


def report_markdown(rows) -> str:
    parts = []
    groups = dict.fromkeys((r["task"], r["protocol"], r["num_fewshot"], r["prompt"]) for r in rows)
    for task, protocol, shots, prompt in groups:
        parts += [f"### {task}: {protocol} protocol, {shots}-shot (prompt: {prompt})", "",
                  "| model | n | acc | 95% CI | acc_norm |", "|---|---|---|---|---|"]
        for r in rows:
            if (r["task"], r["protocol"], r["num_fewshot"], r["prompt"]) == (task, protocol, shots, prompt):
                norm = "-" if r["acc_norm"] is None else f"{r['acc_norm']:.4f}"
                parts.append(f"| {r['model']} | {r['n']} | {r['acc']:.4f} | {r['ci95'][0]:.3f}-{r['ci95'][1]:.3f} "
                             f"| {norm} |")
        parts.append("")
    return "\n".join(parts)


def run(args) -> int:
    return report_results_files(args, load_rows, report_markdown, "qa_report")
