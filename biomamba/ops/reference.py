"""Plain PyTorch references of every op in biomamba.ops: the ground truth the fast backends are
tested against (same arguments; float64 in, float64 out).

    selective_scan_ref            sequential scan, autograd through every step (mamba_ssm's
                                  selective_scan_ref, real A)
    selective_state_update_ref    one decoding step of the scan
    causal_conv1d_torch           depthwise causal conv via F.conv1d (the "torch"/"ref" conv backend)
    causal_conv1d_update_torch    one decoding step of the conv
"""
import torch
import torch.nn.functional as F


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


def selective_state_update_ref(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
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


_ACTIVATIONS = {None: lambda t: t, "silu": F.silu, "swish": F.silu}


def _activation(name):
    if name not in _ACTIVATIONS:
        raise ValueError(f"activation must be None, 'silu' or 'swish', got {name!r}")
    return _ACTIVATIONS[name]


def causal_conv1d_torch(x, weight, bias=None, activation=None):
    """Depthwise causal conv: x (b, d, l), weight (d, w), bias (d,) -> (b, d, l) in x's dtype."""
    width = weight.shape[-1]
    out = F.conv1d(x.to(weight.dtype), weight.unsqueeze(1), bias, padding=width - 1,
                   groups=x.shape[1])[..., : x.shape[-1]]
    return _activation(activation)(out).to(x.dtype)


def causal_conv1d_update_torch(x, conv_state, weight, bias=None, activation=None):
    """One step of the causal conv: x (b, d); conv_state (b, d, w) rolled in place -> (b, d)."""
    conv_state.copy_(torch.roll(conv_state, shifts=-1, dims=-1))
    conv_state[:, :, -1] = x
    out = (conv_state.to(weight.dtype) * weight).sum(-1)
    if bias is not None:
        out = out + bias
    return _activation(activation)(out).to(x.dtype)
