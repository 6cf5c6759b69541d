"""`biomamba report train RUN_DIR [RUN_DIR ...] [--out DIR]`: pretraining runs side by side.

A markdown table (final train loss, val loss / perplexity / packed bits per byte, tokens/s,
parameters), the same as JSON, and loss curves (loss.png).
"""
import json
import sys
from pathlib import Path

from biomamba.io import save_figure, write_report


def add_arguments(parser):
    parser.add_argument("runs", nargs="+", help="run directories")
    parser.add_argument("--out", help="where to write report.md and loss.png (default: the first run)")


def read_metrics(run_dir: Path):
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics.jsonl (is {run_dir} a run directory?)")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    train = [r for r in rows if r.get("split") != "val"]
    val = [r for r in rows if r.get("split") == "val"]
    return train, val


def run_summary(run_dir: Path) -> dict:
    train, val = read_metrics(run_dir)
    results = Path(run_dir) / "results.json"
    resolved = json.loads(results.read_text())["resolved"] if results.is_file() else {}
    tail = train[-20:] or [{}]
    return {
        "run": Path(run_dir).name, "steps": train[-1]["step"] if train else 0,
        "parameters": resolved.get("parameters"),
        "scan_backend": _scan_backend(resolved),
        "train_loss": sum(r["loss"] for r in tail) / len(tail) if train else None,
        "tokens_per_s": sum(r["tokens_per_s"] for r in tail) / len(tail) if train else None,
        "val_loss": val[-1]["loss"] if val else None, "val_ppl": val[-1]["ppl"] if val else None,
        # a masked-LM run (model.arch=bert) has no bits per byte; its val row holds the unigram entropy
        "val_packed_bits_per_byte": val[-1].get("packed_bits_per_byte") if val else None,
    }


def _scan_backend(resolved: dict):
    """The scan's backend: selective_scan's (Mamba-1) or ssd_scan's (Mamba-2); older runs: scan_backend."""
    backends = resolved.get("backends", {})
    return backends.get("selective_scan", backends.get("ssd_scan", resolved.get("scan_backend")))


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def train_table(summaries) -> str:
    lines = ["| run | parameters | steps | train loss (last 20) | val loss | val ppl | val packed bits/byte | train tokens/s | scan |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        params = "-" if s["parameters"] is None else f"{s['parameters'] / 1e6:.2f}M"
        lines.append(f"| {s['run']} | {params} | {s['steps']} | {_fmt(s['train_loss'], '.4f')} | "
                     f"{_fmt(s['val_loss'], '.4f')} | {_fmt(s['val_ppl'], '.2f')} | {_fmt(s['val_packed_bits_per_byte'], '.4f')} | "
                     f"{_fmt(s['tokens_per_s'], ',.0f')} | {s['scan_backend'] or '-'} |")
    return "\n".join(lines) + "\n"


def plot_losses(run_dirs, path: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for run_dir in run_dirs:
        train, val = read_metrics(run_dir)
        name = Path(run_dir).name
        line, = ax.plot([r["step"] for r in train], [r["loss"] for r in train], alpha=0.6, label=f"{name} train")
        if val:
            ax.plot([r["step"] for r in val], [r["loss"] for r in val], "o-", color=line.get_color(),
                    label=f"{name} val")
            if "unigram_entropy" in val[-1]:  # masked LM: the loss of predicting from frequencies alone
                ax.axhline(val[-1]["unigram_entropy"], color=line.get_color(), linestyle="--", linewidth=1,
                           label=f"{name} unigram entropy")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title("Pretraining loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def run(args) -> int:
    out = Path(args.out or args.runs[0])
    out.mkdir(parents=True, exist_ok=True)
    try:
        summaries = [run_summary(Path(r)) for r in args.runs]
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    table = train_table(summaries)
    write_report(out, "report", table, summaries)
    plot_losses([Path(r) for r in args.runs], out / "loss.png")
    print(table)
    print(f"wrote {out / 'report.md'}, {out / 'report.json'}, {out / 'loss.png'}")
    return 0
