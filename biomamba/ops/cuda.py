"""The "cuda" backend: biomamba's own CUDA kernels (kernels/cuda) behind autograd.Functions.

Layers, outermost first:
    selective_scan / selective_state_update / causal_conv1d   (this file; ops.py's signatures)
    _SelectiveScanCuda, _CausalConv1dCuda                     (autograd: cast, save, call backward)
    kernels/cuda/binding.cpp                                   (checks device/dtype/shape/contiguity)
    kernels/cuda/*.cu, *.cuh                                   (torch-free launchers and kernels)

The extension is either prebuilt (`BIOMAMBA_CUDA_BUILD=1 pip install -e .`, see cuda_extension())
or JIT-built on first use with torch.utils.cpp_extension.load. Nothing here touches CUDA at
import time; check_available() does, once, and caches its verdict.

Dtypes: u, delta, z (and variable B/C) run in u's dtype (float32, float16 or bfloat16); A, D,
delta_bias and constant B/C in float32; all arithmetic is float32. Outputs are in u's dtype,
last_state float32, gradients in each input's own dtype. seq_idx (document resets, scan and conv)
reaches the kernels as int32 ids (reference.seq_idx_int32).
"""
import os

import torch

from biomamba.ops.compiled import BackendUnavailable, kernel_source_dir, versioned_name
from biomamba.ops.reference import check_seq_idx, seq_idx_int32

_SOURCE_DIR = kernel_source_dir("cuda")
_SOURCES = ("binding.cpp", "selective_scan.cu", "state_update.cu", "causal_conv1d.cu")
_NVCC_FLAGS = ["-O3", "-lineinfo"]
_JIT_NAME = "biomamba_cuda_kernels"
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_BUILD_HINT = ("or build it ahead of time on a CUDA machine with "
               "`BIOMAMBA_CUDA_BUILD=1 pip install -e .`; backend 'torch' works everywhere")

_STATE = {}  # "module": the loaded extension, or "error": why it is unavailable
MAX_D_STATE = 256    # kernels/cuda/biomamba_cuda.h kMaxDState (a test keeps the two equal)
MAX_BATCH = 65535    # grid.y limit of every launch
CONV_WIDTHS = (2, 3, 4)


# ----------------------------------------------------------------------------- build and load

def cuda_extension():
    """The setuptools CUDAExtension that prebuilds the kernels as biomamba._cuda_kernels."""
    from torch.utils.cpp_extension import CUDAExtension

    root = _SOURCE_DIR.parent.parent
    return CUDAExtension(
        name="biomamba._cuda_kernels",
        sources=[str((_SOURCE_DIR / name).relative_to(root)) for name in _SOURCES],
        include_dirs=[str(_SOURCE_DIR)],
        extra_compile_args={"cxx": ["-O3"], "nvcc": list(_NVCC_FLAGS)},
    )


def cuda_setup_kwargs():
    """setup() keyword arguments for the prebuilt extension: ext_modules and cmdclass."""
    from torch.utils.cpp_extension import BuildExtension

    return {"ext_modules": [cuda_extension()], "cmdclass": {"build_ext": BuildExtension}}


def _load_extension():
    if torch.version.cuda is None:
        raise BackendUnavailable(
            f"backend 'cuda' needs torch built with CUDA, but this torch ({torch.__version__}) is "
            "built without CUDA; install a CUDA build, e.g. `pip install torch==2.13.0 "
            "--index-url https://download.pytorch.org/whl/cu128`, or use backend='torch'")
    if not torch.cuda.is_available():
        raise BackendUnavailable(
            "backend 'cuda' needs a CUDA device, but there is no CUDA device "
            "(torch.cuda.is_available() is False: check the NVIDIA driver and CUDA_VISIBLE_DEVICES), "
            "or use backend='torch'")
    try:
        from biomamba import _cuda_kernels  # prebuilt by setup.py
        return _cuda_kernels
    except ImportError:
        pass
    missing = [name for name in _SOURCES if not (_SOURCE_DIR / name).is_file()]
    if missing:
        raise BackendUnavailable(f"backend 'cuda': kernel sources {missing} not found in {_SOURCE_DIR} "
                                 f"(an installed wheel without kernels/?); {_BUILD_HINT}")
    from torch.utils.cpp_extension import CUDA_HOME, load

    if CUDA_HOME is None:
        raise BackendUnavailable("backend 'cuda' must compile its kernels but finds no CUDA toolkit "
                                 f"(nvcc): install it and set CUDA_HOME, {_BUILD_HINT}")
    try:
        headers = [p.name for p in _SOURCE_DIR.glob("*.cuh")] + [p.name for p in _SOURCE_DIR.glob("*.h")]
        return load(name=versioned_name(_JIT_NAME, _SOURCE_DIR, [*_SOURCES, *headers]),
                    sources=[str(_SOURCE_DIR / name) for name in _SOURCES],
                    extra_include_paths=[str(_SOURCE_DIR)], extra_cflags=["-O3"],
                    extra_cuda_cflags=list(_NVCC_FLAGS), verbose=bool(os.environ.get("BIOMAMBA_VERBOSE_BUILD")))
    except Exception as error:  # compiler errors, missing ninja, ...
        raise BackendUnavailable(f"backend 'cuda': compiling kernels/cuda failed ({error}); "
                                 f"set BIOMAMBA_VERBOSE_BUILD=1 to see the build, {_BUILD_HINT}") from error


