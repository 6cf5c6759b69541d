"""The "cpu" backend of biomamba.ops.ssd_scan: a C++ kernel (kernels/cpu/ssd_scan.cpp) built on first use.

    check_available()   builds/loads the extension once; raises ops.BackendUnavailable if it can't
    ssd_scan_cpu(...)   ssd_scan's arguments and results on CPU tensors, with autograd

Layers, as in ops/cpu.py (the Mamba-1 kernel): the elementwise parts stay in PyTorch and autograd
(dt's bias, softplus and clamp: reference.ssd_dt; D and the gate: gate_and_skip), the
autograd.Function converts to the compute dtype (float32, or float64 for float64 inputs; half
types compute in float32) and turns seq_idx into document starts (the reference's rule: the id
before position 0 counts as 0), and the C++ binding runs the recurrence with the state in registers
(kernels/cpu/ssd_kernel.h says how), one (batch row, head) per unit of work on torch's threads.
Its backward recomputes states from those saved every 64 steps; B and C's gradients come back per
head and are summed over each group's heads here. chunk_size does not reach the kernel: chunking
changes rounding, never the result. The extension is compiled like the Mamba-1 kernel's
(compiled.build_cpu_extension, about 40 s on 2 cores, once per source version), with
-ffp-contract=fast so its AVX2 path fuses multiply-adds.
"""
import torch

from biomamba.ops.compiled import BackendUnavailable, build_cpu_extension, kernel_source_dir
from biomamba.ops.ssd_reference import (DEFAULT_DT_LIMIT, compute_dtype, document_starts,
                                        gate_and_skip, ssd_dt)

SOURCE_DIR = kernel_source_dir("cpu")
SOURCES = ["ssd_scan.cpp"]
HEADERS = ["ssd_kernel.h", "isa.h"]
EXTENSION_NAME = "biomamba_ssd_scan_cpu"

_extension = None
_failure = None  # the BackendUnavailable raised on the first try, re-raised on every later call


def _load_extension():
    return build_cpu_extension("ssd_scan", EXTENSION_NAME, SOURCE_DIR, SOURCES, HEADERS,
                               extra_cflags=["-ffp-contract=fast", "-Wno-psabi"])


def check_available():
    """Build or load the extension once; raise BackendUnavailable (cached) if that is impossible."""
    global _extension, _failure
    if _extension is not None:
        return
    if _failure is not None:
        raise _failure
    try:
        _extension = _load_extension()
    except BackendUnavailable as error:
        _failure = error
        raise


def extension():
    """The built module (check_available first)."""
    check_available()
    return _extension


def _check_devices(**tensors):
    for name, t in tensors.items():
        if t is not None and t.device.type != "cpu":
            raise ValueError(f"ssd_scan backend 'cpu' needs CPU tensors; {name} is on {t.device}")
        if t is not None and t.is_complex():
            raise NotImplementedError(f"ssd_scan backend 'cpu' supports real tensors only; {name} is {t.dtype}")


def _contiguous(t, compute):
    return None if t is None else t.to(compute).contiguous()


class _SsdScanCpu(torch.autograd.Function):
    """y (b, l, h, p) and final states (b, h, p, n) of the recurrence on dt already processed."""

    @staticmethod
    def forward(ctx, x, dt, A, B, C, initial_states, starts):
        save = any(ctx.needs_input_grad[:6])
        y, final, saved = _extension.forward(x, dt, A, B, C, initial_states, starts, save)
        if save:
            ctx.save_for_backward(x, dt, A, B, C, starts, saved)
            ctx.has_initial = initial_states is not None
        return y, final

    @staticmethod
    def backward(ctx, grad_y, grad_final):
        x, dt, A, B, C, starts, saved = ctx.saved_tensors
        grad_final = None if grad_final is None else grad_final.contiguous()
        gx, gdt, gA, gB, gC, ginit = _extension.backward(x, dt, A, B, C, starts, saved,
                                                         grad_y.contiguous(), grad_final)
        b, l, g, n = B.shape
        heads_per_group = x.shape[2] // g  # head i reads group i // heads_per_group
        gB = gB.view(b, l, g, heads_per_group, n).sum(3)
        gC = gC.view(b, l, g, heads_per_group, n).sum(3)
        return gx, gdt, gA.sum(0), gB, gC, ginit if ctx.has_initial else None, None


def ssd_scan_cpu(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None,
                 seq_idx=None, dt_softplus=False, dt_limit=DEFAULT_DT_LIMIT, return_final_states=False):
    """The "cpu" backend of biomamba.ops.ssd_scan (same arguments and results; chunk_size unused)."""
    _check_devices(x=x, dt=dt, A=A, B=B, C=C, D=D, z=z, dt_bias=dt_bias, initial_states=initial_states,
                   seq_idx=seq_idx)
    check_available()
    compute = compute_dtype(x.dtype)
    dt = ssd_dt(dt, dt_bias, dt_softplus, dt_limit, compute)  # (b, l, h), autograd in torch
    starts = None if seq_idx is None else document_starts(seq_idx).to(torch.int32).contiguous()
    y, final = _SsdScanCpu.apply(_contiguous(x, compute), dt.contiguous(), _contiguous(A, compute),
                                 _contiguous(B, compute), _contiguous(C, compute),
                                 _contiguous(initial_states, compute), starts)
    out = gate_and_skip(y, x, D, z, compute).to(x.dtype)
    return (out, final) if return_final_states else out


__all__ = ["BackendUnavailable", "check_available", "ssd_scan_cpu"]
