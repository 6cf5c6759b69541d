"""BioMamba: the Mamba language model, smallest parts first.

Code names and the paper's symbols (Gu & Dao 2023, Algorithm 2), as in johnma2006/mamba-minimal:
    b, l        batch size, sequence length
    d_model     D, the residual width;  d_inner = E * D (expand E = 2)
    n, d_state  N, the SSM state size;  dt_rank = R = ceil(D / 16)
    delta (dt)  the input-dependent step size;  A, B, C, D as in the paper (A = -exp(A_log))
Parameter names equal state-spaces/mamba's (in_proj, conv1d, x_proj, dt_proj, A_log, D, out_proj,
norm, norm_f, backbone.embedding, lm_head), so its checkpoints load by copying keys; HF's
`MambaForCausalLM` differs only in `backbone.embeddings` (mapped in checkpoints.py).
Official implementation: mamba_ssm/modules/mamba_simple.py (Mamba.forward, Mamba.step).

The block's mixer is chosen by `config.ssm_layer`, as mamba_ssm's ssm_cfg["layer"] chooses it:
"Mamba1" is MambaMixer below, "Mamba2" is Mamba2Mixer (biomamba/mamba2.py, the SSD mixer); every
other part (block, backbone, heads, generation, checkpoints) is the same for both.

Under transformers' tools the models behave as transformers' Mamba does: the causal LM is a
GenerationMixin (see generation.py), `return_dict=False` gives tuples, `output_hidden_states` gives
each block's output then the final normed state, `use_cache` defaults to the config's outside
training, and the loss honours Trainer's `num_items_in_batch`.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_utils import slice_logits_to_keep
from transformers.utils import ModelOutput

from biomamba import decode, ops
from biomamba.config import BioMambaConfig
from biomamba.encoding import encode
from biomamba.resolve import find_tokenizer_dir, load_tokenizer
from biomamba.generation import has_right_padding, left_align, mask_padding, new_cache, restore_prompt_layout

LOW_PRECISION = (torch.float16, torch.bfloat16)


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class SSMMixer(nn.Module):
    """What the mixers of both block types share: parameters that stay fp32 through a cast to
    bf16/fp16 and take no weight decay (mamba_ssm's A_log, D, and Mamba-2's dt_bias), and
    mamba_ssm's initialisation of the SSM parameters (`init_ssm_parameters`)."""

    FP32_PARAMETERS = ("A_log", "D")

    def __init__(self):
        super().__init__()
        # {op: backend} of this mixer's latest whole-sequence forward, which a run records
        # (train/run.py): kept on the model, not in a global of biomamba.ops that any model overwrites
        self.backends_used = {}

    def _mark_fp32_parameters(self):
        for name in self.FP32_PARAMETERS:
            getattr(self, name)._no_weight_decay = True

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        for name in self.FP32_PARAMETERS:
            p = getattr(self, name)
            if p.dtype in LOW_PRECISION:
                p.data = p.data.float()
        return self

    def init_ssm_parameters(self):
        raise NotImplementedError


