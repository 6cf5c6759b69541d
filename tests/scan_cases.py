"""Seeded scan inputs at odd sizes, shared by every backend's tests (compare against `ref`)."""
import torch
import torch.nn.functional as F

# (name, b, d, l, n, layout of B/C, groups): lengths not a multiple of any chunk, d and n not
# powers of two.
CASES = [
    ("fixed-BC", 2, 5, 37, 3, "fixed", 1),
    ("variable-BC", 2, 5, 131, 3, "variable", 1),
    ("grouped-BC", 1, 6, 19, 7, "grouped", 3),
    ("single-step", 3, 5, 1, 4, "variable", 1),
]


def scan_inputs(b, d, l, n, layout, groups, dtype=torch.float64, seed=0):
    """u, delta, A, B, C, D, z, delta_bias with realistic ranges (A < 0, small delta)."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)

    u, delta, z = rand(b, d, l), rand(b, d, l, scale=0.5), rand(b, d, l)
    A = -(torch.rand(d, n, generator=g, dtype=torch.float64) * 2 + 0.2).to(dtype)
    shape = {"fixed": (d, n), "variable": (b, n, l), "grouped": (b, groups, n, l)}[layout]
    B, C = rand(*shape), rand(*shape)
    D, delta_bias = rand(d), rand(d, scale=0.5)
    return u, delta, A, B, C, D, z, delta_bias


def run_scan(selective_scan, tensors, backend, use_D=True, use_z=True, use_bias=True,
             softplus=True, seed=1, seq_idx=None):
    """Forward with last state, then gradients of a random projection of both outputs."""
    u, delta, A, B, C, D, z, bias = [t.detach().clone().requires_grad_() for t in tensors]
    args = dict(D=D if use_D else None, z=z if use_z else None, delta_bias=bias if use_bias else None)
    if seq_idx is not None:
        args["seq_idx"] = seq_idx
    out, last = selective_scan(u, delta, A, B, C, **args, delta_softplus=softplus,
                               return_last_state=True, backend=backend)
    g = torch.Generator().manual_seed(seed)
    w_out = torch.randn(out.shape, generator=g, dtype=torch.float64).to(out.dtype)
    w_last = torch.randn(last.shape, generator=g, dtype=torch.float64).to(last.dtype)
    inputs = [u, delta, A, B, C] + [t for t, used in ((D, use_D), (z, use_z), (bias, use_bias)) if used]
    grads = torch.autograd.grad((out * w_out).sum() + (last * w_last).sum(), inputs)
    return [out, last, *grads]


def max_relative_error(results, reference):
    return max(((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-12)).item()
               for a, b in zip(results, reference))


# ----------------------------------------------------------------------------- packed documents

# Document layouts for seq_idx: name -> the positions (besides 0) where a document starts, per
# batch row (row r takes entry r % len); negative positions count from the end, positions outside
# (0, l) are dropped. "on-chunk-edges" starts documents exactly at chunk starts of the torch
# backend (tests set CHUNK = 16) and of the compiled kernels (64-step state chunks; the CUDA
# backward's 8/16-step sub-chunks), "off-chunk-edges" one step before or after them.
RESETS = {
    "one-document": [[]],
    "first-position": [[1], [1, 2]],
    "adjacent-and-length-1": [[5, 6, 7], [3, 4, -2, -1]],
    "last-position": [[-1], [2, -1]],
    "on-chunk-edges": [[16, 32, 64, 128, 256], [8, 48, 96]],
    "off-chunk-edges": [[15, 17, 63, 65, 127], [1, 31, 33, 129, 255]],
}


def packed_seq_idx(b, l, starts, dtype=torch.int64):
    """(b, l) document ids that change at `starts` (a RESETS entry); ids go 3, 10, 17, ... so that
    nothing may rely on them starting at 0 or being consecutive."""
    ids = torch.zeros(b, l, dtype=torch.int64)
    for row in range(b):
        for start in starts[row % len(starts)]:
            start = start + l if start < 0 else start
            if 0 < start < l:
                ids[row, start:] += 1
    return (3 + 7 * ids).to(dtype)


def document_spans(row_ids):
    """[(start, stop), ...] of the documents of one row of seq_idx."""
    change = (row_ids[1:] != row_ids[:-1]).nonzero().flatten() + 1
    bounds = [0, *change.tolist(), len(row_ids)]
    return list(zip(bounds[:-1], bounds[1:]))


def documents_alone(selective_scan, seq_idx):
    """A selective_scan that runs every document of every row on its own (no seq_idx) and stitches
    the outputs together; last_state is each row's last document's. What seq_idx must mean, built
    without it."""
    def scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
             return_last_state=False, backend="ref"):
        outs, lasts = [], []
        for row in range(u.shape[0]):
            pieces = []
            for start, stop in document_spans(seq_idx[row]):
                def cut(X):  # this document's positions of a (b, ..., l) tensor
                    return X if X is None or X.dim() == 2 else X[row:row + 1, ..., start:stop]
                out, last = selective_scan(cut(u), cut(delta), A, cut(B), cut(C), D, cut(z), delta_bias,
                                           delta_softplus, return_last_state=True, backend=backend)
                pieces.append(out)
            outs.append(torch.cat(pieces, dim=-1))
            lasts.append(last)
        out, last = torch.cat(outs), torch.cat(lasts)  # (b, d, l), (b, d, n)
        return (out, last) if return_last_state else out
    return scan


def conv_documents_alone(x, weight, bias, activation, seq_idx):
    """The causal conv with resets, built from F.conv1d over each document on its own."""
    width = weight.shape[-1]
    rows = []
    for row in range(x.shape[0]):
        pieces = []
        for start, stop in document_spans(seq_idx[row]):
            piece = x[row:row + 1, :, start:stop]
            out = F.conv1d(piece, weight.unsqueeze(1), bias, padding=width - 1, groups=x.shape[1])
            pieces.append(out[..., :stop - start])
        rows.append(torch.cat(pieces, dim=-1))
    out = torch.cat(rows)  # (b, d, l)
    return F.silu(out) if activation == "silu" else out


SCAN_ARGS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
PER_POSITION = ("u", "delta", "B", "C", "z")  # scan inputs with a (b, ..., l) layout when variable


def scan_with_grads(selective_scan, tensors, backend, seq_idx, w_out, w_last):
    """out, last_state and the gradients of <out, w_out> + <last, w_last> for every input (all of
    D, z, delta_bias used, softplus on), as a dict by name."""
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    out, last = selective_scan(*leaves, delta_softplus=True, return_last_state=True, backend=backend,
                               seq_idx=seq_idx)
    grads = torch.autograd.grad((out * w_out).sum() + (last * w_last).sum(), leaves)
    return out.detach(), last.detach(), dict(zip(SCAN_ARGS, grads))


def assert_documents_isolated(selective_scan, backend, dtype=torch.float64, device="cpu", exact=True):
    """One row packing document A (positions < 23) and document B: B's outputs, last state and the
    gradients of B's inputs are B's alone; changing A's last token changes none of them; B's
    outputs send no gradient into A's inputs. `exact`: bitwise equal where no reduction order
    can differ (not so for a kernel that sums with atomics)."""
    split, length = 23, 61
    tensors = [t.to(device) for t in scan_inputs(1, 5, length, 4, "variable", 1, dtype=dtype)]
    ids = torch.tensor([[0] * split + [1] * (length - split)], device=device)
    g = torch.Generator().manual_seed(2)
    w_out = torch.randn(1, 5, length, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
    w_out[..., :split] = 0  # only B's outputs are scored
    w_last = torch.randn(1, 5, 4, generator=g, dtype=torch.float64).to(device)
    out, last, grads = scan_with_grads(selective_scan, tensors, backend, ids, w_out, w_last)

    def same(a, b, what):
        if exact:
            difference = (a.double() - b.double()).abs().max().item()
            assert torch.equal(a, b), f"{what}: max difference {difference:.3g}"
        else:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=lambda m: f"{what}: {m}")

    # 1. B's outputs send nothing back into A's inputs
    for name in PER_POSITION:
        assert torch.count_nonzero(grads[name][..., :split]) == 0, f"d{name} reaches document A"
    # 2. changing A's last token (every per-position input) changes nothing of B
    changed = [t.clone() for t in tensors]
    for index in (0, 1, 3, 4, 6):  # u, delta, B, C, z
        changed[index][..., split - 1] += 0.75
    out2, last2, grads2 = scan_with_grads(selective_scan, changed, backend, ids, w_out, w_last)
    same(out2[..., split:], out[..., split:], "B's outputs after changing A")
    same(last2, last, "last state after changing A")
    for name in PER_POSITION:
        same(grads2[name][..., split:], grads[name][..., split:], f"d{name} of B after changing A")
    # 3. B packed behind A is B alone (no seq_idx)
    alone = [t if t.dim() < 3 else t[..., split:] for t in tensors]
    leaves = [t.detach().clone().requires_grad_() for t in alone]
    out_b, last_b = selective_scan(*leaves, delta_softplus=True, return_last_state=True, backend=backend)
    grads_b = torch.autograd.grad((out_b * w_out[..., split:]).sum() + (last_b * w_last).sum(), leaves)
    packed = [out[..., split:], last] + [grads[name][..., split:] for name in PER_POSITION]
    by_name = dict(zip(SCAN_ARGS, grads_b))
    single = [out_b, last_b] + [by_name[name] for name in PER_POSITION]
    assert max_relative_error(packed, single) < (1e-12 if dtype == torch.float64 else 1e-5)


def assert_conv_documents_isolated(causal_conv1d, dtype=torch.float64, device="cpu", exact=True):
    """The conv's version of assert_documents_isolated: documents A (< 23) and B in one row, width 4."""
    split, length = 23, 40
    g = torch.Generator().manual_seed(3)

    def rand(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)

    x, weight, bias, w_out = rand(1, 6, length), rand(6, 4).float(), rand(6).float(), rand(1, 6, length)
    if dtype == torch.float64:
        weight, bias = weight.double(), bias.double()
    w_out[..., :split] = 0  # only B's outputs are scored
    ids = torch.tensor([[5] * split + [9] * (length - split)], device=device)

    def run(x, seq_idx, w):
        x = x.detach().clone().requires_grad_()
        out = causal_conv1d(x, weight, bias, "silu", seq_idx=seq_idx)
        return out.detach(), torch.autograd.grad((out * w).sum(), x)[0]

    out, grad = run(x, ids, w_out)
    assert torch.count_nonzero(grad[..., :split]) == 0, "B's outputs send gradient into A's inputs"
    changed = x.clone()
    changed[..., split - 3:split] += 0.75  # the whole window of A that B's first output could see
    out2, grad2 = run(changed, ids, w_out)
    if exact:
        assert torch.equal(out2[..., split:], out[..., split:]) and torch.equal(grad2, grad)
    else:
        torch.testing.assert_close(out2[..., split:], out[..., split:], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grad2, grad, rtol=1e-5, atol=1e-6)
    out_b, grad_b = run(x[..., split:], None, w_out[..., split:])
    tolerance = 1e-12 if dtype == torch.float64 else 1e-5
    assert max_relative_error([out[..., split:], grad[..., split:]], [out_b, grad_b]) < tolerance
