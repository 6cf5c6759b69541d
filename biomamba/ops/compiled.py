"""What the compiled backends (ops/cpu.py, ops/cuda.py) share: their error type and where their
sources are.

The C++/CUDA sources live in the repository's top-level kernels/ folder; a wheel carries them as
package data under biomamba/kernels/ (setup.py), so a regular install can still JIT-build them.
"""
import hashlib
from pathlib import Path


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here; the message says how to get it."""


def kernel_source_dir(kind: str) -> Path:
    """kernels/<kind> of a source checkout, else biomamba/kernels/<kind> of an installed wheel."""
    package = Path(__file__).resolve().parent.parent  # .../biomamba
    for candidate in (package.parent / "kernels" / kind, package / "kernels" / kind):
        if candidate.is_dir():
            return candidate
    return package / "kernels" / kind  # absent: the backend's check names this path


def versioned_name(base: str, source_dir: Path, names) -> str:
    """The JIT extension name for these sources: `base` plus a digest of their bytes, so two biomamba
    versions (two checkouts, two venvs) on one machine never load each other's builds from the shared
    torch_extensions directory."""
    digest = hashlib.sha256()
    for name in sorted(names):
        path = source_dir / name
        digest.update(name.encode() + b"\0" + (path.read_bytes() if path.is_file() else b""))
    return f"{base}_{digest.hexdigest()[:12]}"
