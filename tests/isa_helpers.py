"""The instruction sets of the compiled CPU kernels (kernels/cpu/isa.h), for tests that check each build of
a kernel: BIOMAMBA_CPU_ISA caps the one it picks. Tests take every level and skip the ones this CPU lacks,
so collecting them builds nothing and their names are the same on every machine."""
import pytest

ISA_LEVELS = [0, 1, 2]  # baseline (SSE2/NEON), AVX2+FMA, AVX-512
VNNI = 3  # AVX-512 with VNNI: only the decoding step's int8 x int8 dot products (int8-dynamic) use it


def use_isa(kernel, isa, monkeypatch):
    """Cap `kernel`'s module (biomamba.ops.cpu, ssd_cpu or cpu_decode; it builds on first use) at level `isa`
    for this test, or skip the test where this CPU does not have it."""
    if isa > kernel.extension().isa_level():
        pytest.skip(f"this CPU lacks instruction set level {isa} (0 baseline, 1 AVX2+FMA, 2 AVX-512, 3 AVX-512 VNNI)")
    monkeypatch.setenv("BIOMAMBA_CPU_ISA", str(isa))
