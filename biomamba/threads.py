"""How many threads a command computes with, decided in one place (`run.threads`, `--threads N`).

    available_cpus()      the CPUs this process may use (os.sched_getaffinity: a container's or
                          taskset's share, not the machine's core count)
    configure(threads)    sets torch's intra-op threads (which our C++ kernels use too), one
                          inter-op thread, and OpenMP's wait policy; returns the thread count

Every `biomamba` command calls configure() (biomamba/cli.py), with --threads N when given, else
OMP_NUM_THREADS when the user set it, else available_cpus(). The wait policy is set earlier still,
by `import biomamba` (biomamba/__init__.py), because OpenMP reads it once, when torch loads it.

Why PASSIVE (bench/loaded.py, bench/RESULTS.md "A loaded machine"): OpenMP's default lets a thread
that runs out of work spin for a while before it sleeps. When another process holds one of the
cores, the spinning thread and the thread still working share a core, so every parallel region
waits for a thread that gets half a core or less; a training step then fell 13x beside one busy
process. With OMP_WAIT_POLICY=PASSIVE a thread sleeps as soon as it has nothing to do, and one
competitor costs about its fair share. A user's own OMP_WAIT_POLICY / GOMP_SPINCOUNT is kept.
"""
from __future__ import annotations

import os

WAIT_POLICY = "PASSIVE"


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # platforms without affinity (macOS)
        return os.cpu_count() or 1


def thread_count(threads: int | None = None) -> int:
    """--threads N when given, else OMP_NUM_THREADS when set to a positive number, else available_cpus()."""
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads (run.threads) must be at least 1, got {threads}")
        return threads
    from_env = os.environ.get("OMP_NUM_THREADS", "")
    if from_env.isdigit() and int(from_env) > 0:
        return int(from_env)
    return available_cpus()


def configure(threads: int | None = None) -> int:
    """Set the threads of this process (see the module docstring); returns their count.

    OpenMP reads OMP_* once, when it starts (when torch loads), so call this before torch computes
    anything; called later, the thread count still applies and the wait policy may not."""
    count = thread_count(threads)
    os.environ["OMP_NUM_THREADS"] = str(count)
    if "GOMP_SPINCOUNT" not in os.environ:
        os.environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)
    import torch

    torch.set_num_threads(count)
    try:
        torch.set_num_interop_threads(1)  # nothing of ours runs ops side by side; idle pools only compete
    except RuntimeError:  # already set, or inter-op work already ran: keep what is there
        pass
    return count
