"""The `biomamba` command. Each subcommand lives in its own module, imported only when used.

`biomamba --help` and every subcommand's `--help` print without importing torch or transformers
(tests/test_cli.py): a subcommand's module imports only what its arguments need, and a command whose
run needs the training stack names a light front (train/pretrain_cli.py) that imports it in `run`.

A subcommand module provides `add_arguments(parser)` and `run(args) -> int`. A group (retrieval)
maps its actions to modules the same way: `biomamba retrieval train ...`.
"""
import argparse
import importlib
import sys

import biomamba
from biomamba import flags, threads
from biomamba.io import WriteFailed, describe_write_error, write_errno
from biomamba.locking import DirectoryInUse

RETRIEVAL = {
    "train": ("biomamba.train.retrieval_train_cli", "contrastive training from a pretrained checkpoint"),
    "eval": ("biomamba.eval.retrieval_eval_cli", "dense vs BM25 vs hybrid on held-out, BEIR and BioASQ tasks"),
    "index": ("biomamba.index_cli", "embed a corpus into float16 shards + ids"),
    "search": ("biomamba.search_cli", "search an index; prints rank, score, PMID and title"),
}

# name -> (module or group of actions, one-line help). Order is the order `biomamba --help` lists them.
COMMANDS = {
    "prepare": ("biomamba.data.prepare", "parse MEDLINE XML, train a tokenizer, write packed token shards"),
    "pretrain": ("biomamba.train.pretrain_cli", "pretrain a causal LM on the prepared shards (resumable, W&B, torchrun)"),
    "eval-ppl": ("biomamba.eval.perplexity", "perplexity of any LM on the same texts: token, word, bits per byte"),
    "eval-qa": ("biomamba.eval.qa", "multiple-choice QA accuracy (PubMedQA, BioASQ, MedQA, MedMCQA, MMLU): lm-eval's and BioMamba's protocols"),
    "finetune": ("biomamba.train.finetune_cli", "fine-tune BioMamba or a BERT on a biomedical task over seeds"),
    "retrieval": (RETRIEVAL, "dense retrieval: train / eval (vs BM25, hybrid) / index / search"),
    "generate": ("biomamba.generate_cli", "generate text from a checkpoint with the recurrent state cache"),
    "export": ("biomamba.export", "write a causal LM in transformers' or state-spaces' layout (no biomamba needed)"),
    "report": ("biomamba.eval.report", "tables and plots from finished runs (report train RUN_DIR ...)"),
    "bench": ("biomamba.bench_cli", "run a benchmark script from bench/ (prints side-by-side ratios)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="biomamba",
        description="Mamba language models for biomedical text: data, pretraining, evaluation.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def build_group_parser(name: str, actions: dict, help_text: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"biomamba {name}", description=help_text)
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    for action, (_, action_help) in actions.items():
        sub.add_parser(action, help=action_help, add_help=False)
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] not in COMMANDS:
        args = parser.parse_args(argv)  # prints help / the unknown-command error
        parser.print_help()
        return 2 if args.command is None else 0
    prog, (target, help_text), rest = f"biomamba {argv[0]}", COMMANDS[argv[0]], argv[1:]
    if isinstance(target, dict):  # a group: the action names the module
        if not rest or rest[0] not in target:
            group = build_group_parser(argv[0], target, help_text)
            args = group.parse_args(rest)
            group.print_help()
            return 2 if args.action is None else 0
        prog, (target, help_text), rest = f"{prog} {rest[0]}", target[rest[0]], rest[1:]
    return run_module(prog, target, help_text, rest)


def run_module(prog: str, module_name: str, help_text: str, argv: list) -> int:
    module = importlib.import_module(module_name)
    sub = argparse.ArgumentParser(prog=prog, description=module.__doc__ or help_text,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(sub)
    flags.add_threads(sub)
    args = parse_intermixed(sub, argv)  # `--help` exits here, before torch or transformers load
    threads.configure(args.threads)  # before torch computes: OpenMP reads its wait policy once
    biomamba.load_models()  # registers the Auto classes, as `import biomamba` does outside the command
    try:
        return int(module.run(args) or 0)
    except (DirectoryInUse, WriteFailed) as error:  # any command that writes: one line, no traceback
        print(f"error: {error}", file=sys.stderr)
        return 1
    except Exception as error:
        code = write_errno(error)  # a full disk where no command said what it was writing
        if code is None:
            raise
        where = f" {error.filename}" if isinstance(error, OSError) and error.filename else ""
        print(f"error: writing{where} failed: {describe_write_error(code)}; every output file is written "
              "atomically, so those already complete are intact and a rerun redoes the rest", file=sys.stderr)
        return 1


def parse_intermixed(parser: argparse.ArgumentParser, argv: list) -> argparse.Namespace:
    """key=value overrides before, between and after the flags (`--config C k=v --out D k2=v2`):
    plain parse_args stops collecting positionals at the first flag. A parser with subcommands
    (report) cannot be parsed intermixed (argparse raises TypeError before reading argv) and has no
    overrides to intermix: it is parsed as usual."""
    try:
        return parser.parse_intermixed_args(argv)
    except TypeError:
        return parser.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(main())
