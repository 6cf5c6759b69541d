"""A dictionary baseline for the silver chemical NER task: tag by string matching with the train split's names.

    python bench/ner_dictionary_baseline.py --data PREPARED [--split test] [--out DIR]

The dictionary is every entity of PREPARED/tasks/chemical-ner/train.tsv (its tokens, lowercased). The
split's sentences are tagged with chemical_mentions.py's rules, the gold's own (case-insensitive, whole
tokens, leftmost-longest, no overlaps), but with one dictionary for every sentence instead of each
citation's own ChemicalList. Scored at the entity level by seqeval (strict IOB2), the metric BLURB reports
for NER. Prints precision, recall and F1, and how many gold entities the dictionary could find at all;
writes DIR/test_predictions.jsonl ({"tokens", "gold", "pred"} per sentence) and DIR/scores.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from biomamba.data.chemical_mentions import Dictionary, entity_spans, name_key, tag_tokens
from biomamba.data.errors import DataError
from biomamba.data.silver_tasks import NER_FILES, NER_TASK
from biomamba.io import atomic_open, write_json


def read_conll(path: Path) -> list[tuple[list[str], list[str]]]:
    """(tokens, tags) per sentence of a `token<TAB>tag` file with blank lines between sentences."""
    sentences, tokens, tags = [], [], []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line:
                if tokens:
                    sentences.append((tokens, tags))
                tokens, tags = [], []
                continue
            fields = line.split("\t")
            if len(fields) != 2:
                raise DataError(f"{path}:{number}", f"expected token<TAB>tag, found {len(fields)} fields")
            tokens.append(fields[0])
            tags.append(fields[1])
    if tokens:
        sentences.append((tokens, tags))
    return sentences


def train_dictionary(sentences) -> Dictionary:
    keys = {name_key(tokens[start:end]) for tokens, tags in sentences for start, end in entity_spans(tags)}
    return Dictionary(keys)


def score(gold: list[list[str]], pred: list[list[str]]) -> dict:
    from seqeval.metrics import f1_score, precision_score, recall_score
    from seqeval.scheme import IOB2
    strict = dict(mode="strict", scheme=IOB2)
    return {"precision": precision_score(gold, pred, **strict), "recall": recall_score(gold, pred, **strict),
            "f1": f1_score(gold, pred, **strict)}


def findable(sentences, dictionary: Dictionary) -> tuple[int, int]:
    """(gold entities whose name the dictionary holds, gold entities)."""
    known = {key for keys in dictionary.by_first.values() for key in keys}
    spans = [name_key(tokens[s:e]) for tokens, tags in sentences for s, e in entity_spans(tags)]
    return sum(key in known for key in spans), len(spans)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="a directory `biomamba prepare` wrote")
    parser.add_argument("--split", choices=("val", "test"), default="test", help="the split to tag (default test)")
    parser.add_argument("--out", type=Path, default=Path("ner_dictionary_baseline"),
                        help="where test_predictions.jsonl and scores.json go (default ./ner_dictionary_baseline)")
    args = parser.parse_args(argv)
    task_dir = args.data / "tasks" / NER_TASK
    try:
        train = read_conll(task_dir / NER_FILES["train"])
        evaluated = read_conll(task_dir / NER_FILES[args.split])
    except (OSError, DataError) as err:
        print(f"error: {err} (run `biomamba prepare --out {args.data}` first)", file=sys.stderr)
        return 1
    dictionary = train_dictionary(train)
    predicted = [tag_tokens(tokens, dictionary)[0] for tokens, _ in evaluated]
    scores = score([tags for _, tags in evaluated], predicted)
    known, total = findable(evaluated, dictionary)
    names = sum(map(len, dictionary.by_first.values()))
    scores.update(split=args.split, sentences=len(evaluated), gold_entities=total, dictionary_names=names,
                  gold_entities_in_dictionary=known, load_average=os.getloadavg())
    args.out.mkdir(parents=True, exist_ok=True)
    with atomic_open(args.out / f"{args.split}_predictions.jsonl", "w") as f:
        for (tokens, gold), pred in zip(evaluated, predicted):
            f.write(json.dumps({"tokens": tokens, "gold": gold, "pred": pred}, ensure_ascii=False) + "\n")
    write_json(args.out / "scores.json", scores)
    print(f"chemical-ner {args.split}: {len(evaluated)} sentences, {total} gold entities; dictionary of "
          f"{names} train names holds {known} of them ({known / max(total, 1):.1%})")
    print(f"entity-level (seqeval, strict IOB2): precision {scores['precision']:.4f}  recall {scores['recall']:.4f}  "
          f"F1 {scores['f1']:.4f}")
    print("load average %.2f %.2f %.2f" % os.getloadavg())
    return 0


if __name__ == "__main__":
    sys.exit(main())
