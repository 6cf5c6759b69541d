"""Recurrent decoding: a conv/SSM state cache and a transformers-style `generate()`.

A Mamba layer's whole past is two small tensors, so decoding costs the same per token at any
length: conv_state (b, d_inner, d_conv) holds the last d_conv inputs of the causal conv, and
ssm_state (b, d_inner, n) the scan state h_t.

Batches with padding: prompts are right-padded (attention_mask 1 then 0). The batch is prefilled up
to the shortest prompt in one pass, then advanced one token per step, feeding each row its own
prompt token while its prompt lasts and its generated token after; so every row gets exactly
what it would get alone (no pad token ever enters a row's state before its last prompt token).
"""
import torch


class MambaCache:
    """Per-layer conv and SSM states; `seqlen_offset` counts the tokens already consumed."""

    def __init__(self, config, batch_size, device=None, dtype=torch.float32):
        self.seqlen_offset = 0
        shape_conv = (batch_size, config.d_inner, config.d_conv)
        shape_ssm = (batch_size, config.d_inner, config.d_state)
        # SSM states are fp32 (or fp64 when the model is): the recurrence accumulates.
        ssm_dtype = torch.promote_types(dtype, torch.float32)
        self.conv_states = [torch.zeros(shape_conv, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.ssm_states = [torch.zeros(shape_ssm, device=device, dtype=ssm_dtype) for _ in range(config.n_layer)]


def _filter_logits(logits, temperature, top_k, top_p):
    """Temperature, then top-k, then nucleus (top-p) filtering, as transformers' warpers do."""
    logits = logits / max(temperature, 1e-6)
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop = cumulative - sorted_logits.softmax(-1) >= top_p  # keep the first token always
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def _next_tokens(logits, do_sample, temperature, top_k, top_p, generator):
    if not do_sample:
        return logits.argmax(-1)
    probs = _filter_logits(logits, temperature, top_k, top_p).softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _eos_set(eos_token_id, device):
    if eos_token_id is None:
        return None
    ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    return torch.tensor(ids, device=device)


@torch.no_grad()
def generate(model, input_ids, attention_mask=None, max_new_tokens=20, do_sample=False,
             temperature=1.0, top_k=0, top_p=1.0, eos_token_id=None, pad_token_id=None,
             generator=None, **unused):
    """Generate up to `max_new_tokens` per row; returns (b, longest prompt + new) token ids.

    Each row is its prompt (without padding), then its new tokens, then `pad_token_id` (default:
    the config's, else eos). A row stops after an EOS token (`eos_token_id`: int or list; None
    never stops early). Sampling uses `generator` when given, for reproducible draws.
    """
    batch, prompt_len = input_ids.shape
    device = input_ids.device
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if attention_mask is None:
        lengths = torch.full((batch,), prompt_len, device=device)
    else:
        lengths = attention_mask.long().sum(-1)
    if int(lengths.min()) < 1:
        raise ValueError("every prompt needs at least one real token (attention_mask row of zeros)")
    pad = pad_token_id if pad_token_id is not None else model.config.pad_token_id
    pad = 0 if pad is None else pad
    eos = _eos_set(eos_token_id, device)

    cache = MambaCache(model.config, batch, device, next(model.parameters()).dtype)
    start = int(lengths.min())
    logits = model(input_ids[:, :start], cache_params=cache, use_cache=True).logits[:, -1]
    total = int(lengths.max()) + max_new_tokens
    tokens = torch.full((batch, total), pad, dtype=input_ids.dtype, device=device)
    real = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    tokens[:, :prompt_len] = torch.where(real, input_ids, pad)
    produced = torch.zeros(batch, dtype=torch.long, device=device)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    if max_new_tokens == 0:
        return tokens[:, : int(lengths.max())]
    for position in range(start, total):
        in_prompt = position < lengths
        chosen = _next_tokens(logits, do_sample, temperature, top_k, top_p, generator)
        generating = ~in_prompt & ~finished
        chosen = torch.where(finished, torch.full_like(chosen, pad), chosen)
        step_tokens = torch.where(in_prompt, tokens[:, position], chosen)
        tokens[:, position] = step_tokens
        produced += generating.long()
        stop = produced >= max_new_tokens
        if eos is not None:
            stop |= torch.isin(step_tokens, eos) & generating
        finished |= generating & stop
        if bool(finished.all()):
            return tokens[:, : position + 1]
        logits = model(step_tokens[:, None], cache_params=cache, use_cache=True).logits[:, -1]
    return tokens
