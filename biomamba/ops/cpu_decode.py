"""The compiled decoding step on CPU (kernels/cpu/decode_step.cpp), built on first use like the "cpu" scan.

    extension()   the built module (mamba1_tokens, mamba2_tokens, linear, has_avx512); raises
                  ops.BackendUnavailable, with what to do, when it cannot be built here

The gemv picks AVX-512 at run time where the CPU has it (a portable loop elsewhere), so the cached build
runs on any x86-64 machine; a token runs in one parallel region of torch's intra-op thread count.
"""
from biomamba.ops.compiled import BackendUnavailable, build_cpu_extension, kernel_source_dir

SOURCE_DIR = kernel_source_dir("cpu")
SOURCES = ["decode_step.cpp"]
HEADERS = ["scan_math.h"]
EXTENSION_NAME = "biomamba_decode_step_cpu"

_extension = None
_failure = None  # the BackendUnavailable of the first try, raised again on every later call


def _build():
    return build_cpu_extension("decode step", EXTENSION_NAME, SOURCE_DIR, SOURCES, HEADERS,
                               what="the compiled decoding step", instead="decode with decode_kernel='torch'")


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
