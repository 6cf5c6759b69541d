"""What each matching rule of the silver chemical NER task changes, counted on a prepared directory.

    python bench/chemical_rules.py --data PREPARED

Per input file, over every citation with a ChemicalList, counts the occurrences of its own names in its
title and abstract under other rules than the task's (biomamba/data/chemical_mentions.py), before the
skip and overlap rules:
  whole tokens, any case   the task's tokens and case rule (every span, overlapping ones included)
  whole tokens, exact case the same, but the text's tokens must equal the name's as written in MeSH
  substring, any case      re.IGNORECASE search of the name in the text, word boundaries ignored
The skip and overlap rules' own counts are in PREPARED/tasks/chemical-ner.meta.json ("removed").
"""
from __future__ import annotations

import argparse
import collections
import os
import re
import sys
from pathlib import Path

from biomamba.data import store
from biomamba.data.chemical_mentions import Dictionary, tokenize
from biomamba.data.silver_tasks import citation_sentences, require_chemicals


def _counts(doc: dict) -> collections.Counter:
    found = collections.Counter()
    sentences = citation_sentences(doc)
    text = " ".join([doc["title"]] + [t for _, _, t in doc["sections"]])
    for name in dict.fromkeys(name for _, name in doc["chemicals"]):
        written = tokenize(name)
        for tokens in sentences:
            spans = Dictionary.of_names([name]).candidates([t.lower() for t in tokens])
            found["whole tokens, any case"] += len(spans)
            found["whole tokens, exact case"] += sum(tokens[s:e] == written for s, e in spans)
        found["substring, any case"] += len(re.findall(re.escape(name), text, re.IGNORECASE))
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="a directory `biomamba prepare` wrote")
    args = parser.parse_args(argv)
    docs_dir = args.data / store.DOCUMENTS_DIR
    for entry in store.read_catalog(docs_dir)["units"]:
        where = store.store_path(docs_dir, entry["unit"])
        totals, citations = collections.Counter(), 0
        for doc in store.iter_unit_documents(docs_dir, entry):
            if require_chemicals(doc, where):
                citations += 1
                totals += _counts(doc)
        print(f"{entry['input']}: {citations} citations with a chemical list; " +
              "; ".join(f"{rule} {n}" for rule, n in sorted(totals.items())))
    print("load average %.2f %.2f %.2f" % os.getloadavg())
    return 0


if __name__ == "__main__":
    sys.exit(main())
