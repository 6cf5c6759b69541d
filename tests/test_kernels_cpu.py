"""The "cpu" selective-scan kernel (kernels/cpu, biomamba/kernels_cpu.py) against the reference.

Every comparison covers the output, the last state and the gradient of every input, through a
random projection of both outputs (tests/scan_cases.run_scan). The kernel saves states every 64
steps, so lengths 1, 7, 37, 131 and 300 cover one partial chunk, ragged last chunks and several
chunk boundaries; d = 5, 6 and n = 3, 7 are not powers of two (the scalar path), n = 8, 16, 32 and 64
take the widest float lanes the CPU has with n compiled in (every instruction set is checked), n = 12
the 4-lane path with a runtime n. The first test builds the extension (about 40 s on 2 cores, once per
torch extensions cache).
"""
import functools
import itertools
import warnings

import pytest
import torch

from biomamba import ops
from biomamba.ops import cpu as kernels_cpu
from tests.isa_helpers import ISA_LEVELS, use_isa
from tests.scan_cases import (CASES, RESETS, assert_documents_isolated, max_relative_error, packed_seq_idx,
                              run_scan, scan_inputs)

EXTRA_CASES = [  # (name, b, d, l, n, layout of B/C, groups)
    ("fixed-n16", 2, 5, 300, 16, "fixed", 1),
    ("variable-n16", 2, 5, 300, 16, "variable", 1),
    ("grouped-n16", 2, 6, 70, 16, "grouped", 2),
    ("variable-n32-L7", 1, 3, 7, 32, "variable", 1),
    ("grouped-n12", 1, 4, 37, 12, "grouped", 2),  # runtime n, 4 lanes
    ("fixed-n7-L1", 2, 5, 1, 7, "fixed", 1),
]
ALL_CASES = CASES + EXTRA_CASES
OPTIONS = list(itertools.product([True, False], repeat=3))  # use_D, use_z, use_bias


def inputs(case, dtype=torch.float64, softplus=True):
    """A case's inputs; without softplus, delta is made positive (as softplus would) so that
    exp(delta A) stays below 1 and the states stay finite."""
    tensors = list(scan_inputs(*case[1:], dtype=dtype))
    if not softplus:
        tensors[1] = tensors[1].abs()
    return tensors


@functools.lru_cache(maxsize=None)
def reference(case, use_D=True, use_z=True, use_bias=True, softplus=True):
    """The float64 `ref` results of a case (cached: the float32 tests reuse them)."""
    return run_scan(ops.selective_scan, inputs(case, softplus=softplus), "ref", use_D, use_z,
                    use_bias, softplus)


@pytest.fixture(scope="module", autouse=True)
def built_extension():
    kernels_cpu.check_available()  # the first build; fails here with the compiler's message


def case_options():
    """Every D/z/delta_bias combination for the small cases, all-on and all-off for the others."""
    for case in ALL_CASES:
        options = OPTIONS if case[3] * case[4] <= 200 else [OPTIONS[0], OPTIONS[-1]]
        for option in options:
            name = f"{case[0]}-" + "".join(flag for flag, on in zip("Dzb", option) if on)
            yield pytest.param(case, *option, id=name)


@pytest.mark.parametrize("case,use_D,use_z,use_bias", list(case_options()))
def test_cpu_matches_reference_float64(case, use_D, use_z, use_bias):
    got = run_scan(ops.selective_scan, scan_inputs(*case[1:]), "cpu", use_D, use_z, use_bias)
    assert max_relative_error(got, reference(case, use_D, use_z, use_bias)) < 1e-10


