"""The one training loop, shared by pretraining, fine-tuning and retrieval training.

Each command hands the loop an Objective:
    batches_for(step) -> list of micro-batches   deterministic in `step`: that is the data position
    loss_fn(model, micro_batch) -> scalar loss   mean over the micro-batch's scored items
    items_in(micro_batch) -> int                 tokens (or examples) counted for throughput
    evaluate(model, step) -> Evaluation          optional validation (rank 0, or every FSDP rank)
    on_best(model, step)                         optional: called when an Evaluation says best
The loop owns the optimizer, schedule, gradient accumulation and clipping, autocast, non-finite
handling, checkpoints (via Checkpointer), logging (via RunLogger) and exact resume. The run skeleton
(train/run.py) builds it; commands do not.
"""
import math
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable

import torch

from biomamba.train import distributed
from biomamba.train.checkpointer import set_rng_state
from biomamba.train.models import tied_parameters
from biomamba.train.schedule import lr_factor


class NonFiniteLoss(RuntimeError):
    """Raised when a step's loss or gradient is not finite and on_nonfinite=stop."""


@dataclass
class Evaluation:
    """What an objective's evaluate(model, step) returns."""
    metrics: dict  # logged as val/NAME and printed
    samples: list = field(default_factory=list)  # (prompt, generation) pairs: samples.jsonl + a W&B table
    rows: dict = field(default_factory=dict)  # more rows to log, {prefix: row} (finetune: test at a new best)
    best: bool = False  # a new best model: the loop calls objective.on_best(model, step)


@dataclass
class Objective:
    """What a command trains for: its batches, its loss and how it is validated (see module doc)."""
    batches_for: Callable
    loss_fn: Callable
    items_in: Callable
    evaluate: Callable | None = None
    on_best: Callable | None = None
    prefix: str = "train"


def param_groups(model, weight_decay, lr):
    """AdamW groups: no decay on biases, norms and parameters marked _no_weight_decay (A_log, D); a
    parameter marked _lr_scale (the masked LM's word embeddings, mlm.word_embedding_lr_ratio) gets a
    group of its own at lr x that scale (the schedule multiplies every group alike). The first group
    is at lr: the loop logs its lr."""
    groups = {(True, 1.0): [], (False, 1.0): []}
    for param in model.parameters():
        if param.requires_grad:
            decays = param.ndim >= 2 and not getattr(param, "_no_weight_decay", False)
            groups.setdefault((decays, float(getattr(param, "_lr_scale", 1.0))), []).append(param)
    return [{"params": params, "weight_decay": weight_decay if decays else 0.0, "lr": lr * scale}
            for (decays, scale), params in groups.items() if params or scale == 1.0]


class Prefetcher:
    """The micro-batches of step s+1 built in a background thread while step s trains. The data
    position is the step, so prefetching changes no result; on a GPU the batches are pinned so their
    copy to the device can overlap compute."""

    def __init__(self, batches_for: Callable, last_step: int, pin: bool):
        self.batches_for, self.last_step, self.pin = batches_for, last_step, pin
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="prefetch")
        self.pending = None  # (step, future)

    def get(self, step: int):
        if self.pending is not None and self.pending[0] == step:
            batches = self.pending[1].result()  # re-raises what the thread raised
        else:
            batches = self._build(step)
        self.pending = (step + 1, self.pool.submit(self._build, step + 1)) if step < self.last_step else None
        return batches

    def _build(self, step: int):
        return _pinned(self.batches_for(step)) if self.pin else self.batches_for(step)

    def close(self):
        self.pool.shutdown(wait=True, cancel_futures=True)


def _pinned(batch):
    if isinstance(batch, torch.Tensor):
        return batch.pin_memory()
    if isinstance(batch, dict):
        return {k: _pinned(v) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_pinned(v) for v in batch)
    return batch


