"""Every pure-PyTorch scan backend against the sequential float64 reference."""
import itertools

import pytest
import torch
import torch.nn.functional as F

from biomamba import ops
from biomamba.ops import scan_torch
from tests.scan_cases import (CASES, RESETS, assert_conv_documents_isolated, assert_documents_isolated,
                              conv_documents_alone, documents_alone, max_relative_error, packed_seq_idx,
                              run_scan, scan_inputs)

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


def test_auto_resolves_to_a_concrete_backend_and_a_named_one_to_itself():
    assert ops.resolve_backend("ref", torch.device("cpu")) == "ref"
    assert ops.resolve_backend("auto", torch.device("cpu")) in ("cpu", "torch")
    assert ops.resolve_conv_backend() == "torch" and ops.resolve_conv_backend("cuda") == "cuda"
    with pytest.raises(ops.BackendUnavailable, match="causal_conv1d backend 'fast'"):
        ops.resolve_conv_backend("fast")


@pytest.mark.parametrize("layer, scan_op", [("Mamba1", "selective_scan"), ("Mamba2", "ssd_scan")])
def test_each_model_records_the_backends_its_own_ops_used(layer, scan_op):
    """The choice lives on the model (its mixers), not in a global: a second model's forward leaves the
    first one's record as it was."""
    from biomamba.modeling import backends_used
    from tests.model_helpers import tiny_model

    first, second = tiny_model(layer=layer, scan_backend="ref"), tiny_model(layer=layer, scan_backend="auto")
    assert backends_used(first) == {}  # nothing ran yet
    ids = torch.randint(0, 97, (1, 6))
    first(ids)
    second(ids)
    assert backends_used(first) == {scan_op: "ref", "causal_conv1d": "torch"}
    assert backends_used(second) == {scan_op: ops.resolve_backend("auto", torch.device("cpu")) if layer == "Mamba1"
                                     else ops.resolve_ssd_backend("auto", torch.device("cpu")), "causal_conv1d": "torch"}
    assert first.config.scan_backend == "ref" and second.config.scan_backend == "auto"  # configs as set


# ----------------------------------------------------------------------------- packed documents (seq_idx)

RESET_IDS = list(RESETS)


def case_seq_idx(case, resets, dtype=torch.int64):
    _, b, _, l, *_ = case
    return packed_seq_idx(b, l, RESETS[resets], dtype)


@pytest.mark.parametrize("resets", RESET_IDS)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_reference_with_resets_equals_documents_run_alone(case, resets):
    """ref with seq_idx against ref without it, run on every document separately: outputs, last
    state and every gradient (shared parameters get the sum over documents)."""
    seq_idx = case_seq_idx(case, resets)
    tensors = scan_inputs(*case[1:])
    packed = run_scan(ops.selective_scan, tensors, "ref", seq_idx=seq_idx)
    alone = run_scan(documents_alone(ops.selective_scan, seq_idx), tensors, "ref")
    assert max_relative_error(packed, alone) < 1e-12


@pytest.mark.parametrize("resets", RESET_IDS)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("use_D,use_z,use_bias", [OPTIONS[0], OPTIONS[-1]])
def test_torch_backend_with_resets_matches_reference_float64(case, resets, use_D, use_z, use_bias):
    seq_idx = case_seq_idx(case, resets)
    tensors = scan_inputs(*case[1:])
    ref = run_scan(ops.selective_scan, tensors, "ref", use_D, use_z, use_bias, seq_idx=seq_idx)
    got = run_scan(ops.selective_scan, tensors, "torch", use_D, use_z, use_bias, seq_idx=seq_idx)
    assert max_relative_error(got, ref) < 1e-12


def test_one_document_equals_no_seq_idx():
    tensors = scan_inputs(2, 5, 37, 3, "variable", 1)
    seq_idx = torch.full((2, 37), 4, dtype=torch.int32)
    for backend in ("ref", "torch"):
        plain = run_scan(ops.selective_scan, tensors, backend)
        assert max_relative_error(run_scan(ops.selective_scan, tensors, backend, seq_idx=seq_idx), plain) == 0


def test_resets_change_the_result():
    """The cases above are not vacuous: resets in the middle change outputs and gradients."""
    case = CASES[1]
    tensors = scan_inputs(*case[1:])
    plain = run_scan(ops.selective_scan, tensors, "ref")
    reset = run_scan(ops.selective_scan, tensors, "ref", seq_idx=case_seq_idx(case, "off-chunk-edges"))
    assert max_relative_error(reset[:1], plain[:1]) > 1e-3


def test_reference_with_resets_passes_gradcheck():
    u, delta, A, B, C, D, z, bias = [t.requires_grad_() for t in scan_inputs(2, 3, 7, 2, "variable", 1)]
    seq_idx = packed_seq_idx(2, 7, [[3], [1, 2]])

    def fn(u, delta, A, B, C, D, z, bias):
        return ops.selective_scan(u, delta, A, B, C, D, z, bias, delta_softplus=True, return_last_state=True,
                                  backend="ref", seq_idx=seq_idx)

    assert torch.autograd.gradcheck(fn, (u, delta, A, B, C, D, z, bias))


@pytest.mark.parametrize("backend", ["ref", "torch"])
def test_packed_documents_never_see_each_other(backend):
    assert_documents_isolated(ops.selective_scan, backend)


