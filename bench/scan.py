"""Forward+backward time of the selective scan on CPU: our "cpu" kernel against pure PyTorch.

    python bench/scan.py                  # the full table (a few minutes on 2 cores)
    python bench/scan.py --quick          # one repetition, small time box
    python bench/scan.py --resets-only    # only the seq_idx table (below)
    python bench/scan.py --resets-only --cpu-time   # the same, timed in process CPU time

Compared, at fp32 with mamba's options (D, z, delta_bias, softplus; B/C variable (b, n, l)):
    cpu           biomamba's C++ kernel (kernels/cpu)
    torch         biomamba's chunked PyTorch scan with a hand-written backward
    transformers  transformers' slow path `mamba_selective_scan` (sequential loop, autograd);
                  its backward is quadratic in L, so it runs only up to L = 1024 and is time-boxed:
                  a length is skipped once a shorter one of the same shape family took longer
                  than --hf-budget seconds
    mambapy       transformers' path with use_mambapy=True (parallel scan), only if importable
Each entry is the best of --reps runs after a warm-up (transformers: one run, no warm-up), the best because other
processes may share the cores (the load average is printed first); ratios are that backend's time
over cpu's.

A second table times document resets: the same forward+backward with seq_idx (documents of 150 to
250 tokens, as packed PubMed abstracts) and without, per backend, at L = 1024; its ratio is
with / without (goal: within 1.05). On cores shared with other busy processes wall time swings
by tens of percent between runs; --cpu-time times the table in the process's CPU time on one
thread, which counts the work done rather than the waiting (one thread: with two, a thread spinning
at a barrier for its descheduled peer burns CPU time too). Not a test: nothing is asserted.
"""
import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from biomamba import ops  # noqa: E402
from biomamba.bench_cli import fastest_in_turns, report_table  # noqa: E402

SHAPES = [  # (label, batch, d_inner, d_state, length)
    ("mamba-130m layer", 1, 1536, 16, 256),
    ("mamba-130m layer", 1, 1536, 16, 1024),
    ("mamba-130m layer", 1, 1536, 16, 2048),
    ("tiny-model train", 4, 512, 16, 256),
    ("tiny-model train", 4, 512, 16, 1024),
]


def scan_inputs(batch, dim, n, length, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, dim, length, generator=g)
    delta = torch.randn(batch, dim, length, generator=g) * 0.5 - 1.0
    A = -torch.arange(1, n + 1, dtype=torch.float32).repeat(dim, 1)  # S4D-real init, as in Mamba
    B = torch.randn(batch, n, length, generator=g)
    C = torch.randn(batch, n, length, generator=g)
    D = torch.ones(dim)
    z = torch.randn(batch, dim, length, generator=g)
    delta_bias = torch.randn(dim, generator=g) * 0.5
    return [u, delta, A, B, C, D, z, delta_bias]


