"""The "torch" selective-scan backend: pure PyTorch, hand-written backward, no quadratic cost.

Autograd through a Python loop over time (transformers' CPU fallback) indexes one step of a
(b, d, l, n) tensor per iteration, so its backward writes a full-size gradient per step: O(l^2).
Here a custom autograd.Function runs the recurrence in time chunks, saves only each chunk's start
state (b, d, n), and in backward recomputes the chunk's states and runs the adjoint recurrence
in reverse. Work is O(l), memory O(chunk * b * d * n).

Inside, tensors are time-major, (t, b, d, n), so that each step's slice is contiguous.
Gradients (per step t, channel d, state n; h_t = dA_t h_{t-1} + dBu_t, y_t = <h_t, C_t>):
    gh_t   = gy_t C_t + dA_{t+1} gh_{t+1}
    g dA_t = gh_t h_{t-1}      -> g delta += sum_n g dA_t dA_t A ;  g A += sum_{b,t} g dA_t dA_t delta
    g dBu_t = gh_t             -> g delta += sum_n gh_t u B ; g u += sum_n gh_t delta B ; g B, g C
Document resets (seq_idx) set dA_t to zero where a new document starts at t: the forward then
drops h_{t-1}, and the same masked dA_t cuts the adjoint carry and zeroes g dA_t in backward, so
neither direction crosses a boundary and the formulas above stay as they are.
"""
import torch
import torch.nn.functional as F

from biomamba.ops.reference import same_document_as_previous

CHUNK = 128  # time steps recomputed together in backward; bounds memory, not a numeric choice


# --------------------------------------------------------------------------- B/C layouts

def _bc_to_time_major(X, d):
    """B or C -> (kind, tensor): "const" (1, 1, d, n); "var" (l, b, 1, n); "group" (l, b, g, n)."""
    if X.dim() == 2:
        return "const", X[None, None]
    if X.dim() == 3:
        return "var", X.permute(2, 0, 1).unsqueeze(2)
    if d % X.shape[1]:
        raise ValueError(f"B/C groups ({X.shape[1]}) must divide the channel count d ({d})")
    return "group", X.permute(3, 0, 1, 2)


