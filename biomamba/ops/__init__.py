"""Selective-scan operations with one public function each and backend dispatch.

Public functions (same arguments and semantics as mamba_ssm / causal_conv1d):
    selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, backend="auto", *, seq_idx=None)
    causal_conv1d(x, weight, bias=None, activation=None, backend="auto", *, seq_idx=None)
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

Packed documents (seq_idx: (b, l) integer document ids, causal_conv1d's and mamba_ssm Mamba-2's
convention): where seq_idx[b, t] != seq_idx[b, t-1] the scan takes h_{t-1} = 0, so each document
starts from the zero state; last_state is the state after the last position. The conv's out[t]
sums only the x[t-k] with seq_idx[t-k] == seq_idx[t]. Nothing of one document reaches another,
forward or backward. Every backend honours seq_idx except "mamba_ssm" (its Mamba-1 scan has no
such argument): "auto" skips it for such calls, and asking for it by name is an error.

Backends of selective_scan:
    "ref"       sequential, autograd through every step, computes in float32 or float64: the truth
                (ops/reference.py holds the reference of every op).
    "torch"     pure PyTorch (ops/scan_torch.py) with a hand-written backward that recomputes states per chunk
                (no quadratic backward, memory O(b d n l/chunk + b d n chunk)).
    "cpu"       the compiled C++ kernel (kernels/cpu, glue in ops/cpu.py), CPU tensors.
    "cuda"      our CUDA kernel (kernels/cuda, glue in ops/cuda.py), CUDA tensors.
    "mamba_ssm" the state-spaces kernel, when `mamba_ssm` imports.
"auto" picks the fastest available backend for the tensors' device among those a test on that kind
of device has shown correct (AUTO_ORDER: on CUDA, mamba_ssm, cuda, torch); `resolve_backend` says which
one, and the model's mixers record what their calls used (biomamba.modeling.backends_used(model)) so a
run can write it into its config; nothing here keeps state. Asking for an unavailable backend raises
BackendUnavailable with the command that makes it available; there is no silent fallback.

Mamba-2 (the SSD scan; mamba_ssm's `mamba_chunk_scan_combined` and Mamba2.step; names mapped to the
paper in ops/ssd_reference.py):
    ssd_scan(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None,
             seq_idx=None, dt_softplus=False, dt_limit=(0.0, inf), return_final_states=False,
             backend="auto")
    ssd_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False,
                     dt_limit=(0.0, inf))
Shapes (h = heads, p = headdim, g = groups of heads sharing B/C, n = d_state):
    x, z: (b, l, h, p)   dt: (b, l, h)   A, dt_bias: (h,)   B, C: (b, l, g, n)   D: (h, p) or (h,)
    initial_states, final_states, state: (b, h, p, n)   seq_idx: (b, l) integer document ids
    out: (b, l, h, p) in x's dtype; final_states in float32 (float64 for float64 inputs)
    ssd_state_update: x, z (b, h, p); dt (b, h); B, C (b, g, n); returns y (b, h, p)
Backends of ssd_scan: "ref" (ops/ssd_reference.py, sequential, any float dtype: the truth),
"torch" (ops/ssd_torch.py, the chunked matmul algorithm, memory linear in length),
"cpu" (the compiled C++ kernel, kernels/cpu/ssd_scan.cpp, glue in ops/ssd_cpu.py; "auto" on CPU when
it builds, else "torch" with a warning),
"mamba_ssm" (its Triton kernel; "auto" on CUDA when it imports and a small forward and backward with
the mixer's options runs, else "torch"): `resolve_ssd_backend`;
a Mamba-2 mixer records its choice as backends_used(model)["ssd_scan"]. ssd_state_update runs the reference step.
"""
import functools
import importlib
import warnings

from biomamba.ops import scan_torch
from biomamba.ops.ssd_reference import check_ssd_inputs, ssd_scan_ref, ssd_state_update_ref
from biomamba.ops.ssd_torch import ssd_scan_torch
from biomamba.ops.compiled import BackendUnavailable
from biomamba.ops.reference import (causal_conv1d_torch, causal_conv1d_update_torch, check_seq_idx,
                                    selective_scan_ref, selective_state_update_ref)

__all__ = ["selective_scan", "selective_state_update", "causal_conv1d", "causal_conv1d_update",
           "selective_scan_ref", "resolve_backend", "resolve_conv_backend", "BackendUnavailable"]


# ----------------------------------------------------------------------------- backends registry

def _mamba_ssm_scan():
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception as error:  # ImportError, or the missing selective_scan_cuda extension
        raise BackendUnavailable(
            f"backend 'mamba_ssm' is not available ({error}); it needs a CUDA machine and "
            "`pip install 'biomamba[cuda]'` (mamba-ssm, causal-conv1d)") from error
    return selective_scan_fn