@pytest.mark.parametrize("case,use_D,use_z,use_bias", list(case_options()))
def test_cpu_matches_reference_float32(case, use_D, use_z, use_bias):
    tensors = scan_inputs(*case[1:], dtype=torch.float32)
    got = run_scan(ops.selective_scan, tensors, "cpu", use_D, use_z, use_bias)
    assert all(t.dtype == torch.float32 for t in got)
    # Relative to each tensor's largest entry; observed <= 7e-7 (the `torch` backend: <= 3e-7).
    assert max_relative_error(got, reference(case, use_D, use_z, use_bias)) < 5e-6


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", [ALL_CASES[1], EXTRA_CASES[1]], ids=lambda c: c[0])
def test_cpu_without_softplus_matches_reference(case, dtype):
    got = run_scan(ops.selective_scan, inputs(case, dtype, softplus=False), "cpu", use_bias=False,
                   softplus=False)
    tolerance = 1e-10 if dtype == torch.float64 else 5e-6
    assert max_relative_error(got, reference(case, use_bias=False, softplus=False)) < tolerance


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", [ALL_CASES[1], EXTRA_CASES[2]], ids=lambda c: c[0])
def test_cpu_low_precision_within_2x_of_torch_backend(case, dtype):
    """flash-attention's rule: error vs float64 <= 2x the PyTorch backend's at the same dtype."""
    low = scan_inputs(*case[1:], dtype=dtype)
    got = run_scan(ops.selective_scan, low, "cpu")
    assert got[0].dtype == dtype and got[1].dtype == torch.float32  # out in u's dtype, state fp32
    assert all(g.dtype == dtype for g in got[2:])
    torch_err = max_relative_error(run_scan(ops.selective_scan, low, "torch"), reference(case))
    cpu_err = max_relative_error(got, reference(case))
    # 1e-4 slack: both errors (~1e-2 bf16, ~1e-3 fp16) come from rounding inputs, outputs and
    # gradients to the low dtype; the slack only covers a tie rounding differently.
    assert cpu_err <= 2 * torch_err + 1e-4


def test_cpu_accepts_non_contiguous_inputs():
    u, delta, A, B, C, D, z, bias = scan_inputs(2, 5, 37, 16, "variable", 1)
    u_t = u.transpose(1, 2).contiguous().transpose(1, 2)  # same values, (b, l, d) memory
    B_t = B.transpose(1, 2).contiguous().transpose(1, 2)
    args = (D, z, bias, True)
    expected = ops.selective_scan(u, delta, A, B, C, *args, backend="ref")
    got = ops.selective_scan(u_t, delta, A, B_t, C, *args, backend="cpu")
    assert max_relative_error([got], [expected]) < 1e-10


def test_cpu_forward_without_grad_matches_with_grad():
    tensors = scan_inputs(2, 5, 131, 16, "variable", 1, dtype=torch.float32)
    with torch.no_grad():
        out, last = ops.selective_scan(*tensors, True, True, backend="cpu")
    leaves = [t.clone().requires_grad_() for t in tensors]
    out_g, last_g = ops.selective_scan(*leaves, True, True, backend="cpu")
    assert torch.equal(out, out_g.detach()) and torch.equal(last, last_g.detach())


def test_cpu_result_does_not_depend_on_thread_count():
    tensors = scan_inputs(1, 6, 70, 16, "variable", 1, dtype=torch.float32)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = run_scan(ops.selective_scan, tensors, "cpu")
    finally:
        torch.set_num_threads(threads)
    many = run_scan(ops.selective_scan, tensors, "cpu")
    assert max_relative_error(one, many) < 1e-6  # only the order of the B/C gradient sums differs


# ----------------------------------------------------------------------------- packed documents (seq_idx)

def reset_cases():
    """Every document layout on the shared cases (each B/C layout, and a single step) and on the
    n = 16 cases that cross the kernel's 64-step chunks several times (l = 300, 70)."""
    for case in [*ALL_CASES[:4], *EXTRA_CASES[:3]]:
        for resets in RESETS:
            yield pytest.param(case, resets, id=f"{case[0]}-{resets}")


@functools.lru_cache(maxsize=None)
def reference_with_resets(case, resets):
    seq_idx = packed_seq_idx(case[1], case[3], RESETS[resets])
    return run_scan(ops.selective_scan, inputs(case), "ref", seq_idx=seq_idx)


@pytest.mark.parametrize("case,resets", list(reset_cases()))
def test_cpu_with_resets_matches_reference_float64(case, resets):
    seq_idx = packed_seq_idx(case[1], case[3], RESETS[resets])
    got = run_scan(ops.selective_scan, inputs(case), "cpu", seq_idx=seq_idx)
    assert max_relative_error(got, reference_with_resets(case, resets)) < 1e-10


@pytest.mark.parametrize("case,resets", list(reset_cases()))
def test_cpu_with_resets_matches_reference_float32(case, resets):
    seq_idx = packed_seq_idx(case[1], case[3], RESETS[resets], dtype=torch.int32)
    got = run_scan(ops.selective_scan, inputs(case, torch.float32), "cpu", seq_idx=seq_idx)
    assert max_relative_error(got, reference_with_resets(case, resets)) < 5e-6


