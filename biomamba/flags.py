"""The flags commands share, each a shorthand for one config key (README: "One name per setting").

    --init-from DIR          model.init_from     the weights a training run starts from
    --tokenizer DIR          model.tokenizer     when not beside the model
    --device auto|cpu|cuda   run.device
    --precision P            run.precision
    --threads N              run.threads         every command (biomamba/cli.py; biomamba/threads.py)
    --wandb / --no-wandb     logging.wandb
    --wandb-project NAME     logging.project
    --wandb-group NAME       logging.group

A command configured by YAML + key=value (pretrain, finetune, retrieval train) adds the flags it has
with `add_arguments(parser, names)`; `overrides(args)` turns the ones given into key=value overrides,
applied after the user's own. A spelling that was renamed is an error naming the new one (`renamed`).
Imports nothing heavy: `--help` reads it (biomamba/cli.py).
"""
from __future__ import annotations

import argparse
import json

# name -> (config key, argparse arguments); a flag left unset (None) leaves the config's value
FLAGS = {
    "init_from": ("model.init_from", dict(flag="--init-from", metavar="DIR",
                                          help="weights to start from: a model dir or a training run dir")),
    "tokenizer": ("model.tokenizer", dict(flag="--tokenizer", metavar="DIR",
                                          help="tokenizer dir (default: the model's own, else the data's)")),
    "device": ("run.device", dict(flag="--device", choices=("auto", "cpu", "cuda"),
                                  help="auto (cuda when available; the default), cpu or cuda")),
    "precision": ("run.precision", dict(flag="--precision", choices=("auto", "fp32", "bf16"),
                                        help="auto (bf16 autocast on GPU, fp32 on CPU; the default), fp32, bf16")),
    "threads": ("run.threads", dict(flag="--threads", type=int, metavar="N",
                                    help="threads to compute with (default: the CPUs this process may use)")),
    "wandb": ("logging.wandb", dict(flag="--wandb", action=argparse.BooleanOptionalAction,
                                    help="log to W&B (default: the config's logging.wandb, on)")),
    "wandb_project": ("logging.project", dict(flag="--wandb-project", metavar="NAME", help="W&B project")),
    "wandb_group": ("logging.group", dict(flag="--wandb-group", metavar="NAME", help="W&B group")),
}
WANDB = ("wandb", "wandb_project", "wandb_group")

# --precision of the commands that score or decode with a model -> the torch dtype its weights are cast to.
# The rounded ones keep an fp32 model and round its weights (biomamba/decode.py): int8 with one scale per
# output row, or bf16; the CPU decoding step then reads 1 or 2 bytes a weight. int8-dynamic also rounds
# the activations entering the large projections to int8, in blocks of 32.
ROUNDED = ("int8", "int8-dynamic", "bf16-weights")
EVAL_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "bf16-weights": "float32",
               "int8": "float32", "int8-dynamic": "float32"}
PRECISION_HELP = ("the weights' dtype (default fp32); bf16-weights and int8 round the weights only "
                  "(activations stay fp32; the CPU decoding step reads them at 2 or 1 byte a weight); "
                  "int8-dynamic rounds the activations entering in_proj, out_proj and the LM head to int8 "
                  "too, in blocks of 32 as llama.cpp's q8_0 (bytes times bytes with AVX2 or AVX-512 VNNI)")


def add_threads(parser):
    """--threads N on a command that does not have it yet (biomamba/cli.py gives every command one)."""
    if not any("--threads" in action.option_strings for action in parser._actions):
        add_arguments(parser, ["threads"])


def add_arguments(parser, names):
    for name in names:
        _, spec = FLAGS[name]
        spec = dict(spec)
        parser.add_argument(spec.pop("flag"), dest=name, default=None, **spec)


def overrides(args) -> list[str]:
    """key=value overrides (JSON values, which YAML reads back as given) for the flags that were set."""
    given = {name: getattr(args, name, None) for name in FLAGS}
    return [f"{FLAGS[name][0]}={json.dumps(value)}" for name, value in given.items() if value is not None]


def add_scored_model(parser):
    """--model, --tokenizer, --device and --precision of the commands that score a model (eval-ppl, eval-qa)."""
    parser.add_argument("--model", required=True, metavar="DIR", help="model dir or pretraining run dir")
    parser.add_argument("--tokenizer", metavar="DIR", help="tokenizer dir (default: the model dir's own)")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--precision", default="fp32", choices=list(EVAL_DTYPES), help=PRECISION_HELP)


def renamed(parser, old: str, new: str, note: str = ""):
    """`old` as a flag that fails with a message naming `new` (hidden from --help)."""
    class Renamed(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            parser.error(f"{old} is now {new}{note} (one name for each setting in every command)")

    parser.add_argument(old, action=Renamed, nargs="?", help=argparse.SUPPRESS)
