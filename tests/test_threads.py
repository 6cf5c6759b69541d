"""Threads: one place decides them (biomamba/threads.py), every command takes --threads (run.threads)."""
import os

import pytest

from biomamba import threads
from biomamba.cli import COMMANDS


def test_thread_count_is_the_flag_else_omp_num_threads_else_the_cpus_this_process_may_use(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads.thread_count(None) == len(os.sched_getaffinity(0))
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.thread_count(None) == 3
    assert threads.thread_count(1) == 1
    with pytest.raises(ValueError, match="--threads \\(run.threads\\) must be at least 1, got 0"):
        threads.thread_count(0)


def test_configure_sets_torch_and_openmp_and_keeps_a_users_wait_policy(monkeypatch):
    import torch
    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    try:
        assert threads.configure(1) == 1
        assert torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"
        assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    finally:
        torch.set_num_threads(before)
        monkeypatch.setenv("OMP_NUM_THREADS", str(before))


def test_every_command_takes_threads(capsys):
    from biomamba.cli import main
    singles = [name for name, (target, _) in COMMANDS.items() if not isinstance(target, dict)]
    for name in singles:
        with pytest.raises(SystemExit):
            main([name, "--help"])
        assert "--threads N" in capsys.readouterr().out, name
