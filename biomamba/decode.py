"""Decoding on CPU near the weight-read bound: one compiled call per token, and weight-only int8 / bf16.

At batch 1 a decoded token reads every weight once, so its time is the weights' bytes over the memory
bandwidth plus whatever else runs per token. The torch step (MambaMixer._step, Mamba2Mixer._step) runs
some 40 small ops per layer and torch's gemv, reaching about a third of that bound here
(bench/decode_profile.py, bench/RESULTS.md). `fast_step` runs the same arithmetic as one compiled call
per token (kernels/cpu/decode_step.cpp: for every block RMSNorm, in_proj, conv step, SSM state step, gate,
out_proj and residual, then the final norm and the LM head), with activations and states in fp32.

It stays inside transformers' `generate`: BioMambaForCausalLM.forward takes this path for a cached
one-token step of a CPU model under no_grad (`applies`), and the cache, logits processors, beams and
stopping criteria are transformers' own. The prompt pass that generate runs first (an empty cache,
logits of the last position only: `prefill_applies`) runs the same compiled call over the prompt's
tokens: each weight is read once for all of them, the conv and state steps run token after token from
zero states, and the cache ends as the torch path leaves it. Anything else (training, full logits as
eval-ppl asks, output_hidden_states, inputs_embeds, a mask with pads, packed documents, CUDA, a
bf16/fp16 model) runs the torch path, as does `model.decode_kernel = "torch"`.

Rounded precisions (`quantize_weights(model, precision)`):
    "int8"          each weight row w is stored as round(w / s) in int8 with s = max|w| / 127 (one fp32
                    scale per output row), as llama.cpp's q8_0 does per block of 32
    "int8-dynamic"  int8 weights as "int8", and the activations entering in_proj, out_proj and the LM head
                    rounded to int8 too, in blocks of 32 (round_activations), as q8_0 rounds its
                    activations: at batch 1 the step then multiplies bytes with bytes (AVX2, AVX-512 VNNI)
    "bf16-weights"  each weight rounded to bfloat16
The linear layers of every block and the tied embedding / LM head are rounded in place (the model
keeps fp32 tensors holding the rounded values, so the prompt pass, eval-ppl and the decoding step all
score the same weights; under int8-dynamic forward pre-hooks round those layers' inputs on the torch
path too) and a packed copy is kept for the step to read: 1 or 2 bytes a weight instead of 4. Conv
weights, norms, A, D and dt biases stay fp32 (a few KB per layer). Packed copies are made once; train no
further after quantizing (quantize again to refresh them).

Pages: every token streams the step's weights once, and in 4 KB pages the TLB misses cost a 130m model
3-12% of its tokens/s here (bench/huge_pages.py). The packed copies are made in huge pages, and
use_fast_decode moves the fp32 weights there too (weights_in_huge_pages; biomamba/huge_pages.py).
"""
import contextlib
import weakref

import torch

from biomamba import huge_pages
from biomamba.flags import ROUNDED  # the --precision names, kept where the command flags are (no torch there)

ACTIVATION_BLOCK = 32  # int8-dynamic's activation blocks (kernels/cpu/decode_vectors.h kActBlock)
KERNELS = ("auto", "compiled", "torch")
# Longer prompts take the torch path (a GEMM and the chunked scan kernel): the compiled prompt pass reads each
# weight once and multiplies it with every token's row (kernels/cpu/decode_tiles.h), but steps the states
# token after token. 130m, one prompt, ms of the compiled pass against the torch path (2-vCPU Zen 4,
# 2026-12-06, fastest of 3): Mamba-2 fp32 at 64 / 128 / 256 tokens 126 / 234 / 456 against 158 / 238 / 423,
# Mamba-1 int8 130 / 250 / 490 against 166 / 294 / 446.
PREFILL_MAX_TOKENS = 128


