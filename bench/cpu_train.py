"""Training throughput on CPU: BioMambaForCausalLM vs transformers' MambaForCausalLM (Mamba-1
blocks) and Mamba2ForCausalLM (Mamba-2 blocks), same weights.

One optimizer step = forward, backward, AdamW step on a (B, T) batch of random tokens. Prints
tokens/s for each model and the ratio, side by side, in one run. Default sizes are the issue's:
d_model 256, 4 layers, vocab 8000 (3.8M parameters), B=4, T=256 and 1024; the Mamba-2 model is
the tiny-mamba2 preset's (8 heads of 64, d_state 64, chunks of 256; 3.8M parameters).

    python bench/cpu_train.py                       # both block types, every available backend
    python bench/cpu_train.py --blocks Mamba2 --seq-lens 256
    python bench/cpu_train.py --backends torch --seq-lens 256
"""
import argparse
import time

import torch
from transformers import Mamba2Config, Mamba2ForCausalLM, MambaConfig, MambaForCausalLM

from biomamba import BioMambaConfig, BioMambaForCausalLM, ops
from biomamba.checkpoints import config_from_hf, map_keys


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq-lens", default="256,1024")
    p.add_argument("--steps", type=int, default=3, help="timed steps for biomamba (after 1 warm-up)")
    p.add_argument("--peer-steps", type=int, default=1, help="timed steps for transformers")
    p.add_argument("--peer-warmup", type=int, default=1,
                   help="untimed steps for transformers first (0 saves minutes at T=1024)")
    p.add_argument("--blocks", default="Mamba1,Mamba2", help="comma list of block types (config.ssm_layer)")
    p.add_argument("--backends", default="auto",
                   help="comma list of Mamba-1 scan backends, or 'auto' = all available (Mamba-2: torch)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    return p.parse_args()


def train_tokens_per_s(model, batch, steps, warmup=1):
    """Mean tokens/s over `steps` optimizer steps after `warmup` untimed ones."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def step():
        loss = model(batch, labels=batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return batch.numel() * steps / (time.perf_counter() - start)


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
    """transformers' model of this block type at the benchmark's size (Mamba-2: tiny-mamba2's heads)."""
    if block == "Mamba2":
        mamba2 = BioMambaConfig.from_preset("tiny-mamba2")
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
            peer_tps = train_tokens_per_s(peer, batch, args.peer_steps, warmup=args.peer_warmup)
            rows.append((block, seq_len, f"transformers {type(peer).__name__}", peer_tps, 1.0))
            for backend in backends_of(block, args.backends):
                peer.load_state_dict(peer_start)
                tps = train_tokens_per_s(our_model(peer, backend), batch, args.steps)
                rows.append((block, seq_len, f"biomamba (scan backend {backend})", tps, tps / peer_tps))
    print("\n| block | T | model | train tokens/s | vs transformers |\n|---|---|---|---|---|")
    for block, seq_len, name, tps, ratio in rows:
        print(f"| {block} | {seq_len} | {name} | {tps:,.0f} | {ratio:.1f}x |")


if __name__ == "__main__":
    main()
