"""Pseudo-log-likelihood of masked LMs (BERT, BioBERT, ...), Salazar et al. 2020.

PLL(doc) = sum_i log p(t_i | the document with t_i replaced by [MASK]). Each document is tokenized
without special tokens and cut into windows of C = max_length - (special tokens) content tokens;
each window scores a span of at most `stride` tokens (default C: disjoint chunks) and places it
in the middle of its window, so each token is masked and scored exactly once with up to C tokens of
context on both sides. Every scored token is one model row ([CLS] window [SEP] with one [MASK]),
made when its batch runs (a document of n tokens is not held as n masked copies).
Reported as pseudo-perplexity: it is not a perplexity of the text under a generative model and
is not comparable with causal-LM perplexities.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from biomamba.data.collate import pad_right


@dataclasses.dataclass
class MaskedWindow:
    doc: int
    input_ids: list  # [CLS] window [SEP]: the model input, before masking
    positions: range  # the positions scored, each masked in a row of its own


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


def masked_windows(tokens: list, tokenizer, max_length: int, stride: int | None = None, doc: int = 0,
                   template=None) -> list[MaskedWindow]:
    """The windows of one document, whose scored positions cover each of its tokens exactly once."""
    prefix, suffix = template or special_template(tokenizer)
    size = content_size(max_length, prefix, suffix)
    stride = min(stride or size, size)
    n, windows = len(tokens), []
    for span_start in range(0, n, stride):
        span_end = min(span_start + stride, n)
        start = max(0, min(span_start - (size - (span_end - span_start)) // 2, n - size))
        ids = prefix + list(tokens[start:start + size]) + suffix
        windows.append(MaskedWindow(doc, ids, range(len(prefix) + span_start - start, len(prefix) + span_end - start)))
    return windows


def row_batches(windows: list[MaskedWindow], batch_size: int):
    """[(window index, masked position)] lists of batch_size rows, longest windows first. A row is
    made only when its batch runs: memory holds the windows and one batch, not a copy per token."""
    order = sorted(range(len(windows)), key=lambda i: -len(windows[i].input_ids))
    batch = []
    for i in order:
        for position in windows[i].positions:
            batch.append((i, position))
            if len(batch) == batch_size:
                yield batch
                batch = []
    if batch:
        yield batch


@torch.no_grad()
def pseudo_document_scores(model, tokenizer, token_lists: list, max_length: int, stride: int | None,
                           batch_size: int, device="cpu", progress=None) -> np.ndarray:
    """Summed pseudo-log-likelihood (nats, float64) of each tokenized document."""
    if tokenizer.mask_token_id is None:
        raise ValueError("the tokenizer has no [MASK] token: not a masked LM tokenizer")
    template = special_template(tokenizer)
    windows = [w for d, tokens in enumerate(token_lists)
               for w in masked_windows(tokens, tokenizer, max_length, stride, d, template)]
    sums = np.zeros(len(token_lists), dtype=np.float64)
    pad = tokenizer.pad_token_id or 0
    for batch in row_batches(windows, batch_size):
        ids, mask = pad_right([windows[i].input_ids for i, _ in batch], pad)
        rows, at = torch.arange(len(batch)), torch.tensor([position for _, position in batch])
        targets = ids[rows, at].clone()
        ids[rows, at] = tokenizer.mask_token_id
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()  # (b, l, vocab)
        picked = logits[rows.to(device), at.to(device)]  # (b, vocab)
        targets = targets.to(device)
        logp = (picked.gather(-1, targets[:, None]).squeeze(-1) - torch.logsumexp(picked, -1)).double().cpu()
        for k, (i, _) in enumerate(batch):
            sums[windows[i].doc] += float(logp[k])
        if progress is not None:
            progress.update(len(batch))
    return sums
