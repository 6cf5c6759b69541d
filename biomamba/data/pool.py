"""One job per input file, run over --workers processes, results back in job order.

Every stage of `prepare` is such a map: a job reads and writes only its own input's files, so the
outputs never depend on how many workers ran or in which order jobs finished. One worker runs the
jobs in this process (no fork); more fork a pool for the stage. Workers encode with one thread
each (TOKENIZERS_PARALLELISM=false): the parallelism is the processes. `run_in_child` runs one
memory-hungry call (the tokenizer trainer) in a child, so its memory is returned when it ends.
"""
from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
from typing import Callable, Sequence

from tqdm import tqdm


def _init_worker(initializer, initargs) -> None:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    if initializer is not None:
        initializer(*initargs)


def _guarded(fn, job):
    try:
        return fn(job)
    except Exception:
        raise
    except BaseException as err:  # a pool worker that lets KeyboardInterrupt out dies and the pool hangs
        raise RuntimeError(f"{type(err).__name__} in a worker: {err}") from None


def _call(item):
    fn, index, job = item
    return index, _guarded(fn, job)


def _context():
    return mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()


def run_in_child(fn: Callable, job):
    """fn(job) in a child process: the memory it takes goes back to the system when it ends (the
    tokenizer trainer's would otherwise stay with this process and every worker forked later)."""
    with _context().Pool(1) as pool:
        return pool.apply(_guarded, (fn, job))


@contextlib.contextmanager
def _forking_quietly():
    """tokenizers warns in every forked child once its parent has used threads, unless
    TOKENIZERS_PARALLELISM is set at fork time; set it for the fork only, not for this process."""
    before = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        yield
    finally:
        if before is None:
            del os.environ["TOKENIZERS_PARALLELISM"]
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = before


def run_jobs(fn: Callable, jobs: Sequence, workers: int, desc: str, progress: bool, weights=None,
             unit: str = "file", initializer=None, initargs=()) -> list:
    """[fn(job) for job in jobs] over `workers` processes; the bar advances by each job's weight.

    `fn` and `initializer` must be module-level functions. An exception in a job stops the stage
    and is raised here (the pool is terminated; finished jobs' files stay for a rerun).
    """
    weights = list(weights) if weights is not None else [1] * len(jobs)
    results = [None] * len(jobs)
    bar = tqdm(total=sum(weights), desc=desc, unit=unit, unit_scale=True, disable=not progress or not jobs)
    try:
        if workers <= 1 or len(jobs) <= 1:
            if initializer is not None:
                initializer(*initargs)
            for i, job in enumerate(jobs):
                results[i] = fn(job)
                bar.update(weights[i])
            return results
        with _forking_quietly():
            pool = _context().Pool(min(workers, len(jobs)), initializer=_init_worker, initargs=(initializer, initargs))
        with pool:
            items = [(fn, i, job) for i, job in enumerate(jobs)]
            for i, result in pool.imap_unordered(_call, items):
                results[i] = result
                bar.update(weights[i])
        return results
    finally:
        bar.close()
