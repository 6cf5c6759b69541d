"""Training throughput on CPU: BioMambaForCausalLM vs transformers' MambaForCausalLM (Mamba-1
blocks) and Mamba2ForCausalLM (Mamba-2 blocks), same weights.

One optimizer step = forward, backward, AdamW step on a (B, T) batch of random tokens. Prints
tokens/s for each model and the ratio, side by side, in one run. After one untimed step each, the
models take turns, one step each per round, and each keeps its fastest step (tokens/s = B x T /
that step's seconds): on a shared machine a burst of load then hits every model alike instead of
whichever ran during it. Default sizes are the issue's:
d_model 256, 4 layers, vocab 8000 (3.8M parameters), B=4, T=256 and 1024; the Mamba-2 model is
the Mamba-2 tiny preset's (8 heads of 64, d_state 64, chunks of 256; 3.8M parameters).

    python bench/cpu_train.py                       # both block types, every available backend
    python bench/cpu_train.py --blocks Mamba2 --seq-lens 256
    python bench/cpu_train.py --backends torch --seq-lens 256
"""
import argparse
import time

import torch
from transformers import Mamba2Config, Mamba2ForCausalLM, MambaConfig, MambaForCausalLM

from biomamba import BioMambaConfig, BioMambaForCausalLM, ops
from biomamba.bench_cli import fastest_in_turns, report_table
from biomamba.checkpoints import config_from_hf, map_keys


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq-lens", default="256,1024")
    p.add_argument("--steps", type=int, default=3, help="rounds of timed steps for biomamba (after 1 warm-up)")
    p.add_argument("--peer-steps", type=int, default=1,
                   help="timed steps for transformers, in the first rounds (Mamba-1's takes minutes at T=1024)")
    p.add_argument("--peer-warmup", type=int, default=1,
                   help="untimed steps for transformers first (0 saves minutes at T=1024)")
    p.add_argument("--blocks", default="Mamba1,Mamba2", help="comma list of block types (config.ssm_layer)")
    p.add_argument("--backends", default="auto",
                   help="comma list of Mamba-1 scan backends, or 'auto' = all available (Mamba-2: torch)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    return p.parse_args()


def train_step(model, batch):
    """A function running one optimizer step of `model` on `batch` and returning its seconds."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def step():
        start = time.perf_counter()
        loss = model(batch, labels=batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    return step


def available_backends(requested):
    if requested != "auto":
        return requested.split(",")
    names = []
    for name in ("cpu", "torch"):
        try:
            ops._scan_impl(name)
            names.append(name)
        except ops.BackendUnavailable:
            pass
    return names


def peer_model(block, args):
    """transformers' model of this block type at the benchmark's size (Mamba-2: the Mamba-2 tiny preset's heads)."""
    if block == "Mamba2":
        mamba2 = BioMambaConfig.from_preset("tiny", ssm_layer="Mamba2")
        return Mamba2ForCausalLM(Mamba2Config(
            hidden_size=args.d_model, num_hidden_layers=args.layers, vocab_size=args.vocab,
            state_size=mamba2.d_state, head_dim=mamba2.headdim, num_heads=2 * args.d_model // mamba2.headdim,
            n_groups=1, chunk_size=mamba2.chunk_size, tie_word_embeddings=True))
    return MambaForCausalLM(MambaConfig(hidden_size=args.d_model, num_hidden_layers=args.layers,
                                        vocab_size=args.vocab))


def our_model(peer, backend):
    """Our model with the peer's configuration and weights."""
    config = config_from_hf(peer.config.to_dict())
    config.scan_backend = backend
    ours = BioMambaForCausalLM(config)
    ours.load_state_dict(map_keys(peer.state_dict(), "hf"), strict=False)
    return ours


def backends_of(block, requested):
    return ["torch"] if block == "Mamba2" else available_backends(requested)


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    blocks = args.blocks.split(",")
    torch.manual_seed(0)
    peers = {block: peer_model(block, args) for block in blocks}
    print(f"models: d_model {args.d_model}, {args.layers} layers, vocab {args.vocab}, "
          + ", ".join(f"{block} {sum(p.numel() for p in peer.parameters()) / 1e6:.2f}M parameters"
                      for block, peer in peers.items())
          + f"; batch {args.batch}; {args.threads} threads; torch {torch.__version__}")
    rows = []
    for block, peer in peers.items():
        peer_start = {k: v.clone() for k, v in peer.state_dict().items()}
        for seq_len in [int(s) for s in args.seq_lens.split(",")]:
            batch = torch.randint(0, args.vocab, (args.batch, seq_len), generator=torch.Generator().manual_seed(1))
            peer.load_state_dict(peer_start)  # every timed model starts from the same weights
            names = {backend: f"biomamba (scan backend {backend})" for backend in backends_of(block, args.backends)}
            steps = {name: train_step(our_model(peer, backend), batch) for backend, name in names.items()}
            peer_name = f"transformers {type(peer).__name__}"
            steps[peer_name] = train_step(peer, batch)
            rounds = {name: args.peer_steps if name == peer_name else args.steps for name in steps}
            warmups = {name: args.peer_warmup if name == peer_name else 1 for name in steps}
            rates = {name: batch.numel() / seconds
                     for name, seconds in fastest_in_turns(steps, rounds, warmups).items()}
            for name, tps in sorted(rates.items(), key=lambda item: item[0] != peer_name):
                rows.append((block, seq_len, name, tps, tps / rates[peer_name]))
    print("\n| block | T | model | train tokens/s | vs transformers |\n|---|---|---|---|---|")
    for block, seq_len, name, tps, ratio in rows:
        print(f"| {block} | {seq_len} | {name} | {tps:,.0f} | {ratio:.1f}x |")
    report_table("train", ["block", "T", "model", "train tokens/s", "vs transformers"], rows,
                 key=("block", "T", "model"), ratios=("vs transformers",))


if __name__ == "__main__":
    main()
