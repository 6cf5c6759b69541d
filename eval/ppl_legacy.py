"""The published 2024 BioMamba perplexity protocol, kept only to show what it does to a comparison.

Each document is tokenized with the tokenizer's default special tokens, truncated or padded to a
fixed 512 tokens (pad = the tokenizer's PAD, else EOS), and fed without an attention mask (the
mamba_ssm model it used takes none); the loss is the mean next-token cross-entropy over all 511
shifted positions with labels = input_ids, so padding is scored; perplexity = exp(mean loss).
Padding is easy to predict after a few pad tokens, so short documents pull the figure down, and
text beyond 512 tokens is never scored. Not comparable across tokenizers.
"""
import itertools
import math

import torch

from biomamba.data.collate import pad_right

LEGACY_LENGTH = 512


def pad_id_of(tokenizer) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ValueError("the tokenizer has neither a PAD nor an EOS token to pad with")
    return pad


def legacy_batch(tokenizer, texts, length: int = LEGACY_LENGTH):
    """(input_ids (b, length), real-token counts before padding, truncated count)."""
    encoded = tokenizer(list(texts))["input_ids"]
    truncated = sum(len(ids) > length for ids in encoded)
    rows = [ids[:length] for ids in encoded]
    ids, _ = pad_right(rows, pad_id_of(tokenizer), width=length)
    return ids, [len(row) for row in rows], truncated


@torch.no_grad()
def legacy_padded(model, tokenizer, texts, batch_size: int, device="cpu", length: int = LEGACY_LENGTH,
                  progress=None) -> dict:
    """Mean cross-entropy over every position of every fixed-length padded row, padding included.
    `texts`: any iterable (streamed, batch_size at a time)."""
    nats, positions, pad_positions, truncated, documents = 0.0, 0, 0, 0, 0
    texts = iter(texts)
    while batch := list(itertools.islice(texts, batch_size)):
        ids, real, cut = legacy_batch(tokenizer, batch, length)
        truncated += cut
        documents += len(batch)
        logits = model(input_ids=ids.to(device)).logits.float()[:, :-1]  # (b, length-1, vocab)
        targets = ids[:, 1:].to(device)
        nll = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum")
        nats += float(nll)
        positions += targets.numel()
        pad_positions += sum(length - r for r in real)
        if progress is not None:
            progress.update(targets.numel())
    loss = nats / positions
    return {"protocol": f"legacy-padded-{length} (BioMamba 2024 code: fixed {length} tokens, padding "
                        "scored, no attention mask, perplexity = exp(mean loss over all positions))",
            "length": length, "documents": documents, "truncated_documents": truncated,
            "scored_positions": positions, "padding_fraction": pad_positions / (documents * length),
            "mean_loss": loss, "perplexity": math.exp(min(loss, 700.0))}
