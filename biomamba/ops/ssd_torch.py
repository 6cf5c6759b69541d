"""The "torch" backend of biomamba.ops.ssd_scan: the chunked SSD algorithm in plain PyTorch.

The Mamba-2 paper's block decomposition (Dao & Gu 2024, Section 6 and its Listing 1,
`ssd_minimal_discrete`): cut the length into c chunks of T = chunk_size steps (the paper's Q), then
    1. within each chunk, y = (L o C B^T) (dt x): a masked T x T "attention" whose mask L[t, s] =
       exp(dt_{s+1} A + ... + dt_t A) is the 1-semiseparable matrix of the paper (quadratic in T);
    2. each chunk's own contribution to the state at its end (right factor, B terms);
    3. the state entering each chunk: a recurrence over chunks only (centre factor, A terms);
    4. each entering state's contribution to the chunk's outputs (left factor, C terms).
Work and memory are linear in length for a fixed T: O(b h l (T + p)) activations plus one
(b, h, p, n) state per chunk. Gradients come from autograd through these few large matmuls.

Documents (seq_idx) follow ops/ssd_reference.py: ids become segment numbers (a running count of
document starts, so the state entering the row belongs to segment 0); L is cut where the segments
of t and s differ, a chunk's state keeps only its last segment's steps, and an entering state
reaches only the steps of the segment it was carried in.

Layout inside: (b, c, T, g, r, ...) with the h heads split as g groups of r, so B and C, shared by
a group's heads, broadcast over r without being copied per head.
"""
import torch
import torch.nn.functional as F

from biomamba.ops.ssd_reference import (DEFAULT_DT_LIMIT, compute_dtype, document_starts,
                                        gate_and_skip, ssd_dt)


def _chunked(t, pad, chunk_size):
    """(b, l, ...) -> (b, c, T, ...): zero-padded at the end to c whole chunks of T steps.
    Padded steps have dt = 0 (no decay, no input), so they change neither outputs nor final state."""
    t = F.pad(t, [0, 0] * (t.dim() - 2) + [0, pad])
    return t.reshape(t.shape[0], -1, chunk_size, *t.shape[2:])


def _chunked_segments(seq_idx, pad, chunk_size):
    """(b, l) ids -> (b, c, T) segment numbers; padding continues the last segment."""
    segments = document_starts(seq_idx).long().cumsum(dim=1)  # (b, l), 0 = the initial state's
    segments = torch.cat([segments, segments[:, -1:].expand(-1, pad)], dim=1)
    return segments.reshape(segments.shape[0], -1, chunk_size)


def decay_exponents(dA):
    """(b, g, r, c, T) -> (b, g, r, c, T, S): [t, s] = dA_{s+1} + ... + dA_t (any t, s), and the
    running sums (b, g, r, c, T) they are differences of.

    The running sums are taken in float64: a float32 sum of a long chunk reaches hundreds, where
    float32's spacing (3e-5 at 300) would be the error of every decay; in float64 the differences
    are as accurate as the sequential product of decays. Only this (T, S) subtraction runs in
    float64; its result is cast back to dA's dtype."""
    running = dA.to(torch.float64).cumsum(dim=-1)
    return (running[..., :, None] - running[..., None, :]).to(dA.dtype), running.to(dA.dtype)