def packed_document_ids(batch, length, shortest=150, longest=250, seed=0):
    """(b, l) document ids of documents of shortest..longest tokens, each row packed on its own."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(batch, length, dtype=torch.int64)
    for row in range(batch):
        start = int(torch.randint(0, longest, (1,), generator=g))  # rows do not start aligned
        while start < length:
            ids[row, start:] += 1
            start += int(torch.randint(shortest, longest + 1, (1,), generator=g))
    return ids


def make_scan(name, seq_idx=None):
    if name in ("cpu", "torch"):
        return lambda *args: ops.selective_scan(*args, delta_softplus=True, backend=name, seq_idx=seq_idx)
    from transformers.models.mamba.modeling_mamba import mamba_selective_scan
    if name == "transformers":
        return lambda *args: mamba_selective_scan(*args, delta_softplus=True)
    return lambda *args: mamba_selective_scan(*args, delta_softplus=True, use_mambapy=True)


def fwd_bwd_seconds(scan, leaves, clock=time.perf_counter):
    """Time (s, on `clock`) of one forward + backward of out.sum()."""
    for t in leaves:
        t.grad = None
    start = clock()
    scan(*leaves).sum().backward()
    return clock() - start


def best_times(scans, tensors, reps, warmup=1, clock=time.perf_counter):
    """Best of `reps` runs per scan ({name: scan}) after `warmup` runs, the scans taking turns run
    by run so that a burst of load from other processes hits all of them alike."""
    leaves = [t.clone().requires_grad_() for t in tensors]
    return fastest_in_turns({name: lambda scan=scan: fwd_bwd_seconds(scan, leaves, clock)
                             for name, scan in scans.items()}, reps, warmup)


def resets_table(reps, cpu_time=False):
    """Forward+backward with seq_idx against without, per backend, at the L = 1024 shapes."""
    backends = ("cpu", "torch")
    clock = time.process_time if cpu_time else time.perf_counter
    threads = torch.get_num_threads()
    if cpu_time:
        torch.set_num_threads(1)
    print("\ndocument resets: forward+backward with seq_idx (documents of 150-250 tokens) and without, "
          f"fp32, same options; {'process CPU' if cpu_time else 'wall'} ms (ratio = with / without)")
    header = (f"{'shape':<18}{'b':>3}{'d':>6}{'n':>4}{'L':>6}{'docs/row':>9}"
              + "".join(f"{name:>30}" for name in backends))
    print(header)
    print("-" * len(header))
    reported = []
    for label, batch, dim, n, length in SHAPES:
        if length != 1024:
            continue
        tensors = scan_inputs(batch, dim, n, length)
        seq_idx = packed_document_ids(batch, length)
        scans = {}
        for name in backends:
            scans[name] = make_scan(name)
            scans[name + "+seq_idx"] = make_scan(name, seq_idx)
        times = best_times(scans, tensors, reps, clock=clock)
        docs = (seq_idx[:, -1] - seq_idx[:, 0] + 1).float().mean().item()
        cells = "".join(f"{times[name] * 1e3:>10.1f} {times[name + '+seq_idx'] * 1e3:>10.1f} "
                        f"({times[name + '+seq_idx'] / times[name]:>5.3f}x)" for name in backends)
        print(f"{label:<18}{batch:>3}{dim:>6}{n:>4}{length:>6}{docs:>9.1f}" + cells, flush=True)
        reported += [[label, length, name, times[name] * 1e3, times[name + "+seq_idx"] * 1e3,
                      times[name + "+seq_idx"] / times[name]] for name in backends]
    torch.set_num_threads(threads)
    report_table("resets", ["shape", "L", "backend", "ms", "ms with seq_idx", "x no seq_idx"], reported,
                 key=("shape", "L", "backend"), ratios=("x no seq_idx",))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--hf-budget", type=float, default=30.0,
                        help="skip longer transformers runs once one took this many seconds")
    parser.add_argument("--quick", action="store_true", help="one repetition, 5 s time box")
    parser.add_argument("--resets-only", action="store_true", help="only the seq_idx table")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time the seq_idx table in process CPU time on one thread, not wall time")
    args = parser.parse_args()
    reps, budget = (1, 5.0) if args.quick else (args.reps, args.hf_budget)
    if args.resets_only:
        ops.selective_scan(*scan_inputs(1, 2, 2, 3), backend="cpu")  # build/load the extension
        print(f"load average {os.getloadavg()[0]:.1f} (other processes on these cores inflate every time); "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads")
        resets_table(reps, args.cpu_time)
        return

    names = ["cpu", "torch", "transformers"]
    if importlib.util.find_spec("mambapy") is not None:
        names.append("mambapy")
    t0 = time.perf_counter()
    ops.selective_scan(*scan_inputs(1, 2, 2, 3), backend="cpu")  # build/load the extension
    print(f"load average {os.getloadavg()[0]:.1f} (other processes on these cores inflate every time); "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"cpu extension ready in {time.perf_counter() - t0:.1f} s; mambapy "
          f"{'found' if 'mambapy' in names else 'not installed'}")
    print("forward+backward, fp32, D/z/delta_bias/softplus, variable B/C; ms (ratio = time / cpu)")
    header = f"{'shape':<18}{'b':>3}{'d':>6}{'n':>4}{'L':>6}" + "".join(f"{n:>22}" for n in names)
    print(header)
    print("-" * len(header))
    slow = set()  # (backend, shape label) pairs that exceeded the time box
    reported = []
    for label, batch, dim, n, length in SHAPES:
        tensors = scan_inputs(batch, dim, n, length)
        fast = {name: make_scan(name) for name in names if name != "transformers"}
        times = best_times(fast, tensors, reps)
        if ("transformers", label) not in slow and length <= 1024:
            times.update(best_times({"transformers": make_scan("transformers")}, tensors, 1, warmup=0))
            if times["transformers"] > budget:
                slow.add(("transformers", label))
        cells = []
        for name in names:
            if name not in times:
                cells.append(f"{'skipped (L cap/box)':>22}")
            elif name == "cpu":
                cells.append(f"{times[name] * 1e3:>14.1f}        ")
            else:
                cells.append(f"{times[name] * 1e3:>14.1f} ({times[name] / times['cpu']:>5.1f}x)")
        print(f"{label:<18}{batch:>3}{dim:>6}{n:>4}{length:>6}" + "".join(cells), flush=True)
        reported += [[label, length, name, times[name] * 1e3, times[name] / times["cpu"] if name != "cpu" else None]
                     for name in names if name in times]
        if (batch, dim, length) == (4, 512, 256):
            tiny = times["cpu"]
    # The 3.8M-parameter model has 4 layers; transformers trains it at ~70 tokens/s here.
    print(f"\ntiny model, B=4 L=256: 4 layers x {tiny * 1e3:.1f} ms = {4 * tiny * 1e3:.0f} ms of scan "
          f"per step, a ceiling of {4 * 256 / (4 * tiny):,.0f} tokens/s from the scan alone "
          f"(goal: 50 x 70 = 3,500 tokens/s end to end)")
    report_table("fwd_bwd", ["shape", "L", "backend", "ms", "x cpu"], reported, key=("shape", "L", "backend"),
                 ratios=("x cpu",))
    resets_table(reps, args.cpu_time)


if __name__ == "__main__":
    main()
