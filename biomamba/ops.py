"""Selective-scan operations with one public function each and backend dispatch.

Public functions (same arguments and semantics as mamba_ssm / causal_conv1d):
    selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, backend="auto")
    causal_conv1d(x, weight, bias=None, activation=None, backend="auto")
    causal_conv1d_update(x, conv_state, weight, bias=None, activation=None)
    selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False)

Shapes (b = batch, d = channels (d_inner), l = length, n = d_state, g = groups):
    u, delta, z: (b, d, l)    A: (d, n) real    D, delta_bias: (d,)
    B, C: (d, n) fixed, (b, n, l) input-dependent, or (b, g, n, l) grouped (d divisible by g)
    out: (b, d, l) in u's dtype; last_state: (b, d, n)

Recurrence (Mamba paper, Algorithm 2), per channel d and time t:
    delta_t = softplus(delta_t + delta_bias)         (when delta_softplus)
    h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t       (h: (n,))
    y_t = <h_t, C_t> + D * u_t ;  out_t = y_t * silu(z_t)

Backends of selective_scan:
    "ref"       sequential, autograd through every step, computes in float32 or float64: the truth.
    "torch"     pure PyTorch with a hand-written backward that recomputes states per chunk
                (no quadratic backward, memory O(b d n l/chunk + b d n chunk)).
    "cpu"       the compiled C++ kernel (kernels/cpu), CPU tensors.
    "cuda"      our CUDA kernel (kernels/cuda), CUDA tensors.
    "mamba_ssm" the state-spaces kernel, when `mamba_ssm` imports.
"auto" picks the fastest available backend for the tensors' device; every choice is recorded in
`backends_used()` so a run can write it into its config. Asking for an unavailable backend raises
BackendUnavailable with the command that makes it available; there is no silent fallback.
"""
import importlib
import warnings

import torch
import torch.nn.functional as F

from biomamba import scan_torch

_USED = {}  # op name -> backend chosen on the last call (recorded for run configs)


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here; the message says how to get it."""


# ----------------------------------------------------------------------------- backends registry

def _mamba_ssm_scan():
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception as error:  # ImportError, or the missing selective_scan_cuda extension
        raise BackendUnavailable(
            f"backend 'mamba_ssm' is not available ({error}); it needs a CUDA machine and "
            "`pip install 'biomamba[cuda]'` (mamba-ssm, causal-conv1d)") from error
    return selective_scan_fn


def _compiled_scan(kind):
    """The forward/backward glue of our compiled kernels, imported only when asked for."""
    module = importlib.import_module(f"biomamba.kernels_{kind}")
    module.check_available()  # raises BackendUnavailable with instructions
    return module.selective_scan


def _scan_impl(name):
    if name == "ref":
        return selective_scan_ref
    if name == "torch":
        return scan_torch.selective_scan_torch
    if name in ("cpu", "cuda"):
        try:
            return _compiled_scan(name)
        except ModuleNotFoundError as error:
            raise BackendUnavailable(
                f"backend {name!r} is not built into this version of biomamba") from error
    if name == "mamba_ssm":
        return _mamba_ssm_scan()
    raise ValueError(f"unknown scan backend {name!r}; choose one of auto, ref, torch, cpu, cuda, mamba_ssm")


def _is_available(name):
    try:
        _scan_impl(name)
        return True
    except BackendUnavailable:
        return False


_AUTO_NOTES = set()


def resolve_backend(backend, device) -> str:
    """The concrete backend `backend` means for tensors on `device` ("auto" -> fastest available)."""
    if backend != "auto":
        return backend
    # On GPUs the proven mamba_ssm kernel comes first while our CUDA kernel awaits its GPU
    # verification (bench/RESULTS_GPU_TODO.md); ask for backend="cuda" to use ours.
    preferred = ("mamba_ssm", "cuda", "torch") if device.type == "cuda" else ("cpu", "torch")
    for name in preferred:
        if _is_available(name):
            if name != preferred[0] and (device.type, name) not in _AUTO_NOTES:
                # Not silent: say once which faster backend is missing and why results may be slower.
                _AUTO_NOTES.add((device.type, name))
                warnings.warn(f"selective_scan backend 'auto' on {device.type}: "
                              f"{preferred[0]!r} unavailable, using {name!r}", stacklevel=3)
            return name
    raise BackendUnavailable(f"no selective_scan backend for device {device}")


def backends_used() -> dict:
    """{op name: backend} chosen by the most recent calls; written into run configs."""
    return dict(_USED)


# ----------------------------------------------------------------------------- selective scan

def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, backend="auto"):
    """The selective scan of Mamba; see the module docstring for shapes and backends."""
    name = resolve_backend(backend, u.device)
    _USED["selective_scan"] = name
    impl = _scan_impl(name)
    return impl(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)


def _expand_bc(X, d):
    """B or C as (d, n) or (b, d, n, l): fixed, per-batch (b, n, l) or grouped (b, g, n, l)."""
    if X.dim() == 2:
        return X
    if X.dim() == 3:
        return X.unsqueeze(1)  # (b, 1, n, l) broadcasts over d
    groups = X.shape[1]
    if d % groups:
        raise ValueError(f"B/C groups ({groups}) must divide the channel count d ({d})")
    return X.repeat_interleave(d // groups, dim=1)  # (b, d, n, l)


def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                       return_last_state=False):
    """Sequential reference (mamba_ssm's selective_scan_ref, real A, float64 kept as float64)."""
    dtype_in = u.dtype
    compute = torch.promote_types(dtype_in, torch.float32)
    u, delta, A = u.to(compute), delta.to(compute), A.to(compute)
    if delta_bias is not None:
        delta = delta + delta_bias.to(compute)[..., None]
    if delta_softplus:
        delta = F.softplus(delta)
    batch, dim, length = u.shape
    Bx, Cx = _expand_bc(B.to(compute), dim), _expand_bc(C.to(compute), dim)
    deltaA = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))  # (b, d, l, n)
    if Bx.dim() == 2:
        deltaB_u = torch.einsum("bdl,dn,bdl->bdln", delta, Bx, u)
    else:
        deltaB_u = torch.einsum("bdl,bdnl,bdl->bdln", delta, Bx, u)
    x = u.new_zeros(batch, dim, A.shape[1])  # (b, d, n)
    ys = []
    for i in range(length):
        x = deltaA[:, :, i] * x + deltaB_u[:, :, i]
        if Cx.dim() == 2:
            ys.append(torch.einsum("bdn,dn->bd", x, Cx))
        else:
            ys.append(torch.einsum("bdn,bdn->bd", x, Cx[..., i]))
    y = torch.stack(ys, dim=2)  # (b, d, l)
    out = y if D is None else y + u * D.to(compute)[:, None]
    if z is not None:
        out = out * F.silu(z.to(compute))
    out = out.to(dtype_in)
    return (out, x) if return_last_state else out