class MambaMixer(SSMMixer):
    """The selective SSM block: in_proj -> causal conv -> selective scan (gated by z) -> out_proj."""

    def __init__(self, config: BioMambaConfig, layer_idx: int):
        super().__init__()
        self.config, self.layer_idx = config, layer_idx
        d_inner, n, rank = config.d_inner, config.d_state, config.dt_rank
        self.in_proj = nn.Linear(config.d_model, 2 * d_inner, bias=config.bias)
        self.conv1d = nn.Conv1d(d_inner, d_inner, config.d_conv, groups=d_inner,
                                padding=config.d_conv - 1, bias=config.conv_bias)
        self.x_proj = nn.Linear(d_inner, rank + 2 * n, bias=False)
        self.dt_proj = nn.Linear(rank, d_inner, bias=True)
        # A_log and D stay fp32 (SSMMixer._apply) and take no weight decay.
        self.A_log = nn.Parameter(torch.empty(d_inner, n, dtype=torch.float32))
        self.D = nn.Parameter(torch.empty(d_inner, dtype=torch.float32))
        self._mark_fp32_parameters()
        self.out_proj = nn.Linear(d_inner, config.d_model, bias=config.bias)

    def init_ssm_parameters(self):
        _init_mixer(self, self.config)

    def forward(self, hidden_states, attention_mask=None, cache=None, seq_idx=None):
        """hidden_states: (b, l, d_model) -> (b, l, d_model); pads enter neither the conv nor the scan,
        and with seq_idx (b, l) packed documents never see each other (conv and scan reset)."""
        xz = self.in_proj(hidden_states).transpose(1, 2)  # (b, 2E*D, l)
        x, z = xz.chunk(2, dim=1)  # (b, d_inner, l) each
        x = mask_padding(x, attention_mask)
        A = -torch.exp(self.A_log.float())  # (d_inner, n)
        if cache is not None and cache.has_previous_state(self.layer_idx):
            y = self._steps(x, z, A, cache)
        else:
            y = self._scan(x, z, A, attention_mask, cache, seq_idx)
        return self.out_proj(y.transpose(1, 2).to(hidden_states.dtype))  # (b, l, d_model)

    def _ssm_params(self, x):
        """x: (b, l, d_inner) -> dt (b, l, R), B (b, l, n), C (b, l, n)."""
        n = self.config.d_state
        return torch.split(self.x_proj(x), [self.config.dt_rank, n, n], dim=-1)

    def _scan(self, x, z, A, attention_mask, cache, seq_idx=None):
        """Whole-sequence path; fills `cache` with the final conv and SSM states when given."""
        if cache is not None:  # keeps the last d_conv inputs of the conv, left-padded with zeros
            cache.update_conv_state(x, self.layer_idx, conv_kernel_size=self.config.d_conv)
        backend = ops.resolve_backend(self.config.scan_backend, x.device, seq_idx=seq_idx is not None)
        self.backends_used.update(causal_conv1d=ops.resolve_conv_backend(), selective_scan=backend)
        x = ops.causal_conv1d(x, self.conv1d.weight.squeeze(1), self.conv1d.bias, activation="silu",
                              seq_idx=seq_idx)
        x = mask_padding(x, attention_mask).transpose(1, 2)  # (b, l, d_inner)
        dt, B, C = self._ssm_params(x)
        dt = self.dt_proj.weight @ dt.transpose(1, 2)  # (b, d_inner, l); bias added in the scan
        y = ops.selective_scan(
            x.transpose(1, 2), dt, A, B.transpose(1, 2), C.transpose(1, 2), self.D.float(), z=z,
            delta_bias=self.dt_proj.bias.float(), delta_softplus=True,
            return_last_state=cache is not None, backend=backend, seq_idx=seq_idx)
        if cache is not None:
            y, last_state = y
            cache.update_recurrent_state(last_state, self.layer_idx)
        return y  # (b, d_inner, l)

    def _steps(self, x, z, A, cache):
        """Tokens that continue a filled cache, one recurrent step each: (b, d_inner, l) -> same."""
        conv_state = cache.get_conv_state(self.layer_idx)  # (b, d_inner, d_conv), updated in place
        ssm_state = cache.get_recurrent_state(self.layer_idx)  # (b, d_inner, n), updated in place
        if x.shape[-1] == 1:  # the decoding step (skips the stack's copy)
            return self._step(x[:, :, 0], z[:, :, 0], A, conv_state, ssm_state).unsqueeze(-1)
        steps = [self._step(x[:, :, t], z[:, :, t], A, conv_state, ssm_state) for t in range(x.shape[-1])]
        return torch.stack(steps, dim=-1)

    def _step(self, x, z, A, conv_state, ssm_state):
        """One decoding step: x, z (b, d_inner) -> y (b, d_inner); updates both states in place."""
        x = ops.causal_conv1d_update(x, conv_state, self.conv1d.weight.squeeze(1), self.conv1d.bias, "silu")
        dt, B, C = self._ssm_params(x)
        dt = F.linear(dt, self.dt_proj.weight)  # (b, d_inner)
        return ops.selective_state_update(ssm_state, x, dt, A, B, C, self.D.float(), z=z,
                                          dt_bias=self.dt_proj.bias.float(), dt_softplus=True)


