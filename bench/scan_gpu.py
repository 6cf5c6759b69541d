"""Time the selective scan (forward + backward) on a GPU: biomamba `cuda` vs mamba_ssm vs `torch`.

    python bench/scan_gpu.py            # 130m shapes: batch 8, d_inner 1536, d_state 16, length 2048
    python bench/scan_gpu.py --check    # first check each backend against `ref` (small sizes)

Each of our backends also runs with seq_idx (documents of 150-250 tokens, as packed PubMed
abstracts) in rows named "<backend>+seq_idx", whose last column is the time over the same backend
without seq_idx (goal: within 1.05); mamba_ssm has no seq_idx.

Roofline: the bytes a scan must move (read u, delta, z, B, C, write out; backward: read those and
dout, write du, ddelta, dz, dB, dC) divided by the device bandwidth measured with a large copy.
"""
import argparse
import sys

import torch

from biomamba import ops
from biomamba.bench_cli import report_table


def _mamba_ssm_fn():
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
        return selective_scan_fn
    except Exception:  # ImportError or the missing compiled extension
        return None


def make_inputs(b, d, n, l, dtype, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    kw = dict(device="cuda", generator=g)
    u = torch.randn(b, d, l, **kw).to(dtype)
    delta = (torch.randn(b, d, l, **kw) * 0.5 - 1).to(dtype)
    A = -torch.exp(torch.randn(d, n, **kw) * 0.5)
    B = torch.randn(b, n, l, **kw).to(dtype)
    C = torch.randn(b, n, l, **kw).to(dtype)
    D = torch.randn(d, **kw)
    z = torch.randn(b, d, l, **kw).to(dtype)
    bias = torch.randn(d, **kw) * 0.3
    return [u, delta, A, B, C, D, z, bias]


def packed_document_ids(b, l, shortest=150, longest=250, seed=0):
    """(b, l) int32 document ids on the GPU: documents of shortest..longest tokens per row."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(b, l, dtype=torch.int32)
    for row in range(b):
        start = int(torch.randint(0, longest, (1,), generator=g))
        while start < l:
            ids[row, start:] += 1
            start += int(torch.randint(shortest, longest + 1, (1,), generator=g))
    return ids.cuda()


def scan_call(backend, fn_mamba, seq_idx=None):
    if backend == "mamba_ssm":
        return lambda *a: fn_mamba(*a, delta_softplus=True)
    return lambda *a: ops.selective_scan(*a, delta_softplus=True, backend=backend, seq_idx=seq_idx)


def time_ms(fn, warmup=3, iters=10):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def bandwidth_gbs():
    """Device bandwidth from a 1 GiB copy (read + write)."""
    src = torch.empty(256 * 2 ** 20, dtype=torch.float32, device="cuda")
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), warmup=2, iters=20)
    return 2 * src.numel() * 4 / (ms * 1e-3) / 1e9


def scan_bytes(b, d, n, l, dtype):
    """(forward, forward + backward) bytes that must move, ignoring fp32 chunk states."""
    e = torch.tensor([], dtype=dtype).element_size()
    bdl, bnl = b * d * l * e, b * n * l * e
    fwd = 4 * bdl + 2 * bnl  # read u, delta, z; B, C; write out
    bwd = 4 * bdl + 2 * bnl + 3 * bdl + 2 * b * n * l * 4  # + dout; du, ddelta, dz; fp32 dB, dC
    return fwd, fwd + bwd


def fwd_bwd(call, inputs):
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    grad = torch.randn_like(inputs[0])

    def run():
        for t in leaves:
            t.grad = None
        call(*leaves).backward(grad)
    return run


def check(backends, fn_mamba):
    ok = True
    seq_idx = packed_document_ids(2, 300)
    for dtype in (torch.float32, torch.bfloat16):
        inputs = make_inputs(2, 24, 16, 300, dtype, seed=1)
        for resets in (None, seq_idx):
            want = ops.selective_scan(*[t.double() for t in inputs], delta_softplus=True, backend="ref",
                                      seq_idx=resets)
            for name in backends:
                if resets is not None and name == "mamba_ssm":
                    continue
                got = scan_call(name, fn_mamba, resets)(*inputs)
                err = (got.double() - want).abs().max().item()
                tol = 2e-3 if dtype == torch.float32 else 5e-2 * want.abs().max().item()
                status = "ok" if err <= tol else "FAIL"
                ok &= status == "ok"
                label = name + ("+seq_idx" if resets is not None else "")
                print(f"check {label:17s} {str(dtype):15s} max|out - ref| = {err:.2e} (tol {tol:.1e}) {status}")
    return ok


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="check correctness against ref first")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--d-inner", type=int, default=1536)
    parser.add_argument("--d-state", type=int, default=16)
    parser.add_argument("--length", type=int, default=2048)
    parser.add_argument("--iters", type=int, default=10)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench/scan_gpu.py needs a CUDA device")

    fn_mamba = _mamba_ssm_fn()
    backends = ["cuda", "torch"] + (["mamba_ssm"] if fn_mamba else [])
    print(f"device: {torch.cuda.get_device_name()}; mamba_ssm: {'installed' if fn_mamba else 'not installed'}")
    try:
        ops._scan_impl("cuda")
    except ops.BackendUnavailable as error:
        sys.exit(f"backend 'cuda' unavailable: {error}")
    if args.check and not check(backends, fn_mamba):
        sys.exit("correctness check failed")

    b, d, n, l = args.batch, args.d_inner, args.d_state, args.length
    bw = bandwidth_gbs()
    print(f"shape: batch {b}, d_inner {d}, d_state {n}, length {l}; measured bandwidth {bw:.0f} GB/s")
    seq_idx = packed_document_ids(b, l)
    header = (f"{'dtype':9s} {'backend':14s} {'fwd ms':>9s} {'fwd+bwd ms':>11s} {'x cuda':>7s} "
              f"{'% roofline':>11s} {'x no seq_idx':>13s}")
    print(header)
    print("-" * len(header))
    reported = []
    for dtype in (torch.bfloat16, torch.float32):
        inputs = make_inputs(b, d, n, l, dtype)
        fwd_bytes, all_bytes = scan_bytes(b, d, n, l, dtype)
        rows = {}
        for name in ["cuda", "cuda+seq_idx", "mamba_ssm", "torch", "torch+seq_idx"]:
            if name == "mamba_ssm" and fn_mamba is None:
                print(f"{str(dtype)[6:]:9s} {name:14s} not installed")
                continue
            backend, _, resets = name.partition("+")
            call = scan_call(backend, fn_mamba, seq_idx if resets else None)
            iters = args.iters if backend != "torch" else max(1, args.iters // 5)
            with torch.no_grad():
                fwd = time_ms(lambda: call(*inputs), warmup=2, iters=iters)
            total = time_ms(fwd_bwd(call, inputs), warmup=1, iters=iters)
            rows[name] = (fwd, total)
            roof = all_bytes / (bw * 1e9) * 1e3  # ms at full bandwidth
            ratio = total / rows["cuda"][1]
            vs_plain = f" {total / rows[backend][1]:13.3f}" if resets else ""
            print(f"{str(dtype)[6:]:9s} {name:14s} {fwd:9.3f} {total:11.3f} {ratio:7.2f} "
                  f"{100 * roof / total:10.1f}%{vs_plain}")
            reported.append([str(dtype)[6:], name, fwd, total, ratio, 100 * roof / total,
                             total / rows[backend][1] if resets else None])
        torch.cuda.empty_cache()
    report_table("scan", ["dtype", "backend", "fwd ms", "fwd+bwd ms", "x cuda", "% roofline", "x no seq_idx"],
                 reported, key=("dtype", "backend"), ratios=("x cuda", "x no seq_idx"))


if __name__ == "__main__":
    main()
