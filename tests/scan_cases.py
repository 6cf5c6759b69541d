"""Seeded scan inputs at odd sizes, shared by every backend's tests (compare against `ref`)."""
import torch

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
             softplus=True, seed=1):
    """Forward with last state, then gradients of a random projection of both outputs."""
    u, delta, A, B, C, D, z, bias = [t.detach().clone().requires_grad_() for t in tensors]
    args = dict(D=D if use_D else None, z=z if use_z else None, delta_bias=bias if use_bias else None)
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
