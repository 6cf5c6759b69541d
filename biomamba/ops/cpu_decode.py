"""The compiled decoding step on CPU (kernels/cpu/decode_step.cpp), built on first use like the "cpu" scan.

    extension()   the built module (mamba1_step, mamba2_step, lm_head, linear, has_avx512); raises
                  ops.BackendUnavailable, with what to do, when it cannot be built here

The gemv picks AVX-512 at run time where the CPU has it (a portable loop elsewhere), so the cached build
runs on any x86-64 machine; rows are split over torch's intra-op threads (at::parallel_for).
"""
import os
import shutil

from biomamba.ops.compiled import BackendUnavailable, kernel_source_dir, versioned_name

SOURCE_DIR = kernel_source_dir("cpu")
SOURCES = ["decode_step.cpp"]
EXTENSION_NAME = "biomamba_decode_step_cpu"

_extension = None
_failure = None  # the BackendUnavailable of the first try, raised again on every later call


def _build():
    from torch.utils import cpp_extension

    if not (SOURCE_DIR / SOURCES[0]).is_file():
        raise BackendUnavailable(f"the compiled decoding step: {SOURCE_DIR / SOURCES[0]} not found; "
                                 "reinstall biomamba, or decode with the torch step (decode_kernel='torch')")
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None or not cpp_extension.is_ninja_available():
        raise BackendUnavailable(f"the compiled decoding step needs a C++ compiler ({compiler!r}: "
                                 "`apt-get install g++`) and ninja (`pip install ninja`); or decode with "
                                 "decode_kernel='torch'")
    try:
        return cpp_extension.load(name=versioned_name(EXTENSION_NAME, SOURCE_DIR, SOURCES),
                                  sources=[str(SOURCE_DIR / name) for name in SOURCES],
                                  extra_cflags=["-O3", "-fopenmp"], extra_ldflags=["-fopenmp"], verbose=False)
    except Exception as error:  # compiler or linker errors; the message holds the build log
        raise BackendUnavailable(f"building the compiled decoding step from {SOURCE_DIR} failed; fix the "
                                 f"error below or decode with decode_kernel='torch'\n{error}") from error


def extension():
    global _extension, _failure
    if _extension is None:
        if _failure is not None:
            raise _failure
        try:
            _extension = _build()
        except BackendUnavailable as error:
            _failure = error
            raise
    return _extension
