"""The compiled CPU decoding step (biomamba/decode.py) and int8 / int8-dynamic / bf16 decoding.

What a user relies on: generate gives the same tokens through the compiled step as through the torch
step; a cached step gives the logits of the full forward; int8 and bf16 weights (and int8-dynamic's
rounded activations) stay close to fp32 (logits, and bits per byte under eval-ppl). Tiny models, both
block types.
"""
import copy
import os
import platform
from pathlib import Path

import pytest
import torch
from transformers import LogitsProcessor

from biomamba import BioMambaConfig, BioMambaForCausalLM
from biomamba.decode import (StepArguments, activation_linears, dequantize, quantize, round_activations,
                             use_fast_decode)
from biomamba.ops import cpu_decode
from tests.isa_helpers import ISA_LEVELS, VNNI, use_isa

BLOCKS = ["Mamba1", "Mamba2"]
GREEDY = dict(do_sample=False, eos_token_id=None, pad_token_id=0)


def small_model(layer, **overrides):
    """The tiny preset of a block type (config.ssm_layer), made smaller."""
    torch.manual_seed(0)
    config = BioMambaConfig.from_preset("tiny", ssm_layer=layer,
                                        **{"d_model": 64, "n_layer": 2, "vocab_size": 300, **overrides})
    return BioMambaForCausalLM(config).eval()


def prompt(model, batch=2, length=7):
    return torch.randint(1, model.config.vocab_size, (batch, length), generator=torch.Generator().manual_seed(1))


def steps_logits(model, ids, continuation):
    """Logits of the prompt pass's last position, then of one cached step per continuation token."""
    with torch.no_grad():
        out = model(ids, use_cache=True)
        logits = [out.logits[:, -1:]]
        for t in range(continuation.shape[1] - 1):
            logits.append(model(continuation[:, t:t + 1], cache_params=out.cache_params, use_cache=True).logits)
    return torch.cat(logits, dim=1)


@pytest.mark.parametrize("isa, hints", [(isa, "0") for isa in ISA_LEVELS] + [(2, "1")])
@pytest.mark.parametrize("columns", [5, 83, 160])
@pytest.mark.parametrize("batch", [1, 2, 3, 6])  # 1 reads row after row (bf16: two weights a word), the rest in tiles
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int8"])
def test_gemv_equals_matmul_on_its_weights(dtype, batch, columns, isa, hints, monkeypatch):
    """Each instruction set's build of the dot products (BIOMAMBA_CPU_ISA caps the one chosen; AVX-512 with
    and without its weight hints). Odd sizes take the tails (AVX-512 masked, AVX2 scalar; 5 is all tail);
    83 = 2 x 32 + 2 x 8 + 3 every AVX2 loop, 160 = 2 x 64 + 32 every loop of the AVX-512 bf16 pairs. Batches
    of rows go through decode_tiles.h: 37 rows end in a tile of one live row; 2, 3 and 6 rows of x fill tiles of 4
    (AVX-512) and 2 (AVX2) rows of x and leave part tiles, bf16 and int8 weights widened in registers where one
    tile of x takes every row (2 with AVX2, 2 and 3 with AVX-512) and once into a scratch tile otherwise."""
    use_isa(cpu_decode, isa, monkeypatch)
    monkeypatch.setenv("BIOMAMBA_DECODE_HINTS", hints)
    weight, x, bias = torch.randn(37, columns), torch.randn(batch, columns), torch.randn(37)
    packed, scale = (weight, None) if dtype == "float32" else quantize(weight, "int8" if dtype == "int8" else
                                                                       "bf16-weights")
    out = cpu_decode.extension().linear(x, packed, scale, bias)
    torch.testing.assert_close(out, x @ dequantize(packed, scale).T + bias, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("isa", [*ISA_LEVELS, VNNI])
@pytest.mark.parametrize("columns", [5, 83, 200, 768])
@pytest.mark.parametrize("batch", [1, 3])  # batch 1 multiplies bytes with bytes (AVX2, VNNI)
def test_int8_activations_gemv_equals_matmul_on_the_rounded_activations(batch, columns, isa, monkeypatch):
    """int8-dynamic's gemv rounds x to int8 in blocks of 32 exactly as round_activations does (a block of
    zeros included) and multiplies by the int8 weights: 5 is all tail, 83 = 2 x 32 + 19 ends in a short
    block, 200 = 128 + 64 + 8 takes every VNNI loop, 768 is the 130m model's d_model."""
    use_isa(cpu_decode, isa, monkeypatch)
    weight, x = torch.randn(37, columns), torch.randn(batch, columns) * torch.rand(batch, 1) * 4
    if columns > 32:
        x[:, :32] = 0  # a block of zeros: scale 0, every q 0
    packed, scale = quantize(weight, "int8-dynamic")
    out = cpu_decode.extension().linear(x, packed, scale, None, True)
    expected = round_activations(x) @ dequantize(packed, scale).T
    # float sums in another order (values up to about 50 at 768 columns); one q off by one moves a row by
    # a weight times its block's step, about 0.03
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6 * columns)
    assert not torch.allclose(out, x @ dequantize(packed, scale).T, rtol=1e-5, atol=1e-5)  # x was rounded


