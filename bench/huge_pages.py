"""What huge pages give the CPU decoding step: the same model decoded with the weights its step streams in
4 KB pages and in 2 MB pages (biomamba/huge_pages.py), interleaved in one process.

Two copies of one random model in a preset's shape, both prepared by use_fast_decode (BIOMAMBA_HUGE_PAGES=0
for the first), greedy decoding of --new-tokens after a --prompt-len prompt at batch 1, --threads threads.
The two go in turns (one generate of each per round), so a change in the machine's read bandwidth, which
here moves minute to minute, hits both alike; the ratio printed is the median over rounds of each round's
huge / 4 KB tokens per second, with the lowest and highest. A bare read of 300 MB from each kind of page
(torch's sum) comes first.

    python bench/huge_pages.py
    python bench/huge_pages.py --blocks Mamba2 --precisions fp32,bf16-weights --rounds 8
"""
import argparse
import copy
import os
import statistics
import sys

import biomamba  # noqa: F401  before torch: OpenMP's wait policy as `biomamba generate` runs it
import torch

from biomamba import huge_pages
from biomamba.bench_cli import report_table, seconds, times_in_turns


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="130m")
    p.add_argument("--blocks", default="Mamba1,Mamba2")
    p.add_argument("--precisions", default="fp32,bf16-weights,int8")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--prompt-len", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args(argv)


def read_rates(rounds):
    """GB/s of torch's sum over 300 MB in 4 KB pages and in huge pages (fastest of `rounds`, in turns)."""
    plain = torch.ones(75 << 20)
    paged = huge_pages.copies([plain])[0]
    times = times_in_turns({"4 KB": lambda: seconds(plain.sum), "2 MB": lambda: seconds(paged.sum)}, rounds)
    return {name: plain.numel() * 4 / min(elapsed) / 1e9 for name, elapsed in times.items()}


def prepared_pair(preset, block, precision):
    """(a model whose step reads 4 KB pages, the same weights in huge pages), both through use_fast_decode."""
    from biomamba import BioMambaConfig, BioMambaForCausalLM
    from biomamba.decode import use_fast_decode

    torch.manual_seed(0)
    plain = BioMambaForCausalLM(BioMambaConfig.from_preset(preset, ssm_layer=block)).eval()
    paged = copy.deepcopy(plain)
    os.environ["BIOMAMBA_HUGE_PAGES"] = "0"
    use_fast_decode(plain, precision)
    os.environ["BIOMAMBA_HUGE_PAGES"] = "1"
    use_fast_decode(paged, precision)
    return plain, paged


def main(argv=None):
    args = parse_args(argv)
    if not huge_pages.available():
        sys.exit("huge pages are not available here (Linux with transparent_hugepage 'always' or 'madvise')")
    torch.set_num_threads(args.threads)
    print(f"# {args.preset}, batch 1, prompt {args.prompt_len} + {args.new_tokens} new tokens, {args.threads} "
          f"thread(s), {args.rounds} rounds in turns; uptime: {os.popen('uptime').read().strip()}")
    rates = read_rates(args.rounds)
    print(f"# a 300 MB read: {rates['4 KB']:.1f} GB/s in 4 KB pages, {rates['2 MB']:.1f} in huge pages "
          f"({rates['2 MB'] / rates['4 KB']:.2f}x)")
    print("| preset | precision | 4 KB pages tok/s | huge pages tok/s | x, median of rounds | lowest | highest |\n"
          "|---|---|---|---|---|---|---|", flush=True)
    rows = []
    for block in args.blocks.split(","):
        for precision in args.precisions.split(","):
            plain, paged = prepared_pair(args.preset, block, precision)
            ids = torch.randint(1, plain.config.vocab_size, (1, args.prompt_len),
                                generator=torch.Generator().manual_seed(0))
            greedy = dict(attention_mask=torch.ones_like(ids), max_new_tokens=args.new_tokens,
                          min_new_tokens=args.new_tokens, do_sample=False, eos_token_id=None, pad_token_id=0)
            if not torch.equal(plain.generate(ids, **greedy), paged.generate(ids, **greedy)):
                sys.exit(f"{block} {precision}: the two copies decode different tokens")
            times = times_in_turns({"4 KB": lambda: seconds(lambda: plain.generate(ids, **greedy)),
                                    "2 MB": lambda: seconds(lambda: paged.generate(ids, **greedy))}, args.rounds)
            ratios = [small / huge for small, huge in zip(times["4 KB"], times["2 MB"])]
            tok = {name: args.new_tokens / statistics.median(elapsed) for name, elapsed in times.items()}
            row = [f"{block}/{args.preset}", precision, tok["4 KB"], tok["2 MB"], statistics.median(ratios),
                   min(ratios), max(ratios)]
            print(f"| {row[0]} | {precision} | {row[2]:.1f} | {row[3]:.1f} | {row[4]:.3f}x | {row[5]:.3f}x | "
                  f"{row[6]:.3f}x |", flush=True)
            rows.append(row)
            del plain, paged
    print(f"# uptime at the end: {os.popen('uptime').read().strip()}")
    report_table("huge pages", ["preset", "precision", "4 KB pages tok/s", "huge pages tok/s", "x huge pages",
                                "lowest", "highest"], rows, key=("preset", "precision"), ratios=("x huge pages",))


if __name__ == "__main__":
    main()
