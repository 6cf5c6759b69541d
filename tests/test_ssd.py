"""The Mamba-2 SSD scan: the chunked "torch" backend against the sequential float64 reference,
documents packed with seq_idx, low precision, the decoding step, and one peer (transformers)."""
import sys

import pytest
import torch

from biomamba import ops
from tests.scan_cases import max_relative_error
from tests.ssd_cases import ALL_ON, OFF, ssd_inputs

# (name, b, l, h, p, g, n, chunk_size): lengths not a multiple of the chunk, h/p/n not powers of two.
CASES = [
    ("g1-chunk4", 2, 37, 3, 5, 1, 7, 4),
    ("g2-chunk5", 2, 23, 6, 3, 2, 5, 5),
    ("g2-chunk16", 1, 50, 6, 3, 2, 3, 16),
    ("shorter-than-a-chunk", 2, 9, 3, 2, 1, 3, 16),
    ("single-step", 2, 1, 3, 2, 1, 3, 4),
]

# Every option on, all off, and each one off (or switched: D per head) with the others on.
OPTION_SETS = {"all-on": ALL_ON, "all-off": OFF, "D-per-head": {**ALL_ON, "D": "h"},
               **{f"no-{name}": {**ALL_ON, name: OFF[name]} for name in ALL_ON}}


def random_weights(out_shape, final_shape, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(out_shape, generator=gen, dtype=torch.float64),
            torch.randn(final_shape, generator=gen, dtype=torch.float64))


def run_ssd(tensors, chunk_size, backend, options, weights=None):
    """Forward with `options`, then the gradient of a random projection of out (and final state;
    `weights` or seeded ones) w.r.t. every floating input the options use. Returns {name: tensor}."""
    leaves = {k: v.detach().clone().requires_grad_(v.is_floating_point()) for k, v in tensors.items()}
    D = {None: None, "hp": leaves["D_hp"], "h": leaves["D_h"]}[options["D"]]
    optional = {name: leaves[name] if options[name] else None
                for name in ("z", "dt_bias", "initial_states", "seq_idx")}
    result = ops.ssd_scan(leaves["x"], leaves["dt"], leaves["A"], leaves["B"], leaves["C"], chunk_size,
                          D=D, **optional, dt_softplus=options["dt_softplus"], dt_limit=options["dt_limit"],
                          return_final_states=options["return_final_states"], backend=backend)
    out, final = result if options["return_final_states"] else (result, None)
    assert isinstance(out, torch.Tensor)
    assert out.shape == tensors["x"].shape and out.dtype == tensors["x"].dtype
    assert final is None or final.dtype == torch.promote_types(out.dtype, torch.float32)
    w_out, w_final = weights or random_weights(out.shape, tensors["initial_states"].shape)
    loss = (out * w_out.to(out)).sum()  # .to(out): out's dtype and device
    if final is not None:
        loss = loss + (final * w_final.to(final)).sum()
    inputs = {"x": leaves["x"], "dt": leaves["dt"], "A": leaves["A"], "B": leaves["B"], "C": leaves["C"],
              **({"D": D} if D is not None else {}),
              **{k: v for k, v in optional.items() if v is not None and k != "seq_idx"}}
    grads = torch.autograd.grad(loss, list(inputs.values()))
    results = {"out": out, **({"final_states": final} if final is not None else {})}
    return {**results, **{f"grad {k}": g for k, g in zip(inputs, grads)}}


def error(got, ref):
    """max_relative_error, except against an all-zero reference (the gradient of A when nothing
    decays, e.g. one step from a zero state), where only the absolute error means anything."""
    if not ref.any():
        return got.abs().max().item()
    return max_relative_error([got], [ref])


def assert_close(got, ref, bound):
    assert got.keys() == ref.keys()
    errors = {k: error(got[k], ref[k]) for k in ref}
    assert max(errors.values()) < bound, errors


# ----------------------------------------------------------------------------- torch == ref

@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("options", OPTION_SETS.values(), ids=OPTION_SETS.keys())
def test_torch_backend_matches_reference_float64(case, options):
    b, l, h, p, g, n, chunk_size = case[1:]
    tensors = ssd_inputs(b, l, h, p, g, n)
    ref = run_ssd(tensors, chunk_size, "ref", options)
    got = run_ssd(tensors, chunk_size, "torch", options)
    assert_close(got, ref, 1e-12)


def test_options_change_the_result():
    """Each option really reaches the computation (else the option sets above prove nothing)."""
    tensors = ssd_inputs(2, 23, 6, 3, 2, 5)
    base = run_ssd(tensors, 5, "ref", ALL_ON)["out"]
    for name, options in OPTION_SETS.items():
        if name not in ("all-on", "no-return_final_states"):
            assert not torch.allclose(run_ssd(tensors, 5, "ref", options)["out"], base), name


