"""BioMamba's 2026 perplexity protocol (LeoYML/BioMamba, scripts/evaluation/eval_ppl_domain.py), beside
lm-eval's so a reader can see how much of a reported perplexity is protocol.

Read from their script (the functions build_wiki_dataset / build_c4_dataset and evaluate):
  1. every document is encoded with the tokenizer's default special tokens (`tokenizer.encode(text)`;
     GPT-NeoX adds none) and the ids are concatenated into one stream, no separator between documents;
  2. the stream is cut into non-overlapping chunks of `length` (their SEQ_LEN 1024; ours --max-length):
     `[ids[i:i+L] for i in range(0, len(ids) - L, L)]`, so a chunk is kept only when at least one token
     follows it: the last partial chunk is dropped, and so is the last full one when the stream length
     is an exact multiple of L;
  3. chunks are batched in order (their BATCH 16; ours --batch-size), each row fed alone (no BOS, no
     context before the chunk), and a batch's loss is the mean next-token cross-entropy over its
     b x (L - 1) positions, under bf16 autocast on CUDA (fp32 here on CPU, where they never ran);
  4. a batch whose loss is not finite is skipped; perplexity = exp(mean over batches of the batch
     loss): NOT weighted by tokens, so a short last batch counts as much as a full one.
Not reproduced: their cap of 1,000 chunks per domain (--limit N samples documents instead), their
wikitext filter (lines of more than 100 characters), and their PubMed figure, which comes from their
own pre-tokenized one-document padded rows with padding masked (their data, not a protocol of text).
"""
import math

import torch

DEFINITION = ("biomamba-2026 (LeoYML/BioMamba scripts/evaluation/eval_ppl_domain.py): documents' tokens "
              "concatenated, cut into non-overlapping chunks of max_length (a chunk kept only when a token "
              "follows it), batches of batch_size chunks in order, batch loss = mean next-token cross-entropy "
              "over its positions (bf16 autocast on CUDA, fp32 on CPU), perplexity = exp(mean of batch "
              "losses), not token-weighted; non-finite batches skipped")


def stream_chunks(token_lists, length: int):
    """Non-overlapping chunks of `length` from the concatenated token lists, each emitted once at least
    one token follows it (their `range(0, len(ids) - L, L)`), holding at most one chunk plus a document."""
    buffer = []
    for ids in token_lists:
        buffer.extend(ids)
        start = 0
        while len(buffer) - start > length:
            yield buffer[start:start + length]
            start += length
        del buffer[:start]


def batch_nats(model, rows, device, rows_per_forward: int):
    """(sum of next-token cross-entropy, positions) over `rows` (equal-length token lists), in forwards of
    at most `rows_per_forward` rows: the same batch mean as one forward, with bounded logits."""
    nats, positions = 0.0, 0
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if str(device).startswith("cuda")
                else torch.autocast("cpu", enabled=False))
    for k in range(0, len(rows), rows_per_forward):
        ids = torch.tensor(rows[k:k + rows_per_forward], dtype=torch.long, device=device)  # (b, L)
        with autocast:
            logits = model(input_ids=ids).logits  # (b, L, vocab)
            nll = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten(),
                                                    reduction="sum")
        nats += float(nll)
        positions += ids[:, 1:].numel()
    return nats, positions


@torch.no_grad()
def biomamba_2026(model, token_lists, length: int, batch_size: int, device="cpu", max_rows: int | None = None,
                  progress=None) -> dict:
    """Their perplexity over `token_lists` (an iterable of documents' token ids, streamed)."""
    if length < 2:
        raise ValueError(f"biomamba-2026 needs chunks of at least 2 tokens, got {length}")
    rows_per_forward = max(1, min(batch_size, max_rows or batch_size))
    batch_losses, skipped, nats, positions, chunks = [], 0, 0.0, 0, 0
    batch = []

    def flush():
        nonlocal skipped, nats, positions
        got, n = batch_nats(model, batch, device, rows_per_forward)
        if math.isfinite(got):
            batch_losses.append(got / n)
            nats, positions = nats + got, positions + n
        else:
            skipped += 1
        if progress is not None:
            progress.update(n + len(batch))
        batch.clear()

    for chunk in stream_chunks(token_lists, length):
        batch.append(chunk)
        chunks += 1
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    if not batch_losses:
        return {"protocol": DEFINITION, "not_applicable": f"fewer than {length + 1} tokens: no chunk to score"}
    mean_loss = sum(batch_losses) / len(batch_losses)
    return {"protocol": DEFINITION, "chunk_length": length, "batch_size": batch_size, "chunks": chunks,
            "batches": len(batch_losses), "skipped_batches": skipped, "scored_positions": positions,
            "autocast": "bf16" if str(device).startswith("cuda") else "none (fp32 on CPU)",
            "mean_loss": mean_loss, "perplexity": math.exp(min(mean_loss, 700.0)),
            "token_weighted_mean_loss": nats / positions,
            "token_weighted_perplexity": math.exp(min(nats / positions, 700.0))}
