"""Tables and plots from finished runs: `biomamba report KIND ...`.

  biomamba report train RUN_DIR [RUN_DIR ...]   pretraining runs: table + loss curves
  biomamba report ppl OUT.json [OUT.json ...]   eval-ppl results: models x datasets table + bar chart

Each kind lives in its own module (eval/report_KIND.py) with add_arguments(parser) and run(args).
"""
import importlib

KINDS = {
    "train": "biomamba.eval.report_train",
    "ppl": "biomamba.eval.report_ppl",
    "finetune": "biomamba.eval.report_finetune",
}


def add_arguments(parser):
    sub = parser.add_subparsers(dest="kind", metavar="KIND", required=True)
    for kind, module_name in KINDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            continue  # a report kind not built yet
        child = sub.add_parser(kind, help=(module.__doc__ or "").strip().splitlines()[0],
                               description=module.__doc__)
        module.add_arguments(child)
        child.set_defaults(report_run=module.run)


def run(args) -> int:
    return args.report_run(args)
