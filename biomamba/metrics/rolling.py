"""Causal-LM scoring by lm-eval-harness's `loglikelihood_rolling` protocol.

Each document is tokenized on its own (no special tokens) into t_0 .. t_{n-1} and cut into windows
of at most L = max_length model inputs:
  1. The first window is [prefix] + t_0 .. t_{min(L,n)-2} and scores t_0 .. t_{min(L,n)-1}; prefix
     is the tokenizer's BOS token (EOS when it has none), the separator the model saw in training.
  2. Each later window scores the next at most S = stride tokens (default S = L: disjoint spans);
     its input is the L tokens before the last scored one, so every token is scored exactly once
     and conditioned on up to L tokens before it (lm-eval's get_rolling_token_windows with
     context_len = L - S + 1, then make_disjoint_window).
A document of n <= L tokens is one window: the whole document in one forward pass. Windows are
batched by length with right padding; padded positions are masked in the model (attention mask,
or Mamba's masked scan, which is exact) and never scored.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from biomamba.data.collate import pad_right


@dataclasses.dataclass
class Window:
    doc: int  # index of the document it belongs to
    input_ids: list  # the model input, m <= max_length ids
    targets: list  # targets[i] is the token predicted at input position i
    n_scored: int  # the last n_scored positions are scored


def check_windowing(max_length: int, stride: int | None) -> int:
    """Validate and return the stride (default: max_length)."""
    if max_length < 1:
        raise ValueError(f"--max-length must be >= 1, got {max_length}")
    stride = max_length if stride is None else stride
    if not 1 <= stride <= max_length:
        raise ValueError(f"--stride must be in [1, --max-length={max_length}], got {stride}")
    return stride


def rolling_windows(tokens: list, prefix_id: int, max_length: int, stride: int | None = None,
                    doc: int = 0) -> list[Window]:
    """The windows that score every token of one document exactly once (see the module docstring)."""
    stride = check_windowing(max_length, stride)
    n = len(tokens)
    if n == 0:
        return []
    first = min(max_length, n)
    windows = [Window(doc, [prefix_id] + list(tokens[: first - 1]), list(tokens[:first]), first)]
    predicted = first
    while predicted < n:
        scored = min(n - predicted, stride)
        end = predicted + scored
        windows.append(Window(doc, list(tokens[end - max_length - 1: end - 1]),
                              list(tokens[end - max_length: end]), scored))
        predicted = end
    return windows


def windowing_description(max_length: int, stride: int | None, prefix: str) -> dict:
    stride = check_windowing(max_length, stride)
    return {"name": "loglikelihood_rolling", "max_length": max_length, "stride": stride,
            "context_len": max_length - stride + 1, "prefix_token": prefix,
            "description": f"each document scored on its own; first window conditioned on {prefix!r}; "
                           f"windows of {max_length} tokens, each scoring <= {stride} new tokens "
                           f"conditioned on the {max_length} tokens before them; every token scored "
                           "once; padding never scored"}


def length_batches(lengths, batch_size: int, max_tokens: int | None = None):
    """Index lists, longest first, of at most batch_size items (and max_tokens padded tokens)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batch = []
    for i in order:
        if batch and (len(batch) == batch_size or (max_tokens and (len(batch) + 1) * lengths[batch[0]] > max_tokens)):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


def token_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, targets: torch.Tensor,
                   seq_idx: torch.Tensor | None = None):
    """log p(targets[b, i] | input_ids[b, :i+1]) for every position: (b, l) fp32. With seq_idx (packed
    documents), position i sees only the positions of its own document."""
    extra = {} if seq_idx is None else {"seq_idx": seq_idx}
    logits = model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits.float()  # (b, l, vocab)
    picked = logits.gather(-1, targets[..., None]).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def pack_windows(windows: list[Window], capacity: int) -> list[list[int]]:
    """Rows of window indices, each row at most `capacity` input tokens: windows longest first, a
    new row when the next one does not fit (next-fit decreasing; deterministic)."""
    rows, used = [], capacity
    for i in sorted(range(len(windows)), key=lambda i: -len(windows[i].input_ids)):
        size = len(windows[i].input_ids)
        if used + size > capacity:
            rows.append([])
            used = 0
        rows[-1].append(i)
        used += size
    return rows


def _row_tensors(windows: list[Window], row: list[int]):
    """One row's inputs, targets, scored mask and document ids (one id per packed window)."""
    ids = [t for i in row for t in windows[i].input_ids]
    targets = [t for i in row for t in windows[i].targets]
    scored, seq = [], []
    for k, i in enumerate(row):
        m, n = len(windows[i].input_ids), windows[i].n_scored
        scored += [False] * (m - n) + [True] * n
        seq += [k] * m
    return ids, targets, scored, seq


@torch.no_grad()
def score_windows(model, windows: list[Window], n_docs: int, batch_size: int, device="cpu",
                  progress=None, max_tokens: int | None = None, pack: int | None = None) -> np.ndarray:
    """Summed log-likelihood (nats, float64) of each document's scored tokens.

    pack: put several windows in one row of at most `pack` tokens, isolated by seq_idx (document
    ids the model's scan and conv reset at), so short documents share a forward pass; a model
    whose forward takes seq_idx gives each window exactly what it gives alone (float round-off).
    """
    rows = pack_windows(windows, pack) if pack else [[i] for i in range(len(windows))]
    sums = np.zeros(n_docs, dtype=np.float64)
    lengths = [sum(len(windows[i].input_ids) for i in row) for row in rows]
    for batch in length_batches(lengths, batch_size, max_tokens):
        ids, targets, scored, seq = zip(*(_row_tensors(windows, rows[r]) for r in batch))
        ids, mask = pad_right(ids, 0)
        targets, scored, seq = (pad_right(x, 0)[0] for x in (targets, scored, seq))
        logp = token_logprobs(model, ids.to(device), mask.to(device), targets.to(device),
                              seq.to(device) if pack else None).double().cpu()
        logp = logp.masked_fill(~scored.bool(), 0.0)
        for k, r in enumerate(batch):
            start = 0
            for i in rows[r]:
                end = start + len(windows[i].input_ids)
                sums[windows[i].doc] += float(logp[k, start:end].sum())
                start = end
        if progress is not None:
            progress.update(int(scored.sum()))
    return sums


def causal_document_scores(model, token_lists: list, prefix_id: int, max_length: int, stride: int | None,
                           batch_size: int, device="cpu", progress=None, max_tokens: int | None = None,
                           pack: int | None = None) -> np.ndarray:
    """Summed log-likelihood of each tokenized document under the rolling protocol."""
    windows = [w for d, tokens in enumerate(token_lists)
               for w in rolling_windows(tokens, prefix_id, max_length, stride, doc=d)]
    return score_windows(model, windows, len(token_lists), batch_size, device, progress, max_tokens, pack)
