"""Peak memory of `biomamba eval-ppl` against the number of documents it scores (goal: flat).

    python bench/eval_ppl_memory.py [--sizes 10000,100000]

Each size runs `biomamba eval-ppl` in a fresh process on a JSONL file of that many documents: the
titles of the embedded MEDLINE files, each made distinct by its number and cycled to the size. The
model is a small random BioMamba (the debug preset) with a byte-level BPE tokenizer trained on the
titles, so the scoring is quick and the memory the command itself holds (documents, tokens,
windows) is what grows if anything does. Peak memory is the child's peak resident set (VmHWM),
glibc told to return freed blocks over 64 KiB to the system; one thread. Not a test: nothing is
asserted.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from biomamba.bench_cli import report_table  # noqa: E402

CHILD = """
import sys
from biomamba.cli import main
code = main(sys.argv[1:])
with open("/proc/self/status") as status:
    peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(f"PEAK_KIB {peak}")
sys.exit(code)
"""


def titles() -> list[str]:
    from biomamba.data.inputs import embedded_medline_files
    from biomamba.data.medline import MedlineRecord, iter_medline
    return [r.title for path in embedded_medline_files() for r in iter_medline(path)
            if isinstance(r, MedlineRecord) and r.title]  # deletions carry no text


def write_documents(path: Path, base: list[str], count: int):
    with open(path, "w", encoding="utf-8") as f:
        for i in range(count):
            f.write(json.dumps({"text": f"{base[i % len(base)]} ({i})"}) + "\n")


def random_model(directory: Path, texts: list[str]):
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from biomamba import BioMambaConfig, BioMambaForCausalLM
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=2000, special_tokens=["<|endoftext|>"],
                                                       show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>")
    fast.save_pretrained(directory)
    torch.manual_seed(0)
    config = BioMambaConfig.from_preset("debug", vocab_size=len(fast), eos_token_id=0, bos_token_id=0, pad_token_id=0)
    BioMambaForCausalLM(config).save_pretrained(directory)


def peak_of_eval(model: Path, data: Path, out: Path) -> tuple[int, float, dict]:
    # one thread: on shared cores, two threads of a small model mostly wait on each other
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    child = subprocess.run([sys.executable, "-c", CHILD, "eval-ppl", "--model", str(model), "--data", f"jsonl:{data}",
                            "--out", str(out), "--no-progress", "--no-wandb"],
                           capture_output=True, text=True, env=env)
    if child.returncode != 0:
        raise SystemExit(f"eval-ppl failed:\n{child.stderr[-2000:]}")
    peak = next(int(line.split()[1]) for line in child.stdout.splitlines() if line.startswith("PEAK_KIB"))
    return peak * 1024, time.perf_counter() - start, json.loads(out.read_text())["results"][0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="documents per run, comma-separated")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the start")
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        base = titles()
        random_model(scratch / "model", base)
        print(f"{'documents':>10} {'tokens':>11} {'peak RSS MiB':>13} {'x smallest':>11} {'seconds':>8}")
        rows = []
        for size in sizes:
            write_documents(scratch / "docs.jsonl", base, size)
            peak, seconds, result = peak_of_eval(scratch / "model", scratch / "docs.jsonl", scratch / "out.json")
            ratio = peak / rows[0][2] if rows else 1.0
            rows.append([size, result["tokens"], peak, ratio])
            print(f"{size:>10,} {result['tokens']:>11,} {peak / 2**20:>13.0f} {ratio:>10.2f}x {seconds:>8.1f}", flush=True)
        report_table("memory", ["documents", "tokens", "peak MiB", "x smallest"],
                     [[r[0], r[1], r[2] / 2**20, r[3]] for r in rows], key=("documents",), ratios=("x smallest",))


if __name__ == "__main__":
    main()