# ----------------------------------------------------------------------------- one-step update

def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
    """One decoding step of the scan; updates `state` (b, d, n) in place and returns out (b, d).

    x, dt, z: (b, d); A: (d, n); B, C: (b, n) or grouped (b, g, n); D, dt_bias: (d,).
    """
    compute = torch.promote_types(state.dtype, torch.float32)
    dt = dt.to(compute)
    if dt_bias is not None:
        dt = dt + dt_bias.to(compute)
    if dt_softplus:
        dt = F.softplus(dt)
    d = x.shape[1]
    if B.dim() == 3:  # (b, g, n) -> (b, d, n)
        B = B.repeat_interleave(d // B.shape[1], dim=1)
        C = C.repeat_interleave(d // C.shape[1], dim=1)
    else:
        B, C = B.unsqueeze(1), C.unsqueeze(1)
    dA = torch.exp(dt.unsqueeze(-1) * A.to(compute))  # (b, d, n)
    dBx = dt.unsqueeze(-1) * B.to(compute) * x.to(compute).unsqueeze(-1)
    new_state = state.to(compute) * dA + dBx
    state.copy_(new_state)
    out = (new_state * C.to(compute)).sum(-1)
    if D is not None:
        out = out + x.to(compute) * D.to(compute)
    if z is not None:
        out = out * F.silu(z.to(compute))
    return out.to(x.dtype)


# ----------------------------------------------------------------------------- causal conv1d

_ACTIVATIONS = {None: lambda t: t, "silu": F.silu, "swish": F.silu}


def _activation(name):
    if name not in _ACTIVATIONS:
        raise ValueError(f"activation must be None, 'silu' or 'swish', got {name!r}")
    return _ACTIVATIONS[name]


def causal_conv1d(x, weight, bias=None, activation=None, backend="auto"):
    """Depthwise causal conv: x (b, d, l), weight (d, w), bias (d,) -> (b, d, l) in x's dtype."""
    if backend not in ("auto", "torch", "ref"):
        raise BackendUnavailable(f"causal_conv1d backend {backend!r} is not built into biomamba; "
                                 "use 'auto' or 'torch'")
    _USED["causal_conv1d"] = "torch"
    width = weight.shape[-1]
    out = F.conv1d(x.to(weight.dtype), weight.unsqueeze(1), bias, padding=width - 1,
                   groups=x.shape[1])[..., : x.shape[-1]]
    return _activation(activation)(out).to(x.dtype)


def causal_conv1d_update(x, conv_state, weight, bias=None, activation=None):
    """One step of the causal conv: x (b, d); conv_state (b, d, w) rolled in place -> (b, d)."""
    conv_state.copy_(torch.roll(conv_state, shifts=-1, dims=-1))
    conv_state[:, :, -1] = x
    out = (conv_state.to(weight.dtype) * weight).sum(-1)
    if bias is not None:
        out = out + bias
    return _activation(activation)(out).to(x.dtype)
