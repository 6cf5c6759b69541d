"""References of the Mamba-2 SSD ops: the ground truth the "torch" and "mamba_ssm" backends of
biomamba.ops.ssd_scan are tested against (same arguments; float64 in, float64 out).

    ssd_scan_ref          sequential recurrence over time, autograd through every step
                          (what mamba_ssm's `mamba_chunk_scan_combined` computes)
    ssd_state_update_ref  one decoding step (what mamba_ssm's Mamba2.step computes with
                          `selective_state_update` on head-shaped tensors)

Names against the Mamba-2 paper (Dao & Gu 2024, "Transformers are SSMs", Sections 3 and 6), per
batch row b and head h; shapes are mamba_ssm's:
    x   (b, l, h, p)  X, the head's input; p = headdim P
    dt  (b, l, h)     Delta, one step size per head and position
    A   (h,)          the scalar A of each head (negative: A = -exp(A_log)); the SSM's transition
                      is a_t = exp(dt_t A), a scalar times the identity ("SSD" restriction)
    B   (b, l, g, n)  B, input projection; n = d_state N; g groups of h/g heads share B and C
    C   (b, l, g, n)  C, output projection     (heads are grouped like multi-value attention)
    D   (h, p) | (h,) the skip connection D
    z   (b, l, h, p)  the gate: out = y * silu(z)
    state (b, h, p, n)  the hidden state H_t (p x n per head)
Recurrence, per head:
    dt_t = clamp(softplus(dt_t + dt_bias), *dt_limit)   (bias, softplus and clamp when asked)
    H_t = exp(dt_t A) H_{t-1} + dt_t x_t B_t^T          (H: (p, n))
    y_t = H_t C_t + D x_t ;  out_t = y_t * silu(z_t)
Documents (seq_idx, (b, l) integer ids): H resets to zero at every t where the id differs from the
id at t-1, and the id before t = 0 counts as 0. So initial_states belong to document 0 and a row
whose first id is not 0 starts from zero; final_states is the state after the row's last document.
This is mamba_ssm's convention (ssd_state_passing.py starts its running id at 0); its kernels
compare ids only at chunk ends, so they agree with this definition when ids never decrease along a
row, which is how packed batches number their documents.
chunk_size is the block length Q of the chunked algorithm (ops/ssd_torch.py); it changes rounding,
never the result, and the reference ignores it.
"""
import torch
import torch.nn.functional as F

DEFAULT_DT_LIMIT = (0.0, float("inf"))


# --------------------------------------------------------------------------- shared by every backend

def ssd_dt(dt, dt_bias, dt_softplus, dt_limit, compute):
    """dt as the scan uses it, in mamba_ssm's order: + dt_bias, softplus, then clamp to dt_limit
    (only when it is not the default, so a negative dt without softplus stays negative, as there)."""
    dt = dt.to(compute)
    if dt_bias is not None:
        dt = dt + dt_bias.to(compute)
    if dt_softplus:
        dt = F.softplus(dt)  # its threshold (x > 20 -> x) is mamba_ssm's too
    if tuple(dt_limit) != DEFAULT_DT_LIMIT:
        dt = dt.clamp(min=dt_limit[0], max=dt_limit[1])
    return dt


def document_starts(seq_idx):
    """(b, l) bool: True where the state resets (the id changes; the id before position 0 is 0)."""
    previous = F.pad(seq_idx[:, :-1], (1, 0), value=0)
    return seq_idx != previous


def compute_dtype(dtype):
    """float32 for half types and float32, float64 for float64."""
    return torch.promote_types(dtype, torch.float32)


