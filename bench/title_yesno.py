"""Write a PubMedQA-format yes/no task made from a `biomamba prepare` directory, for instruction
fine-tuning (`biomamba finetune --objective causal-lm`) and `biomamba eval-qa`.

NOT PubMedQA: each item's context is one abstract of the embedded MEDLINE data and its question is
"Is '<title>' the title of this abstract?", naming the abstract's own title for about half the items
(final_decision yes) and another title of the same split, drawn by hash, for the rest (no). The files
use PubMedQA's ori_pqal.json layout {pmid: {QUESTION, CONTEXTS, LABELS, final_decision}}, so any
PubMedQA reader takes them. train.json comes from the train split and test.json from the test split
(prepare's PMID-hash splits: no test PMID is in the pretraining shards or in train.json). The items are
the --train / --test documents whose PMID hashes lowest (biomamba/data/qa_titles.py): the same files on
every machine.

    python bench/title_yesno.py --data demo_out/data --out demo_out/title_yesno --train 2000 --test 200
    biomamba finetune --objective causal-lm --task pubmedqa:demo_out/title_yesno/train.json \\
        --model demo_out/tiny --out demo_out/sft --seeds 1 logging.wandb=false data.max_length=512
    biomamba eval-qa --model demo_out/sft --task pubmedqa:demo_out/title_yesno/test.json --out sft_qa.json
"""
import argparse
import json
from pathlib import Path

from biomamba.data.documents import read_documents
from biomamba.data.qa_titles import title_yesno_records
from biomamba.io import write_text


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="a `biomamba prepare` directory")
    p.add_argument("--out", required=True, help="directory for train.json and test.json")
    p.add_argument("--train", type=int, default=2000, help="train-split items (default 2000)")
    p.add_argument("--test", type=int, default=200, help="test-split items (default 200)")
    args = p.parse_args()
    for split, n in (("train", args.train), ("test", args.test)):
        records = title_yesno_records(read_documents(args.data, split), n)
        path = Path(args.out) / f"{split}.json"
        write_text(path, json.dumps(records, indent=1) + "\n")
        yes = sum(r["final_decision"] == "yes" for r in records.values())
        print(f"{path}: {len(records)} items from the {split} split, {yes} yes / {len(records) - yes} no")


if __name__ == "__main__":
    main()
