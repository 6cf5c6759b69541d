"""Document resets measured: the same pretraining budget with and without `data.document_resets`, and
`eval-ppl --pack` against one document per row.

    python bench/document_resets.py --data demo_out/data --without demo_out/tiny --with demo_out/tiny-resets

The two runs differ only in data.document_resets:
    biomamba pretrain --config configs/tiny-cpu.yaml --out demo_out/tiny data.dir=demo_out/data
    biomamba pretrain --config configs/tiny-cpu.yaml --out demo_out/tiny-resets data.dir=demo_out/data \\
        data.document_resets=true
Printed, in one run of this script:
  1. quality: eval-ppl (each document alone, windows of 1024) of both models on the val split (title +
     abstract) and on the test split's titles alone (short documents, like BioASQ snippets):
     bits/byte and word perplexity;
  2. training throughput: the median tokens/s over each run's steps (metrics.jsonl), with / without;
  3. eval-ppl --pack against one document per row, with the --with model: tokens/s on the test split's
     titles and on its full documents (--limit of them, a hash sample), and both sums of log-probabilities.
Not a test: nothing is asserted. The machine may be shared: the load average is printed first.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from biomamba.bench_cli import report_table  # noqa: E402
from biomamba.data.documents import read_documents  # noqa: E402
from biomamba.eval import perplexity  # noqa: E402


def write_titles(data_dir: Path, path: Path) -> int:
    """The test split's titles, one JSONL document each; their count."""
    count = 0
    with open(path, "w", encoding="utf-8") as f:
        for doc in read_documents(data_dir, split="test", include_excluded=False):
            if doc["title"].strip():
                f.write(json.dumps({"text": doc["title"]}) + "\n")
                count += 1
    return count


def eval_ppl(model: Path, spec: str, out: Path, *extra) -> dict:
    """One eval-ppl result (run in this process, as the command runs it)."""
    parser = argparse.ArgumentParser()
    perplexity.add_arguments(parser)
    args = parser.parse_args(["--model", str(model), "--data", spec, "--out", str(out), "--max-length", "1024",
                              "--no-progress", "--no-wandb", *extra])
    if perplexity.run(args) != 0:
        raise SystemExit(f"eval-ppl failed on {model} {spec}")
    return json.loads(out.read_text())["results"][0]


def median_tokens_per_s(run_dir: Path) -> float:
    rates = [json.loads(line)["tokens_per_s"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
             if line.strip() and "tokens_per_s" in json.loads(line)]
    return statistics.median(rates[1:] or rates)  # the first step pays one-time costs


def quality(runs: dict, data_dir: Path, titles: Path, scratch: Path):
    print("\n1. eval-ppl, each document alone (bits/byte, word perplexity; lower is better)")
    print(f"{'model':<26} {'val bits/byte':>14} {'val word ppl':>13} {'titles bits/byte':>17} {'titles word ppl':>16}")
    rows = []
    for name, run_dir in runs.items():
        val = eval_ppl(run_dir, f"prepared:{data_dir}:val", scratch / f"{name}-val.json")
        short = eval_ppl(run_dir, f"jsonl:{titles}", scratch / f"{name}-titles.json")
        rows.append([name, val["bits_per_byte"], val["word_perplexity"], short["bits_per_byte"],
                     short["word_perplexity"]])
        print(f"{name:<26} {val['bits_per_byte']:>14.4f} {val['word_perplexity']:>13.1f} "
              f"{short['bits_per_byte']:>17.4f} {short['word_perplexity']:>16.1f}", flush=True)
    report_table("quality", ["model", "val bits/byte", "val word ppl", "titles bits/byte", "titles word ppl"],
                 rows, key=("model",), ratios=())


def throughput(runs: dict):
    rates = {name: median_tokens_per_s(run_dir) for name, run_dir in runs.items()}
    ratio = rates["with resets"] / rates["without resets"]
    print(f"\n2. training tokens/s (median over steps): without {rates['without resets']:,.0f}, "
          f"with {rates['with resets']:,.0f}: with/without {ratio:.3f}")
    report_table("training", ["model", "tokens/s", "x without"],
                 [[name, rate, rate / rates["without resets"]] for name, rate in rates.items()],
                 key=("model",), ratios=("x without",))


def packing(model: Path, data_dir: Path, titles: Path, limit: int, scratch: Path):
    print(f"\n3. eval-ppl --pack vs one document per row ({model}; tokens/s, sum of log-probabilities)")
    print(f"{'documents':<22} {'docs':>6} {'tokens':>9} {'alone tok/s':>12} {'packed tok/s':>13} {'speedup':>8} "
          f"{'sum alone':>16} {'sum packed':>16}")
    rows = []
    for label, spec, extra in (("test titles", f"jsonl:{titles}", ()),
                               ("test title+abstract", f"prepared:{data_dir}:test", ("--limit", str(limit)))):
        alone = eval_ppl(model, spec, scratch / "alone.json", *extra)
        packed = eval_ppl(model, spec, scratch / "packed.json", "--pack", *extra)
        speedup = packed["tokens_per_s"] / alone["tokens_per_s"]
        rows.append([label, alone["documents"], alone["tokens"], alone["tokens_per_s"], packed["tokens_per_s"],
                     speedup, alone["sum_logprob"], packed["sum_logprob"]])
        print(f"{label:<22} {alone['documents']:>6} {alone['tokens']:>9,} {alone['tokens_per_s']:>12,.0f} "
              f"{packed['tokens_per_s']:>13,.0f} {speedup:>7.2f}x {alone['sum_logprob']:>16.4f} "
              f"{packed['sum_logprob']:>16.4f}", flush=True)
    report_table("packing", ["documents", "docs", "tokens", "alone tok/s", "packed tok/s", "speedup", "sum alone",
                             "sum packed"], rows, key=("documents",), ratios=("speedup",))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the prepared data both runs trained on")
    parser.add_argument("--without", type=Path, required=True, help="run dir trained without document resets")
    parser.add_argument("--with", dest="with_", type=Path, required=True, help="run dir trained with them")
    parser.add_argument("--limit", type=int, default=1000, help="test documents for the packing timing")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the start "
          "(other processes on these cores slow every figure)")
    runs = {"without resets": args.without, "with resets": args.with_}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        titles = scratch / "test-titles.jsonl"
        print(f"{write_titles(args.data, titles):,} test titles")
        quality(runs, args.data, titles, scratch)
        throughput(runs)
        packing(args.with_, args.data, titles, args.limit, scratch)


if __name__ == "__main__":
    main()