def _compiled_module(kind):
    """The forward/backward glue of our compiled kernels, imported only when asked for."""
    module = importlib.import_module(f"biomamba.ops.{kind}")
    module.check_available()  # raises BackendUnavailable with instructions
    return module


def _compiled_scan(kind):
    return _compiled_module(kind).selective_scan


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


# What "auto" may choose, fastest first, per device type: only backends whose correctness a test on
# that kind of device has shown. Our "cuda" scan passed every scan test of `pytest -m gpu` on an H200
# (two runs, 2026-12-04, bench/RESULTS.md); it is 2.4x slower than mamba_ssm's in bf16 but honours
# seq_idx, so with document resets "auto" takes it over the 20x slower torch scan.
AUTO_ORDER = {"cpu": ("cpu", "torch"), "cuda": ("mamba_ssm", "cuda", "torch")}
WITHOUT_SEQ_IDX = ("mamba_ssm",)  # scan backends that cannot reset at document boundaries
# Which backend a call used is not kept here: the model's mixers record it (their backends_used) and a
# run writes it into its config. "Say once" below is the warnings module's own once per call site.


def resolve_backend(backend, device, seq_idx=False) -> str:
    """The concrete backend `backend` means for tensors on `device` ("auto" -> fastest available);
    with seq_idx=True only backends that honour document resets qualify."""
    if backend != "auto":
        if seq_idx and backend in WITHOUT_SEQ_IDX:
            raise BackendUnavailable(
                f"selective_scan backend {backend!r} cannot honour seq_idx (its Mamba-1 scan has no "
                "document resets); use backend='auto', 'torch', 'cpu' or 'cuda', or pass seq_idx=None")
        return backend
    preferred = AUTO_ORDER.get(device.type, ("torch",))
    for name in preferred:
        if seq_idx and name in WITHOUT_SEQ_IDX:
            continue
        if _is_available(name):
            if name != preferred[0]:
                # Not silent: say once which faster backend is not used and why results may be slower.
                why = ("cannot honour seq_idx" if seq_idx and preferred[0] in WITHOUT_SEQ_IDX
                       else "unavailable")
                warnings.warn(f"selective_scan backend 'auto' on {device.type}: "
                              f"{preferred[0]!r} {why}, using {name!r}", stacklevel=3)
            return name
    raise BackendUnavailable(f"no selective_scan backend for device {device}")


# ----------------------------------------------------------------------------- selective scan

def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, backend="auto", *, seq_idx=None):
    """The selective scan of Mamba; see the module docstring for shapes, backends and seq_idx."""
    if seq_idx is not None:
        check_seq_idx(seq_idx, u, "selective_scan")
    name = resolve_backend(backend, u.device, seq_idx=seq_idx is not None)
    impl = _scan_impl(name)
    if seq_idx is None:  # every backend, mamba_ssm's included, without the argument
        return impl(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    return impl(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, seq_idx=seq_idx)


# ----------------------------------------------------------------------------- one-step update

def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
    """One decoding step of the scan; updates `state` (b, d, n) in place and returns out (b, d).

    x, dt, z: (b, d); A: (d, n); B, C: (b, n) or grouped (b, g, n); D, dt_bias: (d,).
    """
    return selective_state_update_ref(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus)


# ----------------------------------------------------------------------------- causal conv1d

def causal_conv1d(x, weight, bias=None, activation=None, backend="auto", *, seq_idx=None):
    """Depthwise causal conv: x (b, d, l), weight (d, w), bias (d,) -> (b, d, l) in x's dtype.

    seq_idx (b, l): out[t] sums only the inputs of t's own document. "auto" is the torch conv;
    our CUDA kernel ("cuda", widths 2..4) is asked for by name until its GPU tests have passed.
    """
    if seq_idx is not None:
        check_seq_idx(seq_idx, x, "causal_conv1d")
    if resolve_conv_backend(backend) == "cuda":
        return _compiled_module("cuda").causal_conv1d(x, weight, bias, activation, seq_idx=seq_idx)
    return causal_conv1d_torch(x, weight, bias, activation, seq_idx=seq_idx)


def resolve_conv_backend(backend="auto") -> str:
    """The concrete causal_conv1d backend: "cuda" when asked for by name, else the torch conv."""
    if backend == "cuda":
        return "cuda"
    if backend not in ("auto", "torch", "ref"):
        raise BackendUnavailable(f"causal_conv1d backend {backend!r} is not built into biomamba; "
                                 "use 'auto', 'torch' or 'cuda'")
    return "torch"


def causal_conv1d_update(x, conv_state, weight, bias=None, activation=None):
    """One step of the causal conv: x (b, d); conv_state (b, d, w) rolled in place -> (b, d)."""
    return causal_conv1d_update_torch(x, conv_state, weight, bias, activation)


# ----------------------------------------------------------------------------- Mamba-2 SSD scan

__all__ += ["ssd_scan", "ssd_state_update", "ssd_scan_ref"]

# What "auto" may choose for ssd_scan, fastest first, per device type (elsewhere: "torch").
SSD_AUTO_ORDER = {"cpu": ("cpu", "torch"), "cuda": ("mamba_ssm", "torch")}


def _mamba_ssm_ssd():
    try:
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    except Exception as error:  # ImportError, or Triton/CUDA pieces missing
        raise BackendUnavailable(
            f"ssd_scan backend 'mamba_ssm' is not available ({error}); it needs a CUDA machine and "
            "`pip install 'biomamba[cuda]'` (mamba-ssm, causal-conv1d)") from error
    return mamba_chunk_scan_combined


def _ssd_impl(name):
    if name == "ref":
        return ssd_scan_ref
    if name == "torch":
        return ssd_scan_torch
    if name == "cpu":
        return _compiled_module("ssd_cpu").ssd_scan_cpu
    if name == "mamba_ssm":
        return _mamba_ssm_ssd()
    raise ValueError(f"unknown ssd_scan backend {name!r}; choose one of auto, ref, torch, cpu, mamba_ssm")


@functools.lru_cache(maxsize=None)
def _ssd_unusable(name, device) -> str:
    """Why backend `name` cannot serve "auto" on `device` ("" when it can). mamba_ssm must also run:
    on an H200 with Triton 3.6 its Triton state-passing kernel failed to compile in a training step
    (2026-12-04, bench/RESULTS.md) although the package imported, and "auto" crashed a run."""
    try:
        impl = _ssd_impl(name)
        if name == "mamba_ssm":
            _probe_ssd(impl, device)
    except Exception as error:  # BackendUnavailable, or Triton's CompilationError, ...
        return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:200]
    return ""


