"""The "cpu" selective-scan backend: a C++ kernel (kernels/cpu) built on first use.

    check_available()      builds/loads the extension once; raises ops.BackendUnavailable if it can't
    selective_scan(...)    mamba_ssm's selective_scan_fn semantics on CPU tensors, with autograd

Layers, as in flash-attention: input checks with readable messages (here), the autograd.Function
that converts to the compute dtype (float32, or float64 for float64 inputs; bf16/fp16 inputs are
computed in float32 and returned in their dtype) and lays out B/C, then the C++ binding
(kernels/cpu/selective_scan.cpp) that repeats the checks and runs the kernels in parallel over
(batch, channel) rows.

The extension is compiled with torch.utils.cpp_extension.load into torch's extensions directory
(TORCH_EXTENSIONS_DIR if set), silently unless the build fails (about 40 s on 2 cores, once). It
needs gcc or clang (GCC vector extensions; no -march flags, so a cached build is portable: the loops
are built for the baseline, AVX2 and AVX-512 and the widest the CPU has runs, kernels/cpu/isa.h). The
gradient through the returned last state is supported (it seeds the adjoint recurrence).
seq_idx (document resets) reaches the kernel as int32 ids (reference.seq_idx_int32).
"""
import torch

from biomamba.ops.compiled import BackendUnavailable, build_cpu_extension, kernel_source_dir
from biomamba.ops.reference import check_seq_idx, seq_idx_int32

SOURCE_DIR = kernel_source_dir("cpu")
SOURCES = ["selective_scan.cpp"]
HEADERS = ["scan_kernel.h", "scan_math.h", "isa.h"]
EXTENSION_NAME = "biomamba_selective_scan_cpu"

_extension = None
_failure = None  # the BackendUnavailable raised on the first try, re-raised on every later call


def _load_extension():
    return build_cpu_extension("selective_scan", EXTENSION_NAME, SOURCE_DIR, SOURCES, HEADERS)


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


# ----------------------------------------------------------------------------- input checks

def _check_inputs(u, delta, A, B, C, D, z, delta_bias, seq_idx):
    """Readable errors naming the argument; the C++ binding checks its own (converted) inputs too."""
    named = dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias)
    for name, t in named.items():
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"selective_scan (cpu): {name} must be a tensor, got {type(t).__name__}")
        if t.device.type != "cpu":
            raise ValueError(f"selective_scan backend 'cpu' needs CPU tensors; {name} is on {t.device}")
        if t.is_complex():
            raise NotImplementedError(
                f"selective_scan backend 'cpu' supports real tensors only; {name} is {t.dtype}")
        if not t.is_floating_point():
            raise TypeError(f"selective_scan (cpu): {name} must be floating point, got {t.dtype}")
    if u.dim() != 3:
        raise ValueError(f"selective_scan (cpu): u must be (b, d, l), got shape {tuple(u.shape)}")
    b, d, l = u.shape
    for name in ("delta", "z"):
        if named[name] is not None and named[name].shape != u.shape:
            raise ValueError(f"selective_scan (cpu): {name} must have u's shape {tuple(u.shape)}, "
                             f"got {tuple(named[name].shape)}")
    if A.dim() != 2 or A.shape[0] != d:
        raise ValueError(f"selective_scan (cpu): A must be (d, n) with d={d}, got {tuple(A.shape)}")
    n = A.shape[1]
    for name in ("B", "C"):
        _check_bc(name, named[name], b, d, l, n)
    for name in ("D", "delta_bias"):
        if named[name] is not None and tuple(named[name].shape) != (d,):
            raise ValueError(f"selective_scan (cpu): {name} must be (d,) = ({d},), "
                             f"got {tuple(named[name].shape)}")
    if seq_idx is not None:
        check_seq_idx(seq_idx, u, "selective_scan (cpu)")


