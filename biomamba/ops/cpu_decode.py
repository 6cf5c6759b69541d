"""The compiled decoding step on CPU (kernels/cpu/decode_step.cpp), built on first use like the "cpu" scan.

    extension()   the built module (mamba1_plan / mamba2_plan, whose Plan runs the steps; linear; isa_level);
                  raises ops.BackendUnavailable, with what to do, when it cannot be built here

The dot products and state steps are built for the baseline, AVX2+FMA and AVX-512 (and int8-dynamic's int8
products for AVX-512 VNNI), and the widest the CPU has is picked at run time (kernels/cpu/isa.h;
BIOMAMBA_CPU_ISA=0/1/2/3 caps it, read once per call), so the cached build runs on any x86-64 machine; a
token runs in one parallel region of the thread count biomamba/decode.py passes (torch's intra-op count).
"""
from biomamba.ops.compiled import BackendUnavailable, build_cpu_extension, kernel_source_dir

SOURCE_DIR = kernel_source_dir("cpu")
SOURCES = ["decode_step.cpp"]
HEADERS = ["decode_tiles.h", "decode_vectors.h", "isa.h", "scan_math.h"]
EXTENSION_NAME = "biomamba_decode_step_cpu"

_extension = None
_failure = None  # the BackendUnavailable of the first try, raised again on every later call


def _build():
    return build_cpu_extension("decode step", EXTENSION_NAME, SOURCE_DIR, SOURCES, HEADERS,
                               extra_cflags=["-Wno-psabi"],  # gcc's notes on the 8- and 16-lane vector types
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
