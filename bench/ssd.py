"""Time and memory of the Mamba-2 SSD scan: biomamba's chunked "torch" backend against its peers.

    python bench/ssd.py                   # the full table (a few minutes on 2 cores)
    python bench/ssd.py --quick           # one repetition
    OMP_NUM_THREADS=1 python bench/ssd.py # steadier figures on cores other processes share

Compared, at fp32 with Mamba-2's scan options (D per head, dt_bias, softplus; z stays outside the
scan, in Mamba2's gated norm), on the tensors' device (--device, CUDA when there is one):
    torch         biomamba's chunked SSD (ops/ssd_torch.py), gradients by autograd
    ref           biomamba's sequential reference (ops/ssd_reference.py), autograd through every step
    transformers  transformers' `mamba2_chunk_scan`, the PyTorch SSD path of its Mamba2 on CPU
    mamba_ssm     mamba_ssm's Triton `mamba_chunk_scan_combined`, only if it imports (CUDA)
Each time is the best of --reps runs after a warm-up, the backends taking turns run by run so that
load from other processes hits all alike (the load average is printed first); "ref", which takes
seconds, runs once without warm-up, and is skipped at the largest shape. Ratio = time / torch.
Then the peak memory of one "torch" forward+backward at l 1024 and 4096 (130m-like heads): linear
in length means about 4x. On CPU it is the peak resident memory (VmHWM) of a fresh child process
above its resident memory just before the call, glibc told to unmap every freed block over 64 KiB;
on CUDA, torch.cuda.max_memory_allocated above the inputs.
Not a test: nothing is asserted.
"""
import argparse
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from biomamba import ops  # noqa: E402
from biomamba.bench_cli import fastest_in_turns, report_table  # noqa: E402

SHAPES = [  # (label, batch, length, heads, headdim, groups, d_state, chunk_size)
    ("small", 2, 256, 8, 16, 1, 16, 64),
    ("130m-like", 1, 1024, 24, 64, 1, 128, 256),
    ("130m-like", 2, 1024, 24, 64, 1, 128, 256),
]
# The sequential reference keeps several (b, h, p, n) tensors per step for backward: it runs up to
# b*l*h*p*n = 1 x 1024 x 24 x 64 x 128 (a few GB), and is skipped above.
REF_MAX_STATE_STEPS = 1024 * 24 * 64 * 128


def ssd_inputs(batch, length, heads, headdim, groups, d_state, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, heads, headdim, generator=g)
    dt = torch.randn(batch, length, heads, generator=g) * 0.5 - 1.0
    A = -torch.exp(torch.rand(heads, generator=g) * 2.7)  # A = -exp(A_log), A_log ~ log U(1, 16)
    B = torch.randn(batch, length, groups, d_state, generator=g)
    C = torch.randn(batch, length, groups, d_state, generator=g)
    D = torch.ones(heads)
    dt_bias = torch.randn(heads, generator=g) * 0.5
    return [t.to(device) for t in (x, dt, A, B, C, D, dt_bias)]


def make_scan(name, chunk_size):
    if name in ("torch", "ref", "mamba_ssm"):
        return lambda x, dt, A, B, C, D, dt_bias: ops.ssd_scan(
            x, dt, A, B, C, chunk_size, D=D, dt_bias=dt_bias, dt_softplus=True, backend=name)
    from transformers.models.mamba2.modeling_mamba2 import mamba2_chunk_scan
    return lambda x, dt, A, B, C, D, dt_bias: mamba2_chunk_scan(
        x, dt, A, B, C, chunk_size, D=D, dt_bias=dt_bias, dt_softplus=True)


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds(scan, leaves, backward, device):
    """Wall time (s) of one forward (no graph) or one forward + backward of out.sum()."""
    for t in leaves:
        t.grad = None
    synchronize(device)
    start = time.perf_counter()
    if backward:
        scan(*leaves).sum().backward()
    else:
        with torch.no_grad():
            scan(*leaves)
    synchronize(device)
    return time.perf_counter() - start


def best_times(names, scans, tensors, reps, backward, device, warmup=1):
    leaves = [t.clone().requires_grad_() for t in tensors]
    return fastest_in_turns({name: lambda name=name: seconds(scans[name], leaves, backward, device)
                             for name in names}, reps, warmup)


def available_backends(device):
    names = ["torch", "ref"]
    if importlib.util.find_spec("transformers") is not None:
        names.append("transformers")
    try:
        ops.ssd_scan(*ssd_inputs(1, 4, 2, 2, 1, 2, device)[:5], 4, backend="mamba_ssm")
        names.append("mamba_ssm")
    except ops.BackendUnavailable:
        pass  # not installed, or no CUDA (its kernels are Triton)
    return names