def _bc_chunk(kind, X, start, stop, d):
    """The (t, b, d|1, n) slice of B or C for steps [start, stop)."""
    if kind == "const":
        return X
    chunk = X[start:stop]
    if kind == "group":
        chunk = chunk.repeat_interleave(d // X.shape[2], dim=2)
    return chunk


def _bc_grad(kind, grad, d, groups):
    """Reduce a (t, b, d, n) gradient to the layout of B/C's time-major form."""
    if kind == "const":
        return grad.sum(dim=(0, 1), keepdim=True)
    if kind == "var":
        return grad.sum(dim=2, keepdim=True)
    t, b, _, n = grad.shape
    return grad.view(t, b, groups, d // groups, n).sum(dim=3)


def _bc_from_time_major(kind, grad, original):
    if kind == "const":
        return grad[0, 0].to(original.dtype)
    if kind == "var":
        return grad.squeeze(2).permute(1, 2, 0).to(original.dtype)
    return grad.permute(1, 2, 3, 0).to(original.dtype)


# --------------------------------------------------------------------------- the recurrence

def _chunk_states(h, dA, dBu):
    """Run h_t = dA_t h_{t-1} + dBu_t over a chunk; returns all states (t, b, d, n)."""
    states = []
    for t in range(dA.shape[0]):
        h = torch.addcmul(dBu[t], dA[t], h)
        states.append(h)
    return torch.stack(states)


def _chunk_adjoint(carry, dA, gyC):
    """Reverse recurrence gh_t = gyC_t + carry_t, carry_{t-1} = dA_t gh_t; returns gh and carry."""
    grads = [None] * dA.shape[0]
    for t in range(dA.shape[0] - 1, -1, -1):
        gh = gyC[t] + carry
        grads[t] = gh
        carry = dA[t] * gh
    return torch.stack(grads), carry


def _keep_mask(seq_idx, compute):
    """(l, b, 1, 1): 1 where step t continues the document of t - 1, 0 where one starts; None
    without seq_idx."""
    if seq_idx is None:
        return None
    return same_document_as_previous(seq_idx, compute).t()[..., None, None]


def _decay(dt, A, keep, s, e):
    """dA_t = exp(delta_t A) for steps [s, e), zero at document starts: (t, b, d, n)."""
    dA = torch.exp(dt[s:e, ..., None] * A)
    return dA if keep is None else dA.mul_(keep[s:e])


class _SelectiveScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, seq_idx):
        compute = torch.promote_types(u.dtype, torch.float32)
        b, d, length = u.shape
        dt = _delta(delta, delta_bias, delta_softplus, compute)  # (l, b, d)
        u_t = u.to(compute).permute(2, 0, 1)
        kind_b, B_t = _bc_to_time_major(B.to(compute), d)
        kind_c, C_t = _bc_to_time_major(C.to(compute), d)
        A_c = A.to(compute)
        keep = _keep_mask(seq_idx, compute)
        h = u.new_zeros(b, d, A.shape[1], dtype=compute)
        starts, ys = [], []
        for s in range(0, length, CHUNK):
            e = min(s + CHUNK, length)
            starts.append(h)
            dA = _decay(dt, A_c, keep, s, e)
            dBu = (dt[s:e] * u_t[s:e])[..., None] * _bc_chunk(kind_b, B_t, s, e, d)
            hs = _chunk_states(h, dA, dBu)
            ys.append((hs * _bc_chunk(kind_c, C_t, s, e, d)).sum(-1))
            h = hs[-1]
        y = torch.cat(ys).permute(1, 2, 0).contiguous()  # (b, d, l)
        out = _finish(y, u, D, z, compute)
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, torch.stack(starts), keep)
        ctx.delta_softplus = delta_softplus
        out = out.to(u.dtype)
        return (out, h) if return_last_state else out

    @staticmethod
    def backward(ctx, grad_out, grad_last=None):
        u, delta, A, B, C, D, z, delta_bias, starts, keep = ctx.saved_tensors
        return _backward(ctx, u, delta, A, B, C, D, z, delta_bias, starts, keep, grad_out, grad_last)


def _delta(delta, delta_bias, softplus, compute):
    dt = delta.to(compute)
    if delta_bias is not None:
        dt = dt + delta_bias.to(compute)[..., None]
    if softplus:
        dt = F.softplus(dt)
    return dt.permute(2, 0, 1)  # (l, b, d)


def _finish(y, u, D, z, compute):
    out = y if D is None else y + u.to(compute) * D.to(compute)[:, None]
    return out if z is None else out * F.silu(z.to(compute))