def _probe_ssd(impl, device):
    """A tiny forward + backward with the options a Mamba-2 mixer passes (biomamba/mamba2.py)."""
    import torch

    b, l, h, p, g, n = 1, 64, 2, 8, 1, 16
    make = lambda *shape: torch.randn(*shape, device=device, requires_grad=True)  # noqa: E731
    x, dt, B, C = make(b, l, h, p), make(b, l, h), make(b, l, g, n), make(b, l, g, n)
    seq_idx = torch.zeros(b, l, dtype=torch.int32, device=device)
    seq_idx[:, l // 2:] = 1
    out, final = impl(x, dt, -torch.ones(h, device=device), B, C, 32, D=torch.ones(h, device=device),
                      dt_bias=torch.zeros(h, device=device), seq_idx=seq_idx, dt_softplus=True,
                      return_final_states=True)
    (out.sum() + final.sum()).backward()


def resolve_ssd_backend(backend, device) -> str:
    """The concrete ssd_scan backend `backend` means for tensors on `device`."""
    if backend != "auto":
        return backend
    preferred = SSD_AUTO_ORDER.get(device.type, ("torch",))
    for name in preferred:
        why = _ssd_unusable(name, str(device))
        if why:
            continue
        if name != preferred[0]:  # say once (per call site) why it may be slower
            warnings.warn(f"ssd_scan backend 'auto' on {device.type}: {preferred[0]!r} unusable "
                          f"({_ssd_unusable(preferred[0], str(device))}), using {name!r}", stacklevel=3)
        return name
    raise BackendUnavailable(f"no ssd_scan backend for device {device}")


def ssd_scan(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None,
             seq_idx=None, dt_softplus=False, dt_limit=(0.0, float("inf")), return_final_states=False,
             backend="auto"):
    """The SSD scan of Mamba-2: out (b, l, h, p), and final_states (b, h, p, n) when asked;
    see the module docstring for shapes and backends."""
    check_ssd_inputs(x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states, seq_idx)
    name = resolve_ssd_backend(backend, x.device)
    impl = _ssd_impl(name)
    return impl(x, dt, A, B, C, chunk_size, D=D, z=z, dt_bias=dt_bias, initial_states=initial_states,
                seq_idx=seq_idx, dt_softplus=dt_softplus, dt_limit=dt_limit,
                return_final_states=return_final_states)


def ssd_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False,
                     dt_limit=(0.0, float("inf"))):
    """One decoding step of the SSD scan; updates `state` (b, h, p, n) in place, returns y (b, h, p).

    x, z: (b, h, p); dt: (b, h); A, dt_bias: (h,); B, C: (b, g, n); D: (h, p) or (h,).
    """
    return ssd_state_update_ref(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus, dt_limit)