def test_int8_activations_need_int8_weights():
    with pytest.raises(RuntimeError, match="int8 activations need int8 weights"):
        cpu_decode.extension().linear(torch.randn(1, 8), torch.randn(4, 8), None, None, True)


def test_round_activations_blocks():
    """Blocks of 32 along the last dimension, each with its own scale max|x| / 127: a block's largest value
    is kept, the others land on its grid, a block of zeros stays zero."""
    x = torch.cat([torch.zeros(32), torch.linspace(-1, 2, 32), torch.tensor([0.001, -0.5, 0.25])])
    rounded = round_activations(x[None])[0]
    assert torch.equal(rounded[:32], torch.zeros(32))
    assert rounded[63] == 2 and rounded[65] == -0.5  # each block's max|x| is exact
    assert torch.allclose(rounded[32:64], x[32:64], atol=2 / 127 / 2 + 1e-7)
    torch.testing.assert_close(rounded[64:] / (0.5 / 127), torch.round(x[64:] / (0.5 / 127)))


@pytest.mark.skipif(platform.system() != "Linux" or platform.machine() != "x86_64", reason="reads /proc/cpuinfo")
def test_weight_hints_on_intel_only_unless_set(monkeypatch):
    """The AVX-512 dot products ask for the weights ahead on Intel CPUs, where it sped decoding up, and not
    on AMD's, where it slowed it down (kernels/cpu/decode_vectors.h); BIOMAMBA_DECODE_HINTS=0/1 overrides."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    vendor = next(line.split(":")[1].strip() for line in cpuinfo.splitlines() if line.startswith("vendor_id"))
    for value, expected in ((None, vendor == "GenuineIntel"), ("", vendor == "GenuineIntel"), ("0", False),
                            ("1", True)):
        if value is None:
            monkeypatch.delenv("BIOMAMBA_DECODE_HINTS", raising=False)
        else:
            monkeypatch.setenv("BIOMAMBA_DECODE_HINTS", value)
        assert cpu_decode.extension().weight_hints() is expected, value


@pytest.mark.parametrize("preset", BLOCKS)
def test_greedy_tokens_equal_the_torch_step_for_64_steps(preset):
    model = small_model(preset)
    ids = prompt(model)
    use_fast_decode(model, kernel="torch")
    before = model.generate(ids, max_new_tokens=64, min_new_tokens=64, **GREEDY)
    use_fast_decode(model, kernel="compiled")
    after = model.generate(ids, max_new_tokens=64, min_new_tokens=64, **GREEDY)
    assert torch.equal(after, before)


@pytest.mark.parametrize("isa", ISA_LEVELS)
@pytest.mark.parametrize("preset", BLOCKS)
def test_compiled_steps_equal_the_full_forward(preset, isa, monkeypatch):
    """On each instruction set's build of the state steps, with d_state off their vector widths (Mamba-1
    22 = 16 + 6 = 2 x 8 + 6 = 5 x 4 + 2, Mamba-2 40 = 32 + 8 = 2 x 16 + 8: every tail)."""
    use_isa(cpu_decode, isa, monkeypatch)
    overrides = (dict(bias=True, dt_limit=(0.01, 0.5), ngroups=2, d_state=40) if preset == "Mamba2" else
                 dict(bias=True, d_state=22))
    model = use_fast_decode(small_model(preset, **overrides), kernel="compiled")
    ids, continuation = prompt(model), prompt(model, length=12)
    with torch.no_grad():
        full = model(torch.cat([ids, continuation], dim=1)).logits[:, ids.shape[1] - 1:-1]
    torch.testing.assert_close(steps_logits(model, ids, continuation), full, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("gate", [dict(), dict(norm_before_gate=True), dict(rmsnorm=False)])
def test_compiled_mamba2_steps_equal_the_full_forward_with_each_gate(gate):
    """Mamba-2's gated norm (normed after or before the gate, or no norm: y * silu(z)) on 3 threads over 8 heads of
    16 in 2 groups, so that a thread's channels span both groups."""
    model = use_fast_decode(small_model("Mamba2", headdim=16, ngroups=2, **gate), kernel="compiled")
    ids, continuation, threads = prompt(model), prompt(model, length=6), torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        with torch.no_grad():
            full = model(torch.cat([ids, continuation], dim=1)).logits[:, ids.shape[1] - 1:-1]
        torch.testing.assert_close(steps_logits(model, ids, continuation), full, rtol=1e-4, atol=1e-4)
    finally:
        torch.set_num_threads(threads)


