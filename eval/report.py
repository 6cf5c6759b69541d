"""Tables and plots from finished runs: `biomamba report SCHEMA ...`, one layer per results schema.

  biomamba report train RUN_DIR [RUN_DIR ...]      pretraining runs: table + loss curves
  biomamba report ppl OUT.json [OUT.json ...]      eval-ppl results: models x datasets table + bar chart
  biomamba report finetune RUN_DIR [RUN_DIR ...]   fine-tuning runs: mean +- std over seeds, verdicts
  biomamba report qa OUT.json [OUT.json ...]       eval-qa results: one table per task, protocol and shots

Each schema's report lives in its own module (eval/report_SCHEMA.py) with add_arguments(parser) and
run(args).
"""
import importlib
import sys
from pathlib import Path

SCHEMAS = {
    "train": "biomamba.eval.report_train",
    "ppl": "biomamba.eval.report_ppl",
    "finetune": "biomamba.eval.report_finetune",
    "qa": "biomamba.eval.report_qa",
}


def add_arguments(parser):
    sub = parser.add_subparsers(dest="schema", metavar="SCHEMA", required=True)
    for schema, module_name in SCHEMAS.items():
        module = importlib.import_module(module_name)
        child = sub.add_parser(schema, help=(module.__doc__ or "").strip().splitlines()[0],
                               description=module.__doc__)
        module.add_arguments(child)
        child.set_defaults(report_run=module.run)


def run(args) -> int:
    return args.report_run(args)


def report_results_files(args, load, markdown, stem: str, extras=None) -> int:
    """The run() of a report over results files (report ppl, report qa): read args.results with
    `load` (a ValueError is one line), write OUT/STEM.md and STEM.json (OUT: --out, else the first
    file's directory) and whatever `extras(rows, out)` writes (it returns those paths), print the table."""
    from biomamba.io import write_report

    try:
        rows = load(args.results)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    out = Path(args.out or Path(args.results[0]).parent)
    out.mkdir(parents=True, exist_ok=True)
    table = markdown(rows)
    written = [*write_report(out, stem, table, rows), *(extras(rows, out) if extras else [])]
    print(table)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
