"""The instruction sets a compiled CPU kernel runs on this machine (kernels/cpu/isa.h), for tests that
check each build of it: BIOMAMBA_CPU_ISA caps the one a kernel picks."""


def isa_levels(kernel):
    """0 baseline, 1 AVX2+FMA, 2 AVX-512: every level up to the widest this CPU has, as the kernel's module
    (biomamba.ops.cpu, ssd_cpu or cpu_decode; it builds on first use) reads it."""
    return list(range(kernel.extension().isa_level() + 1))