# ----------------------------------------------------------------------------- documents (seq_idx)

def ids_from_lengths(lengths):
    """One row of document ids, numbered from 0, from the documents' lengths."""
    return torch.cat([torch.full((length,), i) for i, length in enumerate(lengths)])[None]


# One row of 23 steps in chunks of 5, documents laid out to hit each edge case.
LAYOUTS = {
    "reset-at-0-only": torch.ones(1, 23, dtype=torch.long),   # id 1 from the start: no initial state
    "adjacent-boundaries": ids_from_lengths([3, 1, 1, 1, 17]),  # three documents of length 1
    "length-1-first-and-last": ids_from_lengths([1, 21, 1]),
    "boundary-at-chunk-edge": ids_from_lengths([10, 13]),       # a document starts a chunk
    "boundary-inside-chunk": ids_from_lengths([7, 16]),
    "boundaries-everywhere": torch.arange(23)[None],           # every step its own document
}


@pytest.mark.parametrize("ids", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_document_boundaries_torch_matches_reference(ids):
    tensors = {**ssd_inputs(1, 23, 6, 3, 2, 5), "seq_idx": ids}
    ref = run_ssd(tensors, 5, "ref", ALL_ON)
    got = run_ssd(tensors, 5, "torch", ALL_ON)
    assert_close(got, ref, 1e-12)


@pytest.mark.parametrize("backend", ["ref", "torch"])
def test_a_reset_at_position_0_drops_the_initial_state(backend):
    tensors = ssd_inputs(1, 23, 6, 3, 2, 5)
    fresh = run_ssd(tensors, 5, backend, {**ALL_ON, "initial_states": False, "seq_idx": False})
    reset = run_ssd({**tensors, "seq_idx": LAYOUTS["reset-at-0-only"]}, 5, backend, ALL_ON)
    assert torch.equal(reset["grad initial_states"], torch.zeros_like(tensors["initial_states"]))
    reset.pop("grad initial_states")
    assert_close(reset, fresh, 1e-12)


def packed_and_alone(la=9, lb=14, chunk_size=5):
    """Documents A (la steps) and B (lb steps) packed in one row, and B alone in its own row."""
    packed = ssd_inputs(1, la + lb, 6, 3, 2, 5)
    packed["seq_idx"] = ids_from_lengths([la, lb])
    alone = {k: v[:, la:] if k in ("x", "dt", "B", "C", "z", "seq_idx") else v for k, v in packed.items()}
    options = {**ALL_ON, "initial_states": False}
    return packed, alone, options, chunk_size


@pytest.mark.parametrize("backend", ["ref", "torch"])
def test_packed_document_equals_the_document_alone(backend):
    packed, alone, options, chunk_size = packed_and_alone()
    la = packed["x"].shape[1] - alone["x"].shape[1]
    w_out, w_final = random_weights(packed["x"].shape, packed["initial_states"].shape)
    together = run_ssd(packed, chunk_size, backend, options, (w_out, w_final))
    by_itself = run_ssd(alone, chunk_size, backend, options, (w_out[:, la:], w_final))
    for name in ("out", "grad x", "grad dt", "grad B", "grad C", "grad z"):
        assert max_relative_error([together[name][:, la:]], [by_itself[name]]) < 1e-12, name
    assert max_relative_error([together["final_states"]], [by_itself["final_states"]]) < 1e-12


@pytest.mark.parametrize("backend", ["ref", "torch"])
def test_earlier_document_does_not_reach_the_next(backend):
    packed, _, options, chunk_size = packed_and_alone()
    la = 9
    changed = {k: v.clone() for k, v in packed.items()}
    for name in ("x", "dt", "B", "C", "z"):  # A's last token, everything about it
        changed[name][:, la - 1] += 1.0
    first = run_ssd(packed, chunk_size, backend, options)
    second = run_ssd(changed, chunk_size, backend, options)
    assert not torch.equal(first["out"][:, :la], second["out"][:, :la])  # the change is real
    for name in ("out", "grad x", "grad dt", "grad B", "grad C", "grad z"):
        assert torch.equal(first[name][:, la:], second[name][:, la:]), name
    assert torch.equal(first["final_states"], second["final_states"])


@pytest.mark.parametrize("backend", ["ref", "torch"])
def test_later_document_outputs_have_no_gradient_into_the_earlier(backend):
    packed, _, options, chunk_size = packed_and_alone()
    la = 9
    leaves = {k: v.clone().requires_grad_(k in ("x", "dt", "B", "C")) for k, v in packed.items()}
    out = ops.ssd_scan(leaves["x"], leaves["dt"], leaves["A"], leaves["B"], leaves["C"], chunk_size,
                       D=leaves["D_hp"], z=leaves["z"], dt_bias=leaves["dt_bias"], seq_idx=leaves["seq_idx"],
                       dt_softplus=True, backend=backend)
    grads = torch.autograd.grad(out[:, la:].sum(), [leaves[k] for k in ("x", "dt", "B", "C")])
    for grad in grads:
        assert torch.equal(grad[:, :la], torch.zeros_like(grad[:, :la]))
        assert grad[:, la:].abs().sum() > 0


# ----------------------------------------------------------------------------- precision, gradcheck

# (b, l, h, p, g, n, chunk_size). A chunk as long as a real one (256) is where float32 running sums
# of dA would cost 100x the reference's error (ops/ssd_torch.py, decay_exponents).
PRECISION_CASES = {"chunk-16": ((2, 50, 6, 3, 2, 5), 16), "chunk-256": ((1, 300, 4, 8, 1, 16), 256)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape,chunk_size", PRECISION_CASES.values(), ids=PRECISION_CASES.keys())
def test_torch_backend_low_precision_within_2x_of_reference_at_same_dtype(dtype, shape, chunk_size):
    truth = run_ssd(ssd_inputs(*shape), chunk_size, "ref", ALL_ON)
    low = ssd_inputs(*shape, dtype=dtype)
    ref_err = max_relative_error(run_ssd(low, chunk_size, "ref", ALL_ON).values(), truth.values())
    got_err = max_relative_error(run_ssd(low, chunk_size, "torch", ALL_ON).values(), truth.values())
    assert got_err <= 2 * ref_err


def test_reference_passes_gradcheck():
    t = ssd_inputs(1, 6, 2, 2, 1, 2)
    names = ("x", "dt", "A", "B", "C", "D_hp", "z", "dt_bias", "initial_states")
    leaves = [t[k].requires_grad_() for k in names]
    seq_idx = torch.tensor([[0, 0, 0, 1, 1, 1]])

    def scan(x, dt, A, B, C, D, z, dt_bias, initial_states):
        return ops.ssd_scan(x, dt, A, B, C, 4, D, z, dt_bias, initial_states, seq_idx, dt_softplus=True,
                            return_final_states=True, backend="ref")

    assert torch.autograd.gradcheck(scan, leaves)


@pytest.mark.parametrize("D_name", ["D_hp", "D_h"])
def test_state_update_steps_equal_the_scan(D_name):
    b, l, h, p, g, n = 2, 9, 6, 3, 2, 5
    t = ssd_inputs(b, l, h, p, g, n)
    options = dict(D=t[D_name], z=t["z"], dt_bias=t["dt_bias"], dt_softplus=True, dt_limit=(0.2, 1.5))
    full, final = ops.ssd_scan(t["x"], t["dt"], t["A"], t["B"], t["C"], 4, initial_states=t["initial_states"],
                               return_final_states=True, backend="ref", **options)
    state = t["initial_states"].clone()
    steps = [ops.ssd_state_update(state, t["x"][:, i], t["dt"][:, i], t["A"], t["B"][:, i], t["C"][:, i],
                                  **{**options, "z": t["z"][:, i]}) for i in range(l)]
    assert max_relative_error([torch.stack(steps, dim=1), state], [full, final]) < 1e-12


# ----------------------------------------------------------------------------- independent peer

def test_reference_matches_transformers_mamba2_chunk_scan():
    """transformers' own PyTorch SSD (Mamba2's CPU path) on the same tensors. It computes in
    float32 whatever it is given, so it is held to float32 accuracy: its distance from our float64
    reference must be of the size of our own reference's float32 rounding (at most 2x)."""
    peer = pytest.importorskip("transformers.models.mamba2.modeling_mamba2")
    t = ssd_inputs(2, 37, 6, 3, 2, 5)  # no z, D per head, no seq_idx: the options it has
    args = (t["x"], t["dt"], t["A"], t["B"], t["C"], 8)
    options = dict(D=t["D_h"], dt_bias=t["dt_bias"], initial_states=t["initial_states"], dt_softplus=True,
                   dt_limit=(0.2, 1.5), return_final_states=True)
    ref64 = ops.ssd_scan(*args, **options, backend="ref")
    as_float32 = {k: v.float() if torch.is_tensor(v) else v for k, v in options.items()}
    ref32 = ops.ssd_scan(*[a.float() if torch.is_tensor(a) else a for a in args], **as_float32, backend="ref")
    theirs = peer.mamba2_chunk_scan(*args, **options)
    assert max_relative_error(theirs, ref64) <= 2 * max_relative_error(ref32, ref64)


# ----------------------------------------------------------------------------- on a GPU

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def on_cuda(tensors, dtype):
    return {k: (v.to(dtype) if v.is_floating_point() else v.int()).cuda() for k, v in tensors.items()}


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_torch_backend_on_cuda_within_2x_of_reference_at_same_dtype(dtype):
    shape, chunk_size = (2, 300, 8, 16, 2, 32), 64
    truth = run_ssd(ssd_inputs(*shape), chunk_size, "ref", ALL_ON)
    low = on_cuda(ssd_inputs(*shape), dtype)
    ref_err = max_relative_error([t.cpu() for t in run_ssd(low, chunk_size, "ref", ALL_ON).values()],
                                 truth.values())
    got_err = max_relative_error([t.cpu() for t in run_ssd(low, chunk_size, "torch", ALL_ON).values()],
                                 truth.values())
    assert got_err <= 2 * ref_err


@pytest.mark.gpu
@needs_cuda
def test_mamba_ssm_backend_matches_reference():
    """mamba_ssm's Triton kernels in float32 (their matmuls run in TF32) against the float64
    reference, held to mamba_ssm's own test tolerance (1e-2, tests/ops/triton/test_ssd.py)."""
    shape, chunk_size = (2, 300, 8, 16, 2, 32), 64
    t = on_cuda(ssd_inputs(*shape), torch.float32)
    try:
        ops.ssd_scan(t["x"], t["dt"], t["A"], t["B"], t["C"], chunk_size, backend="mamba_ssm")
    except ops.BackendUnavailable as error:
        pytest.skip(str(error))
    truth = run_ssd(ssd_inputs(*shape), chunk_size, "ref", ALL_ON)
    got = {k: v.cpu() for k, v in run_ssd(t, chunk_size, "mamba_ssm", ALL_ON).items()}
    assert_close(got, truth, 1e-2)


# ----------------------------------------------------------------------------- dispatch and errors

def test_unavailable_and_unknown_backends_say_what_to_do():
    t = ssd_inputs(1, 4, 2, 2, 1, 2)
    args = (t["x"], t["dt"], t["A"], t["B"], t["C"], 4)
    with pytest.raises(ops.BackendUnavailable, match=r"pip install 'biomamba\[cuda\]'"):
        ops.ssd_scan(*args, backend="mamba_ssm")
    choices = "unknown ssd_scan backend 'fast'; choose one of auto, ref, torch, cpu, mamba_ssm"
    with pytest.raises(ValueError, match=choices):
        ops.ssd_scan(*args, backend="fast")


def test_auto_on_cpu_is_the_compiled_kernel_where_it_builds():
    assert ops.resolve_ssd_backend("auto", torch.device("cpu")) == "cpu"  # tests/test_ssd_cpu.py
    assert ops.resolve_ssd_backend("ref", torch.device("cpu")) == "ref"


def test_auto_on_cuda_without_mamba_ssm_says_it_uses_torch(monkeypatch):
    monkeypatch.setitem(sys.modules, "mamba_ssm", None)  # as if not installed
    ops._ssd_unusable.cache_clear()
    notice = r"ssd_scan backend 'auto' on cuda: 'mamba_ssm' unusable \(BackendUnavailable: .*\), using 'torch'"
    with pytest.warns(UserWarning, match=notice):
        assert ops.resolve_ssd_backend("auto", torch.device("cuda")) == "torch"
    ops._ssd_unusable.cache_clear()


def test_auto_on_cuda_skips_a_mamba_ssm_that_imports_but_fails_to_run(monkeypatch):
    """As on the H200 (2026-12-04): mamba_ssm imported, its Triton kernel then failed to compile."""
    def failing_kernel(*args, **kwargs):
        raise RuntimeError("CompilationError: at 43:4: (Triton)")

    impls = {"mamba_ssm": failing_kernel, "torch": ops.ssd_scan_torch}
    monkeypatch.setattr(ops, "_ssd_impl", lambda name: impls[name])
    monkeypatch.setattr(ops, "_probe_ssd", lambda impl, device: impl())
    ops._ssd_unusable.cache_clear()
    with pytest.warns(UserWarning, match=r"'mamba_ssm' unusable \(RuntimeError: CompilationError.*using 'torch'"):
        assert ops.resolve_ssd_backend("auto", torch.device("cuda")) == "torch"
    ops._ssd_unusable.cache_clear()


def test_wrong_shapes_are_all_named_in_one_error():
    t = ssd_inputs(2, 7, 6, 3, 4, 5)  # 6 heads cannot be split into 4 groups
    with pytest.raises(ValueError) as error:
        ops.ssd_scan(t["x"], t["dt"][:, :3], t["A"], t["B"], t["C"], 0, D=t["D_hp"].T,
                     seq_idx=t["seq_idx"].double())
    message = str(error.value)
    for expected in ("dt must have shape (2, 7, 6), got (2, 3, 6)", "D must have shape (6, 3) or (6,)",
                     "6 must be divisible by B/C's group count 4", "seq_idx must hold integer",
                     "chunk_size must be a positive int, got 0"):
        assert expected in message