@pytest.mark.parametrize("case", [ALL_CASES[2], EXTRA_CASES[1]], ids=lambda c: c[0])
def test_cpu_with_resets_without_options_matches_reference(case):
    """No D, z, delta_bias or softplus: the reset path without the optional terms."""
    seq_idx = packed_seq_idx(case[1], case[3], RESETS["off-chunk-edges"])
    tensors = inputs(case, softplus=False)
    want = run_scan(ops.selective_scan, tensors, "ref", False, False, False, False, seq_idx=seq_idx)
    got = run_scan(ops.selective_scan, tensors, "cpu", False, False, False, False, seq_idx=seq_idx)
    assert max_relative_error(got, want) < 1e-10


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cpu_packed_documents_never_see_each_other(dtype):
    assert_documents_isolated(ops.selective_scan, "cpu", dtype=dtype)


def test_cpu_int64_ids_that_collide_as_int32_stay_apart():
    """int64 ids are renumbered, not narrowed: 0 and 2**32 are one id in int32."""
    tensors = scan_inputs(1, 5, 20, 16, "variable", 1)
    seq_idx = torch.tensor([[0] * 9 + [2 ** 32] * 11])
    want = run_scan(ops.selective_scan, tensors, "ref", seq_idx=seq_idx)
    got = run_scan(ops.selective_scan, tensors, "cpu", seq_idx=seq_idx)
    assert max_relative_error(got, want) < 1e-10
    assert max_relative_error(got[:1], run_scan(ops.selective_scan, tensors, "cpu")[:1]) > 1e-3


def test_cpu_forward_with_resets_without_grad_matches_with_grad():
    tensors = scan_inputs(2, 5, 131, 16, "variable", 1, dtype=torch.float32)
    seq_idx = packed_seq_idx(2, 131, RESETS["on-chunk-edges"])
    with torch.no_grad():
        out, last = ops.selective_scan(*tensors, True, True, backend="cpu", seq_idx=seq_idx)
    leaves = [t.clone().requires_grad_() for t in tensors]
    out_g, last_g = ops.selective_scan(*leaves, True, True, backend="cpu", seq_idx=seq_idx)
    assert torch.equal(out, out_g.detach()) and torch.equal(last, last_g.detach())


# ----------------------------------------------------------------------------- instruction sets

@pytest.mark.parametrize("isa", ISA_LEVELS)
@pytest.mark.parametrize("n", [8, 16, 64])
@pytest.mark.parametrize("layout", ["fixed", "variable", "grouped"])
def test_every_instruction_set_matches_reference(isa, n, layout, monkeypatch):
    """Each build of the kernel (BIOMAMBA_CPU_ISA caps the one chosen): n = 8 takes 8 lanes on AVX2 and
    AVX-512, n = 16 and 64 take 16 lanes on AVX-512; documents start on and off the 64-step chunks."""
    use_isa(kernels_cpu, isa, monkeypatch)
    case = (f"isa-{layout}-n{n}", 2, 6, 150, n, layout, 2 if layout == "grouped" else 1)
    seq_idx = packed_seq_idx(2, 150, RESETS["off-chunk-edges"])
    want = run_scan(ops.selective_scan, inputs(case), "ref", seq_idx=seq_idx)
    got = run_scan(ops.selective_scan, inputs(case, torch.float32), "cpu", seq_idx=seq_idx)
    assert max_relative_error(got, want) < 5e-6


# ----------------------------------------------------------------------------- errors

def bad_call(**changes):
    u, delta, A, B, C, D, z, bias = scan_inputs(2, 5, 7, 3, "variable", 1)
    args = dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=bias)
    args.update(changes)
    return lambda: ops.selective_scan(**args, delta_softplus=True, backend="cpu")


