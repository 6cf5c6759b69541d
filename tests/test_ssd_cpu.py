"""The "cpu" SSD scan kernel (kernels/cpu/ssd_scan.cpp, biomamba/ops/ssd_cpu.py) against `ref`.

Every comparison covers the output, the final state and the gradient of every input (x, dt, A, B,
C, D, z, dt_bias, initial_states) through a seeded random projection of both outputs. The kernel
saves states every 64 steps and tiles the state in blocks of 4 columns (n) by 16-32 rows (p), so
lengths 1, 9, 37 and 150 cover one partial chunk, ragged last chunks and chunk boundaries, and
p = 2, 3, 5, n = 3, 5, 7 are not whole tiles (the padding). Each instruction set the CPU has is
checked (BIOMAMBA_CPU_ISA caps it). The first test builds the extension (about 70 s on 2 busy
cores, once per source version).
"""
import warnings

import pytest
import torch

from biomamba import ops
from biomamba.ops import ssd_cpu
from tests.isa_helpers import ISA_LEVELS, use_isa
from tests.ssd_cases import ALL_ON, OFF, relative_errors, run_ssd, ssd_inputs

# (name, b, l, h, p, g, n): h/p/n not powers of two, lengths not a multiple of 64.
CASES = [
    ("g1", 2, 37, 3, 5, 1, 7),
    ("g2", 2, 23, 6, 3, 2, 5),
    ("two-chunks", 1, 150, 4, 17, 2, 6),
    ("single-step", 2, 1, 3, 2, 1, 3),
]
OPTION_SETS = {"all-on": ALL_ON, "all-off": OFF, "D-per-head": {**ALL_ON, "D": "h"},
               "no-initial-states": {**ALL_ON, "initial_states": False},
               "no-seq-idx": {**ALL_ON, "seq_idx": False}, "no-final-states": {**ALL_ON, "return_final_states": False}}


@pytest.fixture(scope="module", autouse=True)
def built_extension():
    ssd_cpu.check_available()  # the first build; fails here with the compiler's message


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("options", OPTION_SETS.values(), ids=OPTION_SETS.keys())
def test_cpu_matches_reference_float64(case, options):
    tensors = ssd_inputs(*case[1:])
    errors = relative_errors(run_ssd(tensors, 16, "cpu", options), run_ssd(tensors, 16, "ref", options))
    assert max(errors.values()) < 1e-12, errors


@pytest.mark.parametrize("isa", ISA_LEVELS)
def test_every_instruction_set_matches_reference(isa, monkeypatch):
    use_isa(ssd_cpu, isa, monkeypatch)
    tensors = ssd_inputs(2, 70, 4, 20, 2, 9)
    errors = relative_errors(run_ssd(tensors, 16, "cpu", ALL_ON), run_ssd(tensors, 16, "ref", ALL_ON))
    assert max(errors.values()) < 1e-12, errors


@pytest.mark.parametrize("case", CASES[:3], ids=[c[0] for c in CASES[:3]])
def test_cpu_float32_within_2x_of_the_torch_backend(case):
    """flash-attention's rule: error vs float64 <= 2x the PyTorch backend's at the same dtype."""
    truth = run_ssd(ssd_inputs(*case[1:]), 16, "ref", ALL_ON)
    low = ssd_inputs(*case[1:], dtype=torch.float32)
    got = run_ssd(low, 16, "cpu", ALL_ON)
    assert all(t.dtype == torch.float32 for t in got.values())
    torch_err = max(relative_errors(run_ssd(low, 16, "torch", ALL_ON), truth).values())
    cpu_err = max(relative_errors(got, truth).values())
    assert cpu_err <= 2 * torch_err + 1e-6, (cpu_err, torch_err)


def test_cpu_bfloat16_within_2x_of_the_torch_backend():
    truth = run_ssd(ssd_inputs(2, 37, 3, 5, 1, 7), 16, "ref", ALL_ON)
    low = ssd_inputs(2, 37, 3, 5, 1, 7, dtype=torch.bfloat16)
    got = run_ssd(low, 16, "cpu", ALL_ON)
    assert got["out"].dtype == torch.bfloat16 and got["final_states"].dtype == torch.float32
    torch_err = max(relative_errors(run_ssd(low, 16, "torch", ALL_ON), truth).values())
    assert max(relative_errors(got, truth).values()) <= 2 * torch_err + 1e-4


def ids_from_lengths(lengths):
    return torch.cat([torch.full((length,), i) for i, length in enumerate(lengths)])[None]