class MambaBlock(nn.Module):
    """Pre-norm residual block: h + mixer(norm(h)), residual kept in fp32 when configured."""

    def __init__(self, config, layer_idx):
        super().__init__()
        self.residual_in_fp32 = config.residual_in_fp32
        self.norm = RMSNorm(config.d_model, eps=config.rms_norm_eps)
        self.mixer = mixer_class(config.ssm_layer)(config, layer_idx)

    def forward(self, hidden_states, attention_mask=None, cache=None, seq_idx=None):
        residual = hidden_states.float() if self.residual_in_fp32 else hidden_states
        mixed = self.mixer(self.norm(hidden_states.to(self.norm.weight.dtype)), attention_mask, cache, seq_idx)
        return residual + mixed


def mixer_class(ssm_layer: str):
    """The mixer of a block type (config.ssm_layer)."""
    if ssm_layer == "Mamba2":
        from biomamba.mamba2 import Mamba2Mixer  # imported here: it builds on this module's parts
        return Mamba2Mixer
    return MambaMixer


@dataclass
class BioMambaOutput(ModelOutput):
    last_hidden_state: torch.Tensor | None = None
    cache_params: object | None = None  # a transformers Cache (generation.new_cache)
    hidden_states: tuple | None = None


@dataclass
class BioMambaCausalLMOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    cache_params: object | None = None
    hidden_states: tuple | None = None


def _returned(output: ModelOutput, return_dict, config):
    """The output object, or its tuple of non-None fields when return_dict (else config's) is False."""
    return_dict = config.return_dict if return_dict is None else return_dict
    return output if return_dict else output.to_tuple()


class BioMambaPreTrainedModel(PreTrainedModel):
    config_class = BioMambaConfig
    config: BioMambaConfig
    base_model_prefix = "backbone"
    _no_split_modules = ["MambaBlock"]
    _is_stateful = True

    @torch.no_grad()
    def _init_weights(self, module):
        """mamba_ssm's initialisation (mamba_simple.Mamba / mamba2.Mamba2 __init__, models/mixer_seq_simple)."""
        cfg = self.config
        if isinstance(module, SSMMixer):
            module.init_ssm_parameters()
        elif isinstance(module, nn.Linear) and module.bias is not None:
            if not getattr(module.bias, "_no_reinit", False):
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=cfg.initializer_range)
        elif isinstance(module, RMSNorm):
            nn.init.ones_(module.weight)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """Load our directories, HF `MambaForCausalLM` directories or state-spaces `mamba_ssm` ones."""
        from biomamba.checkpoints import load_pretrained
        return load_pretrained(cls, pretrained_model_name_or_path, **kwargs)


def _init_mixer(mixer, cfg):
    # 1. S4D-real A: A[d, n] = n + 1, stored as A_log so that A = -exp(A_log) stays negative.
    n = torch.arange(1, cfg.d_state + 1, dtype=torch.float32).repeat(cfg.d_inner, 1)
    mixer.A_log.copy_(torch.log(n))
    mixer.D.fill_(1.0)
    # 2. dt_proj weight ~ U(-s, s) (or constant s) with s = dt_rank^-0.5 * dt_scale.
    std = cfg.dt_rank ** -0.5 * cfg.dt_scale
    if cfg.dt_init == "constant":
        nn.init.constant_(mixer.dt_proj.weight, std)
    else:
        nn.init.uniform_(mixer.dt_proj.weight, -std, std)
    # 3. dt bias = softplus^-1(dt), dt log-uniform in [dt_min, dt_max].
    mixer.dt_proj.bias.copy_(init_dt_bias(cfg.d_inner, cfg))
    mixer.dt_proj.bias._no_reinit = True
    if mixer.in_proj.bias is not None:
        nn.init.zeros_(mixer.in_proj.bias)
    # 4. out_proj: kaiming-uniform, scaled by 1/sqrt(n_layer).
    init_out_proj(mixer.out_proj, cfg)


