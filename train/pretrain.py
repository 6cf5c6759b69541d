"""Pretrain a causal LM on packed PubMed token shards (from `biomamba prepare`).

Examples:
  biomamba pretrain --config configs/tiny-cpu.yaml --out runs/tiny data.dir=data/pubmed
  biomamba pretrain --config configs/tiny-cpu.yaml --out runs/tiny-gpt model.arch=transformer
  biomamba pretrain --config configs/tiny-cpu.yaml --out runs/tiny-bert model.arch=bert
  torchrun --nproc_per_node 2 -m biomamba pretrain --config configs/tiny-cpu.yaml --out runs/ddp
  torchrun --nproc_per_node 8 -m biomamba pretrain --config configs/paper-130m.yaml --out runs/1.4b \
      model.preset=1.4b train.parallel=fsdp    # FSDP: shards too large to replicate per GPU

Rerunning the same command on the same --out resumes from the latest complete checkpoint and
gives the losses an uninterrupted run would have. Writes RUN_DIR/config.yaml (merged config, scan
backend and parallelism used, git commit), metrics.jsonl, samples.jsonl, checkpoints/, model/
(final model + tokenizer) and results.json; W&B (offline unless configured) under RUN_DIR/wandb.
Under train.parallel=fsdp, checkpoints and model/ still hold the whole model, as in any other run.
"""
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from biomamba.train import distributed, mlm
from biomamba.train.checkpoint import write_model_dir
from biomamba.train.config import ConfigError, dump_yaml, load_config, to_dict
from biomamba.train.logger import RunLogger
from biomamba.train.loop import NonFiniteLoss, Task, Trainer
from biomamba.train.models import build_model, count_parameters
from biomamba.train.windows import WindowBatches, val_windows


def add_arguments(parser):
    parser.add_argument("--config", help="YAML config (see configs/); defaults apply to missing keys")
    parser.add_argument("--out", required=True, help="run directory (resumed when it has checkpoints)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="dotted overrides, e.g. train.max_steps=20 data.dir=DIR logging.wandb=false")


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def pick_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA device is available")
    return name


# ----------------------------------------------------------------------------- data

def load_data(data_dir: str):
    """Train/val token streams, the tokenizer, and each token's UTF-8 byte length."""
    from transformers import PreTrainedTokenizerFast

    from biomamba.data.prepare import load_manifest
    from biomamba.data.shards import TokenShards

    manifest = load_manifest(data_dir)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(Path(data_dir) / "tokenizer"))
    train, val = TokenShards(data_dir, "train"), TokenShards(data_dir, "val")
    return manifest, tokenizer, train.tokens, val.tokens, token_byte_lengths(tokenizer)


def token_byte_lengths(tokenizer) -> np.ndarray:
    """Bytes of text each token id stands for (0 for special tokens), for bits per byte."""
    lengths = np.zeros(len(tokenizer), dtype=np.int64)
    special = set(tokenizer.all_special_ids)
    for token_id in range(len(tokenizer)):
        if token_id not in special:
            lengths[token_id] = len(tokenizer.convert_tokens_to_string(
                [tokenizer.convert_ids_to_tokens(token_id)]).encode("utf-8"))
    return lengths


# ----------------------------------------------------------------------------- task pieces

def lm_loss(model, batch):
    batch = batch.to(next(model.parameters()).device)
    return model(input_ids=batch, labels=batch).loss


def make_evaluate(val_tokens, byte_lengths, tokenizer, cfg, eos_id):
    """Validation on the val windows of train.windows.val_windows."""
    batch_size = cfg.train.batch_size
    windows = val_windows(val_tokens, cfg.data.seq_len, cfg.train.eval_batches, batch_size,
                          distributed.world_size())
    targets = windows[:, 1:]
    total_bytes = int(byte_lengths[targets.numpy()].sum())
    prompts = sample_prompts(val_tokens, eos_id, cfg.logging.samples)

    def evaluate(model, step):
        device = next(model.parameters()).device
        nats, tokens = 0.0, 0
        for chunk in windows.split(batch_size):
            chunk = chunk.to(device)
            logits = model(input_ids=chunk).logits[:, :-1].float()
            nll = torch.nn.functional.cross_entropy(logits.flatten(0, 1), chunk[:, 1:].flatten(), reduction="sum")
            nats, tokens = nats + nll.item(), tokens + chunk[:, 1:].numel()
        loss = nats / tokens
        metrics = {"loss": loss, "ppl": math.exp(min(loss, 50.0)), "bpb": nats / max(total_bytes, 1) / math.log(2),
                   "tokens": tokens, "bytes": total_bytes}
        evaluate.samples = generate_samples(model, tokenizer, prompts, cfg.logging.sample_tokens, eos_id)
        return metrics

    evaluate.samples = []
    return evaluate


def sample_prompts(val_tokens, eos_id, count, prompt_tokens=12):
    """The first tokens of the first `count` val documents (documents end with EOS)."""
    head = np.asarray(val_tokens[: 200_000], dtype=np.int64)
    starts = [0] + [i + 1 for i in np.flatnonzero(head == eos_id)[: count]]
    return [torch.from_numpy(head[s:s + prompt_tokens]) for s in starts[:count] if s + prompt_tokens <= len(head)]


