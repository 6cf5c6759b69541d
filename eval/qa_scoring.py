"""Scoring of `biomamba eval-qa`: the loglikelihood of each choice as a continuation (lm-eval's
HFLM.loglikelihood), and BioMamba's restricted next-token softmax.

Tokens are lm-eval's: `encode_pair` is HFLM._encode_pair (trailing spaces of the context move to the
continuation; the whole string is encoded and split after the context's own tokens), with the
tokenizer's special tokens as HFLM.tok_encode adds them. A sequence longer than max_length + 1 loses
tokens on the left, as in HFLM._loglikelihood_tokens.

Two ways to the same numbers:
  full sequences   every (context, choice) pair is its own row (any causal LM; lm-eval's way)
  shared state     BioMamba: the contexts of a batch of items run once (left-padded: pads never enter the
                   state, see biomamba/generation.py), then each choice continues from a copy of its item's
                   conv/SSM cache (Cache.reorder_cache picks one row per choice). A choice of c tokens costs c - 1
                   recurrent steps instead of a pass over the whole context. Exact: tests compare it to full
                   sequences. Items whose sequences would be truncated are scored by full sequences.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Request:
    context: list  # token ids shared by every choice
    continuations: list  # token ids per choice


def encode_pair(encode_one, context: str, continuation: str) -> tuple[list, list]:
    """HFLM._encode_pair for a causal model."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole, head = encode_one(context + continuation), encode_one(context)
    return head, whole[len(head):]


def build_request(encode_one, context: str, choices, delimiter: str = " ") -> Request:
    pairs = [encode_pair(encode_one, context, delimiter + choice) for choice in choices]
    heads = {tuple(head) for head, _ in pairs}
    assert len(heads) == 1, "the context encodes the same way whatever follows it"
    return Request(pairs[0][0], [cont for _, cont in pairs])


def _gather(logits, targets) -> float:
    """Sum of log-softmax(logits)[t, targets[t]]; logits (len(targets), vocab)."""
    logprobs = F.log_softmax(logits.float(), dim=-1)
    return float(logprobs.gather(-1, torch.as_tensor(targets, device=logits.device)[:, None]).sum())


def _right_padded(rows, pad_id, device):
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, :len(row)], mask[i, :len(row)] = torch.as_tensor(row), 1
    return ids.to(device), mask.to(device)


def score_full(model, requests, max_length: int, batch_size: int, device, pad_id: int = 0) -> list:
    """[[loglikelihood per choice] per request], one right-padded row per (context, choice)."""
    rows = [(r, c) for r, req in enumerate(requests) for c in req.continuations]
    inputs = [(requests[r].context + cont)[-(max_length + 1):][:-1] for r, cont in rows]
    scores = []
    for start in range(0, len(rows), batch_size):
        ids, mask = _right_padded(inputs[start:start + batch_size], pad_id, device)
        logits = model(input_ids=ids, attention_mask=mask).logits  # (b, l, vocab)
        for i, (_, cont) in enumerate(rows[start:start + batch_size]):
            end = len(inputs[start + i])
            scores.append(_gather(logits[i, end - len(cont):end], cont))
    return _per_request(requests, scores)


def _per_request(requests, flat) -> list:
    out, at = [], 0
    for req in requests:
        out.append(flat[at:at + len(req.continuations)])
        at += len(req.continuations)
    return out


def _left_padded(rows, pad_id, device):
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row):], mask[i, width - len(row):] = torch.as_tensor(row), 1
    return ids.to(device), mask.to(device)


def score_shared_batch(model, requests, device, pad_id: int = 0) -> list:
    """Shared-state scores of a batch of requests (no truncation needed): contexts once, choices from copies."""
    ids, mask = _left_padded([r.context for r in requests], pad_id, device)
    out = model(input_ids=ids, attention_mask=mask, use_cache=True)
    last = out.logits[:, -1]  # (b, vocab): predicts every choice's first token
    owner = [r for r, req in enumerate(requests) for _ in req.continuations]
    conts = [c for req in requests for c in req.continuations]
    cache = out.cache_params
    cache.reorder_cache(torch.as_tensor(owner, device=device))  # one copy of its item's state per choice
    steps = None
    if max(len(c) for c in conts) > 1:  # feed each choice but its last token
        step_ids, _ = _right_padded([c[:-1] or [pad_id] for c in conts], pad_id, device)
        steps = model(input_ids=step_ids, cache_params=cache, use_cache=True).logits  # (rows, l, vocab)
    scores = []
    for row, cont in enumerate(conts):
        logits = last[owner[row]][None]
        if len(cont) > 1:
            logits = torch.cat([logits, steps[row, :len(cont) - 1]])
        scores.append(_gather(logits, cont))
    return _per_request(requests, scores)


def score_shared(model, requests, max_length: int, batch_size: int, device, pad_id: int = 0) -> list:
    """[[loglikelihood per choice] per request] by shared state, `batch_size` items a pass."""
    fits = [len(r.context) + max(len(c) for c in r.continuations) <= max_length + 1 for r in requests]
    scores = [None] * len(requests)
    long = [i for i, ok in enumerate(fits) if not ok]
    for i, s in zip(long, score_full(model, [requests[i] for i in long], max_length, batch_size, device, pad_id)):
        scores[i] = s
    short = [i for i, ok in enumerate(fits) if ok]
    for start in range(0, len(short), batch_size):
        chunk = short[start:start + batch_size]
        for i, s in zip(chunk, score_shared_batch(model, [requests[i] for i in chunk], device, pad_id)):
            scores[i] = s
    return scores


def restricted_softmax(model, contexts, answer_ids, max_length: int, batch_size: int, device, pad_id: int = 0) -> list:
    """BioMamba's protocol: the next-token distribution after each context, renormalised over the
    answers' first tokens (answer_ids). [[probability per answer] per context]."""
    index = torch.as_tensor(answer_ids, device=device)
    probs = []
    for start in range(0, len(contexts), batch_size):
        rows = [c[-max_length:] for c in contexts[start:start + batch_size]]
        ids, mask = _right_padded(rows, pad_id, device)
        logits = model(input_ids=ids, attention_mask=mask).logits
        last = logits[torch.arange(len(rows), device=device), mask.sum(1) - 1]  # (b, vocab)
        probs += F.softmax(last.float()[:, index], dim=-1).tolist()
    return probs
