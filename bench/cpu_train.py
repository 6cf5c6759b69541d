"""Training throughput on CPU: BioMambaForCausalLM vs transformers' MambaForCausalLM, same weights.

One optimizer step = forward, backward, AdamW step on a (B, T) batch of random tokens. Prints
tokens/s for each model and the ratio, side by side, in one run. Default sizes are the issue's:
d_model 256, 4 layers, vocab 8000 (3.8M parameters), B=4, T=256 and 1024.

    python bench/cpu_train.py                       # every available biomamba backend
    python bench/cpu_train.py --backends torch --seq-lens 256
"""
import argparse
import time

import torch
from transformers import MambaConfig, MambaForCausalLM

from biomamba import BioMambaConfig, BioMambaForCausalLM, ops
from biomamba.bench_cli import report_table


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
    p.add_argument("--backends", default="auto", help="comma list of scan backends, or 'auto' = all available")
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


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    peer = MambaForCausalLM(MambaConfig(hidden_size=args.d_model, num_hidden_layers=args.layers,
                                        vocab_size=args.vocab))
    state = {k.replace("backbone.embeddings.", "backbone.embedding."): v.clone() for k, v in peer.state_dict().items()}
    print(f"model: d_model {args.d_model}, {args.layers} layers, vocab {args.vocab}, "
          f"{sum(p.numel() for p in peer.parameters()) / 1e6:.2f}M parameters; batch {args.batch}; "
          f"{args.threads} threads; torch {torch.__version__}")
    rows = []
    peer_start = {k: v.clone() for k, v in peer.state_dict().items()}
    for seq_len in [int(s) for s in args.seq_lens.split(",")]:
        batch = torch.randint(0, args.vocab, (args.batch, seq_len), generator=torch.Generator().manual_seed(1))
        peer.load_state_dict(peer_start)  # every timed model starts from the same weights
        peer_tps = train_tokens_per_s(peer, batch, args.peer_steps, warmup=args.peer_warmup)
        rows.append((seq_len, "transformers MambaForCausalLM", peer_tps, 1.0))
        for backend in available_backends(args.backends):
            config = BioMambaConfig(vocab_size=args.vocab, d_model=args.d_model, n_layer=args.layers,
                                    scan_backend=backend)
            ours = BioMambaForCausalLM(config)
            ours.load_state_dict(state, strict=False)
            tps = train_tokens_per_s(ours, batch, args.steps)
            rows.append((seq_len, f"biomamba (scan backend {backend})", tps, tps / peer_tps))
    print("\n| T | model | train tokens/s | vs transformers |\n|---|---|---|---|")
    for seq_len, name, tps, ratio in rows:
        print(f"| {seq_len} | {name} | {tps:,.0f} | {ratio:.1f}x |")
    report_table("train", ["T", "model", "train tokens/s", "vs transformers"], rows, key=("T", "model"),
                 ratios=("vs transformers",))


if __name__ == "__main__":
    main()