class Trainer:
    def __init__(self, model, objective: Objective, cfg, logger, checkpointer, device):
        self.model, self.objective, self.cfg, self.device = model, objective, cfg, device
        self.logger, self.checkpointer = logger, checkpointer
        self.raw_model = model.module if hasattr(model, "module") else model
        # FSDP shards live on all ranks: gathering weights and evaluating are collectives
        self.sharded = distributed.is_sharded(model)
        o = cfg.optim
        self.optimizer = torch.optim.AdamW(param_groups(self.raw_model, o.weight_decay, o.lr), lr=o.lr,
                                           betas=(o.beta1, o.beta2), eps=o.eps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda i: lr_factor(i, cfg.optim, cfg.train.max_steps))
        self.step, self.items_seen, self.skipped = 0, 0, 0

    # ------------------------------------------------------------------ resume

    def resume(self) -> int:
        """Restore the latest complete checkpoint, if any; returns the step it ended."""
        latest = self.checkpointer.latest()
        if latest is None:
            return 0
        from safetensors.torch import load_file
        # every FSDP rank reads the whole checkpoint; mmap keeps that to one copy in the page cache
        state = self.checkpointer.load(latest, mmap=self.sharded)
        self._load_weights(latest, load_file(latest / "model" / "model.safetensors"))
        distributed.load_optimizer_state(self.model, self.optimizer, state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        self.step, self.items_seen, self.skipped = state["step"], state["items_seen"], state["skipped"]
        return self.step

    def _load_weights(self, path, weights: dict):
        aliases = tied_parameters(self.raw_model)
        expected = set(self.raw_model.state_dict())
        missing, unexpected = sorted(expected - set(weights) - set(aliases)), sorted(set(weights) - expected)
        if missing or unexpected:
            raise RuntimeError(f"{path}: checkpoint does not fit the model (missing {missing}, "
                               f"unexpected {unexpected})")
        if not self.sharded:
            self.raw_model.load_state_dict(weights, strict=False)
            return
        for alias, name in aliases.items():  # a full state dict names every key, tied ones too
            weights.setdefault(alias, weights[name])
        distributed.load_full_model_state(self.model, weights)

    def full_weights(self) -> dict | None:
        """The whole model's state dict for save_pretrained under FSDP (None: it reads the module).
        A collective under FSDP: every rank calls it, rank 0 gets the weights."""
        weights = distributed.full_model_state(self.model)
        if weights is not None:  # aliases are gathered as separate copies; save the weight once
            for alias in tied_parameters(self.raw_model):
                weights.pop(alias, None)
        return weights

    def save(self):
        weights = self.full_weights()
        optimizer = distributed.optimizer_state(self.model, self.optimizer)
        if distributed.is_main():
            self.checkpointer.save(self.step, self.raw_model, {
                "optimizer": optimizer, "scheduler": self.scheduler.state_dict(),
                "items_seen": self.items_seen, "skipped": self.skipped, "data_position": self.step},
                weights=weights)
        distributed.barrier()

    # ------------------------------------------------------------------ one step

    def _autocast(self):
        if self.device.type == "cuda" and self.cfg.run.precision in ("auto", "bf16"):
            return torch.autocast("cuda", dtype=torch.bfloat16)
        if self.cfg.run.precision == "bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return nullcontext()

    def _forward_backward(self, micro_batches):
        total, items = 0.0, 0
        for index, batch in enumerate(micro_batches):
            skip_sync = index < len(micro_batches) - 1
            with distributed.no_sync(self.model, skip_sync), self._autocast():
                loss = self.objective.loss_fn(self.model, batch) / len(micro_batches)
            with distributed.no_sync(self.model, skip_sync):
                loss.backward()
            total += loss.detach()
            items += self.objective.items_in(batch)
        return distributed.mean(total), distributed.sum_int(items)

    def train_step(self) -> dict:
        self.step += 1
        start = time.perf_counter()
        loss, items = self._forward_backward(self.prefetch.get(self.step))
        clip = self.cfg.optim.grad_clip if self.cfg.optim.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), clip)
        lr = self.optimizer.param_groups[0]["lr"]
        if not (math.isfinite(loss.item()) and math.isfinite(grad_norm.item())):
            self._non_finite(loss.item(), grad_norm.item())
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.items_seen += items
        return {"step": self.step, "loss": loss.item(), "lr": lr, "grad_norm": grad_norm.item(),
                "tokens_seen": self.items_seen, "tokens_per_s": items / (time.perf_counter() - start),
                "skipped_steps": self.skipped}

    def _non_finite(self, loss, grad_norm):
        if self.cfg.train.on_nonfinite == "skip":
            self.skipped += 1
            self.logger.write(f"step {self.step}: non-finite loss {loss} / grad norm {grad_norm}; "
                              f"step skipped ({self.skipped} so far)")
            return
        last = self.checkpointer.latest()
        kept = f"the last good checkpoint is {last}" if last else "no checkpoint was saved yet"
        raise NonFiniteLoss(f"non-finite loss {loss} (grad norm {grad_norm}) at step {self.step}; "
                            f"the run stopped and {kept}. Lower optim.lr, or set "
                            "train.on_nonfinite=skip to skip such steps.")

    # ------------------------------------------------------------------ the loop

    def fit(self) -> dict:
        self.prefetch = Prefetcher(self.objective.batches_for, self.cfg.train.max_steps,
                                   pin=self.device.type == "cuda")
        try:
            return self._fit()
        finally:
            self.prefetch.close()

    def _fit(self) -> dict:
        t = self.cfg.train
        last_row, last_eval = {}, {}
        while self.step < t.max_steps:
            self.model.train()
            row = self.train_step()
            if distributed.is_main():
                self.logger.log(row, self.objective.prefix)
                self.logger.advance(self.step, row["loss"])
            last_row = row
            if self.objective.evaluate and (self.step % t.eval_every == 0 or self.step == t.max_steps):
                last_eval = self._evaluate()
            if self.step % t.save_every == 0 or self.step == t.max_steps:
                self.save()
        return {**last_row, **last_eval}

    def _evaluate(self) -> dict:
        result = None
        if distributed.is_main() or self.sharded:  # FSDP: each forward gathers from every rank
            self.raw_model.eval()
            with torch.no_grad(), self._autocast():
                result = self.objective.evaluate(self.raw_model, self.step)
        if distributed.is_main():
            self._record(result)
        distributed.barrier()
        return result.metrics if result is not None else {}

    def _record(self, result: Evaluation):
        """Log an evaluation, its samples and extra rows; keep a new best model (rank 0)."""
        self.logger.log({"step": self.step, "split": "val", **result.metrics}, "val")
        self.logger.log_samples(self.step, result.samples)
        for prefix, row in result.rows.items():
            self.logger.log({"step": self.step, **row}, prefix)
        if result.best and self.objective.on_best is not None:
            self.objective.on_best(self.raw_model, self.step)
        summary = ", ".join(f"{k} {v:.4f}" for k, v in result.metrics.items() if isinstance(v, float))
        self.logger.write(f"step {self.step}: {summary}")
