"""The chemical NER dictionary baseline (bench/ner_dictionary_baseline.py) on the test sentences a
`biomamba finetune` run scores: the same hash subset (data.max_eval_examples), with the dictionary built
from the whole train split and from the capped train subset the models were fine-tuned on.

    python bench/dictionary_on_finetune_subset.py --data PREPARED [--max-train 1000] [--max-eval 300]
"""
import argparse
import importlib.util
import os
import sys
from pathlib import Path

from biomamba.data.chemical_mentions import tag_tokens
from biomamba.data.task_loaders import load_task
from biomamba.train.config import load_config
from biomamba.train.finetune_config import FinetuneConfig, check_finetune

HERE = Path(__file__).resolve().parent


def baseline_module():
    spec = importlib.util.spec_from_file_location("ner_dictionary_baseline", HERE / "ner_dictionary_baseline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sentences(task, split):
    return [(e.tokens, [task.labels[i] for i in e.label]) for e in task.splits[split]]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a directory `biomamba prepare` wrote")
    parser.add_argument("--max-train", type=int, default=1000, help="data.max_train_examples of the runs")
    parser.add_argument("--max-eval", type=int, default=300, help="data.max_eval_examples of the runs")
    args = parser.parse_args(argv)
    base = baseline_module()
    capped = load_config(None, [f"data.dir={args.data}", f"data.max_train_examples={args.max_train}",
                                f"data.max_eval_examples={args.max_eval}"], schema=FinetuneConfig,
                         check=check_finetune).data
    task = load_task("chemical-ner", capped)
    test = sentences(task, "test")
    full_train = base.read_conll(Path(args.data) / "tasks" / "chemical-ner" / "train.tsv")
    for name, train in (("whole train split", full_train), (f"{args.max_train} train sentences", sentences(task, "train"))):
        dictionary = base.train_dictionary(train)
        predicted = [tag_tokens(tokens, dictionary)[0] for tokens, _ in test]
        s = base.score([tags for _, tags in test], predicted)
        print(f"dictionary from the {name}: test subset of {len(test)} sentences: entity precision "
              f"{s['precision']:.4f} recall {s['recall']:.4f} F1 {s['f1']:.4f}")
    print("load average %.2f %.2f %.2f" % os.getloadavg())
    return 0


if __name__ == "__main__":
    sys.exit(main())