def _backward(ctx, u, delta, A, B, C, D, z, delta_bias, starts, keep, grad_out, grad_last):
    compute = torch.promote_types(u.dtype, torch.float32)
    b, d, length = u.shape
    dt = _delta(delta, delta_bias, ctx.delta_softplus, compute)
    u_t = u.to(compute).permute(2, 0, 1)
    kind_b, B_t = _bc_to_time_major(B.to(compute), d)
    kind_c, C_t = _bc_to_time_major(C.to(compute), d)
    A_c = A.to(compute)
    g_out = grad_out.to(compute).permute(2, 0, 1)  # (l, b, d)
    z_t = None if z is None else z.to(compute).permute(2, 0, 1)
    D_c = None if D is None else D.to(compute)

    g_dt = torch.empty_like(dt)
    g_u = torch.empty_like(u_t)
    g_z = None if z is None else torch.empty_like(z_t)
    g_A = torch.zeros_like(A_c)
    g_D = None if D is None else torch.zeros_like(D_c)
    g_B, g_C = [], []
    carry = torch.zeros_like(starts[0]) if grad_last is None else grad_last.to(compute)
    chunk_starts = list(range(0, length, CHUNK))
    for index in range(len(chunk_starts) - 1, -1, -1):
        s = chunk_starts[index]
        e = min(s + CHUNK, length)
        dA = _decay(dt, A_c, keep, s, e)
        Bc, Cc = _bc_chunk(kind_b, B_t, s, e, d), _bc_chunk(kind_c, C_t, s, e, d)
        du = dt[s:e] * u_t[s:e]
        hs = _chunk_states(starts[index], dA, du[..., None] * Bc)
        # 1. output gating and skip: out = (y + D u) * silu(z)
        g_y = g_out[s:e]
        if z is not None:
            y = (hs * Cc).sum(-1) + (0 if D is None else u_t[s:e] * D_c)
            sig = torch.sigmoid(z_t[s:e])
            g_z[s:e] = g_y * y * sig * (1 + z_t[s:e] * (1 - sig))
            g_y = g_y * z_t[s:e] * sig
        g_u_direct = 0 if D is None else g_y * D_c
        if D is not None:
            g_D += (g_y * u_t[s:e]).sum(dim=(0, 1))
        # 2. adjoint recurrence, then the per-step terms all at once
        gh, carry = _chunk_adjoint(carry, dA, g_y[..., None] * Cc)
        g_C.append(_bc_grad(kind_c, g_y[..., None] * hs, d, C.shape[1] if C.dim() == 4 else 1))
        h_prev = torch.cat([starts[index][None], hs[:-1]])
        g_dA = gh * h_prev * dA
        g_A += (g_dA * dt[s:e, ..., None]).sum(dim=(0, 1))
        g_dBu_B = gh * Bc
        g_dt[s:e] = (g_dA * A_c).sum(-1) + (g_dBu_B * u_t[s:e, ..., None]).sum(-1)
        g_u[s:e] = (g_dBu_B * dt[s:e, ..., None]).sum(-1) + g_u_direct
        g_B.append(_bc_grad(kind_b, gh * du[..., None], d, B.shape[1] if B.dim() == 4 else 1))
    return _pack_grads(ctx, u, delta, A, B, C, D, z, delta_bias, dt, g_dt, g_u, g_z, g_A, g_D,
                       kind_b, g_B, kind_c, g_C)


def _pack_grads(ctx, u, delta, A, B, C, D, z, delta_bias, dt, g_dt, g_u, g_z, g_A, g_D,
                kind_b, g_B, kind_c, g_C):
    if ctx.delta_softplus:  # d softplus(x)/dx = sigmoid(x) = 1 - exp(-softplus(x))
        g_dt = g_dt * -torch.expm1(-dt)
    g_delta = g_dt.permute(1, 2, 0)
    g_bias = None if delta_bias is None else g_delta.sum(dim=(0, 2)).to(delta_bias.dtype)
    g_B = _bc_from_time_major(kind_b, _sum_or_cat(kind_b, g_B), B)
    g_C = _bc_from_time_major(kind_c, _sum_or_cat(kind_c, g_C), C)
    return (g_u.permute(1, 2, 0).to(u.dtype), g_delta.to(delta.dtype), g_A.to(A.dtype), g_B, g_C,
            None if D is None else g_D.to(D.dtype),
            None if z is None else g_z.permute(1, 2, 0).to(z.dtype),
            g_bias, None, None, None)


def _sum_or_cat(kind, chunks):
    """Chunks were appended last-first; constant B/C sum over chunks, the others concatenate."""
    if kind == "const":
        return torch.stack(chunks).sum(0)
    return torch.cat(chunks[::-1])


def selective_scan_torch(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                         return_last_state=False, seq_idx=None):
    """The "torch" backend of biomamba.ops.selective_scan (same arguments and results)."""
    if A.is_complex():
        raise NotImplementedError("biomamba's selective_scan supports real A only")
    return _SelectiveScan.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state,
                                seq_idx)
