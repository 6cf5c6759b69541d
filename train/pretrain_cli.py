"""Pretrain a causal LM on packed PubMed token shards (from `biomamba prepare`).

Examples:
  biomamba pretrain --config configs/tiny-cpu.yaml --out runs/tiny data.dir=data/pubmed
  biomamba pretrain --config configs/tiny-cpu.yaml --out runs/tiny-gpt model.arch=transformer
  biomamba pretrain --config configs/tiny-cpu.yaml --out runs/tiny-bert model.arch=bert
  torchrun --nproc_per_node 2 -m biomamba pretrain --config configs/tiny-cpu.yaml --out runs/ddp
  torchrun --nproc_per_node 8 -m biomamba pretrain --config configs/paper-130m.yaml --out runs/1.4b \
      model.preset=1.4b train.parallel=fsdp    # FSDP: shards too large to replicate per GPU

Rerunning the same command on the same --out resumes from the latest complete checkpoint and
gives the losses an uninterrupted run would have. Writes RUN_DIR/config.yaml (merged config, op
backends, precision and parallelism used, git commit), metrics.jsonl, samples.jsonl, checkpoints/,
model/ (final model + tokenizer) and results.json; W&B (offline unless configured) under RUN_DIR/wandb.
Under train.parallel=fsdp, checkpoints and model/ still hold the whole model, as in any other run.
Validation reports loss, ppl and packed_bits_per_byte: bits per byte of the packed val windows
(documents run together), a training-curve number; `biomamba eval-ppl` measures each document alone
(its bits_per_byte is the figure to compare models by).
"""
# This module is the command's face: `--help` imports it alone, so it loads neither torch nor
# transformers; biomamba.train.pretrain holds the run and is imported by `run` (biomamba/cli.py).
from biomamba import flags


def add_arguments(parser):
    parser.add_argument("--config", help="YAML config (see configs/); defaults apply to missing keys")
    parser.add_argument("--out", required=True, help="run directory (resumed when it has checkpoints)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="dotted overrides, e.g. train.max_steps=20 data.dir=DIR logging.wandb=false")
    flags.add_arguments(parser, ["init_from", "device", "precision", *flags.WANDB])


def run(args) -> int:
    from biomamba.train.pretrain import run

    return run(args)
