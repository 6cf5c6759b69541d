"""Masked-LM pretraining pieces for `biomamba pretrain model.arch=bert`: the same-budget BERT baseline.

The BERT sees the same windows of the same shards as the BioMamba (same seq_len, batch, steps), each
prefixed with [CLS]. Masking follows BERT: a fraction mlm.mask_rate (BERT's 15% by default) of the
window's tokens are scored; of those 80% become [MASK], 10% a random token, 10% stay. The mask of
optimizer step s depends only on (seed, step, rank, micro-batch), so runs resume exactly.
Validation always masks 15% with one fixed mask, so recipes with other mask rates are scored on
the same task, and prints the unigram entropy of the train tokens beside the loss: a model that
predicts every masked token from the token frequencies alone (the "unigram stage" of masked-LM
training, which ignores the context) scores about that. The prepared tokenizer is saved with [CLS], [SEP]
and [MASK] added after its vocabulary and BERT's "[CLS] A [SEP] B [SEP]" template, so RUN_DIR/model
loads in `biomamba finetune` (AutoModelForSequenceClassification + AutoTokenizer) like any BERT.
"""
import math

import numpy as np
import torch

from biomamba.train import distributed
from biomamba.train.loop import Evaluation
from biomamba.train.windows import val_windows

MASK_RATE = 0.15  # BERT's, and what validation masks whatever mlm.mask_rate a run trains with


def bert_tokenizer(tokenizer):
    """Add [CLS], [SEP], [MASK] (in place) and the BERT template; returns the tokenizer."""
    from tokenizers.processors import TemplateProcessing
    tokenizer.add_special_tokens({"cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]"})
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return tokenizer


def mask_windows(windows, cls_id, mask_id, random_below, generator, rate: float = MASK_RATE) -> dict:
    """(B, T) token windows -> {"input_ids": (B, T+1) with [CLS] first and masks, "labels": -100 unscored}."""
    b, t = windows.shape
    chosen = torch.rand((b, t), generator=generator) < rate
    if not chosen.any():  # a batch with no scored token would give a NaN loss
        chosen[0, 0] = True
    action = torch.rand((b, t), generator=generator)
    inputs = windows.clone()
    inputs[chosen & (action < 0.8)] = mask_id
    swap = chosen & (action >= 0.8) & (action < 0.9)
    inputs[swap] = torch.randint(0, random_below, (int(swap.sum()),), generator=generator)
    labels = torch.where(chosen, windows, torch.full_like(windows, -100))
    cls = torch.full((b, 1), cls_id, dtype=windows.dtype)
    return {"input_ids": torch.cat([cls, inputs], 1),
            "labels": torch.cat([torch.full((b, 1), -100, dtype=windows.dtype), labels], 1)}


class MaskedBatches:
    """WindowBatches with BERT masking, deterministic per (seed, step, rank, micro-batch)."""

    def __init__(self, windows, tokenizer, base_vocab, seed, mask_rate: float = MASK_RATE):
        self.windows, self.seed, self.base_vocab, self.mask_rate = windows, seed, base_vocab, mask_rate
        self.cls_id, self.mask_id = tokenizer.cls_token_id, tokenizer.mask_token_id
        self.global_batch = windows.global_batch

    def for_step(self, step):
        out = []
        for index, batch in enumerate(self.windows.for_step(step)):
            generator = torch.Generator().manual_seed(
                int(np.random.SeedSequence([self.seed, step, self.windows.rank, index]).generate_state(1)[0]))
            out.append(mask_windows(batch, self.cls_id, self.mask_id, self.base_vocab, generator, self.mask_rate))
        return out


def mlm_loss(model, batch):
    device = next(model.parameters()).device
    return model(input_ids=batch["input_ids"].to(device), labels=batch["labels"].to(device)).loss


def unigram_entropy(tokens, chunk: int = 1 << 22) -> float:
    """Entropy in nats of the token frequencies of a (memory-mapped) token stream, read in chunks."""
    counts = np.zeros(0, dtype=np.int64)
    for start in range(0, len(tokens), chunk):
        part = np.bincount(np.asarray(tokens[start:start + chunk], dtype=np.int64))
        counts = np.pad(counts, (0, max(0, len(part) - len(counts))))
        counts[:len(part)] += part
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def make_mlm_evaluate(val_tokens, tokenizer, base_vocab, cfg, train_tokens):
    """Masked-LM loss on the val windows of train.windows.val_windows, with one fixed 15% mask, beside
    the unigram entropy of the train tokens (the loss of the context-blind unigram stage)."""
    floor = unigram_entropy(train_tokens)
    batch_size = cfg.train.batch_size
    windows = val_windows(val_tokens, cfg.data.seq_len, cfg.train.eval_batches, batch_size,
                          distributed.world_size())
    masked = mask_windows(windows, tokenizer.cls_token_id, tokenizer.mask_token_id, base_vocab,
                          torch.Generator().manual_seed(0))

    def evaluate(model, step):
        device = next(model.parameters()).device
        nats, scored = 0.0, 0
        for ids, labels in zip(masked["input_ids"].split(batch_size), masked["labels"].split(batch_size)):
            count = int((labels != -100).sum())  # the loss is the mean over this batch's scored tokens
            nats += model(input_ids=ids.to(device), labels=labels.to(device)).loss.float().item() * count
            scored += count
        loss = nats / scored
        return Evaluation({"loss": loss, "unigram_entropy": floor, "ppl": math.exp(min(loss, 50.0)),
                           "masked_tokens": scored})

    return evaluate