def ssd_scan_torch(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None,
                   seq_idx=None, dt_softplus=False, dt_limit=DEFAULT_DT_LIMIT, return_final_states=False):
    """The "torch" backend of biomamba.ops.ssd_scan (same arguments and results)."""
    compute = compute_dtype(x.dtype)
    b, l, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    r = h // g  # heads per group
    pad = -l % chunk_size
    dt = ssd_dt(dt, dt_bias, dt_softplus, dt_limit, compute)  # (b, l, h)
    dt_c = _chunked(dt, pad, chunk_size).unflatten(-1, (g, r))  # (b, c, T, g, r)
    x_c = _chunked(x.to(compute), pad, chunk_size).unflatten(3, (g, r))  # (b, c, T, g, r, p)
    B_c = _chunked(B.to(compute), pad, chunk_size)  # (b, c, T, g, n)
    C_c = _chunked(C.to(compute), pad, chunk_size)  # (b, c, T, g, n)
    dA = (dt_c * A.to(compute).view(g, r)).permute(0, 3, 4, 1, 2)  # (b, g, r, c, T)
    dt_x = x_c * dt_c[..., None]  # (b, c, T, g, r, p)
    segments = None if seq_idx is None else _chunked_segments(seq_idx, pad, chunk_size)  # (b, c, T)
    # Segment each chunk's entering state was carried in: the previous chunk's last (0 at the start).
    entering = None if segments is None else F.pad(segments[:, :-1, -1], (1, 0))  # (b, c)
    exponents, running = decay_exponents(dA)  # (b, g, r, c, T, S), (b, g, r, c, T)

    # 1. Within chunks. L[t, s]: decay from step s to step t; zero for s > t and across documents.
    unseen = torch.ones(chunk_size, chunk_size, dtype=torch.bool, device=x.device).triu(1)  # (T, S)
    if segments is not None:
        other_document = segments[..., :, None] != segments[..., None, :]  # (b, c, T, S)
        unseen = unseen | other_document[:, None, None]  # (b, 1, 1, c, T, S)
    L = torch.exp(exponents.masked_fill(unseen, float("-inf")))
    scores = torch.einsum("bctgn,bcsgn->bgcts", C_c, B_c)  # (b, g, c, T, S): C_t . B_s
    y_diag = torch.einsum("bgrcts,bcsgrp->bctgrp", scores[:, :, None] * L, dt_x)  # (b, c, T, g, r, p)

    # 2. Each chunk's own inputs, decayed to its last step: L's last row is that decay, already
    # zero for steps of an earlier document than the chunk's last one.
    to_end = L[..., -1, :].permute(0, 3, 4, 1, 2)  # (b, c, S, g, r)
    chunk_states = torch.einsum("bcsgrp,bcsgn->bcgrpn", dt_x * to_end[..., None], B_c)  # (b, c, g, r, p, n)

    # 3. The state entering each chunk: one step per chunk, decayed by the chunk's whole dA and cut
    # where a document starts inside the chunk.
    carry = torch.exp(running[..., -1])  # (b, g, r, c)
    if segments is not None:
        carry = carry * (segments[:, :, -1] == entering).to(compute)[:, None, None]
    state = (x_c.new_zeros(b, g, r, p, n) if initial_states is None
             else initial_states.to(compute).reshape(b, g, r, p, n))
    entering_states = []
    # unbind, not indexing: the backward of each index would fill a zero tensor of all c chunks
    # (quadratic in the number of chunks); unbind's backward is one stack
    for chunk_carry, chunk_state in zip(carry.unbind(-1), chunk_states.unbind(1)):
        entering_states.append(state)
        state = chunk_carry[..., None, None] * state + chunk_state
    entering_states = torch.stack(entering_states, dim=1)  # (b, c, g, r, p, n)

    # 4. Entering states to outputs, decayed from the chunk's start to each step t (inclusive);
    # only steps still in the document the state was carried in see it.
    from_start = running
    if segments is not None:
        new_document = (segments != entering[..., None])[:, None, None]  # (b, 1, 1, c, T)
        from_start = from_start.masked_fill(new_document, float("-inf"))
    from_start = torch.exp(from_start).permute(0, 3, 4, 1, 2)  # (b, c, T, g, r)
    y_off = torch.einsum("bctgn,bcgrpn->bctgrp", C_c, entering_states) * from_start[..., None]

    y = (y_diag + y_off).reshape(b, -1, h, p)[:, :l]  # (b, l, h, p)
    out = gate_and_skip(y, x, D, z, compute).to(x.dtype)
    return (out, state.reshape(b, h, p, n)) if return_final_states else out
