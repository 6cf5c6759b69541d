"""The pretraining run behind `biomamba pretrain` (its command line and usage: train/pretrain_cli.py)."""
import hashlib
import math
import sys
from pathlib import Path

import numpy as np
import torch

from biomamba import flags
from biomamba.checkpoints import CheckpointError
from biomamba.data.errors import DataError
from biomamba.train import distributed, mlm
from biomamba.train.config import ConfigError, document_resets, load_config, mixture_sources
from biomamba.train.loop import Evaluation, NonFiniteLoss, Objective
from biomamba.train.mixture import MixtureBatches
from biomamba.train.models import build_model
from biomamba.train.run import RunSpec, execute, in_session
from biomamba.train.windows import WindowBatches, val_windows
from biomamba.train.pretrain_cli import add_arguments  # noqa: F401  (the command's arguments, re-exported)


# ----------------------------------------------------------------------------- data

def load_data(data_dir: str):
    """Train/val token streams, the tokenizer, and each token's UTF-8 byte length."""
    from biomamba.data.prepare import load_manifest
    from biomamba.data.shards import TokenShards
    from biomamba.resolve import load_tokenizer

    manifest = load_manifest(data_dir)
    tokenizer = load_tokenizer(Path(data_dir) / "tokenizer")
    train, val = TokenShards(data_dir, "train"), TokenShards(data_dir, "val")
    return manifest, tokenizer, train.tokens, val.tokens, token_byte_lengths(tokenizer)


def verify_before_training(data_dir, vocab_size: int) -> str:
    """Every train and val shard against its manifest checksum and the vocabulary, before the first
    step (biomamba/data/verify.py): DataError naming a damaged file. Returns the line config.yaml
    records; a manifest without checksums is warned about once, here, and recorded as such."""
    from biomamba.data.verify import describe, verify_shards

    report = verify_shards(data_dir, ("train", "val"), vocab_size)
    if report["unverified"] and distributed.is_main():
        print(f"warning: {data_dir}: {describe(report)}; prepare the inputs again into a new directory to have them recorded",
              file=sys.stderr)
    return describe(report)


def load_mixture(mixture: list[dict]):
    """Every source of data.mixture: (sources [{name, dir, weight, manifest_sha256, tokenizer_sha256,
    train_tokens, val_tokens}], tokenizer, train streams, val streams, byte lengths). The sources must
    share one tokenizer: a DataError names the first that does not."""
    from biomamba.data.prepare import MANIFEST, load_manifest
    from biomamba.data.shards import TokenShards
    from biomamba.resolve import load_tokenizer

    sources, trains, vals = [], [], []
    for source in mixture_sources(mixture):
        manifest = load_manifest(source["dir"])
        tok_sha = manifest.get("tokenizer", {}).get("sha256")
        if sources and tok_sha != sources[0]["tokenizer_sha256"]:
            raise DataError(source["dir"], f"data.mixture source {source['name']!r} has another tokenizer "
                            f"(sha256 {str(tok_sha)[:12]}) than source {sources[0]['name']!r} "
                            f"({str(sources[0]['tokenizer_sha256'])[:12]}); every source must be prepared with "
                            f"one tokenizer (prepare --tokenizer {Path(sources[0]['dir']) / 'tokenizer'})")
        train, val = TokenShards(source["dir"], "train"), TokenShards(source["dir"], "val")
        digest = hashlib.sha256((Path(source["dir"]) / MANIFEST).read_bytes()).hexdigest()
        sources.append({**source, "manifest_sha256": digest, "tokenizer_sha256": tok_sha,
                        "source_kind": manifest.get("source_kind", "medline"),
                        "train_tokens": len(train), "val_tokens": len(val)})
        trains.append(train.tokens)
        vals.append(val.tokens)
    tokenizer = load_tokenizer(Path(sources[0]["dir"]) / "tokenizer")
    return sources, tokenizer, trains, vals, token_byte_lengths(tokenizer)


def token_byte_lengths(tokenizer) -> np.ndarray:
    """Bytes of text each token id stands for (0 for special tokens), for bits per byte."""
    lengths = np.zeros(len(tokenizer), dtype=np.int64)
    special = set(tokenizer.all_special_ids)
    for token_id in range(len(tokenizer)):
        if token_id not in special:
            lengths[token_id] = len(tokenizer.convert_tokens_to_string(
                [tokenizer.convert_ids_to_tokens(token_id)]).encode("utf-8"))
    return lengths


# ----------------------------------------------------------------------------- the objective