def check_available():
    """Load the kernels (once); raise BackendUnavailable saying what is missing and how to fix it."""
    if "module" in _STATE:
        return
    if "error" not in _STATE:
        try:
            _STATE["module"] = _load_extension()
            return
        except BackendUnavailable as error:
            _STATE["error"] = str(error)
    raise BackendUnavailable(_STATE["error"])


def _ext():
    check_available()
    return _STATE["module"]


def _check_tensors(op, *tensors):
    for t in tensors:
        if t is not None and t.device.type != "cuda":
            raise BackendUnavailable(f"{op} backend 'cuda' needs CUDA tensors, got a tensor on {t.device}; "
                                     "move the inputs with .cuda() or use backend='torch'/'cpu'")
    dtype = tensors[0].dtype
    if dtype not in _DTYPES:
        raise TypeError(f"{op} backend 'cuda' supports float32, float16 and bfloat16 inputs, got {dtype}; "
                        "use backend='ref' for float64")


def _limit_error(op, message):
    # The binding checks the same limits, but a C++ exception thrown from the extension crashed the
    # process on the first GPU machine it ran on (bench/RESULTS.md, 2026-12-04): check here first.
    return RuntimeError(f"{op} (cuda): {message}")


def _check_scan_limits(op, x, A, B, C):
    """x (b, d, ...) and A (d, n) within the kernels' limits; B/C grouped (b, g, n[, l]) with g | d."""
    b, d = x.shape[0], x.shape[1]
    if A.dim() != 2:
        raise _limit_error(op, f"A must be (d, n), got shape {tuple(A.shape)}")
    n = A.shape[1]
    if not 1 <= n <= MAX_D_STATE:
        raise _limit_error(op, f"d_state (A.shape[1]) must be in 1..{MAX_D_STATE}, got {n}")
    if b > MAX_BATCH:
        raise _limit_error(op, f"batch must be at most {MAX_BATCH}, got {b}")
    for name, X in (("B", B), ("C", C)):
        grouped = X.dim() == 4 or (op == "selective_state_update" and X.dim() == 3)
        if grouped and (X.shape[1] < 1 or d % X.shape[1]):
            raise _limit_error(op, f"{name} groups ({X.shape[1]}) must divide the channel count ({d})")


def _f32(t):
    return None if t is None else t.to(torch.float32).contiguous()


def _as(t, dtype):
    return None if t is None else t.to(dtype).contiguous()


def _cast_back(grad, like):
    return None if grad is None or like is None else grad.to(like.dtype)


def _kernel_ids(seq_idx, x, op):
    """seq_idx checked against x (b, d, l) and as the kernels take it: int32 (b, l), or None."""
    if seq_idx is None:
        return None
    check_seq_idx(seq_idx, x, f"{op} (cuda)")
    return seq_idx_int32(seq_idx)


# ----------------------------------------------------------------------------- selective scan

def _bc_for_kernel(X, dtype):
    """B or C as the kernel takes them: (d, n) float32, or (b, g, n, l) in the input dtype."""
    if X.dim() == 2:
        return _f32(X)
    if X.dim() == 3:
        return X.to(dtype).unsqueeze(1).contiguous()  # (b, n, l) -> (b, 1, n, l)
    return _as(X, dtype)


def _bc_grad(grad, original):
    """The kernel's float32 dB/dC back in the original layout and dtype."""
    if original.dim() == 3:
        grad = grad.squeeze(1)
    return grad.to(original.dtype)


