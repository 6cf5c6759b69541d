"""`biomamba report ppl OUT.json [OUT.json ...] [--out DIR]`: eval-ppl results, models x datasets.

Markdown tables (bits per byte and word perplexity first: they compare across tokenizers; then
token perplexity; then, for each of BioMamba's protocols scored (eval-ppl --protocol), its perplexity
under its definition, labelled as such) in
ppl_report.md, the same rows as JSON, and a bar chart of bits per byte (ppl.png).
"""
import json
import math
from pathlib import Path

from biomamba.eval.report import report_results_files
from biomamba.io import save_figure

METRICS = [  # (key, title, format)
    ("bits_per_byte", "Bits per byte (lower is better; comparable across tokenizers)", ".4f"),
    ("word_perplexity", "Word perplexity (comparable across tokenizers)", ".2f"),
    ("token_perplexity", "Token perplexity (comparable only between models sharing a tokenizer)", ".2f"),
]

BIOMAMBA_PROTOCOLS = [  # (eval-ppl --protocol, title): token perplexities by other protocols, per model and dataset
    ("biomamba-2026", "Perplexity, BioMamba 2026 protocol (exp of the mean per-batch loss; same tokenizer only)"),
    ("biomamba-2024", "Perplexity, BioMamba 2024 protocol (padding scored; NOT comparable)"),
]


def add_arguments(parser):
    parser.add_argument("results", nargs="+", help="OUT.json files written by `biomamba eval-ppl`")
    parser.add_argument("--out", help="where to write ppl_report.md / .json and ppl.png "
                                      "(default: the first file's directory)")


def load_results(paths) -> list[dict]:
    """Flat rows: one per (model, dataset)."""
    rows = []
    for path in paths:
        try:
            payload = json.loads(Path(path).read_text())
            model, results = payload["model"], payload["results"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: not an eval-ppl results file ({type(err).__name__}: {err})") from None
        label = model["name"] + (" (pseudo-ppl)" if model.get("scoring") == "masked" else "")
        for r in results:
            protocols = r.get("protocols") or {}
            if "legacy_padded" in r and "biomamba-2024" not in protocols:  # written before --protocol
                protocols = {**protocols, "biomamba-2024": r["legacy_padded"]}
            rows.append({"model": label, "dataset": r["dataset"], "tokenizer": r["tokenizer"]["sha256"][:12],
                         **{key: r[key] for key, _, _ in METRICS},
                         "documents": r["documents"], "tokens": r["tokens"],
                         "max_length": r["windowing"]["max_length"], "stride": r["windowing"]["stride"],
                         **{f"{name}_perplexity": p.get("perplexity") for name, p in protocols.items()
                            if name != "lm-eval"},
                         "definitions": {name: p["protocol"] for name, p in protocols.items() if "protocol" in p}})
    return rows


def _fmt(value, spec) -> str:
    if value is None:
        return "-"
    return "inf" if math.isinf(value) else format(value, spec)


def matrix(rows, key, spec) -> str:
    models = list(dict.fromkeys(r["model"] for r in rows))
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    cell = {(r["model"], r["dataset"]): r.get(key) for r in rows}
    lines = ["| model | " + " | ".join(datasets) + " |", "|---" * (len(datasets) + 1) + "|"]
    for m in models:
        lines.append(f"| {m} | " + " | ".join(_fmt(cell.get((m, d)), spec) for d in datasets) + " |")
    return "\n".join(lines)


def report_markdown(rows) -> str:
    parts = []
    for key, title, spec in METRICS:
        parts += [f"### {title}", "", matrix(rows, key, spec), ""]
    for name, title in BIOMAMBA_PROTOCOLS:
        if any(r.get(f"{name}_perplexity") is not None for r in rows):
            definition = next(r["definitions"][name] for r in rows if name in r["definitions"])
            parts += [f"### {title}", "", f"Definition: {definition}", "",
                      matrix(rows, f"{name}_perplexity", ".2f"), ""]
    windows = sorted({(r["max_length"], r["stride"]) for r in rows})
    tokenizers = sorted({(r["model"], r["tokenizer"]) for r in rows})
    parts.append("Windows (max_length, stride): " + ", ".join(f"({a}, {b})" for a, b in windows)
                 + ". Tokenizers (sha256 prefix): " + ", ".join(f"{m}: {t}" for m, t in tokenizers) + ".")
    return "\n".join(parts) + "\n"


def plot_bits_per_byte(rows, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rows))
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    cell = {(r["model"], r["dataset"]): r["bits_per_byte"] for r in rows}
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(datasets) * max(1, len(models) / 2)), 4.2))
    for k, m in enumerate(models):
        xs = [d + (k - (len(models) - 1) / 2) * width for d in range(len(datasets))]
        ax.bar(xs, [cell.get((m, d), float("nan")) for d in datasets], width, label=m)
    ax.set_xticks(range(len(datasets)))
    ax.set_xticklabels(datasets)
    ax.set_ylabel("bits per byte (lower is better)")
    ax.set_title("eval-ppl: bits per byte by dataset")
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def run(args) -> int:
    def plot(rows, out):
        plot_bits_per_byte(rows, out / "ppl.png")
        return [out / "ppl.png"]

    return report_results_files(args, load_results, report_markdown, "ppl_report", plot)
