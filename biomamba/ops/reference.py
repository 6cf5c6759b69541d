"""Plain PyTorch references of every op in biomamba.ops: the ground truth the fast backends are
tested against (same arguments; float64 in, float64 out).

    selective_scan_ref            sequential scan, autograd through every step (mamba_ssm's
                                  selective_scan_ref, real A)
    selective_state_update_ref    one decoding step of the scan
    causal_conv1d_torch           depthwise causal conv via F.conv1d (the "torch"/"ref" conv backend)
    causal_conv1d_update_torch    one decoding step of the conv

Document resets (`seq_idx`, (b, l) integer document ids, as in causal_conv1d and mamba_ssm's
Mamba-2): where seq_idx[b, t] != seq_idx[b, t-1] the scan treats h_{t-1} as zero, and the conv
sums only inputs x[t-k] with seq_idx[t-k] == seq_idx[t]. Packing gives each document one
contiguous run of positions; for such ids "same id" and "no change in between" are the same thing.
    check_seq_idx                 shape/dtype/device checks naming the argument
    seq_idx_int32                 the int32 ids the compiled kernels compare
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


def check_seq_idx(seq_idx, x, op):
    """seq_idx must be an integer (b, l) tensor on x's device, x being (b, d, l)."""
    if not isinstance(seq_idx, torch.Tensor):
        raise TypeError(f"{op}: seq_idx must be a tensor of document ids, got {type(seq_idx).__name__}")
    if seq_idx.dtype.is_floating_point or seq_idx.dtype.is_complex or seq_idx.dtype == torch.bool:
        raise TypeError(f"{op}: seq_idx must hold integer document ids (int32 or int64), got {seq_idx.dtype}")
    expected = (x.shape[0], x.shape[-1])
    if tuple(seq_idx.shape) != expected:
        raise ValueError(f"{op}: seq_idx must be (b, l) = {expected} to match the input "
                         f"{tuple(x.shape)}, got {tuple(seq_idx.shape)}")
    if seq_idx.device != x.device:
        raise ValueError(f"{op}: seq_idx must be on the input's device {x.device}, got {seq_idx.device}")


def seq_idx_int32(seq_idx):
    """The ids the compiled kernels take: int32 (b, l), contiguous.

    int32 ids pass through unchanged. Wider ids are renumbered per row as run numbers 0, 1, 2, ...
    (a new number wherever the id changes) rather than narrowed, so that no two neighbouring
    documents can wrap to one id; this keeps every scan reset, and every conv comparison as long
    as each document is one contiguous run.
    """
    if seq_idx.dtype == torch.int32:
        return seq_idx.contiguous()
    changes = seq_idx[:, 1:] != seq_idx[:, :-1]  # (b, l - 1)
    return F.pad(changes.cumsum(dim=1, dtype=torch.int32), (1, 0))  # (b, l)


def same_document_as_previous(seq_idx, dtype):
    """(b, l) in `dtype`: 1 where position t continues the document of t - 1, 0 at a new one
    (position 0 counts as continuing: the state before it is zero anyway)."""
    same = seq_idx[:, 1:] == seq_idx[:, :-1]  # (b, l - 1)
    return F.pad(same, (1, 0), value=True).to(dtype)


def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                       return_last_state=False, seq_idx=None):
    """Sequential reference (mamba_ssm's selective_scan_ref, real A, float64 kept as float64).

    With seq_idx, h_{t-1} is multiplied by 0 where a new document starts at t.
    """
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
    keep = None if seq_idx is None else same_document_as_previous(seq_idx, compute)  # (b, l)
    ys = []
    for i in range(length):
        if keep is not None:
            x = x * keep[:, i, None, None]
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


def causal_conv1d_torch(x, weight, bias=None, activation=None, seq_idx=None):
    """Depthwise causal conv: x (b, d, l), weight (d, w), bias (d,) -> (b, d, l) in x's dtype.

    With seq_idx (b, l), out[t] sums only the x[t - k] of the same document as t.
    """
    if seq_idx is not None:
        return _causal_conv1d_documents(x, weight, bias, activation, seq_idx)
    width = weight.shape[-1]
    out = F.conv1d(x.to(weight.dtype), weight.unsqueeze(1), bias, padding=width - 1,
                   groups=x.shape[1])[..., : x.shape[-1]]
    return _activation(activation)(out).to(x.dtype)


def _causal_conv1d_documents(x, weight, bias, activation, seq_idx):
    """The conv as a sum of `width` shifted copies of x, each masked where the shifted position
    belongs to another document (a select, not a subtraction: nothing of the other document,
    not even rounding, reaches the output or flows back)."""
    width, length = weight.shape[-1], x.shape[-1]
    padded = F.pad(x.to(weight.dtype), (width - 1, 0))  # (b, d, l + w - 1)
    ids = F.pad(seq_idx, (width - 1, 0))  # the pad's ids do not matter: its x is zero
    out = torch.zeros_like(padded[..., :length]) if bias is None else bias[:, None].expand(-1, length)
    for k in range(width):  # tap k reads x[t - (w - 1) + k]
        same = (ids[:, k:k + length] == seq_idx).unsqueeze(1)  # (b, 1, l)
        tap = weight[:, k, None] * padded[..., k:k + length]
        out = out + torch.where(same, tap, torch.zeros((), dtype=tap.dtype))
    return _activation(activation)(out).to(x.dtype)


def causal_conv1d_update_torch(x, conv_state, weight, bias=None, activation=None):
    """One step of the causal conv: x (b, d); conv_state (b, d, w) rolled in place -> (b, d)."""
    conv_state.copy_(torch.roll(conv_state, shifts=-1, dims=-1))
    conv_state[:, :, -1] = x
    out = (conv_state.to(weight.dtype) * weight).sum(-1)
    if bias is not None:
        out = out + bias
    return _activation(activation)(out).to(x.dtype)