@pytest.mark.parametrize("resets", RESET_IDS)
@pytest.mark.parametrize("width", [2, 4])
def test_causal_conv1d_with_resets_equals_documents_run_alone(resets, width):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 131, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(5, width, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(5, generator=g, dtype=torch.float64, requires_grad=True)
    seq_idx = packed_seq_idx(2, 131, RESETS[resets])
    w_out = torch.randn(2, 5, 131, generator=g, dtype=torch.float64)

    def outputs_and_grads(out):
        return [out, *torch.autograd.grad((out * w_out).sum(), (x, weight, bias))]

    got = outputs_and_grads(ops.causal_conv1d(x, weight, bias, "silu", seq_idx=seq_idx))
    want = outputs_and_grads(conv_documents_alone(x, weight, bias, "silu", seq_idx))
    assert max_relative_error(got, want) < 1e-13


def test_causal_conv1d_with_resets_passes_gradcheck():
    g = torch.Generator().manual_seed(1)
    x, weight, bias = (torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)
                       for shape in ((2, 3, 9), (3, 4), (3,)))
    seq_idx = packed_seq_idx(2, 9, [[2, 3], [5]])
    assert torch.autograd.gradcheck(
        lambda x, w, b: ops.causal_conv1d(x, w, b, "silu", seq_idx=seq_idx), (x, weight, bias))


def test_causal_conv1d_packed_documents_never_see_each_other():
    assert_conv_documents_isolated(ops.causal_conv1d)


def test_causal_conv1d_one_document_equals_no_seq_idx():
    g = torch.Generator().manual_seed(2)
    x, weight, bias = (torch.randn(*shape, generator=g) for shape in ((2, 5, 11), (5, 4), (5,)))
    plain = ops.causal_conv1d(x, weight, bias, "silu")
    same_doc = ops.causal_conv1d(x, weight, bias, "silu", seq_idx=torch.zeros(2, 11, dtype=torch.int64))
    assert max_relative_error([same_doc], [plain]) < 1e-6


def bad_seq_idx_call(op, seq_idx):
    u, delta, A, B, C, D, z, bias = scan_inputs(2, 5, 7, 3, "variable", 1)
    if op == "selective_scan":
        return lambda: ops.selective_scan(u, delta, A, B, C, D, z, bias, backend="torch", seq_idx=seq_idx)
    return lambda: ops.causal_conv1d(u, torch.randn(5, 4, dtype=torch.float64), seq_idx=seq_idx)


@pytest.mark.parametrize("op", ["selective_scan", "causal_conv1d"])
@pytest.mark.parametrize("seq_idx,error,words", [
    (torch.zeros(2, 6, dtype=torch.int64), ValueError, ["seq_idx", "(b, l)", "(2, 7)", "(2, 6)"]),
    (torch.zeros(2, 1, 7, dtype=torch.int64), ValueError, ["seq_idx", "(b, l)", "(2, 1, 7)"]),
    (torch.zeros(2, 7), TypeError, ["seq_idx", "integer", "float32"]),
    (torch.zeros(2, 7, dtype=torch.bool), TypeError, ["seq_idx", "integer", "bool"]),
    ([[0] * 7] * 2, TypeError, ["seq_idx", "tensor", "list"]),
    (torch.zeros(2, 7, dtype=torch.int64, device="meta"), ValueError, ["seq_idx", "device", "meta"]),
], ids=["short", "3d", "float", "bool", "list", "device"])
def test_bad_seq_idx_names_the_argument(op, seq_idx, error, words):
    with pytest.raises(error) as info:
        bad_seq_idx_call(op, seq_idx)()
    assert all(word in str(info.value) for word in words), str(info.value)
    assert op in str(info.value)


def fake_mamba_ssm(*args, **kwargs):
    raise AssertionError("mamba_ssm's scan must not run for a call with seq_idx")


def test_mamba_ssm_by_name_refuses_seq_idx(monkeypatch):
    monkeypatch.setattr(ops, "_mamba_ssm_scan", lambda: fake_mamba_ssm)  # as if it were installed
    tensors = scan_inputs(1, 3, 4, 2, "variable", 1)
    with pytest.raises(ops.BackendUnavailable, match="seq_idx") as info:
        ops.selective_scan(*tensors[:5], backend="mamba_ssm", seq_idx=torch.zeros(1, 4, dtype=torch.int64))
    assert "mamba_ssm" in str(info.value) and "backend='auto'" in str(info.value)


def test_mamba_ssm_refuses_seq_idx_even_when_not_installed():
    tensors = scan_inputs(1, 3, 4, 2, "variable", 1)
    with pytest.raises(ops.BackendUnavailable, match="cannot honour seq_idx"):
        ops.selective_scan(*tensors[:5], backend="mamba_ssm", seq_idx=torch.zeros(1, 4, dtype=torch.int64))


def test_auto_with_seq_idx_never_picks_mamba_ssm(monkeypatch):
    monkeypatch.setattr(ops, "_mamba_ssm_scan", lambda: fake_mamba_ssm)
    cuda = torch.device("cuda")  # only resolved, never allocated on
    assert ops.resolve_backend("auto", cuda) == "mamba_ssm"
    with pytest.warns(UserWarning, match="'mamba_ssm' cannot honour seq_idx, using 'torch'"):
        assert ops.resolve_backend("auto", cuda, seq_idx=True) == "torch"
    for device in ("cpu", "cuda", "mps"):
        assert ops.resolve_backend("auto", torch.device(device), seq_idx=True) not in ops.WITHOUT_SEQ_IDX


def test_auto_with_seq_idx_records_a_backend_that_honours_it():
    from biomamba.modeling import backends_used
    from tests.model_helpers import tiny_model

    model = tiny_model()
    model(torch.randint(0, 97, (1, 4)), seq_idx=torch.zeros(1, 4, dtype=torch.int64))
    assert backends_used(model)["selective_scan"] in ("cpu", "torch")
