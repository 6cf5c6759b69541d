"""What the compiled backends (ops/cpu.py, ops/cuda.py) share: their error type and where their
sources are.

The C++/CUDA sources live in the repository's top-level kernels/ folder; a wheel carries them as
package data under biomamba/kernels/ (setup.py), so a regular install can still JIT-build them.
"""
import hashlib
import os
import shutil
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


def build_cpu_extension(op: str, base: str, source_dir: Path, sources, headers, extra_cflags=(), what=None,
                        instead="use backend='torch'"):
    """Build (or load from torch's extensions cache) a C++ extension of kernels/cpu with
    torch.utils.cpp_extension, under `versioned_name`; raise BackendUnavailable, naming `op`, with
    what to install or fix when it cannot be built (`what` names the kernel, "{op} backend 'cpu'" by
    default; `instead` is the way around it).

    -fopenmp: at::parallel_for only runs in parallel when the including code is built with OpenMP;
    no -march=native, so the cached build runs on any x86-64/arm64 machine."""
    from torch.utils import cpp_extension

    what = what or f"{op} backend 'cpu'"
    missing = [name for name in [*sources, *headers] if not (source_dir / name).is_file()]
    if missing:
        raise BackendUnavailable(
            f"{what}: kernel sources {missing} not found in {source_dir}; biomamba's "
            "source checkout has them in kernels/cpu and its wheel in biomamba/kernels/cpu: reinstall biomamba "
            f"(`pip install --force-reinstall biomamba`), or {instead}")
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        raise BackendUnavailable(
            f"{what} needs a C++ compiler to build its kernel on first use, and "
            f"{compiler!r} was not found; install one (`apt-get install g++`) or set CXX, "
            f"or {instead}")
    if not cpp_extension.is_ninja_available():
        raise BackendUnavailable(f"{what} needs ninja to build its kernel: `pip install ninja`")
    try:
        return cpp_extension.load(
            name=versioned_name(base, source_dir, [*sources, *headers]),
            sources=[str(source_dir / name) for name in sources],
            extra_include_paths=[str(source_dir)],
            extra_cflags=["-O3", "-fopenmp", *extra_cflags],
            extra_ldflags=["-fopenmp"],
            verbose=False,
        )
    except Exception as error:  # compiler or linker errors; the message holds the build log
        raise BackendUnavailable(
            f"{what}: building the C++ kernel from {source_dir} failed; fix the error below "
            f"or {instead}\n{error}") from error