class _SelectiveScanCuda(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, ids):
        ext = _ext()
        dtype = u.dtype
        args = (u.contiguous(), _as(delta, dtype), _f32(A), _bc_for_kernel(B, dtype),
                _bc_for_kernel(C, dtype), _f32(D), _as(z, dtype), _f32(delta_bias), ids)
        out, last_state, chunk_states = ext.scan_fwd(*args, bool(delta_softplus))
        ctx.save_for_backward(*args, chunk_states)
        ctx.delta_softplus = bool(delta_softplus)
        # Only dtype/layout of the originals are needed for the gradients: keep metadata, not data.
        ctx.originals = tuple(None if t is None else torch.empty((0,) * t.dim(), dtype=t.dtype)
                              for t in (u, delta, A, B, C, D, z, delta_bias))
        return (out, last_state) if return_last_state else out

    @staticmethod
    def backward(ctx, grad_out, grad_last_state=None):
        u, delta, A, B, C, D, z, delta_bias, ids, chunk_states = ctx.saved_tensors
        grad_out = torch.zeros_like(u) if grad_out is None else grad_out.to(u.dtype).contiguous()
        grads = _ext().scan_bwd(u, delta, A, B, C, D, z, delta_bias, ids, ctx.delta_softplus, chunk_states,
                                grad_out, _f32(grad_last_state))
        du, ddelta, dA, dB, dC, dD, dz, dbias = grads
        o_u, o_delta, o_A, o_B, o_C, o_D, o_z, o_bias = ctx.originals
        return (_cast_back(du, o_u), _cast_back(ddelta, o_delta), _cast_back(dA, o_A),
                _bc_grad(dB, o_B), _bc_grad(dC, o_C), _cast_back(dD, o_D), _cast_back(dz, o_z),
                _cast_back(dbias, o_bias), None, None, None)


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, seq_idx=None):
    """The "cuda" backend of biomamba.ops.selective_scan (same arguments and results)."""
    _check_tensors("selective_scan", u, delta, A, B, C, D, z, delta_bias, seq_idx)
    _check_scan_limits("selective_scan", u, A, B, C)
    if A.is_complex():
        raise NotImplementedError("biomamba's selective_scan supports real A only")
    return _SelectiveScanCuda.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                    return_last_state, _kernel_ids(seq_idx, u, "selective_scan"))


# ----------------------------------------------------------------------------- one-step update

def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
    """One decoding step (ops.selective_state_update): updates `state` in place, returns (b, d)."""
    _check_tensors("selective_state_update", x, state, dt, A, B, C, D, z, dt_bias)
    _check_scan_limits("selective_state_update", x, A, B, C)
    ext = _ext()
    dtype = x.dtype
    B3 = B.unsqueeze(1) if B.dim() == 2 else B  # (b, n) -> (b, 1, n)
    C3 = C.unsqueeze(1) if C.dim() == 2 else C
    in_place = state.is_contiguous() and state.dtype in (torch.float32, dtype)
    work = state if in_place else state.to(torch.float32).contiguous()
    out = ext.state_update(work, x.contiguous(), _as(dt, dtype), _f32(A), _as(B3, dtype), _as(C3, dtype),
                           _f32(D), _as(z, dtype), _f32(dt_bias), bool(dt_softplus))
    if not in_place:
        state.copy_(work)
    return out


# ----------------------------------------------------------------------------- causal conv1d

def _silu_flag(activation):
    if activation not in (None, "silu", "swish"):
        raise ValueError(f"activation must be None, 'silu' or 'swish', got {activation!r}")
    return activation is not None


class _CausalConv1dCuda(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, activation, ids):
        silu = _silu_flag(activation)
        x_c, w_c, b_c = x.contiguous(), _f32(weight), _f32(bias)
        out = _ext().conv1d_fwd(x_c, w_c, b_c, ids, silu)
        ctx.save_for_backward(x_c, w_c, b_c, ids)
        ctx.silu = silu
        ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, bias, ids = ctx.saved_tensors
        dx, dweight, dbias = _ext().conv1d_bwd(x, weight, bias, ids, grad_out.to(x.dtype).contiguous(),
                                               ctx.silu)
        w_dtype, b_dtype = ctx.dtypes
        return dx, dweight.to(w_dtype), None if bias is None else dbias.to(b_dtype), None, None


def causal_conv1d(x, weight, bias=None, activation=None, seq_idx=None):
    """Depthwise causal conv (ops.causal_conv1d): x (b, d, l), weight (d, w), w in 2..4 -> (b, d, l);
    with seq_idx (b, l), only taps of t's own document count."""
    _check_tensors("causal_conv1d", x, weight, bias, seq_idx)
    if weight.dim() != 2 or weight.shape[1] not in CONV_WIDTHS:
        raise _limit_error("causal_conv1d", f"conv width (weight.shape[1]) must be 2, 3 or 4, got weight "
                                            f"of shape {tuple(weight.shape)}")
    if x.shape[0] > MAX_BATCH:
        raise _limit_error("causal_conv1d", f"batch must be at most {MAX_BATCH}, got {x.shape[0]}")
    return _CausalConv1dCuda.apply(x, weight, bias, activation, _kernel_ids(seq_idx, x, "causal_conv1d"))