def check_ssd_inputs(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None,
                     seq_idx=None):
    """Raise ValueError listing every argument whose shape or type does not fit x (b, l, h, p)."""
    if x.dim() != 4:
        raise ValueError(f"ssd_scan: x must be (batch, length, heads, headdim), got shape {tuple(x.shape)}")
    b, l, h, p = x.shape
    g, n = (B.shape[2], B.shape[3]) if B.dim() == 4 else (None, None)
    expected = {"dt": (dt, (b, l, h)), "A": (A, (h,)), "B": (B, (b, l, g, n)), "C": (C, (b, l, g, n)),
                "z": (z, (b, l, h, p)), "dt_bias": (dt_bias, (h,)),
                "initial_states": (initial_states, (b, h, p, n)), "seq_idx": (seq_idx, (b, l))}
    problems = [f"{name} must have shape {shape}, got {tuple(tensor.shape)}"
                for name, (tensor, shape) in expected.items()
                if tensor is not None and tuple(tensor.shape) != shape]
    if D is not None and tuple(D.shape) not in ((h, p), (h,)):
        problems.append(f"D must have shape {(h, p)} or {(h,)}, got {tuple(D.shape)}")
    if g is not None and h % g:
        problems.append(f"the head count {h} must be divisible by B/C's group count {g}")
    if seq_idx is not None and (seq_idx.dtype.is_floating_point or seq_idx.dtype.is_complex):
        problems.append(f"seq_idx must hold integer document ids, got dtype {seq_idx.dtype}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        problems.append(f"chunk_size must be a positive int, got {chunk_size!r}")
    if problems:
        raise ValueError("ssd_scan: " + "; ".join(problems))


def gate_and_skip(y, x, D, z, compute):
    """out = (y + D x) * silu(z), each part only when given; y, x, z: (b, ..., h, p)."""
    if D is not None:
        D = D.to(compute)
        y = y + x.to(compute) * (D if D.dim() == 2 else D[:, None])  # (h, p) or (h, 1)
    if z is not None:
        y = y * F.silu(z.to(compute))
    return y


def heads_of_groups(X, heads):
    """B or C (..., g, n) -> (..., h, n): head i reads group i // (h // g), as in mamba_ssm."""
    return X.repeat_interleave(heads // X.shape[-2], dim=-2)


# --------------------------------------------------------------------------- references

def ssd_scan_ref(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None,
                 seq_idx=None, dt_softplus=False, dt_limit=DEFAULT_DT_LIMIT, return_final_states=False):
    """The SSD scan one time step after another; see the module docstring. chunk_size is unused."""
    compute = compute_dtype(x.dtype)
    b, l, h, p = x.shape
    dt = ssd_dt(dt, dt_bias, dt_softplus, dt_limit, compute)  # (b, l, h)
    decay = torch.exp(dt * A.to(compute))  # (b, l, h): a_t = exp(dt_t A)
    dt_x = dt[..., None] * x.to(compute)  # (b, l, h, p)
    B_h, C_h = heads_of_groups(B.to(compute), h), heads_of_groups(C.to(compute), h)  # (b, l, h, n)
    state = (x.new_zeros(b, h, p, B.shape[-1], dtype=compute) if initial_states is None
             else initial_states.to(compute))
    keep = None if seq_idx is None else (~document_starts(seq_idx)).to(compute)  # (b, l)
    ys = []
    for t in range(l):
        if keep is not None:
            state = state * keep[:, t, None, None, None]
        state = decay[:, t, :, None, None] * state + dt_x[:, t, :, :, None] * B_h[:, t, :, None, :]
        ys.append(torch.einsum("bhpn,bhn->bhp", state, C_h[:, t]))
    y = torch.stack(ys, dim=1)  # (b, l, h, p)
    out = gate_and_skip(y, x, D, z, compute).to(x.dtype)
    return (out, state) if return_final_states else out


def ssd_state_update_ref(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False,
                         dt_limit=DEFAULT_DT_LIMIT):
    """One step of the scan: updates `state` (b, h, p, n) in place and returns y (b, h, p).

    x, z: (b, h, p); dt: (b, h); A, dt_bias: (h,); B, C: (b, g, n); D: (h, p) or (h,).
    dt_limit clamps as in the scan, so steps equal the scan; mamba_ssm's Mamba2.step does not clamp.
    """
    compute = compute_dtype(state.dtype)
    h = x.shape[1]
    dt = ssd_dt(dt, dt_bias, dt_softplus, dt_limit, compute)  # (b, h)
    decay = torch.exp(dt * A.to(compute))[..., None, None]  # (b, h, 1, 1)
    B_h, C_h = heads_of_groups(B.to(compute), h), heads_of_groups(C.to(compute), h)  # (b, h, n)
    new_state = decay * state.to(compute) + (dt[..., None] * x.to(compute))[..., None] * B_h[:, :, None, :]
    state.copy_(new_state)
    y = torch.einsum("bhpn,bhn->bhp", new_state, C_h)
    return gate_and_skip(y, x, D, z, compute).to(x.dtype)
