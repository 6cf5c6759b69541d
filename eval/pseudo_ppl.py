"""Pseudo-log-likelihood of masked LMs (BERT, BioBERT, ...), Salazar et al. 2020.

PLL(doc) = sum_i log p(t_i | the document with t_i replaced by [MASK]). Each document is tokenized
without special tokens and cut into windows of C = max_length - (special tokens) content tokens;
each window scores a span of at most `stride` tokens (default C: disjoint chunks) and places it
in the middle of its window, so each token is masked and scored exactly once with up to C tokens of
context on both sides. Every scored token is one model row ([CLS] window [SEP] with one [MASK]).
Reported as pseudo-perplexity: it is not a perplexity of the text under a generative model and
is not comparable with causal-LM perplexities.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from biomamba.data.collate import pad_right
from biomamba.metrics.rolling import length_batches


@dataclasses.dataclass
class MaskedRow:
    doc: int
    input_ids: list  # with special tokens and one [MASK]
    position: int  # index of the [MASK]
    target: int  # the original token there


def special_template(tokenizer) -> tuple[list, list]:
    """The special tokens the tokenizer puts before and after one sequence, e.g. ([CLS], [SEP])."""
    full = tokenizer("a")["input_ids"]
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    for i in range(len(full) - len(bare) + 1):
        if full[i:i + len(bare)] == bare:
            return full[:i], full[i + len(bare):]
    raise ValueError(f"cannot find where {type(tokenizer).__name__} puts its special tokens")


def content_size(max_length: int, prefix: list, suffix: list) -> int:
    size = max_length - len(prefix) - len(suffix)
    if size < 1:
        raise ValueError(f"--max-length {max_length} leaves no room beside the special tokens")
    return size


def masked_rows(tokens: list, tokenizer, max_length: int, stride: int | None = None, doc: int = 0,
                template=None) -> list[MaskedRow]:
    """One row per token of the document: the token masked inside its window of context."""
    prefix, suffix = template or special_template(tokenizer)
    size = content_size(max_length, prefix, suffix)
    stride = min(stride or size, size)
    n, rows = len(tokens), []
    for span_start in range(0, n, stride):
        span_end = min(span_start + stride, n)
        start = max(0, min(span_start - (size - (span_end - span_start)) // 2, n - size))
        window = list(tokens[start:start + size])
        ids = prefix + window + suffix
        for j in range(span_start - start, span_end - start):
            masked = list(ids)
            masked[len(prefix) + j] = tokenizer.mask_token_id
            rows.append(MaskedRow(doc, masked, len(prefix) + j, window[j]))
    return rows


@torch.no_grad()
def pseudo_document_scores(model, tokenizer, token_lists: list, max_length: int, stride: int | None,
                           batch_size: int, device="cpu", progress=None) -> np.ndarray:
    """Summed pseudo-log-likelihood (nats, float64) of each tokenized document."""
    if tokenizer.mask_token_id is None:
        raise ValueError("the tokenizer has no [MASK] token: not a masked LM tokenizer")
    template = special_template(tokenizer)
    rows = [r for d, tokens in enumerate(token_lists)
            for r in masked_rows(tokens, tokenizer, max_length, stride, d, template)]
    sums = np.zeros(len(token_lists), dtype=np.float64)
    pad = tokenizer.pad_token_id or 0
    lengths = [len(r.input_ids) for r in rows]
    for batch in length_batches(lengths, batch_size):
        ids, mask = pad_right([rows[i].input_ids for i in batch], pad)
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()  # (b, l, vocab)
        at = torch.tensor([rows[i].position for i in batch], device=device)
        picked = logits[torch.arange(len(batch), device=device), at]  # (b, vocab)
        targets = torch.tensor([rows[i].target for i in batch], device=device)
        logp = (picked.gather(-1, targets[:, None]).squeeze(-1) - torch.logsumexp(picked, -1)).double().cpu()
        for k, i in enumerate(batch):
            sums[rows[i].doc] += float(logp[k])
        if progress is not None:
            progress.update(len(batch))
    return sums
