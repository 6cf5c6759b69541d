"""Masked-LM pretraining pieces for `biomamba pretrain model.arch=bert`: the same-budget BERT baseline.

The BERT sees the same windows of the same shards as the BioMamba (same seq_len, batch, steps), each
prefixed with [CLS]. Masking follows BERT: 15% of the window's tokens are scored; of those 80%
become [MASK], 10% a random token, 10% stay. The mask of optimizer step s depends only on (seed,
step, rank, micro-batch), so runs resume exactly. The prepared tokenizer is saved with [CLS], [SEP]
and [MASK] added after its vocabulary and BERT's "[CLS] A [SEP] B [SEP]" template, so RUN_DIR/model
loads in `biomamba finetune` (AutoModelForSequenceClassification + AutoTokenizer) like any BERT.
"""
import math

import numpy as np
import torch

from biomamba.train import distributed
from biomamba.train.loop import Evaluation
from biomamba.train.windows import val_windows

MASK_RATE = 0.15


def bert_tokenizer(tokenizer):
    """Add [CLS], [SEP], [MASK] (in place) and the BERT template; returns the tokenizer."""
    from tokenizers.processors import TemplateProcessing
    tokenizer.add_special_tokens({"cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]"})
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return tokenizer


def mask_windows(windows, cls_id, mask_id, random_below, generator) -> dict:
    """(B, T) token windows -> {"input_ids": (B, T+1) with [CLS] first and masks, "labels": -100 unscored}."""
    b, t = windows.shape
    chosen = torch.rand((b, t), generator=generator) < MASK_RATE
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

    def __init__(self, windows, tokenizer, base_vocab, seed):
        self.windows, self.seed, self.base_vocab = windows, seed, base_vocab
        self.cls_id, self.mask_id = tokenizer.cls_token_id, tokenizer.mask_token_id
        self.global_batch = windows.global_batch

    def for_step(self, step):
        out = []
        for index, batch in enumerate(self.windows.for_step(step)):
            generator = torch.Generator().manual_seed(
                int(np.random.SeedSequence([self.seed, step, self.windows.rank, index]).generate_state(1)[0]))
            out.append(mask_windows(batch, self.cls_id, self.mask_id, self.base_vocab, generator))
        return out


def mlm_loss(model, batch):
    device = next(model.parameters()).device
    return model(input_ids=batch["input_ids"].to(device), labels=batch["labels"].to(device)).loss


def make_mlm_evaluate(val_tokens, tokenizer, base_vocab, cfg):
    """Masked-LM loss on the val windows of train.windows.val_windows, with one fixed mask."""
    batch_size = cfg.train.batch_size
    windows = val_windows(val_tokens, cfg.data.seq_len, cfg.train.eval_batches, batch_size,
                          distributed.world_size())
    masked = mask_windows(windows, tokenizer.cls_token_id, tokenizer.mask_token_id, base_vocab,
                          torch.Generator().manual_seed(0))

    def evaluate(model, step):
        device = next(model.parameters()).device
        nats, scored = 0.0, 0
        for ids, labels in zip(masked["input_ids"].split(batch_size), masked["labels"].split(batch_size)):
            logits = model(input_ids=ids.to(device)).logits.float()
            labels = labels.to(device)
            nats += torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100,
                                                      reduction="sum").item()
            scored += int((labels != -100).sum())
        loss = nats / scored
        return Evaluation({"loss": loss, "ppl": math.exp(min(loss, 50.0)), "masked_tokens": scored})

    return evaluate