def print_times(names, reps, device):
    print(f"{'shape':<11}{'b':>3}{'l':>6}{'h':>4}{'p':>4}{'n':>5}{'T':>5}  pass    "
          + "".join(f"{name:>24}" for name in names))
    reported = []
    for label, b, l, h, p, g, n, chunk in SHAPES:
        tensors = ssd_inputs(b, l, h, p, g, n, device)
        runnable = [name for name in names if name != "ref" or b * l * h * p * n <= REF_MAX_STATE_STEPS]
        scans = {name: make_scan(name, chunk) for name in runnable}
        for backward in (False, True):
            fast = [name for name in runnable if name != "ref"]
            times = best_times(fast, scans, tensors, reps, backward, device)
            if "ref" in runnable:  # seconds, not milliseconds: one run, no warm-up
                times.update(best_times(["ref"], scans, tensors, 1, backward, device, warmup=0))
            kind = "fwd+bwd" if backward else "fwd"
            print(f"{label:<11}{b:>3}{l:>6}{h:>4}{p:>4}{n:>5}{chunk:>5}  {kind:<8}"
                  + "".join(cell(name, times) for name in names), flush=True)
            reported += [[label, b, l, kind, name, times[name] * 1e3,
                          times[name] / times["torch"] if name != "torch" else None] for name in names if name in times]
    report_table("times", ["shape", "b", "l", "pass", "backend", "ms", "x torch"], reported,
                 key=("shape", "b", "l", "pass", "backend"), ratios=("x torch",))


def cell(name, times):
    """One table cell: ms, and the ratio to torch for the others."""
    if name not in times:
        return f"{'skipped (memory)':>24}"
    if name == "torch":
        return f"{times[name] * 1e3:>15.1f}" + " " * 9
    return f"{times[name] * 1e3:>15.1f} ({times[name] / times['torch']:>5.1f}x)"


def memory_status_bytes(field):
    """VmRSS (resident now) or VmHWM (peak resident) of this process, from /proc/self/status.
    Not ru_maxrss: Linux carries that over from the parent across fork and exec."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # kB
    raise RuntimeError(f"/proc/self/status has no {field} line")


def peak_extra_bytes(length, device):
    """Peak memory of one "torch" forward+backward above what the inputs hold (this process)."""
    scan = make_scan("torch", 256)
    # A short call first, so that one-time allocations (thread pools, library buffers) are not counted.
    scan(*[t.requires_grad_() for t in ssd_inputs(1, 8, 24, 64, 1, 128, device)]).sum().backward()
    leaves = [t.requires_grad_() for t in ssd_inputs(1, length, 24, 64, 1, 128, device)]
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        scan(*leaves).sum().backward()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    before = memory_status_bytes("VmRSS")
    scan(*leaves).sum().backward()
    return memory_status_bytes("VmHWM") - before


def print_memory(device):
    print("\npeak memory of one 'torch' forward+backward, b 1, h 24, p 64, n 128, chunk 256:")
    peaks = {}
    for length in (1024, 4096):
        if device.type == "cuda":
            peaks[length] = peak_extra_bytes(length, device)
        else:  # a fresh process per length: its peak (VmHWM) only ever grows
            # glibc returns every block over 64 KiB to the system when freed, so the peak resident
            # memory is the peak of live tensors (its default threshold adapts, and the figure wanders).
            env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
            child = subprocess.run([sys.executable, __file__, "--memory-child", str(length)],
                                   capture_output=True, text=True, check=True, env=env)
            peaks[length] = int(child.stdout.strip())
        print(f"  l {length:>5}: {peaks[length] / 2**20:>8.0f} MiB", flush=True)
    print(f"  ratio {peaks[4096] / peaks[1024]:.2f} for 4x the length (linear: 4)")
    report_table("memory", ["l", "peak MiB", "x l 1024"], [[1024, peaks[1024] / 2**20, None],
                 [4096, peaks[4096] / 2**20, peaks[4096] / peaks[1024]]], key=("l",), ratios=("x l 1024",))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one repetition")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.memory_child:
        print(peak_extra_bytes(args.memory_child, device))
        return
    names = available_backends(device)
    print(f"load average {os.getloadavg()[0]:.1f} (other processes on these cores inflate every time); "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}; "
          f"backends: {', '.join(names)}")
    print("fp32, D per head, dt_bias, softplus; ms, best of runs (ratio = time / torch)")
    print_times(names, 1 if args.quick else args.reps, device)
    print_memory(device)


if __name__ == "__main__":
    main()