def document_ids(windows: torch.Tensor, eos_id: int) -> torch.Tensor:
    """(b, l) ids of the packed documents: each EOS starts the next document, so the model predicts a
    document's first token from the EOS alone (eval-ppl's prefix) and never from the one before."""
    return torch.cumsum(windows == eos_id, dim=-1)


def make_lm_loss(eos_id: int, resets: bool):
    def lm_loss(model, batch):
        batch = batch.to(next(model.parameters()).device)
        extra = {"seq_idx": document_ids(batch, eos_id)} if resets else {}
        return model(input_ids=batch, labels=batch, **extra).loss
    return lm_loss


def make_evaluate(val_tokens, byte_lengths, tokenizer, cfg, eos_id):
    """Validation on the val windows of train.windows.val_windows, with sample generations."""
    score = make_val_scorer(val_tokens, byte_lengths, cfg, eos_id)
    prompts = sample_prompts(val_tokens, eos_id, cfg.logging.samples)

    def evaluate(model, step) -> Evaluation:
        samples = generate_samples(model, tokenizer, prompts, cfg.logging.sample_tokens, eos_id)
        return Evaluation(score(model), samples)

    return evaluate


def make_mixture_evaluate(sources, batches: MixtureBatches, val_streams, byte_lengths, tokenizer, cfg, eos_id):
    """Validation per source (val/NAME/loss, .../packed_bits_per_byte, ...) and the mixture's total
    (val/loss, val/packed_bits_per_byte: the weighted mean of the sources'), with the train tokens and
    epochs each source has given so far (val/NAME/train_tokens, .../train_epochs); samples from the
    first source."""
    scorers = [make_val_scorer(val, byte_lengths, cfg, eos_id) for val in val_streams]
    weights = np.array([s["weight"] for s in sources]) / sum(s["weight"] for s in sources)
    prompts = sample_prompts(val_streams[0], eos_id, cfg.logging.samples)

    def evaluate(model, step) -> Evaluation:
        per_source = [score(model) for score in scorers]
        metrics = {key: float(sum(w * m[key] for w, m in zip(weights, per_source)))
                   for key in ("loss", "packed_bits_per_byte")}
        metrics.update(ppl=math.exp(min(metrics["loss"], 50.0)), tokens=sum(m["tokens"] for m in per_source),
                       bytes=sum(m["bytes"] for m in per_source))
        counts, epochs = batches.counts_after(step), batches.epochs_after(step)
        for k, (source, m) in enumerate(zip(sources, per_source)):
            metrics.update({f"{source['name']}/{key}": value for key, value in m.items()})
            metrics[f"{source['name']}/train_tokens"] = int(counts[k]) * cfg.data.seq_len
            metrics[f"{source['name']}/train_epochs"] = float(epochs[k])
        samples = generate_samples(model, tokenizer, prompts, cfg.logging.sample_tokens, eos_id)
        return Evaluation(metrics, samples)

    return evaluate


def make_val_scorer(val_tokens, byte_lengths, cfg, eos_id):
    """model -> {loss, ppl, packed_bits_per_byte, tokens, bytes} on the val windows of val_tokens."""
    batch_size = cfg.train.batch_size
    windows = val_windows(val_tokens, cfg.data.seq_len, cfg.train.eval_batches, batch_size,
                          distributed.world_size())
    targets = windows[:, 1:]
    total_bytes = int(byte_lengths[targets.numpy()].sum())

    def score(model) -> dict:
        device = next(model.parameters()).device
        nats, tokens = 0.0, 0
        for chunk in windows.split(batch_size):
            chunk = chunk.to(device)
            extra = {"seq_idx": document_ids(chunk, eos_id)} if document_resets(cfg) else {}
            logits = model(input_ids=chunk, **extra).logits[:, :-1].float()
            nll = torch.nn.functional.cross_entropy(logits.flatten(0, 1), chunk[:, 1:].flatten(), reduction="sum")
            nats, tokens = nats + nll.item(), tokens + chunk[:, 1:].numel()
        loss = nats / tokens
        return {"loss": loss, "ppl": math.exp(min(loss, 50.0)),
                "packed_bits_per_byte": nats / max(total_bytes, 1) / math.log(2),
                "tokens": tokens, "bytes": total_bytes}

    return score


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