def init_dt_bias(size: int, cfg) -> torch.Tensor:
    """softplus^-1(dt) for `size` values of dt log-uniform in [dt_min, dt_max], floored at
    dt_init_floor, so that softplus(dt + bias) starts in that range (both block types)."""
    log_min, log_max = math.log(cfg.dt_min), math.log(cfg.dt_max)
    dt = torch.exp(torch.rand(size) * (log_max - log_min) + log_min).clamp(min=cfg.dt_init_floor)
    return dt + torch.log(-torch.expm1(-dt))


def init_out_proj(out_proj: nn.Linear, cfg):
    """Kaiming-uniform, divided by sqrt(n_layer) (GPT-2's prenorm-residual rescale, as mamba_ssm's
    _init_weights does for both block types)."""
    nn.init.kaiming_uniform_(out_proj.weight, a=math.sqrt(5))
    if cfg.rescale_prenorm_residual:
        out_proj.weight /= math.sqrt(cfg.n_layer)
    if out_proj.bias is not None:
        nn.init.zeros_(out_proj.bias)


class BioMambaModel(BioMambaPreTrainedModel):
    """The backbone: embedding -> n_layer MambaBlocks (Mamba-1 or Mamba-2 mixers) -> final RMSNorm."""

    def __init__(self, config: BioMambaConfig):
        super().__init__(config)
        self.embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.layers = nn.ModuleList(MambaBlock(config, i) for i in range(config.n_layer))
        self.norm_f = RMSNorm(config.d_model, eps=config.rms_norm_eps)
        self.post_init()

    def get_input_embeddings(self):
        return self.embedding

    def set_input_embeddings(self, value):
        self.embedding = value

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, cache_params=None,
                use_cache=None, output_hidden_states=None, return_dict=None, seq_idx=None, position_ids=None,
                **unused):
        """last_hidden_state (b, l, d_model); hidden_states: each block's output, then the final norm's.

        seq_idx (b, l): ids of packed documents; the scan and conv state reset where the id changes, so
        no document sees another. Without it, position ids that restart at 0 inside a row and no
        attention mask (transformers' padding-free batches, DataCollatorWithFlattening) mean the same.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if seq_idx is None and attention_mask is None:
            seq_idx = documents_from_positions(position_ids)
        if use_cache is None:  # transformers' Mamba: the config's choice, never while training
            use_cache = self.config.use_cache and not self.training
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        hidden = self.embedding(input_ids) if inputs_embeds is None else inputs_embeds  # (b, l, d)
        if use_cache and cache_params is None:
            cache_params = new_cache(self.config)
        all_hidden = () if output_hidden_states else None
        for layer in self.layers:
            hidden = layer(hidden, attention_mask, cache_params, seq_idx)
            if output_hidden_states:
                all_hidden += (hidden,)
        hidden = self.norm_f(hidden.to(self.norm_f.weight.dtype))
        if output_hidden_states:
            all_hidden += (hidden,)
        output = BioMambaOutput(last_hidden_state=hidden, cache_params=cache_params if use_cache else None,
                                hidden_states=all_hidden)
        return _returned(output, return_dict, self.config)


def documents_from_positions(position_ids):
    """Document ids (b, l) from position ids that restart at 0 within a row; None when none restarts
    (an ordinary batch: nothing to reset)."""
    if position_ids is None or position_ids.dim() != 2:
        return None
    starts = position_ids == 0
    if not bool(starts[:, 1:].any()):
        return None
    return torch.cumsum(starts, dim=-1)


def causal_lm_loss(logits, labels, attention_mask=None, num_items_in_batch=None):
    """Next-token cross-entropy, labels shifted inside; -100 targets and padding never score.

    A target scores when it and the position predicting it are both real tokens: under left
    padding a row's first token would be predicted from a pad, and alone it is never predicted.
    The mean over scored targets, or their sum / num_items_in_batch when given, as transformers'
    models do (Trainer passes the count over all gradient-accumulation micro-batches).
    """
    targets = labels[:, 1:]  # (b, l-1)
    if attention_mask is not None:
        real = attention_mask.bool()
        targets = targets.masked_fill(~(real[:, 1:] & real[:, :-1]), -100)
    reduction = "mean" if num_items_in_batch is None else "sum"
    loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=-100,
                           reduction=reduction)
    if num_items_in_batch is not None:
        loss = loss / torch.as_tensor(num_items_in_batch, device=loss.device)
    return loss


# The keyword arguments transformers' generate passes to prepare_inputs_for_generation on a plain cached step.
_STEP_KWARGS = frozenset({"next_sequence_length", "position_ids", "logits_to_keep"})


def _plain_step(model, input_ids, inputs_embeds, cache_params, kwargs) -> bool:
    """Whether generate's next call is a one-token cached step with nothing but the arguments of _STEP_KWARGS,
    on the model's device: _step_inputs then gives what GenerationMixin.prepare_inputs_for_generation gives
    (tests/test_model_common.py compares them on every step of greedy, sampled and beam generates), without
    its per-call checks (the model's device found by walking its parameters, config reads): 0.1 ms of a
    130m CPU token, 1.4% of a bf16-weights one (2026-12-07)."""
    return (inputs_embeds is None and cache_params is not None and kwargs.get("next_sequence_length") == 1
            and kwargs.keys() <= _STEP_KWARGS and input_ids.device == model.lm_head.weight.device)


def _step_inputs(input_ids, cache_params, kwargs):
    inputs = {"input_ids": input_ids[:, -1:].clone(memory_format=torch.contiguous_format),
              "cache_params": cache_params, "use_cache": True, "attention_mask": None}
    if (position_ids := kwargs.get("position_ids")) is not None:
        inputs["position_ids"] = position_ids[..., -1:].clone(memory_format=torch.contiguous_format)
    if "logits_to_keep" in kwargs:
        inputs["logits_to_keep"] = kwargs["logits_to_keep"]
    return inputs


class BioMambaForCausalLM(BioMambaPreTrainedModel, GenerationMixin):
    """The backbone with a tied LM head (lm_head.weight is backbone.embedding.weight)."""

    _tied_weights_keys = {"lm_head.weight": "backbone.embedding.weight"}

    def __init__(self, config: BioMambaConfig):
        super().__init__(config)
        self.backbone = BioMambaModel(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.backbone.embedding

    def set_input_embeddings(self, value):
        self.backbone.embedding = value

    def get_output_embeddings(self):
        return self.lm_head

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, cache_params=None,
                labels=None, output_hidden_states=None, return_dict=None, use_cache=None,
                logits_to_keep=0, num_items_in_batch=None, seq_idx=None, position_ids=None, **unused):
        """logits: (b, l, vocab) in fp32 (the last `logits_to_keep` positions when > 0); loss when
        labels are given (see causal_lm_loss). Arguments in transformers' MambaForCausalLM order;
        seq_idx / position_ids: packed documents (see BioMambaModel.forward)."""
        if decode.applies(self, input_ids, inputs_embeds, cache_params, attention_mask, labels, output_hidden_states):
            logits = decode.fast_step(self, input_ids, cache_params)  # the compiled CPU decoding step
            return _returned(BioMambaCausalLMOutput(logits=logits, cache_params=cache_params), return_dict, self.config)
        if decode.prefill_applies(self, input_ids, inputs_embeds, cache_params, attention_mask, labels,
                                  output_hidden_states, use_cache, logits_to_keep, seq_idx, position_ids):
            logits, cache = decode.fast_prefill(self, input_ids, cache_params)  # generate's compiled prompt pass
            return _returned(BioMambaCausalLMOutput(logits=logits, cache_params=cache), return_dict, self.config)
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                            cache_params=cache_params, use_cache=use_cache,
                            output_hidden_states=output_hidden_states, return_dict=True, seq_idx=seq_idx,
                            position_ids=position_ids)
        hidden = slice_logits_to_keep(out.last_hidden_state, logits_to_keep)
        logits = self.lm_head(hidden.to(self.lm_head.weight.dtype)).float()
        loss = None
        if labels is not None:
            loss = causal_lm_loss(logits, labels, attention_mask, num_items_in_batch)
        output = BioMambaCausalLMOutput(loss=loss, logits=logits, cache_params=out.cache_params,
                                        hidden_states=out.hidden_states)
        return _returned(output, return_dict, self.config)

    def prepare_inputs_for_generation(self, input_ids, inputs_embeds=None, use_cache=None, cache_params=None,
                                      attention_mask=None, is_first_iteration=False, **kwargs):
        if use_cache and not is_first_iteration and _plain_step(self, input_ids, inputs_embeds, cache_params, kwargs):
            return _step_inputs(input_ids, cache_params, kwargs)
        model_inputs = super().prepare_inputs_for_generation(
            input_ids, inputs_embeds=inputs_embeds, use_cache=use_cache, cache_params=cache_params,
            attention_mask=attention_mask, is_first_iteration=is_first_iteration, **kwargs)
        if use_cache and not is_first_iteration:
            # A step feeds one real token per row to the cached state: the prompt's mask is spent.
            model_inputs["attention_mask"] = None
        return model_inputs

    def _prepare_position_ids_for_generation(self, inputs_tensor, model_kwargs):
        """None: generate's own position ids (an arange, or the mask's counts) never mark packed documents,
        the one thing this model reads positions for (documents_from_positions, and only without a mask,
        where generate's count up from 0 in every row). Made, they were grown every token (0.13 ms by the timer of
        transformers' _update_model_kwargs_for_generation, 130m on CPU, 2026-12-07) and sliced. Position ids a
        caller passes to generate still reach the forward."""
        return None

    def generate(self, inputs=None, generation_config=None, **kwargs):
        """transformers' `generate` (every argument works; see biomamba/generation.py).

        Prompts may be padded on either side. Right-padded rows are left-aligned before decoding,
        and the returned rows keep the prompt columns as given, followed by the new tokens.
        """
        input_ids = kwargs.pop("input_ids", inputs)
        attention_mask = kwargs.get("attention_mask")
        with decode.generating():  # the compiled step may lower torch's threads on a busy machine meanwhile
            if input_ids is None or attention_mask is None or not has_right_padding(attention_mask):
                return super().generate(input_ids, generation_config, **kwargs)
            aligned_ids, kwargs["attention_mask"], shift = left_align(input_ids, attention_mask)
            output = super().generate(aligned_ids, generation_config, **kwargs)
        if isinstance(output, torch.Tensor):
            return restore_prompt_layout(output, shift, input_ids.shape[1])
        output.sequences = restore_prompt_layout(output.sequences, shift, input_ids.shape[1])
        return output
# ----------------------------------------------------------------------------- thin heads

def pool(hidden, attention_mask, how="last"):
    """(b, l, d) -> (b, d): the last real token (padding on either side) or the mean over real tokens."""
    if attention_mask is None:
        return hidden[:, -1] if how == "last" else hidden.mean(1)
    mask = attention_mask.to(hidden.dtype)
    if how == "mean":
        return (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp_min(1)
    positions = torch.arange(hidden.shape[1], device=hidden.device)
    last = torch.where(attention_mask.bool(), positions, -1).max(dim=1).values  # (b,) last real index
    if bool((last < 0).any()):
        raise ValueError("a row of attention_mask has no real token")
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


@dataclass
class BioMambaSequenceClassifierOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    pooled: torch.Tensor | None = None


def sequence_loss(logits, labels, problem_type):
    """transformers' losses per config.problem_type: cross-entropy (single label), MSE on the one
    output (regression), binary cross-entropy per label on 0/1 targets (multi-label)."""
    if problem_type == "regression":
        return F.mse_loss(logits.squeeze(-1), labels.float())
    if problem_type == "multi_label_classification":
        return F.binary_cross_entropy_with_logits(logits, labels.float())
    return F.cross_entropy(logits, labels)


class BioMambaForSequenceClassification(BioMambaPreTrainedModel):
    """Backbone + pooling (config.pooling) + a linear layer over config.num_labels; the loss follows
    config.problem_type as in transformers: single_label_classification (default), regression
    (num_labels=1, MSE) or multi_label_classification (a sigmoid per label)."""

    accepts_loss_kwargs = False  # a per-example mean: Trainer must divide it over accumulation steps

    def __init__(self, config: BioMambaConfig):
        super().__init__(config)
        self.backbone = BioMambaModel(config)
        self.score = nn.Linear(config.d_model, config.num_labels, bias=True)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, labels=None, inputs_embeds=None, return_dict=None,
                seq_idx=None, position_ids=None, **unused):
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                               use_cache=False, return_dict=True, seq_idx=seq_idx,
                               position_ids=position_ids).last_hidden_state
        pooled = pool(hidden, attention_mask, self.config.pooling)
        logits = self.score(pooled.to(self.score.weight.dtype)).float()  # (b, num_labels)
        loss = None if labels is None else sequence_loss(logits, labels, self.config.problem_type)
        output = BioMambaSequenceClassifierOutput(loss=loss, logits=logits, pooled=pooled)
        return _returned(output, return_dict, self.config)


@dataclass
class BioMambaEmbeddingOutput(ModelOutput):
    embeddings: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None


class BioMambaForEmbedding(BioMambaPreTrainedModel):
    """Backbone + pooling + optional projection, L2-normalised (a BMRetriever-style encoder).

    Inputs should end with an EOS token (`encode` appends it) so that "last" pooling reads a
    representation of the whole text. Output [0] is the embedding, so pipeline("feature-extraction")
    returns it.
    """

    accepts_loss_kwargs = False

    def __init__(self, config: BioMambaConfig):
        super().__init__(config)
        self.backbone = BioMambaModel(config)
        self.projection = (nn.Linear(config.d_model, config.embedding_dim, bias=False)
                           if config.embedding_dim else None)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, return_dict=None, seq_idx=None,
                position_ids=None, **unused):
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                               use_cache=False, return_dict=True, seq_idx=seq_idx,
                               position_ids=position_ids).last_hidden_state
        pooled = pool(hidden, attention_mask, self.config.pooling)
        if self.projection is not None:
            pooled = self.projection(pooled)
        output = BioMambaEmbeddingOutput(embeddings=F.normalize(pooled.float(), dim=-1), last_hidden_state=hidden)
        return _returned(output, return_dict, self.config)

    def encode(self, texts, batch_size: int = 32, instruction: str | None = None, tokenizer=None,
               max_length: int = 256, progress: bool = False, convert_to_numpy: bool = True):
        """sentence-transformers style: an (n, dim) matrix of L2-normalised embeddings of `texts`.

        With `instruction`, texts are queries ("{instruction}\nQuery: {text}"). The tokenizer
        defaults to the one saved beside the model (the directory from_pretrained read).
        """
        if tokenizer is None:
            if getattr(self, "_encode_tokenizer", None) is None:
                self._encode_tokenizer = load_tokenizer(find_tokenizer_dir(self.name_or_path))
            tokenizer = self._encode_tokenizer
        return encode(self, tokenizer, texts, batch_size, instruction, max_length, progress,
                      convert_to_numpy=convert_to_numpy)


def backends_used(model) -> dict:
    """{op: backend} the BioMamba mixers inside `model` (wrapped or not) used in their latest forward;
    {} for a model without them (GPT-NeoX, BERT) or one that has not run."""
    used = {}
    for module in model.modules():
        if isinstance(module, SSMMixer):
            used.update(module.backends_used)
    return used


def register_auto_classes():
    """Make AutoConfig / AutoModel / AutoModelForCausalLM resolve model_type "biomamba"."""
    from transformers import (AutoConfig, AutoModel, AutoModelForCausalLM,
                              AutoModelForSequenceClassification)
    try:
        AutoConfig.register("biomamba", BioMambaConfig)
    except ValueError:  # already registered
        return
    AutoModel.register(BioMambaConfig, BioMambaModel)
    AutoModelForCausalLM.register(BioMambaConfig, BioMambaForCausalLM)
    AutoModelForSequenceClassification.register(BioMambaConfig, BioMambaForSequenceClassification)
    from transformers import AutoModelForTokenClassification

    from biomamba.token_classification import BioMambaForTokenClassification
    AutoModelForTokenClassification.register(BioMambaConfig, BioMambaForTokenClassification)


register_auto_classes()
