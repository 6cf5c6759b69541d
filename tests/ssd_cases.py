"""Seeded Mamba-2 SSD scan inputs and a forward + gradients runner, for the backends' tests against
`ref` (tests/test_ssd_cpu.py and tests/test_ssd.py)."""
import torch

from biomamba import ops

ALL_ON = dict(D="hp", z=True, dt_bias=True, dt_softplus=True, dt_limit=(0.2, 1.5), initial_states=True,
              seq_idx=True, return_final_states=True)
OFF = dict(D=None, z=False, dt_bias=False, dt_softplus=False, dt_limit=(0.0, float("inf")),
           initial_states=False, seq_idx=False, return_final_states=False)


def ssd_inputs(b, l, h, p, g, n, dtype=torch.float64, seed=0):
    """Seeded inputs with realistic ranges (A < 0; dt around softplus's bend, so that dt_limit
    (0.2, 1.5) clamps at both ends; sorted document ids, every second row starting at id 1 or more,
    so initial_states are dropped there, as mamba_ssm does)."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(dtype)

    return dict(
        x=rand(b, l, h, p), dt=rand(b, l, h, scale=0.7),
        A=-(torch.rand(h, generator=gen, dtype=torch.float64) * 2 + 0.2).to(dtype),
        B=rand(b, l, g, n), C=rand(b, l, g, n), D_hp=rand(h, p), D_h=rand(h), z=rand(b, l, h, p),
        dt_bias=rand(h, scale=0.5), initial_states=rand(b, h, p, n),
        seq_idx=torch.randint(0, 4, (b, l), generator=gen).sort(dim=1).values + torch.arange(b)[:, None] % 2)


def run_ssd(tensors, chunk_size, backend, options, seed=1):
    """Forward with `options`, then the gradient of a seeded random projection of out (and of the
    final state) w.r.t. every floating input the options use. Returns {name: tensor}."""
    leaves = {k: v.detach().clone().requires_grad_(v.is_floating_point()) for k, v in tensors.items()}
    D = {None: None, "hp": leaves["D_hp"], "h": leaves["D_h"]}[options["D"]]
    optional = {name: leaves[name] if options[name] else None
                for name in ("z", "dt_bias", "initial_states", "seq_idx")}
    result = ops.ssd_scan(leaves["x"], leaves["dt"], leaves["A"], leaves["B"], leaves["C"], chunk_size,
                          D=D, **optional, dt_softplus=options["dt_softplus"], dt_limit=options["dt_limit"],
                          return_final_states=options["return_final_states"], backend=backend)
    out, final = result if options["return_final_states"] else (result, None)
    gen = torch.Generator().manual_seed(seed)
    w_out = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    w_final = torch.randn(tensors["initial_states"].shape, generator=gen, dtype=torch.float64)
    loss = (out * w_out.to(out)).sum()
    if final is not None:
        loss = loss + (final * w_final.to(final)).sum()
    inputs = {"x": leaves["x"], "dt": leaves["dt"], "A": leaves["A"], "B": leaves["B"], "C": leaves["C"],
              **({"D": D} if D is not None else {}),
              **{k: v for k, v in optional.items() if v is not None and k != "seq_idx"}}
    grads = torch.autograd.grad(loss, list(inputs.values()))
    results = {"out": out, **({"final_states": final} if final is not None else {})}
    return {**results, **{f"grad {k}": g for k, g in zip(inputs, grads)}}


def relative_errors(got, ref):
    """{name: max |got - ref| / max |ref|} (the absolute error where ref is all zero)."""
    assert got.keys() == ref.keys()
    errors = {}
    for name, r in ref.items():
        difference = (got[name].double() - r.double()).abs().max().item()
        scale = r.double().abs().max().item()
        errors[name] = difference / scale if scale > 0 else difference
    return errors