def generate_samples(model, tokenizer, prompts, max_new_tokens, eos_id):
    samples = []
    device = next(model.parameters()).device
    for prompt in prompts:
        out = model.generate(prompt[None].to(device), max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=eos_id, pad_token_id=eos_id)
        samples.append((tokenizer.decode(prompt), tokenizer.decode(out[0, len(prompt):], skip_special_tokens=True)))
    return samples


# ----------------------------------------------------------------------------- the run

def write_run_config(run_dir: Path, cfg, extra: dict):
    text = dump_yaml({**to_dict(cfg), "resolved": extra})
    tmp = run_dir / "config.yaml.tmp"
    tmp.write_text(text)
    tmp.replace(run_dir / "config.yaml")


def resolved_backend(model, cfg, device) -> str:
    if cfg.model.arch != "mamba":
        return "none (transformer)"
    from biomamba import ops
    return ops.resolve_backend(model.config.scan_backend, torch.device(device))


def pretrain(cfg, run_dir: Path) -> dict:
    """Train as configured; under torchrun every rank calls this, joined in one process group."""
    device = distributed.setup(pick_device(cfg.train.device))
    try:
        final = _train(cfg, run_dir, device)
        distributed.barrier()  # rank 0 may still be writing the final model
        return final
    finally:
        # the DDP/FSDP model and its mesh, freed with _train's frame, hold the process group; it is
        # destroyed after them (destroying it first can hang or abort the process at exit)
        distributed.teardown()


def _train(cfg, run_dir: Path, device) -> dict:
    manifest, tokenizer, train_tokens, val_tokens, byte_lengths = load_data(cfg.data.dir)
    eos_id, base_vocab = tokenizer.eos_token_id, len(tokenizer)
    if cfg.model.arch == "bert":  # masked LM: [CLS]/[SEP]/[MASK] added (train/mlm.py)
        tokenizer = mlm.bert_tokenizer(tokenizer)
    model = build_model(cfg, len(tokenizer), eos_id).to(device)
    backend = resolved_backend(model, cfg, device)
    if cfg.model.arch == "mamba":
        model.config.scan_backend = backend  # record and use the concrete choice
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = {"scan_backend": backend, "git_commit": git_commit(), "device": str(device),
                "world_size": distributed.world_size(), "parameters": count_parameters(model),
                "parallel": cfg.train.parallel if distributed.world_size() > 1 else "none",
                "tokenizer_sha256": manifest.get("tokenizer", {}).get("sha256")}
    batches = WindowBatches(train_tokens, cfg.data.seq_len, cfg.train.batch_size, cfg.train.grad_accum,
                            distributed.world_size(), distributed.rank(), cfg.seed)
    if cfg.model.arch == "bert":
        masked = mlm.MaskedBatches(batches, tokenizer, base_vocab, cfg.seed)
        task = Task(batches_for=masked.for_step, loss_fn=mlm.mlm_loss, items_in=lambda b: b["input_ids"][:, 1:].numel(),
                    evaluate=mlm.make_mlm_evaluate(val_tokens, tokenizer, base_vocab, cfg))
    else:
        task = Task(batches_for=batches.for_step, loss_fn=lm_loss, items_in=lambda b: b.numel(),
                    evaluate=make_evaluate(val_tokens, byte_lengths, tokenizer, cfg, eos_id))
    wrapped = distributed.wrap(model, device, cfg.train.parallel)
    trainer = Trainer(wrapped, task, cfg, run_dir, logger=None, device=device)
    start = trainer.resume()
    if distributed.is_main():
        write_run_config(run_dir, cfg, resolved)
    logger = RunLogger(run_dir, {**to_dict(cfg), "resolved": resolved}, cfg.logging, cfg.train.max_steps,
                       start, enabled=distributed.is_main())
    trainer.logger = logger
    _wrap_evaluate_with_samples(task, logger)
    logger.write(f"{cfg.model.arch}: {resolved['parameters'] / 1e6:.2f}M parameters, scan backend "
                 f"{backend}, {len(train_tokens):,} train tokens, global batch {batches.global_batch} x "
                 f"{cfg.data.seq_len}" + (f"; resuming after step {start}" if start else ""))
    try:
        final = trainer.fit()
    finally:
        logger.close()
    weights = trainer.full_weights()  # a collective under FSDP
    if distributed.is_main():
        finish(run_dir, model, tokenizer, final, resolved, trainer, weights)
    return final


def _wrap_evaluate_with_samples(task, logger):
    inner = task.evaluate

    def evaluate(model, step):
        metrics = inner(model, step)
        logger.log_samples(step, inner.samples)
        return metrics

    task.evaluate = evaluate


def finish(run_dir, model, tokenizer, final, resolved, trainer, weights=None):
    """The final model (with its tokenizer) in RUN_DIR/model, and results.json. `weights`: the whole
    state dict when `model` holds only this rank's FSDP shard."""
    out = run_dir / "model"
    write_model_dir(out, model, tokenizer, weights)
    results = {"final": final, "resolved": resolved, "steps": trainer.step,
               "skipped_steps": trainer.skipped, "model_dir": str(out)}
    (run_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")


def run(args) -> int:
    try:
        cfg = load_config(args.config, args.overrides)
        pretrain(cfg, Path(args.out))
    except (ConfigError, NonFiniteLoss) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0
