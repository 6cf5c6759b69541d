"""Decoding throughput on CPU: our generate against transformers' MambaForCausalLM.generate
(Mamba2ForCausalLM for the Mamba-2 blocks) on the same weights, and against our own generate as it
was at a git ref (`--before`, default main; only for presets that ref has).

Greedy decoding of --new-tokens (64) tokens after a --prompt-len (16) token prompt; EOS never stops
a row, so every row makes all of them. tokens/s = batch x new tokens / seconds of the fastest of
--repeats calls, after one warm-up call each. The three run in turns (one call of each per round),
so a change in the machine's load hits all three alike. Random weights in a preset's shape (130m:
d_model 768, 24 layers, vocab 50280; tiny: 256, 4, 8000; with --blocks Mamba2, 130m: 768, 24, 50288,
d_state 128; tiny: 256, 4, 8000, d_state 64). Our prompt pass uses the "torch" scan
backend in both versions (the compiled CPU kernel would be rebuilt for the old tree; decoding
steps never use the scan). The old version runs in a subprocess that imports biomamba from
`git archive REF` and times one call per request. One thread by default: on a shared 2-core box,
two OpenMP threads wait for each other whenever another process holds a core.

    python bench/decode.py
    python bench/decode.py --presets tiny --blocks Mamba2 --batches 1 --before HEAD~2
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from biomamba.bench_cli import fastest_in_turns, report_table

REPO = Path(__file__).resolve().parent.parent


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="130m,tiny", help="comma list of preset sizes")
    p.add_argument("--blocks", default="Mamba1,Mamba2", help="comma list of block types (config.ssm_layer)")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--prompt-len", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3, help="timed rounds per measurement (the fastest is kept)")
    p.add_argument("--before", default="main", help="git ref of the old generate ('' skips it)")
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args()


def seconds(call):
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


# The old version: load the saved model with that tree's biomamba; each stdin line "BATCH" times one
# greedy generate of that many prompt rows and prints its seconds.
BEFORE_SCRIPT = """
import sys, time, torch
source, model_dir, prompt_len, new_tokens, threads = sys.argv[1:]
sys.path.insert(0, source)
import biomamba
assert biomamba.__file__.startswith(source), biomamba.__file__
torch.set_num_threads(int(threads))
model = biomamba.BioMambaForCausalLM.from_pretrained(model_dir, scan_backend="torch").eval()
for line in sys.stdin:
    ids = torch.randint(1, model.config.vocab_size, (int(line), int(prompt_len)),
                        generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    out = model.generate(ids, max_new_tokens=int(new_tokens), eos_token_id=None)
    elapsed = time.perf_counter() - start
    assert out.shape == (int(line), int(prompt_len) + int(new_tokens)), out.shape
    print(elapsed, flush=True)
"""


class OldGenerate:
    """Our generate as it was at `source` (a git archive), timed in a subprocess, one call per request."""

    def __init__(self, source, model_dir, args):
        argv = [str(source), str(model_dir), str(args.prompt_len), str(args.new_tokens), str(args.threads)]
        self.process = subprocess.Popen([sys.executable, "-c", BEFORE_SCRIPT, *argv], cwd=str(source), text=True,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

    def seconds(self, batch):
        self.process.stdin.write(f"{batch}\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the --before process died (run BEFORE_SCRIPT by hand to see why)")
        return float(line)

    def close(self):
        self.process.stdin.close()
        self.process.wait()


def old_tree(ref, into: Path) -> Path:
    """biomamba/ and kernels/ of git ref `ref`, unpacked under `into`."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "biomamba", "kernels"],
                             check=True, capture_output=True).stdout
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def models(preset, block, directory: Path):
    """Ours (saved to `directory` for the old version) and transformers' Mamba / Mamba2, same random
    weights."""
    import transformers

    from biomamba import BioMambaConfig, BioMambaForCausalLM
    from biomamba.checkpoints import HF_CLASSES, hf_config_fields, map_keys

    torch.manual_seed(0)
    ours = BioMambaForCausalLM(BioMambaConfig.from_preset(preset, ssm_layer=block, scan_backend="torch")).eval()
    ours.save_pretrained(directory)
    config_class, model_class = (getattr(transformers, name) for name in HF_CLASSES[ours.config.ssm_layer])
    theirs = model_class(config_class(**hf_config_fields(ours.config))).eval()
    theirs.load_state_dict(map_keys(ours.state_dict(), "hf", to_ours=False))
    return ours, theirs


def has_block(source: Path, block: str) -> bool:
    """Whether the old tree's biomamba knows the block type (older refs predate Mamba-2)."""
    return block == "Mamba1" or (source / "biomamba" / "mamba2.py").is_file()


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    print(f"# greedy, prompt {args.prompt_len} + {args.new_tokens} new tokens, {args.threads} thread(s), "
          f"load average {os.getloadavg()[0]:.1f} at the start; tokens/s (ratio to transformers)")
    before = f"biomamba {args.before}" if args.before else ""
    print(f"{'preset':12} {'batch':>5} {'transformers':>14} {'biomamba now':>20} {before:>20}", flush=True)
    reported = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        source = old_tree(args.before, scratch / "before") if args.before else None
        for block, size in ((b, p) for b in args.blocks.split(",") for p in args.presets.split(",")):
            preset = f"{block}/{size}"
            ours, theirs = models(size, block, scratch / block / size)
            known = source is not None and has_block(source, block)
            old = OldGenerate(source, scratch / block / size, args) if known else None
            for batch in (int(b) for b in args.batches.split(",")):
                ids = torch.randint(1, ours.config.vocab_size, (batch, args.prompt_len),
                                    generator=torch.Generator().manual_seed(0))
                kwargs = dict(attention_mask=torch.ones_like(ids), max_new_tokens=args.new_tokens,
                              min_new_tokens=args.new_tokens, do_sample=False, eos_token_id=None, pad_token_id=0)
                timers = {"transformers": lambda: seconds(lambda: theirs.generate(ids, **kwargs)),
                          "now": lambda: seconds(lambda: ours.generate(ids, **kwargs))}
                if old is not None:
                    timers["before"] = lambda: old.seconds(batch)
                rates = {name: batch * args.new_tokens / elapsed
                         for name, elapsed in fastest_in_turns(timers, args.repeats).items()}
                cells = [f"{rates[name]:8.1f} ({rates[name] / rates['transformers']:4.2f}x)"
                         for name in ("now", "before") if name in rates]
                print(f"{preset:12} {batch:>5} {rates['transformers']:14.1f} " + " ".join(f"{c:>20}" for c in cells),
                      flush=True)
                reported.append([preset, batch, rates["transformers"], rates["now"], rates["now"] / rates["transformers"],
                                 rates.get("before"), rates["before"] / rates["transformers"] if "before" in rates else None])
            if old is not None:
                old.close()
            del ours, theirs
    print(f"# load average {os.getloadavg()[0]:.1f} at the end")
    report_table("decode", ["preset", "batch", "transformers tok/s", "now tok/s", "now x transformers",
                            "before tok/s", "before x transformers"], reported, key=("preset", "batch"),
                 ratios=("now x transformers", "before x transformers"))


if __name__ == "__main__":
    main()
