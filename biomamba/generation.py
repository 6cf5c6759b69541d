"""Decoding and padding: transformers' GenerationMixin runs decoding; this module holds what a Mamba
model adds.

One way to generate: `BioMambaForCausalLM.generate` is transformers' `generate`, so every standard
argument works (max_length / max_new_tokens / min_new_tokens, greedy, sampling, beam search,
repetition penalty, stopping criteria, streamers, lists of EOS ids). Each step after the prompt
runs the mixer's recurrent step (MambaMixer._step: ops.causal_conv1d_update and
ops.selective_state_update; Mamba2Mixer._step: the same conv step and ops.ssd_state_update), so a
token costs the same at any length.

The cache (`new_cache`) is transformers' own DynamicCache built from the config's `layer_types`,
as for transformers' Mamba: per layer a conv state and a recurrent (SSM) state, created from the
tensors the mixer stores, so their shapes are the mixer's business (Mamba-1: (b, d_inner, d_conv)
and (b, d_inner, n); Mamba-2: (b, conv_dim, d_conv) with conv_dim = d_inner + 2 ngroups n, and
(b, heads, headdim, n)). Beam search reorders it with Cache.reorder_cache.

Padding: pad positions never enter the state (the mixer zeroes them before the conv and before
the scan: `mask_padding`). Leading pads therefore leave the state at zero, exactly as if the row
started at its first real token, so left-padded prompts need nothing more. Trailing pads would sit between a
prompt and its continuation, so `generate` first left-aligns right-padded prompts
(`left_align`) and puts the prompt columns back as given afterwards (`restore_prompt_layout`).
"""
import torch
from transformers import DynamicCache


def mask_padding(x, attention_mask):
    """Zero the positions where attention_mask is 0; x: (b, c, l), attention_mask: (b, l)."""
    if attention_mask is None:
        return x
    return (x * attention_mask[:, None, :]).to(x.dtype)


def new_cache(config) -> DynamicCache:
    """An empty per-layer conv/recurrent state cache for a model with this config."""
    return DynamicCache(config=config)


def has_right_padding(attention_mask) -> bool:
    """True when some row has a padded (0) position after a real (1) one."""
    real = attention_mask.bool()
    seen_real = real.long().cummax(dim=-1).values.bool()
    return bool((seen_real & ~real).any())


def trailing_pads(attention_mask) -> torch.Tensor:
    """(b,) the number of positions after each row's last real token."""
    length = attention_mask.shape[-1]
    positions = torch.arange(length, device=attention_mask.device)
    last_real = torch.where(attention_mask.bool(), positions, -1).max(dim=-1).values  # (b,)
    if bool((last_real < 0).any()):
        raise ValueError("attention_mask has a row with no real token (every prompt needs one)")
    return length - 1 - last_real


def _roll_rows(tensor, shift):
    """Rotate each row of `tensor` (b, l) right by shift[row] positions."""
    length = tensor.shape[1]
    positions = torch.arange(length, device=tensor.device)
    source = (positions[None, :] - shift[:, None]) % length  # (b, l)
    return tensor.gather(1, source)


def left_align(input_ids, attention_mask):
    """Move each row's trailing pads to its front: returns (input_ids, attention_mask, shift)."""
    shift = trailing_pads(attention_mask)
    return _roll_rows(input_ids, shift), _roll_rows(attention_mask, shift), shift


def restore_prompt_layout(sequences, shift, prompt_length):
    """Undo `left_align` on the prompt columns of generated rows (b * k, prompt + new)."""
    per_prompt = sequences.shape[0] // shift.shape[0]  # beams / num_return_sequences repeat rows
    shift = shift.to(sequences.device).repeat_interleave(per_prompt)
    prompt = _roll_rows(sequences[:, :prompt_length], -shift)
    return torch.cat([prompt, sequences[:, prompt_length:]], dim=1)