def objective_for(cfg, tokenizer, base_vocab, eos_id, train_tokens, val_tokens, byte_lengths):
    """Causal LM (mamba, transformer) or masked LM (bert) over the same windows of the same shards."""
    batches = WindowBatches(train_tokens, cfg.data.seq_len, cfg.train.batch_size, cfg.train.grad_accum,
                            distributed.world_size(), distributed.rank(), cfg.seed)
    if cfg.model.arch == "bert":
        masked = mlm.MaskedBatches(batches, tokenizer, base_vocab, cfg.seed, cfg.mlm.mask_rate)
        return batches, Objective(batches_for=masked.for_step, loss_fn=mlm.mlm_loss,
                                  items_in=lambda b: b["input_ids"][:, 1:].numel(),
                                  evaluate=mlm.make_mlm_evaluate(val_tokens, tokenizer, base_vocab, cfg, train_tokens))
    return batches, Objective(batches_for=batches.for_step, loss_fn=make_lm_loss(eos_id, document_resets(cfg)),
                              items_in=lambda b: b.numel(),
                              evaluate=make_evaluate(val_tokens, byte_lengths, tokenizer, cfg, eos_id))


# ----------------------------------------------------------------------------- the run

def pretrain(cfg, run_dir: Path) -> dict:
    """Train as configured; under torchrun every rank calls this, joined in one process group."""
    return in_session(cfg.run.device, "pretrain", lambda device: _train(cfg, Path(run_dir), device),
                      distributed_ok=True, out=run_dir)


def mixture_objective(cfg, tokenizer, eos_id, sources, trains, vals, byte_lengths):
    batches = MixtureBatches(trains, [s["weight"] for s in sources], cfg.data.seq_len, cfg.train.batch_size,
                             cfg.train.grad_accum, distributed.world_size(), distributed.rank(), cfg.seed)
    return batches, Objective(batches_for=batches.for_step, loss_fn=make_lm_loss(eos_id, document_resets(cfg)),
                              items_in=lambda b: b.numel(),
                              evaluate=make_mixture_evaluate(sources, batches, vals, byte_lengths, tokenizer, cfg, eos_id))


def _train_mixture(cfg, run_dir: Path, device) -> dict:
    sources, tokenizer, trains, vals, byte_lengths = load_mixture(cfg.data.mixture)
    eos_id = tokenizer.eos_token_id
    verified = {s["name"]: verify_before_training(s["dir"], len(tokenizer)) for s in sources}  # every shard read
    model = build_model(cfg, len(tokenizer), eos_id).to(device)
    batches, objective = mixture_objective(cfg, tokenizer, eos_id, sources, trains, vals, byte_lengths)
    facts = {"tokenizer_sha256": sources[0]["tokenizer_sha256"], "document_resets": document_resets(cfg),
             "data_mixture": sources, "shards_verified": verified}
    describe = (f"{cfg.model.arch} on a mixture: " + ", ".join(
        f"{s['name']} {s['weight']:g} ({s['train_tokens']:,} train tokens)" for s in sources)
        + f"; global batch {batches.global_batch} x {cfg.data.seq_len}")
    return execute(RunSpec(cfg, run_dir, model, objective, device, tokenizer, facts, describe,
                           job_type="pretrain", source_model=cfg.model.init_from))


def _train(cfg, run_dir: Path, device) -> dict:
    if cfg.data.mixture:
        return _train_mixture(cfg, run_dir, device)
    manifest, tokenizer, train_tokens, val_tokens, byte_lengths = load_data(cfg.data.dir)
    eos_id, base_vocab = tokenizer.eos_token_id, len(tokenizer)
    verified = verify_before_training(cfg.data.dir, base_vocab)
    if cfg.model.arch == "bert":  # masked LM: [CLS]/[SEP]/[MASK] added (train/mlm.py)
        tokenizer = mlm.bert_tokenizer(tokenizer)
    model = build_model(cfg, len(tokenizer), eos_id).to(device)
    batches, objective = objective_for(cfg, tokenizer, base_vocab, eos_id, train_tokens, val_tokens, byte_lengths)
    facts = {"tokenizer_sha256": manifest.get("tokenizer", {}).get("sha256"), "document_resets": document_resets(cfg),
             "shards_verified": verified}
    describe = (f"{cfg.model.arch}: {len(train_tokens):,} train tokens, global batch "
                f"{batches.global_batch} x {cfg.data.seq_len}, document resets "
                f"{'on' if document_resets(cfg) else 'off'}")
    return execute(RunSpec(cfg, run_dir, model, objective, device, tokenizer, facts, describe,
                           job_type="pretrain", source_model=cfg.model.init_from))


def run(args) -> int:
    try:
        cfg = load_config(args.config, [*args.overrides, *flags.overrides(args)])
        pretrain(cfg, Path(args.out))
    except (ConfigError, NonFiniteLoss, CheckpointError, DataError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0
