"""Training throughput on CPU: BioMambaForCausalLM vs transformers' MambaForCausalLM (Mamba-1
blocks) and Mamba2ForCausalLM (Mamba-2 blocks), same weights.

One optimizer step = forward, backward, AdamW step on a (B, T) batch of random tokens. Prints
tokens/s for each model and the ratio, side by side, in one run, and each of our rows as a share of
the no-scan floor: the same step of our model with the scan (ops.selective_scan / ops.ssd_scan)
replaced by an elementwise stub of the same shapes, whose gradient reaches every input of the scan.
The floor is what a free scan would give; "of floor" = tokens/s / the floor's tokens/s. After one untimed step each, the
models take turns, one step each per round, and each keeps its fastest step (tokens/s = B x T /
that step's seconds): on a shared machine a burst of load then hits every model alike instead of
whichever ran during it. Default sizes are the issue's:
d_model 256, 4 layers, vocab 8000 (3.8M parameters), B=4, T=256 and 1024; the Mamba-2 model is
the Mamba-2 tiny preset's (8 heads of 64, d_state 64, chunks of 256; 3.8M parameters).

    python bench/cpu_train.py                       # both block types, every available backend
    python bench/cpu_train.py --blocks Mamba2 --seq-lens 256
    python bench/cpu_train.py --backends torch --seq-lens 256
    python bench/cpu_train.py --threads 1          # torch's and our kernels' threads (run.threads)
"""
import contextlib
import argparse
import os
import time

import torch
import torch.nn.functional as F
from transformers import Mamba2Config, Mamba2ForCausalLM, MambaConfig, MambaForCausalLM

from biomamba import BioMambaConfig, BioMambaForCausalLM, ops
from biomamba.bench_cli import fastest_in_turns, report_table
from biomamba.checkpoints import config_from_hf, map_keys
from biomamba.ops.ssd_reference import DEFAULT_DT_LIMIT, gate_and_skip, ssd_dt

FLOOR = "biomamba (no-scan floor)"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq-lens", default="256,1024")
    p.add_argument("--steps", type=int, default=3, help="rounds of timed steps for biomamba (after 1 warm-up)")
    p.add_argument("--peer-steps", type=int, default=1,
                   help="timed steps for transformers, in the first rounds (Mamba-1's takes minutes at T=1024); "
                        "0 leaves transformers out")
    p.add_argument("--peer-warmup", type=int, default=1,
                   help="untimed steps for transformers first (0 saves minutes at T=1024)")
    p.add_argument("--blocks", default="Mamba1,Mamba2", help="comma list of block types (config.ssm_layer)")
    p.add_argument("--backends", default="auto",
                   help="comma list of scan backends, or 'auto' = all available for the block type")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    return p.parse_args()


def selective_scan_stub(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                        return_last_state=False, backend="auto", *, seq_idx=None):
    """The floor's Mamba-1 scan: elementwise, out (b, d, l) from every input, no recurrence."""
    dt = delta + delta_bias[:, None] if delta_bias is not None else delta
    dt = F.softplus(dt) if delta_softplus else dt
    bc = (B * C).sum(-2)  # (d,), (b, l) or (b, g, l)
    bc = bc.mean(1)[:, None] if bc.dim() == 3 else (bc[:, None] if bc.dim() == 2 else bc[None, :, None])
    y = u * dt * A.mean(-1)[:, None] + bc  # (b, d, l)
    y = y + u * D[:, None] if D is not None else y
    y = y * F.silu(z) if z is not None else y
    return (y, u.new_zeros(u.shape[0], u.shape[1], A.shape[1])) if return_last_state else y


def ssd_scan_stub(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None,
                  seq_idx=None, dt_softplus=False, dt_limit=DEFAULT_DT_LIMIT, return_final_states=False,
                  backend="auto"):
    """The floor's Mamba-2 scan: elementwise, out (b, l, h, p) from every input, no recurrence."""
    dt = ssd_dt(dt, dt_bias, dt_softplus, dt_limit, torch.float32)  # (b, l, h)
    y = x * (dt * A)[..., None] + (B * C).sum(-1).mean(-1)[..., None, None]  # (b, l, h, p)
    out = gate_and_skip(y, x, D, z, torch.float32).to(x.dtype)
    final = x.new_zeros(x.shape[0], x.shape[2], x.shape[3], B.shape[-1], dtype=torch.float32)
    return (out, final) if return_final_states else out


@contextlib.contextmanager
def no_scan():
    """ops.selective_scan and ops.ssd_scan replaced by their stubs (the mixers call them through ops)."""
    saved = ops.selective_scan, ops.ssd_scan
    ops.selective_scan, ops.ssd_scan = selective_scan_stub, ssd_scan_stub
    try:
        yield
    finally:
        ops.selective_scan, ops.ssd_scan = saved


def train_step(model, batch, floor=False):
    """A function running one optimizer step of `model` on `batch` and returning its seconds;
    floor=True: with the scan stubbed out (no_scan)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def step():
        with no_scan() if floor else contextlib.nullcontext():
            start = time.perf_counter()
            loss = model(batch, labels=batch).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return time.perf_counter() - start

    return step


def available_backends(block, requested):
    if requested != "auto":
        return requested.split(",")
    impl = ops._ssd_impl if block == "Mamba2" else ops._scan_impl
    names = []
    for name in ("cpu", "torch"):
        try:
            impl(name)
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
            names = {backend: f"biomamba (scan backend {backend})"
                     for backend in available_backends(block, args.backends)}
            steps = {name: train_step(our_model(peer, backend), batch) for backend, name in names.items()}
            steps[FLOOR] = train_step(our_model(peer, "torch"), batch, floor=True)
            peer_name = f"transformers {type(peer).__name__}"
            if args.peer_steps:  # 0: our rows and the floor only
                steps[peer_name] = train_step(peer, batch)
            rounds = {name: args.peer_steps if name == peer_name else args.steps for name in steps}
            warmups = {name: args.peer_warmup if name == peer_name else 1 for name in steps}
            rates = {name: batch.numel() / seconds
                     for name, seconds in fastest_in_turns(steps, rounds, warmups).items()}
            for name, tps in sorted(rates.items(), key=lambda item: item[0] != peer_name):
                of_floor = tps / rates[FLOOR] if name.startswith("biomamba") and name != FLOOR else None
                vs_peer = tps / rates[peer_name] if peer_name in rates else None
                rows.append((block, seq_len, name, tps, vs_peer, of_floor))
            print(f"{block} T={seq_len} done; load {load_average()}", flush=True)
    print(f"\nload average (1, 5, 15 min) at the end: {load_average()}")
    print("\n| block | T | model | train tokens/s | vs transformers | of floor |\n|---|---|---|---|---|---|")
    for block, seq_len, name, tps, ratio, of_floor in rows:
        floor_cell = "" if of_floor is None else f"{of_floor:.0%}"
        ratio_cell = "" if ratio is None else f"{ratio:.1f}x"
        print(f"| {block} | {seq_len} | {name} | {tps:,.0f} | {ratio_cell} | {floor_cell} |")
    report_table("train", ["block", "T", "model", "train tokens/s", "vs transformers", "of floor"], rows,
                 key=("block", "T", "model"), ratios=("vs transformers", "of floor"))


def load_average():
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    main()