def swap_parameter(model):
    mixer = model.backbone.layers[1].mixer
    mixer.in_proj.weight = torch.nn.Parameter(torch.randn_like(mixer.in_proj.weight) * 0.2)


def swap_layer(model):
    mixer = model.backbone.layers[1].mixer
    mixer.out_proj = torch.nn.Linear(mixer.out_proj.in_features, mixer.out_proj.out_features, bias=False)


def swap_data(model):
    norm = model.backbone.layers[0].norm
    norm.weight.data = torch.rand_like(norm.weight) + 0.5


def bump_A_log(model):
    model.backbone.layers[1].mixer.A_log.add_(0.5)


def requantize(model):
    use_fast_decode(model, "int8-dynamic")  # the step reads int8 copies (fp32 ones fail its int8 activations)


@pytest.mark.parametrize("change", [swap_parameter, swap_layer, swap_data, bump_A_log, requantize])
@pytest.mark.parametrize("preset", BLOCKS)
def test_weights_replaced_between_steps_are_read(preset, change):
    """The step reads the model's weights as they are at each call, though it keeps its per-layer lists on
    the model and its arguments on the cache between calls: a parameter or a whole linear layer swapped after
    the prompt (load_state_dict(assign=True), LoRA merges, model surgery), a tensor's data replaced, an
    in-place change of A_log (an optimizer step) and quantizing anew each give the next step on the same
    cache, and on a copy of it, the torch step's logits on the new weights."""
    model = small_model(preset)
    ids = prompt(model, batch=1)
    with torch.no_grad():
        cache = model(ids[:, :-1], use_cache=True).cache_params
        model(ids[:, -1:], cache_params=cache, use_cache=True)  # compiled steps on the old weights
        model(ids[:, -1:], cache_params=cache, use_cache=True)
        change(model)
        token = ids[:, :1]
        copied = model(token, cache_params=copy.deepcopy(cache), use_cache=True).logits
        model.decode_kernel = "torch"
        expected = model(token, cache_params=copy.deepcopy(cache), use_cache=True).logits
        model.decode_kernel = "compiled"
        compiled = model(token, cache_params=cache, use_cache=True).logits
    torch.testing.assert_close(compiled, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(copied, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("preset", BLOCKS)
def test_a_cache_whose_states_were_replaced_is_read_anew(preset):
    """A beam search reorders the cache's rows between steps, which puts new state tensors in the cache: the
    next compiled step reads the states the cache holds now, not those its kept arguments held."""
    model = use_fast_decode(small_model(preset), kernel="compiled")
    ids = prompt(model, batch=2)
    with torch.no_grad():
        cache = model(ids[:, :-1], use_cache=True).cache_params
        model(ids[:, -1:], cache_params=cache, use_cache=True)  # compiled steps on the old states
        model(ids[:, -1:], cache_params=cache, use_cache=True)
        cache.reorder_cache(torch.tensor([1, 1]))  # both rows now continue the second one
        token = ids[1:, :1].repeat(2, 1)
        model.decode_kernel = "torch"
        expected = model(token, cache_params=copy.deepcopy(cache), use_cache=True).logits
        model.decode_kernel = "compiled"
        compiled = model(token, cache_params=cache, use_cache=True).logits
    torch.testing.assert_close(compiled, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(compiled[0], compiled[1])


class ThreadsSeen(LogitsProcessor):
    """A logits processor that notes torch's intra-op thread count at each step of generate."""

    def __init__(self):
        self.seen = []

    def __call__(self, input_ids, scores):
        self.seen.append(torch.get_num_threads())
        return scores


def pin_threads(cpus):
    """Every thread of this process (OpenMP's pool included) onto `cpus`; returns the old masks."""
    old = {}
    for tid in (int(name) for name in os.listdir("/proc/self/task")):
        try:
            old[tid] = os.sched_getaffinity(tid)
            os.sched_setaffinity(tid, cpus)
        except OSError:  # a thread that ended meanwhile
            pass
    return old


@pytest.mark.skipif(not os.path.isdir("/proc/self/task") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs Linux and two CPUs")
def test_a_team_kept_waiting_hands_the_next_calls_to_one_thread():
    """On a shared machine a thread of the step's team can be put aside while its partner waits at a barrier.
    Here both threads are pinned to one CPU, so every wait outlasts the spin: after two such team calls in a
    row (one may be a VM's passing stall) the calls run on one thread, kSoloCalls (32) times, then twice as
    many after the next try of the team, and the tokens stay the torch step's. Meanwhile torch's own ops in
    generate run on one thread too, and generate leaves torch's thread count as it found it; the user's own
    calls of the model never change it."""
    model = small_model("Mamba2")
    ids = prompt(model, batch=1)
    use_fast_decode(model, kernel="torch")
    expected = model.generate(ids, max_new_tokens=8, min_new_tokens=8, **GREEDY)
    use_fast_decode(model)
    ext, threads = cpu_decode.extension(), torch.get_num_threads()
    torch.set_num_threads(2)
    old = pin_threads({min(os.sched_getaffinity(0))})
    try:
        ext.reset_solo_calls()
        model.generate(ids, max_new_tokens=1, min_new_tokens=1, **GREEDY)  # the prompt pass: a team of two
        assert ext.solo_calls_left() == 0  # one contended call
        model.generate(ids, max_new_tokens=1, min_new_tokens=1, **GREEDY)  # the second in a row
        assert ext.solo_calls_left() == 32
        seen = ThreadsSeen()
        got = model.generate(ids, max_new_tokens=8, min_new_tokens=8, logits_processor=[seen], **GREEDY)
        assert ext.solo_calls_left() == 24  # 8 calls, each on one thread
        assert seen.seen == [1] * 8 and torch.get_num_threads() == 2
        for _ in range(4):  # 24 more solo calls, then two of the team, still kept waiting: twice the stretch
            model.generate(ids, max_new_tokens=8, min_new_tokens=8, **GREEDY)
        assert ext.solo_calls_left() == 64 - 6
        with torch.no_grad():
            model(ids, use_cache=True, logits_to_keep=1)  # a compiled prompt pass outside generate, alone
        assert ext.solo_calls_left() == 64 - 7 and torch.get_num_threads() == 2
    finally:
        for tid, cpus in old.items():
            try:
                os.sched_setaffinity(tid, cpus)
            except OSError:
                pass
        torch.set_num_threads(threads)
        ext.reset_solo_calls()
    assert torch.equal(got, expected)


def test_generate_runs_torch_ops_on_one_thread_and_the_step_on_the_users_threads(monkeypatch):
    """Inside generate, once the compiled step runs, torch's own ops between the steps (the logits' copy,
    logits processors, argmax) run on one thread, while the step's team keeps the count the user set;
    generate sets torch's count back on its way out, and the user's own calls of the model never change it."""
    teams, run = [], StepArguments.run

    def counted_run(self, hidden, steps, threads):
        teams.append(threads)  # the step's team size, as passed to the kernel
        return run(self, hidden, steps, threads)

    monkeypatch.setattr(StepArguments, "run", counted_run)
    model = use_fast_decode(small_model("Mamba2"), kernel="compiled")
    ids, threads, seen = prompt(model, batch=1), torch.get_num_threads(), ThreadsSeen()
    try:
        torch.set_num_threads(2)
        model.generate(ids, max_new_tokens=5, min_new_tokens=5, logits_processor=[seen], **GREEDY)
        assert seen.seen == [1] * 5 and teams == [2] * 5 and torch.get_num_threads() == 2
        with torch.no_grad():
            cache = model(ids, use_cache=True, logits_to_keep=1).cache_params
            model(ids[:, -1:], cache_params=cache, use_cache=True)
        assert teams[5:] == [2, 2] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def test_a_prompt_pass_makes_the_caches_states_on_one_thread(monkeypatch):
    """The compiled prompt pass has the cache make and zero its state tensors with torch on one thread (on two,
    under PASSIVE, each fill woke the sleeping second thread: 3.2-3.8 ms of a 45 ms 130m prompt), then gives
    the user's count back, inside generate and out."""
    from transformers import DynamicCache

    counts, update = [], DynamicCache.update_recurrent_state

    def counted(self, *args, **kwargs):
        counts.append(torch.get_num_threads())
        return update(self, *args, **kwargs)

    monkeypatch.setattr(DynamicCache, "update_recurrent_state", counted)
    model = use_fast_decode(small_model("Mamba2"), kernel="compiled")
    ids, threads = prompt(model, batch=1), torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        model.generate(ids, max_new_tokens=3, min_new_tokens=3, **GREEDY)
        assert counts == [1] * model.config.n_layer and torch.get_num_threads() == 2
        with torch.no_grad():
            model(ids, use_cache=True, logits_to_keep=1)
        assert counts == [1] * 2 * model.config.n_layer and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("preset", BLOCKS)
def test_the_step_does_not_depend_on_the_thread_count(preset):
    """A token runs in one parallel region that splits the channels (Mamba-2: heads) over the threads and
    sums their parts of x_proj, out_proj and the gated norm. 3 threads on 128 channels give uneven shares,
    and with 8 heads in 2 groups a share spans both groups."""
    overrides = dict(bias=True, headdim=16, ngroups=2) if preset == "Mamba2" else dict(bias=True)
    model = use_fast_decode(small_model(preset, **overrides), kernel="compiled")
    ids, continuation = prompt(model), prompt(model, length=12)
    threads, results = torch.get_num_threads(), {}
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            results[count] = (steps_logits(model, ids, continuation),
                              model.generate(ids, max_new_tokens=32, min_new_tokens=32, **GREEDY))
    finally:
        torch.set_num_threads(threads)
    for count in (2, 3):
        torch.testing.assert_close(results[count][0], results[1][0], rtol=1e-5, atol=1e-5)
        assert torch.equal(results[count][1], results[1][1])


# Stated tolerance of weight-only decoding against fp32, on the logits of 12 cached steps of a random
# tiny model (logits of about unit scale): int8 with a scale per row keeps every weight within half a
# step (max|w| / 254) and bf16 within 2^-9 relative.
# int8-dynamic adds the rounding of the activations, each within half a step of its block's max|x| / 127.
LOGIT_TOLERANCE = {"int8": 0.05, "int8-dynamic": 0.05, "bf16-weights": 0.05}
PACKED = {"int8": torch.int8, "int8-dynamic": torch.int8, "bf16-weights": torch.bfloat16}


@pytest.mark.parametrize("precision", ["int8", "int8-dynamic", "bf16-weights"])
@pytest.mark.parametrize("preset", BLOCKS)
def test_weight_only_logits_stay_near_fp32(preset, precision):
    reference = small_model(preset)
    ids, continuation = prompt(reference), prompt(reference, length=12)
    expected = steps_logits(reference, ids, continuation)
    quantized = use_fast_decode(small_model(preset), precision, kernel="compiled")
    assert quantized.lm_head.decode_weight[0].dtype == PACKED[precision]
    got = steps_logits(quantized, ids, continuation)
    assert (got - expected).abs().max() < LOGIT_TOLERANCE[precision]
    assert (got - expected).abs().max() > 0  # the quantized weights were used


@pytest.mark.parametrize("batch", [1, 2])  # int8-dynamic at batch 1: bytes times bytes where VNNI is
@pytest.mark.parametrize("precision", ["int8", "int8-dynamic", "bf16-weights"])
@pytest.mark.parametrize("preset", BLOCKS)
def test_quantized_steps_equal_the_quantized_full_forward(preset, precision, batch):
    """The packed weights the step reads and the rounded fp32 weights the prompt pass reads are one model;
    under int8-dynamic the torch path's hooks round the activations as the step does."""
    model = use_fast_decode(small_model(preset), precision, kernel="compiled")
    ids, continuation = prompt(model, batch=batch), prompt(model, batch=batch, length=6)
    with torch.no_grad():
        full = model(torch.cat([ids, continuation], dim=1)).logits[:, ids.shape[1] - 1:-1]
    torch.testing.assert_close(steps_logits(model, ids, continuation), full, rtol=1e-4, atol=1e-4)


def cache_states(cache, layers):
    return [(cache.get_conv_state(i), cache.get_recurrent_state(i)) for i in range(layers)]


@pytest.mark.parametrize("precision", ["fp32", "int8", "int8-dynamic"])
@pytest.mark.parametrize("preset", BLOCKS)
def test_compiled_prompt_pass_leaves_what_the_torch_path_leaves(preset, precision):
    """generate's first call (an empty cache, the last position's logits): the same logits, and the cache
    holds the same conv windows (zeros before the prompt) and SSM states, so every later step agrees."""
    overrides = dict(bias=True, dt_limit=(0.01, 0.5), ngroups=2) if preset == "Mamba2" else dict(bias=True)
    model = use_fast_decode(small_model(preset, **overrides), precision, kernel="compiled")
    layers = model.config.n_layer
    for length in (1, 2, 9):  # shorter and longer than the conv window (d_conv 4)
        ids = prompt(model, length=length)
        with torch.no_grad():
            model.decode_kernel = "torch"
            expected = model(ids, use_cache=True, logits_to_keep=1)
            model.decode_kernel = "compiled"
            got = model(ids, use_cache=True, logits_to_keep=1)
        torch.testing.assert_close(got.logits, expected.logits, rtol=1e-4, atol=1e-4)
        for mine, theirs in zip(cache_states(got.cache_params, layers), cache_states(expected.cache_params, layers)):
            torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("preset", BLOCKS)
def test_int8_dynamic_greedy_tokens_equal_its_torch_path_for_64_steps(preset):
    """Batch 1, where the step multiplies int8 activations with int8 weights (VNNI) and the torch path
    multiplies the same rounded values as floats."""
    model = small_model(preset)
    ids = prompt(model, batch=1)
    use_fast_decode(model, "int8-dynamic", kernel="torch")
    before = model.generate(ids, max_new_tokens=64, min_new_tokens=64, **GREEDY)
    use_fast_decode(model, "int8-dynamic", kernel="compiled")
    assert torch.equal(model.generate(ids, max_new_tokens=64, min_new_tokens=64, **GREEDY), before)


def test_quantizing_again_replaces_the_activation_rounding():
    """int8-dynamic's hooks go when the model is quantized to int8 (weights only) after it, and are never
    stacked: the logits are then those of a model quantized to int8 alone."""
    model, int8_only = small_model("Mamba2"), use_fast_decode(small_model("Mamba2"), "int8", kernel="torch")
    use_fast_decode(model, "int8-dynamic", kernel="torch")
    use_fast_decode(model, "int8-dynamic", kernel="torch")
    assert all(len(linear._forward_pre_hooks) == 1 for linear in activation_linears(model))
    use_fast_decode(model, "int8", kernel="torch")
    assert all(len(linear._forward_pre_hooks) == 0 for linear in activation_linears(model))
    ids = prompt(model)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, int8_only(ids).logits)


def test_generate_runs_its_prompt_pass_compiled_up_to_the_limit(monkeypatch):
    """Prompts up to PREFILL_MAX_TOKENS without pads take the compiled prompt pass; a longer or padded one
    takes the torch path; the tokens are the torch step's either way."""
    from biomamba import decode

    model = small_model("Mamba2")
    prompts = {"short": prompt(model, batch=2, length=7),
               "long": prompt(model, batch=1, length=decode.PREFILL_MAX_TOKENS + 1)}
    padded = prompt(model, batch=2, length=7)
    mask = torch.ones_like(padded)
    mask[0, :3] = 0  # left padding
    expected, calls = {}, []
    use_fast_decode(model, kernel="torch")
    for name, ids in prompts.items():
        expected[name] = model.generate(ids, max_new_tokens=5, **GREEDY)
    expected["padded"] = model.generate(padded, attention_mask=mask, max_new_tokens=5, **GREEDY)
    use_fast_decode(model, kernel="compiled")
    prefill = decode.fast_prefill
    monkeypatch.setattr(decode, "fast_prefill", lambda m, ids, cache: calls.append(ids.shape) or prefill(m, ids, cache))
    for name, ids in prompts.items():
        assert torch.equal(model.generate(ids, max_new_tokens=5, **GREEDY), expected[name])
    assert torch.equal(model.generate(padded, attention_mask=mask, max_new_tokens=5, **GREEDY), expected["padded"])
    assert calls == [prompts["short"].shape]


def test_the_torch_path_serves_what_the_compiled_step_does_not():
    model = use_fast_decode(small_model("Mamba1"), kernel="compiled")
    ids = prompt(model)
    with torch.no_grad():
        out = model(ids, use_cache=True)
        step = model(ids[:, :1], cache_params=out.cache_params, use_cache=True, output_hidden_states=True)
    assert step.hidden_states is not None and len(step.hidden_states) == model.config.n_layer + 1


# Stated bound on the quality cost of int8 weights: eval-ppl's bits per byte may rise by at most 1%
# (the goal; int8-dynamic and bf16 weights likewise). A random model with large embeddings, so that its
# predictions are far from uniform and rounding its weights shows.
BITS_PER_BYTE_BOUND = 0.01


def test_eval_ppl_bits_per_byte_change_of_weight_only_precisions(tmp_path):
    import argparse
    import json

    from biomamba.eval import perplexity
    from tests.model_helpers import bpe_tokenizer

    corpus = [f"Patients {i} were randomised to aspirin or placebo for {i % 7 + 2} weeks." for i in range(40)]
    tok = bpe_tokenizer(tmp_path / "model", corpus)
    torch.manual_seed(0)
    config = BioMambaConfig.from_preset("tiny", d_model=64, n_layer=2, vocab_size=len(tok), initializer_range=0.5,
                                        bos_token_id=0, eos_token_id=0, pad_token_id=0)
    BioMambaForCausalLM(config).save_pretrained(tmp_path / "model")
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in corpus))
    bits = {}
    for precision in ("fp32", "int8", "int8-dynamic", "bf16-weights"):
        parser = argparse.ArgumentParser()
        perplexity.add_arguments(parser)
        out = tmp_path / f"{precision}.json"
        argv = ["--model", str(tmp_path / "model"), "--data", str(tmp_path / "docs.jsonl"), "--out", str(out),
                "--precision", precision, "--no-progress", "--no-wandb", "--device", "cpu"]
        assert perplexity.run(parser.parse_args(argv)) == 0
        payload = json.loads(out.read_text())
        assert payload["model"]["weights"] == ("float32" if precision == "fp32" else precision)
        bits[precision] = payload["results"][0]["bits_per_byte"]
    for precision in ("int8", "int8-dynamic", "bf16-weights"):
        assert bits[precision] != bits["fp32"]
        assert abs(bits[precision] - bits["fp32"]) <= BITS_PER_BYTE_BOUND * bits["fp32"], bits