def quantize(weight, precision):
    """(packed, scale): int8 rows with a fp32 scale each, or bfloat16 and None."""
    weight = weight.detach().float()
    if precision == "bf16-weights":
        return weight.to(torch.bfloat16).contiguous(), None
    if precision not in ("int8", "int8-dynamic"):
        raise ValueError(f"precision must be one of {ROUNDED}, got {precision!r}")
    scale = weight.abs().amax(dim=1).clamp_min(1e-12) / 127  # (m,)
    packed = torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8).contiguous()
    return packed, scale.contiguous()


def dequantize(packed, scale):
    return packed.float() if scale is None else packed.float() * scale[:, None]


def round_activations(x, block=ACTIVATION_BLOCK):
    """x rounded to int8 in blocks of `block` along its last dimension, as values: q * s with s = max|x_b| / 127
    and q = round(x / s) (half to even; 0 where s is 0). The compiled step rounds exactly so (Int8Activations)."""
    k = x.shape[-1]
    blocks = torch.nn.functional.pad(x, (0, -k % block)).unflatten(-1, (-1, block))
    scale = blocks.abs().amax(dim=-1, keepdim=True) / 127
    q = torch.where(scale > 0, torch.round(blocks / scale), 0)
    return (q * scale).flatten(-2)[..., :k]


def _round_input(module, args):
    return (round_activations(args[0]), *args[1:])


def activation_linears(model):
    """The linear layers whose inputs int8-dynamic rounds: in_proj, out_proj and the LM head (x_proj and
    dt_proj, a few per cent of Mamba-1's weights, keep fp32 inputs)."""
    linears = [model.lm_head]
    for layer in model.backbone.layers:
        linears += [layer.mixer.in_proj, layer.mixer.out_proj]
    return linears


def _set_activation_rounding(model, on):
    for linear in activation_linears(model):
        handle = vars(linear).pop("_round_input_hook", None)
        if handle is not None:
            handle.remove()
        if on:
            linear._round_input_hook = linear.register_forward_pre_hook(_round_input)


def step_linears(model):
    """The linear layers a decoding step reads, by module: every block's projections and the LM head."""
    linears = [model.lm_head]
    for layer in model.backbone.layers:
        mixer = layer.mixer
        linears += [mixer.in_proj, mixer.out_proj]
        if hasattr(mixer, "x_proj"):
            linears += [mixer.x_proj, mixer.dt_proj]
    return linears


@torch.no_grad()
def quantize_weights(model, precision):
    """Round the step's weights to `precision` (one of ROUNDED) in place and keep packed copies; under
    "int8-dynamic" the inputs of activation_linears are rounded from then on too (forward pre-hooks)."""
    if model.dtype != torch.float32:
        raise ValueError(f"precision {precision!r} starts from an fp32 model, this one is {model.dtype}")
    global _registrations
    _registrations += 1  # the step's field lists name the packed copies (_field_lists)
    linears, packed_copies = step_linears(model), []
    for linear in linears:
        packed, scale = quantize(linear.weight, precision)
        linear.weight.copy_(dequantize(packed, scale))  # the tied embedding follows the LM head
        packed_copies.append((packed, scale))
    # the packed copies side by side in huge pages: every token streams them (biomamba/huge_pages.py)
    for linear, paged, (_, scale) in zip(linears, huge_pages.copies(p for p, _ in packed_copies), packed_copies):
        linear.decode_weight = (paged, scale)
    _set_activation_rounding(model, precision == "int8-dynamic")
    model.decode_precision = precision
    return model


