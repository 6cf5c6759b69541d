"""The `biomamba` command. Each subcommand lives in its own module, imported only when used.

A subcommand module provides `add_arguments(parser)` and `run(args) -> int`.
"""
import argparse
import importlib
import sys

# name -> (module, one-line help). Order is the order `biomamba --help` lists them.
COMMANDS = {
    "prepare": ("biomamba.data.prepare", "parse MEDLINE XML, train a tokenizer, write packed token shards"),
    "pretrain": ("biomamba.train.pretrain", "pretrain a causal LM on the prepared shards (resumable, W&B, torchrun)"),
    "eval-ppl": ("biomamba.eval.perplexity", "perplexity of any LM on the same texts: token, word, bits per byte"),
    "finetune": ("biomamba.train.finetune", "fine-tune BioMamba or a BERT on a biomedical task over seeds"),
    "retrieval": ("biomamba.train.retrieval", "dense retrieval: train / eval (vs BM25, hybrid) / index / search"),
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


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] not in COMMANDS:
        args = parser.parse_args(argv)  # prints help / the unknown-command error
        parser.print_help()
        return 2 if args.command is None else 0
    name, rest = argv[0], argv[1:]
    module_name, help_text = COMMANDS[name]
    module = importlib.import_module(module_name)
    sub = argparse.ArgumentParser(prog=f"biomamba {name}", description=module.__doc__ or help_text,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(sub)
    return int(module.run(sub.parse_args(rest)) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
