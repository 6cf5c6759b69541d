"""Every pure-PyTorch scan backend against the sequential float64 reference."""
import itertools

import pytest
import torch
import torch.nn.functional as F

from biomamba import ops
from biomamba.ops import scan_torch
from tests.scan_cases import CASES, max_relative_error, run_scan, scan_inputs

OPTIONS = list(itertools.product([True, False], repeat=3))  # use_D, use_z, use_bias


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    # A chunk of 16 makes every case cross chunk boundaries (and leave a ragged last chunk).
    monkeypatch.setattr(scan_torch, "CHUNK", 16)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("use_D,use_z,use_bias", OPTIONS)
def test_torch_backend_matches_reference_float64(case, use_D, use_z, use_bias):
    tensors = scan_inputs(*case[1:])
    ref = run_scan(ops.selective_scan, tensors, "ref", use_D, use_z, use_bias)
    got = run_scan(ops.selective_scan, tensors, "torch", use_D, use_z, use_bias)
    assert max_relative_error(got, ref) < 1e-12


def test_torch_backend_without_softplus_matches_reference():
    tensors = scan_inputs(2, 5, 37, 3, "variable", 1)
    ref = run_scan(ops.selective_scan, tensors, "ref", softplus=False)
    got = run_scan(ops.selective_scan, tensors, "torch", softplus=False)
    assert max_relative_error(got, ref) < 1e-12


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_torch_backend_low_precision_within_2x_of_reference_at_same_dtype(dtype):
    truth = run_scan(ops.selective_scan, scan_inputs(2, 5, 37, 3, "variable", 1), "ref")
    low = scan_inputs(2, 5, 37, 3, "variable", 1, dtype=dtype)
    ref_err = max_relative_error(run_scan(ops.selective_scan, low, "ref"), truth)
    got_err = max_relative_error(run_scan(ops.selective_scan, low, "torch"), truth)
    assert got_err <= 2 * ref_err + 1e-6


def test_reference_passes_gradcheck():
    u, delta, A, B, C, D, z, bias = [t.requires_grad_() for t in scan_inputs(1, 3, 5, 2, "variable", 1)]

    def fn(u, delta, A, B, C, D, z, bias):
        out, last = ops.selective_scan(u, delta, A, B, C, D, z, bias, delta_softplus=True,
                                       return_last_state=True, backend="ref")
        return out, last

    assert torch.autograd.gradcheck(fn, (u, delta, A, B, C, D, z, bias))


def test_state_update_steps_equal_the_scan():
    b, d, l, n = 2, 5, 9, 3
    u, delta, A, B, C, D, z, bias = scan_inputs(b, d, l, n, "variable", 1)
    full = ops.selective_scan(u, delta, A, B, C, D, z, bias, True, backend="ref")
    state = torch.zeros(b, d, n, dtype=torch.float64)
    steps = [ops.selective_state_update(state, u[..., t], delta[..., t], A, B[..., t], C[..., t],
                                        D, z[..., t], bias, dt_softplus=True) for t in range(l)]
    assert torch.allclose(torch.stack(steps, -1), full, rtol=1e-12, atol=1e-12)


def test_causal_conv1d_and_its_update_agree():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 11, generator=g, dtype=torch.float64)
    weight = torch.randn(5, 4, generator=g, dtype=torch.float64)
    bias = torch.randn(5, generator=g, dtype=torch.float64)
    full = ops.causal_conv1d(x, weight, bias, activation="silu")
    # Direct definition: out[t] = silu(bias + sum_k weight[k] * x[t - (w-1) + k]).
    padded = F.pad(x, (3, 0))
    direct = F.silu(bias[:, None] + sum(weight[:, k, None] * padded[..., k:k + 11] for k in range(4)))
    assert torch.allclose(full, direct, atol=1e-12)
    state = torch.zeros(2, 5, 4, dtype=torch.float64)
    steps = [ops.causal_conv1d_update(x[..., t], state, weight, bias, "silu") for t in range(11)]
    assert torch.allclose(torch.stack(steps, -1), full, atol=1e-12)


def test_unavailable_backend_says_how_to_get_it():
    tensors = scan_inputs(1, 3, 4, 2, "variable", 1)
    with pytest.raises(ops.BackendUnavailable, match=r"pip install 'biomamba\[cuda\]'"):
        ops.selective_scan(*tensors[:5], backend="mamba_ssm")
    with pytest.raises(ValueError, match="unknown scan backend"):
        ops.selective_scan(*tensors[:5], backend="fast")


def test_auto_records_its_choice():
    tensors = scan_inputs(1, 3, 4, 2, "variable", 1)
    ops.selective_scan(*tensors[:5], backend="ref")
    assert ops.backends_used()["selective_scan"] == "ref"
    ops.selective_scan(*tensors[:5], backend="auto")
    assert ops.backends_used()["selective_scan"] in ("cpu", "torch")