def _compiled_may_run(model, input_ids, inputs_embeds, labels, output_hidden_states) -> bool:
    """What a step and a prompt pass both ask: an fp32 CPU model under no_grad, token ids in, logits out."""
    if getattr(model, "decode_kernel", "auto") == "torch" or model.training or torch.is_grad_enabled():
        return False
    # A training run's samples: under CPU autocast the states are bf16, and FSDP's sharded parameters
    # hold no data outside its own forward; the torch step serves both (tests/test_pretrain.py, test_fsdp.py).
    if torch.is_autocast_enabled("cpu") or (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return False
    if input_ids is None or inputs_embeds is not None or labels is not None or output_hidden_states:
        return False
    return input_ids.dim() == 2 and input_ids.device.type == "cpu" and model.lm_head.weight.dtype == torch.float32


def applies(model, input_ids, inputs_embeds, cache, attention_mask, labels, output_hidden_states) -> bool:
    """Whether this forward call is a decoding step the compiled path serves (see the module docstring)."""
    if not _compiled_may_run(model, input_ids, inputs_embeds, labels, output_hidden_states):
        return False
    if input_ids.shape[1] != 1 or cache is None or not cache.has_previous_state(0):
        return False
    if cache.get_conv_state(0).dtype != torch.float32:
        return False
    if attention_mask is not None and not bool(attention_mask[:, -1:].all()):
        return False
    return _kernel_ready(model)


def prefill_applies(model, input_ids, inputs_embeds, cache, attention_mask, labels, output_hidden_states,
                    use_cache, logits_to_keep, seq_idx, position_ids) -> bool:
    """Whether this forward call is a prompt pass the compiled path serves: generate's first call (an empty
    cache to fill, the last position's logits only), every row a whole prompt (no pads, no packing)."""
    if not _compiled_may_run(model, input_ids, inputs_embeds, labels, output_hidden_states):
        return False
    if logits_to_keep != 1 or not use_cache or seq_idx is not None:
        return False
    from biomamba.modeling import documents_from_positions  # (modeling imports this module)
    if documents_from_positions(position_ids) is not None:  # packed documents: positions restart at 0
        return False
    if cache is not None and cache.has_previous_state(0):
        return False
    if input_ids.shape[1] > PREFILL_MAX_TOKENS:
        return False
    if attention_mask is not None and not bool(attention_mask.all()):
        return False
    return _kernel_ready(model)


def _kernel_ready(model) -> bool:
    """The extension builds here; with decode_kernel "auto" a failed build warns once and uses torch."""
    from biomamba.ops import BackendUnavailable
    from biomamba.ops.cpu_decode import extension
    try:
        extension()
        return True
    except BackendUnavailable as error:
        if getattr(model, "decode_kernel", "auto") == "compiled":
            raise
        import warnings
        warnings.warn(f"decoding with the torch step: {error}", stacklevel=3)
        model.decode_kernel = "torch"
        return False


# The field lists are built once and kept (_field_lists): rebuilt every call, they took 0.2 ms of a 130m token
# inside generate. They hold the parameter objects themselves, so an in-place change (an optimizer step,
# load_state_dict, `.data =`) reaches the kernel; a parameter, buffer or submodule registered anywhere
# (a weight or layer swapped, load_state_dict(assign=True)) is seen through torch's global registration
# hooks, quantize_weights bumps them too, and Mamba-1's A_log versions are checked every call (its lists hold
# -exp(A_log), derived).

_MISSING = object()


def _attr(module, name):
    """module.<name> for a parameter or submodule, read from the module's own _parameters / _modules dict:
    through nn.Module.__getattr__ each read costs about half a microsecond, and a layer's field list makes
    some 25 (27 us a Mamba-2 layer before, 2026-12-06). Anything else (a parametrization's property, a plain
    attribute) takes the ordinary getattr."""
    found = module._parameters.get(name, _MISSING)
    if found is _MISSING:
        found = module._modules.get(name, _MISSING)
    return getattr(module, name) if found is _MISSING else found


def _weight(linear):
    """(weight, scale) as the step reads them: the packed copy when quantized, else the fp32 parameter.
    decode_weight is a plain attribute (quantize_weights), read from the instance dict: getattr on a Module
    that lacks it raises and catches an AttributeError inside nn.Module.__getattr__ (3 us)."""
    packed = vars(linear).get("decode_weight")
    return packed if packed is not None else (_attr(linear, "weight"), None)


def _bias(module):
    return _float32(None if module is None else _attr(module, "bias"))


def _float32(tensor):
    return tensor if tensor is None or tensor.dtype == torch.float32 else tensor.float()


def _negative_exp_A(mixer):
    """-exp(A_log) in fp32, computed once per value of A_log: recomputing it every token (24 exp and neg ops
    over d_inner x d_state and fresh memory for the kernel to read) cost Mamba-1 130m about a fifth of
    its fp32 step. The key is A_log's storage and version counter, which every in-place write (an
    optimizer step, load_state_dict) bumps."""
    A_log = _attr(mixer, "A_log")
    key = _A_log_key(A_log)
    cached = getattr(mixer, "_decode_A", None)
    if cached is None or cached[0] != key:
        cached = (key, -torch.exp(A_log.detach().float()))
        mixer._decode_A = cached
    return cached[1]


def _A_log_key(A_log):
    """What changes whenever A_log's values may have: its storage, its version counter (every in-place write,
    an optimizer step or load_state_dict, bumps it) and its dtype."""
    return A_log.data_ptr(), A_log._version, A_log.dtype


_registrations = 0  # parameters, buffers and submodules registered in this process (_count_registration)


def _count_registration(*_):
    global _registrations
    _registrations += 1


for _hook in (torch.nn.modules.module.register_module_parameter_registration_hook,
              torch.nn.modules.module.register_module_buffer_registration_hook,
              torch.nn.modules.module.register_module_module_registration_hook):
    _hook(_count_registration)

# Where a layer's field list holds its conv state, -exp(A_log) and SSM state (the per-call entries). The Mamba-2
# kernel takes A_log itself (one exp per head a token): checking the 24 A_logs of a 130m model every call took
# 66 us of the Python between two bf16-weights tokens inside generate (16 generates in turns, 2026-12-07).
PER_CALL_FIELDS = {"Mamba1": (6, 12, 14), "Mamba2": (6, None, 10)}


def _keepable(layer) -> bool:
    """Whether a layer's field list may be kept: every tensor in it one of its float32 parameters, or a packed
    copy (a parametrization computes its weight anew on each read, and _bias converts other dtypes)."""
    parametrized = any(torch.nn.utils.parametrize.is_parametrized(module) for module in layer.modules())
    return not parametrized and all(p.dtype == torch.float32 for p in layer.parameters())


def _field_lists(model, cache):
    """Every layer's field list (_mamba1_fields / _mamba2_fields) with its states in `cache`, from the lists kept
    on the model while no registration happened since (see above); Mamba-1's -exp(A_log) is checked every call."""
    cfg, layers = model.config, model.backbone.layers
    build = (lambda layer, conv, ssm: _mamba2_fields(layer, conv, ssm, cfg.rmsnorm)) if cfg.ssm_layer == "Mamba2" \
        else _mamba1_fields
    key = (_registrations, cfg.ssm_layer, cfg.rmsnorm, len(layers))
    kept = vars(model).get("_decode_fields")
    if kept is None or kept[0] != key:  # (key, the lists, or None where a layer's may not be kept)
        keepable = all(_keepable(layer) for layer in layers)
        kept = (key, [(build(layer, None, None), layer.mixer, layer.mixer.layer_idx) for layer in layers]
                if keepable else None)
        model._decode_fields = kept
    if kept[1] is None:
        return [build(layer, cache.get_conv_state(layer.mixer.layer_idx),
                      cache.get_recurrent_state(layer.mixer.layer_idx)) for layer in layers]
    conv_at, A_at, ssm_at = PER_CALL_FIELDS[cfg.ssm_layer]
    lists = []
    for fields, mixer, index in kept[1]:
        fields = fields.copy()
        fields[conv_at], fields[ssm_at] = cache.get_conv_state(index), cache.get_recurrent_state(index)
        if A_at is not None:
            fields[A_at] = _negative_exp_A(mixer)
        lists.append(fields)
    return lists


def _mamba1_fields(layer, conv_state, ssm_state):
    """One Mamba-1 layer's tensors in decode_step.cpp's order (mamba1_layer); the conv weight (d, 1, w) is read
    flat there."""
    mixer = _attr(layer, "mixer")
    in_proj, conv1d, out_proj = _attr(mixer, "in_proj"), _attr(mixer, "conv1d"), _attr(mixer, "out_proj")
    dt_proj = _attr(mixer, "dt_proj")
    return [_attr(_attr(layer, "norm"), "weight"), *_weight(in_proj), _bias(in_proj), _attr(conv1d, "weight"),
            _bias(conv1d), conv_state, *_weight(_attr(mixer, "x_proj")), *_weight(dt_proj), _attr(dt_proj, "bias"),
            _negative_exp_A(mixer), _attr(mixer, "D"), ssm_state, *_weight(out_proj), _bias(out_proj)]


def _mamba2_fields(layer, conv_state, ssm_state, rmsnorm):
    """One Mamba-2 layer's tensors in decode_step.cpp's order (mamba2_layer)."""
    mixer = _attr(layer, "mixer")
    in_proj, conv1d, out_proj = _attr(mixer, "in_proj"), _attr(mixer, "conv1d"), _attr(mixer, "out_proj")
    return [_attr(_attr(layer, "norm"), "weight"), *_weight(in_proj), _bias(in_proj), _attr(conv1d, "weight"),
            _bias(conv1d), conv_state, _attr(mixer, "dt_bias"), _float32(_attr(mixer, "A_log")), _attr(mixer, "D"),
            ssm_state, _attr(_attr(mixer, "norm"), "weight") if rmsnorm else None, *_weight(out_proj), _bias(out_proj)]


# Inside generate, once the compiled step runs, torch's own ops between the steps (generate's copy of the
# logits, its logits processors and argmax over the vocabulary, the embedding) run on one thread, and the
# step's team keeps the count the user set. Under OMP_WAIT_POLICY=PASSIVE (biomamba/threads.py) each of
# those ops on two threads woke the sleeping second thread, some 65 us late on a 2-vCPU Zen 4 VM, for work
# of 10-20 us: 130m Mamba-2 bf16-weights spent 1.39 ms a token outside the step with two and 1.27 with one
# (2026-12-07, 16 generates of each in turns). On a shared machine the gain is larger: there each op waited
# for the thread a busy neighbour had put aside (130m int8-dynamic beside one `python -c "while True: pass"`,
# 2026-12-06: 31-36 tok/s with the step alone on one thread, 66-71 with the whole process on one).
# Only inside generate, which sets them back on its way out: a loop of the user's own calls keeps its threads.
_threads_before = None  # torch's intra-op threads as the user set them, while lowered to one
_generating = 0  # BioMambaForCausalLM.generate calls in progress (generating)


@contextlib.contextmanager
def generating():
    """Around BioMambaForCausalLM.generate: its compiled steps lower torch's own threads to one (_team_size),
    and the threads are set back on the way out."""
    global _generating
    _generating += 1
    try:
        yield
    finally:
        _generating -= 1
        if _generating == 0:
            restore_threads()


def _team_size() -> int:
    """The step's team: torch's intra-op threads as the user set them. Inside generate, torch's own count is
    lowered to one until generate returns (see above)."""
    global _threads_before
    if not _generating:
        return torch.get_num_threads()
    if _threads_before is None and torch.get_num_threads() > 1:
        _threads_before = torch.get_num_threads()
        torch.set_num_threads(1)
    return _threads_before or 1


def restore_threads():
    """torch's intra-op threads back as they were before the step lowered them."""
    global _threads_before
    if _threads_before is not None:
        torch.set_num_threads(_threads_before)
        _threads_before = None


def fast_step(model, input_ids, cache):
    """Logits (b, 1, vocab) after the tokens input_ids (b, l): one cached decoding step when l is 1, else a
    prompt pass from the cache's states; the states advance in place.

    One compiled call runs every block and the LM head (one parallel region per call: see
    kernels/cpu/decode_step.cpp for why), with the arguments kept on the cache (StepArguments)."""
    arguments = StepArguments.of(model, cache)
    hidden = arguments.embed(input_ids.reshape(-1))  # (b * steps, d_model)
    return arguments.run(hidden, input_ids.shape[1], _team_size()).unsqueeze(1)


class StepArguments:
    """Everything a cache's compiled steps pass to the kernel but the tokens: the layers' field lists with
    the cache's states, the settings from the config and the LM head, converted for the kernel once (its
    Plan), and the embedding. Built at a cache's first step and kept on the cache while they still hold: the
    same model, no parameter, buffer or submodule registered since (_field_lists), every A_log behind a
    -exp(A_log) in the lists as it was (_A_log_key; Mamba-1), and the cache's states the same tensors (a beam
    search's reordering puts new ones in the cache). Rebuilt every step they took 0.2-0.3 ms of a 130m
    token inside generate (config reads, cache getters, the embedding module), 2-3% of a bf16-weights token.
    The settings (the config's, the norms' eps) are read when they are built, as the cache's shapes are."""

    def __init__(self, model, cache):
        from biomamba.ops.cpu_decode import extension

        cfg, backbone, ext = model.config, model.backbone, extension()
        self.model = weakref.ref(model)
        self.registrations = _registrations
        self.layers = _field_lists(model, cache)
        self.kept = vars(model)["_decode_fields"][1] is not None  # else rebuilt every call (_keepable)
        conv_at, A_at, ssm_at = PER_CALL_FIELDS[cfg.ssm_layer]
        self.states = [(layer.mixer.layer_idx, fields[conv_at], fields[ssm_at])
                       for layer, fields in zip(backbone.layers, self.layers)]
        A_logs = [_attr(layer.mixer, "A_log") for layer in backbone.layers] if A_at is not None else []
        self.A_logs = [(A_log, _A_log_key(A_log)) for A_log in A_logs]  # those behind a -exp(A_log) in the lists
        embedding = backbone.embedding
        self.embedding_weight = _attr(embedding, "weight") if type(embedding) is torch.nn.Embedding \
            and embedding.max_norm is None else None
        self.embedding = embedding
        head = (backbone.norm_f.weight, backbone.norm_f.eps, *_weight(model.lm_head),
                vars(model).get("decode_precision") == "int8-dynamic")
        eps = backbone.layers[0].norm.eps
        if cfg.ssm_layer == "Mamba2":
            low, high = cfg.dt_limit
            self.plan = ext.mamba2_plan(self.layers, eps, low, high, (low, high) != (0.0, float("inf")), cfg.ngroups,
                                        cfg.rms_norm_eps, cfg.norm_before_gate, *head)
        else:
            self.plan = ext.mamba1_plan(self.layers, eps, *head)

    @classmethod
    def of(cls, model, cache):
        """The arguments kept on `cache`, or new ones (kept there) when those no longer hold."""
        arguments = vars(cache).get("_biomamba_step")
        if arguments is None or not arguments.hold(model, cache):
            arguments = cls(model, cache)
            if arguments.kept:
                cache._biomamba_step = arguments
        return arguments

    def hold(self, model, cache) -> bool:
        if self.model() is not model or self.registrations != _registrations:
            return False
        if any(_A_log_key(A_log) != key for A_log, key in self.A_logs):
            return False
        conv_state, ssm_state = cache.get_conv_state, cache.get_recurrent_state
        return all(conv_state(index) is conv and ssm_state(index) is ssm for index, conv, ssm in self.states)

    def embed(self, ids):
        if self.embedding_weight is None:
            return self.embedding(ids).float().contiguous()
        return self.embedding_weight.index_select(0, ids).float()

    def run(self, hidden, steps, threads):
        return self.plan(hidden, steps, threads)  # the arguments were converted for C++ once (decode_step.cpp Plan)

    def __deepcopy__(self, memo):
        return None  # a copied cache builds its own (copying would copy the model's weights kept here)

    def __reduce__(self):
        return type(None), ()


def fast_prefill(model, input_ids, cache):
    """Logits (b, 1, vocab) of a prompt's last position, filling `cache` (a new one when None) with the
    states the torch path would leave: each layer's last d_conv conv inputs (zeros before the prompt) and
    its SSM state, both started from zeros."""
    from biomamba.generation import new_cache

    cfg, b = model.config, input_ids.shape[0]
    cache = new_cache(cfg) if cache is None else cache
    state_shape = (b, cfg.nheads, cfg.headdim, cfg.d_state) if cfg.ssm_layer == "Mamba2" else (
        b, cfg.d_inner, cfg.d_state)
    zero = torch.zeros(())  # expanded: the cache makes (and zeroes) its own tensors of these shapes
    with one_torch_thread():
        for layer in model.backbone.layers:
            mixer = layer.mixer
            conv_channels = mixer.conv1d.weight.shape[0]
            cache.update_conv_state(zero.expand(b, conv_channels, 1), mixer.layer_idx, conv_kernel_size=cfg.d_conv)
            cache.update_recurrent_state(zero.expand(state_shape), mixer.layer_idx)
    return fast_step(model, input_ids, cache), cache


@contextlib.contextmanager
def one_torch_thread():
    """torch's own ops on one thread meanwhile. Under OMP_WAIT_POLICY=PASSIVE (biomamba/threads.py) every op
    large enough to run in parallel wakes the sleeping second thread: the 48 state tensors a 130m Mamba-2 cache
    makes and fills (786 KB each) took 3.2-3.8 ms on two threads and 0.95 ms on one (a 2-vCPU Zen 4,
    2026-12-07), where the whole prompt pass takes about 45."""
    threads = torch.get_num_threads()
    if threads > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if threads > 1:
            torch.set_num_threads(threads)


def use_fast_decode(model, precision="fp32", kernel="auto"):
    """Set how `model` decodes on CPU: precision "fp32" or one of ROUNDED (quantize_weights), and the
    step's kernel ("auto": compiled when it builds, "compiled": an error when it does not, "torch").
    The weights the step streams move into huge pages (weights_in_huge_pages)."""
    if kernel not in KERNELS:
        raise ValueError(f"decode kernel must be one of {KERNELS}, got {kernel!r}")
    if precision not in ("fp32", *ROUNDED):
        raise ValueError(f"decode precision must be fp32 or one of {ROUNDED}, got {precision!r}")
    model.decode_kernel = kernel
    if precision in ROUNDED:
        quantize_weights(model, precision)
    weights_in_huge_pages(model)
    return model


@torch.no_grad()
def weights_in_huge_pages(model):
    """Move the fp32 weights a step reads (those of step_linears without a packed copy, 2 MB or more) into
    huge pages (biomamba/huge_pages.py): each parameter keeps its identity (optimizers, ties and the field
    lists still hold it) and takes a copy of its values in a mapping of its own, so no two parameters share
    storage (save_pretrained). Packed copies are made there already (quantize_weights)."""
    for linear in step_linears(model):
        if "decode_weight" in vars(linear) or torch.nn.utils.parametrize.is_parametrized(linear, "weight"):
            continue  # a parametrization computes its weight on each read: nothing stored to move
        weight = _attr(linear, "weight")
        if weight.numel() * weight.element_size() >= huge_pages.HUGE_PAGE:
            weight.data = huge_pages.copies([weight])[0]