@pytest.mark.parametrize("changes,error,words", [
    (dict(u=torch.zeros(2, 5, 7, device="meta")), ValueError, ["u", "meta", "CPU"]),
    (dict(delta=torch.zeros(2, 5, 8)), ValueError, ["delta", "(2, 5, 7)"]),
    (dict(A=torch.zeros(5, 3, dtype=torch.complex64)), NotImplementedError, ["A", "real"]),
    (dict(A=torch.zeros(4, 3)), ValueError, ["A", "(d, n)"]),
    (dict(B=torch.zeros(2, 4, 7)), ValueError, ["B", "(b, n, l)"]),
    (dict(C=torch.zeros(2, 2, 3, 7)), ValueError, ["C", "groups", "divide"]),
    (dict(D=torch.zeros(4)), ValueError, ["D", "(d,)"]),
    (dict(z=torch.zeros(2, 5, 6)), ValueError, ["z"]),
    (dict(delta_bias=torch.zeros(2, 5)), ValueError, ["delta_bias"]),
    (dict(u=torch.zeros(2, 5, 7, dtype=torch.int64)), TypeError, ["u", "floating"]),
], ids=["device", "delta-shape", "complex-A", "A-shape", "B-shape", "C-groups", "D-shape",
        "z-shape", "bias-shape", "int-u"])
def test_bad_inputs_name_the_argument(changes, error, words):
    with pytest.raises(error) as info:
        bad_call(**changes)()
    assert all(word in str(info.value) for word in words), str(info.value)


def test_binding_checks_name_the_argument():
    """The C++ binding guards its own contract (compute dtype, contiguity, layouts)."""
    ext = kernels_cpu.extension()
    u, delta, A, B, C, D, z, bias = scan_inputs(2, 5, 7, 3, "fixed", 1, dtype=torch.float32)
    with pytest.raises(RuntimeError, match="delta must have dtype"):
        ext.forward(u, delta.double(), A, B, C, D, z, bias, None, True, True)
    with pytest.raises(RuntimeError, match="C must be contiguous"):
        ext.forward(u, delta, A, B, C.t().contiguous().t(), D, z, bias, None, True, True)
    with pytest.raises(RuntimeError, match="state size n = 300"):
        ext.forward(u, delta, torch.zeros(5, 300), B, C, D, z, bias, None, True, True)
    with pytest.raises(RuntimeError, match="seq_idx must have dtype Int"):
        ext.forward(u, delta, A, B, C, D, z, bias, torch.zeros(2, 7, dtype=torch.int64), True, True)
    with pytest.raises(RuntimeError, match=r"seq_idx must have shape \[2, 7\]"):
        ext.forward(u, delta, A, B, C, D, z, bias, torch.zeros(2, 6, dtype=torch.int32), True, True)


# ----------------------------------------------------------------------------- availability

def test_auto_picks_cpu_on_cpu_tensors():
    tensors = scan_inputs(2, 5, 7, 3, "variable", 1, dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "falling back to torch" warning
        out = ops.selective_scan(*tensors, delta_softplus=True, backend="auto")
    assert ops.resolve_backend("auto", torch.device("cpu")) == "cpu"
    expected = ops.selective_scan(*tensors, delta_softplus=True, backend="ref")
    assert max_relative_error([out], [expected]) < 2e-5


def test_check_available_is_cached(monkeypatch):
    def fail():
        raise AssertionError("the extension was loaded again")

    monkeypatch.setattr(kernels_cpu, "_load_extension", fail)
    kernels_cpu.check_available()  # cached module: no second load


def test_missing_compiler_is_reported_with_a_fix(monkeypatch):
    monkeypatch.setattr(kernels_cpu, "_extension", None)
    monkeypatch.setattr(kernels_cpu, "_failure", None)
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    with pytest.raises(ops.BackendUnavailable, match="C\\+\\+ compiler") as first:
        kernels_cpu.check_available()
    assert "apt-get install g++" in str(first.value)
    with pytest.raises(ops.BackendUnavailable) as second:  # the failure is cached too
        kernels_cpu.check_available()
    assert second.value is first.value


def test_the_extension_name_follows_the_source_bytes(tmp_path):
    """Two biomamba versions on one machine share torch_extensions: each loads only its own build."""
    import shutil
    from biomamba.ops.compiled import versioned_name
    names = kernels_cpu.SOURCES + kernels_cpu.HEADERS
    for name in names:
        shutil.copy(kernels_cpu.SOURCE_DIR / name, tmp_path / name)
    before = versioned_name("x", tmp_path, names)
    assert before == versioned_name("x", kernels_cpu.SOURCE_DIR, names)
    (tmp_path / names[-1]).write_text((tmp_path / names[-1]).read_text() + "\n// changed\n")
    assert versioned_name("x", tmp_path, names) != before
