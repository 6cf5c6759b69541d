"""Facts about where a command runs, recorded in every run's config: the device and the code version."""
from __future__ import annotations

import subprocess
from pathlib import Path


def pick_device(name: str) -> torch.device:  # noqa: F821  (torch is imported on use: `--help` loads no torch)
    """"auto" -> cuda when available, else cpu; "cuda" without a GPU is an error naming the option."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for, but no CUDA device is available")
    return torch.device(name)


def git_commit() -> str:
    """The commit of the biomamba source checkout, or "unknown" (an installed wheel has no .git)."""
    checkout = Path(__file__).resolve().parent.parent
    if not (checkout / ".git").exists():  # not a checkout: don't report an enclosing repository's commit
        return "unknown"
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=checkout, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