def _check_bc(name, X, b, d, l, n):
    expected = {2: (d, n), 3: (b, n, l)}
    if X.dim() == 4:
        groups = X.shape[1]
        if groups == 0 or d % groups:
            raise ValueError(f"selective_scan (cpu): groups of {name} ({groups}) must divide d ({d})")
        expected[4] = (b, groups, n, l)
    if X.dim() not in expected or tuple(X.shape) != expected[X.dim()]:
        raise ValueError(f"selective_scan (cpu): {name} must be (d, n)={(d, n)}, (b, n, l)={(b, n, l)} "
                         f"or (b, g, n, l), got {tuple(X.shape)}")


# ----------------------------------------------------------------------------- autograd

def _bc_to_kernel(X, compute):
    """(d, n) stays; (b, n, l) and (b, g, n, l) become time-major (b, g, l, n)."""
    X = X.to(compute)
    if X.dim() == 2:
        return X.contiguous()
    if X.dim() == 3:
        X = X.unsqueeze(1)
    return X.transpose(-1, -2).contiguous()


def _bc_from_kernel(grad, dim, dtype):
    """Sum the kernel's partial gradients; return them in B/C's own layout (`dim` dims) and dtype."""
    if dim == 2:
        grad = grad.sum(0)  # (b, d, n) -> (d, n)
    else:
        grad = grad.sum(1).transpose(-1, -2)  # (b, parts, g, l, n) -> (b, g, n, l)
        if dim == 3:
            grad = grad.squeeze(1)
    return grad.to(dtype)


def _maybe(t, compute):
    return None if t is None else t.to(compute).contiguous()


class _SelectiveScanCpu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, seq_idx):
        compute = torch.promote_types(u.dtype, torch.float32)
        ext = extension()
        tensors = [_maybe(u, compute), _maybe(delta, compute), _maybe(A, compute),
                   _bc_to_kernel(B, compute), _bc_to_kernel(C, compute),
                   _maybe(D, compute), _maybe(z, compute), _maybe(delta_bias, compute)]
        ids = None if seq_idx is None else seq_idx_int32(seq_idx)
        save = any(ctx.needs_input_grad[:8])
        out, last, states = ext.forward(*tensors, ids, bool(delta_softplus), save)
        if save:
            ctx.save_for_backward(*tensors, ids, states)
            ctx.dtypes = [None if t is None else t.dtype for t in (u, delta, A, B, C, D, z, delta_bias)]
            ctx.bc_dims = (B.dim(), C.dim())
            ctx.delta_softplus = bool(delta_softplus)
        out = out.to(u.dtype)
        return (out, last) if return_last_state else out

    @staticmethod
    def backward(ctx, grad_out, grad_last=None):
        *tensors, ids, states = ctx.saved_tensors
        compute = tensors[0].dtype
        grad_last = None if grad_last is None else grad_last.to(compute).contiguous()
        gu, gdelta, gz, gA, gD, gbias, gB, gC = _extension.backward(
            *tensors, ids, ctx.delta_softplus, states, grad_out.to(compute).contiguous(), grad_last)
        u_t, delta_t, A_t, B_t, C_t, D_t, z_t, bias_t = ctx.dtypes
        return (gu.to(u_t), gdelta.to(delta_t), gA.sum(0).to(A_t),
                _bc_from_kernel(gB, ctx.bc_dims[0], B_t), _bc_from_kernel(gC, ctx.bc_dims[1], C_t),
                None if D_t is None else gD.sum(0).to(D_t),
                None if z_t is None else gz.to(z_t),
                None if bias_t is None else gbias.sum(0).to(bias_t),
                None, None, None)


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, seq_idx=None):
    """The "cpu" backend of biomamba.ops.selective_scan (same arguments and results).

    Returns out (b, d, l) in u's dtype and, if asked, last_state (b, d, n) in the compute dtype
    (float32, or float64 for float64 inputs), like the "ref" and "torch" backends.
    """
    _check_inputs(u, delta, A, B, C, D, z, delta_bias, seq_idx)
    check_available()
    return _SelectiveScanCpu.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                   return_last_state, seq_idx)