# One row of 150 steps (chunks of 64: edges at 64 and 128), documents at odd places.
LAYOUTS = {
    "reset-at-0-only": torch.ones(1, 150, dtype=torch.long),  # id 1 from the start: no initial state
    "adjacent-length-1": ids_from_lengths([3, 1, 1, 1, 144]),
    "length-1-first-and-last": ids_from_lengths([1, 148, 1]),
    "on-chunk-edges": ids_from_lengths([64, 64, 22]),
    "off-chunk-edges": ids_from_lengths([63, 2, 64, 21]),
    "every-step": torch.arange(150)[None],
}


@pytest.mark.parametrize("ids", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_document_boundaries_match_reference(ids):
    tensors = {**ssd_inputs(1, 150, 2, 5, 1, 3), "seq_idx": ids}
    errors = relative_errors(run_ssd(tensors, 16, "cpu", ALL_ON), run_ssd(tensors, 16, "ref", ALL_ON))
    assert max(errors.values()) < 1e-12, errors


def test_a_reset_at_position_0_drops_the_initial_state():
    tensors = {**ssd_inputs(1, 23, 2, 3, 1, 4), "seq_idx": torch.ones(1, 23, dtype=torch.long)}
    reset = run_ssd(tensors, 16, "cpu", ALL_ON)
    assert torch.equal(reset["grad initial_states"], torch.zeros_like(tensors["initial_states"]))


def test_passes_gradcheck():
    t = ssd_inputs(1, 5, 2, 2, 1, 2)
    names = ("x", "dt", "A", "B", "C", "D_hp", "z", "dt_bias", "initial_states")
    leaves = [t[k].requires_grad_() for k in names]
    seq_idx = torch.tensor([[0, 0, 1, 2, 2]])

    def scan(x, dt, A, B, C, D, z, dt_bias, initial_states):
        return ops.ssd_scan(x, dt, A, B, C, 4, D, z, dt_bias, initial_states, seq_idx, dt_softplus=True,
                            return_final_states=True, backend="cpu")

    assert torch.autograd.gradcheck(scan, leaves, fast_mode=True)


def test_result_does_not_depend_on_thread_count():
    tensors = ssd_inputs(2, 70, 4, 5, 2, 3, dtype=torch.float32)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = run_ssd(tensors, 16, "cpu", ALL_ON)
    finally:
        torch.set_num_threads(threads)
    many = run_ssd(tensors, 16, "cpu", ALL_ON)
    assert all(torch.equal(one[k], many[k]) for k in one)  # one (batch row, head) per thread: no reductions


def test_forward_without_grad_matches_with_grad():
    tensors = ssd_inputs(1, 40, 3, 5, 1, 7, dtype=torch.float32)
    args = (tensors["x"], tensors["dt"], tensors["A"], tensors["B"], tensors["C"], 16)
    with torch.no_grad():
        out, final = ops.ssd_scan(*args, dt_softplus=True, return_final_states=True, backend="cpu")
    leaves = [t.clone().requires_grad_() for t in args[:5]]
    out_g, final_g = ops.ssd_scan(*leaves, 16, dt_softplus=True, return_final_states=True, backend="cpu")
    assert torch.equal(out, out_g.detach()) and torch.equal(final, final_g.detach())


def test_auto_picks_cpu_on_cpu_tensors_without_a_warning():
    t = ssd_inputs(1, 9, 2, 3, 1, 4, dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ops.resolve_ssd_backend("auto", torch.device("cpu")) == "cpu"
        out = ops.ssd_scan(t["x"], t["dt"], t["A"], t["B"], t["C"], 4, backend="auto")
    expected = ops.ssd_scan(t["x"], t["dt"], t["A"], t["B"], t["C"], 4, backend="ref")
    assert (out - expected).abs().max() / expected.abs().max() < 1e-6


def test_a_mamba2_model_records_the_cpu_backend():
    from biomamba.modeling import backends_used
    from tests.model_helpers import tiny_model

    model = tiny_model(layer="Mamba2", scan_backend="cpu")
    model(torch.randint(0, 97, (1, 6)))
    assert backends_used(model)["ssd_scan"] == "cpu"


def test_missing_compiler_is_reported_with_a_fix(monkeypatch):
    monkeypatch.setattr(ssd_cpu, "_extension", None)
    monkeypatch.setattr(ssd_cpu, "_failure", None)
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    with pytest.raises(ops.BackendUnavailable, match="C\\+\\+ compiler") as first:
        ssd_cpu.check_available()
    assert "apt-get install g++" in str(first.value) and "ssd_scan" in str(first.value)
    with pytest.raises(ops.BackendUnavailable) as second:  # the failure is cached too
        ssd_cpu.check_available()
    assert second.value is first.value
