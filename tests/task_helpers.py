"""Task files and configs that several test files build (a test file never imports another)."""
import json
import random
from pathlib import Path

from biomamba.train.config import load_config
from biomamba.train.finetune_config import FinetuneConfig, check_finetune


def write_separable_task(path: Path, examples=300) -> Path:
    """A jsonl task whose two labels use disjoint words: any working classifier separates them."""
    rng = random.Random(0)
    words = {"drug": "aspirin insulin heparin statin dose tablet", "gene": "kinase receptor mutation protein allele"}
    rows = [{"id": i, "text": " ".join(rng.choice(words[label].split()) for _ in range(rng.randint(3, 8))),
             "label": label} for i, label in enumerate(rng.choice(list(words)) for _ in range(examples))]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_beir(directory: Path, corpus: dict, queries: dict, qrels: dict, splits=("train", "test")) -> Path:
    (directory / "qrels").mkdir(parents=True, exist_ok=True)
    with open(directory / "corpus.jsonl", "w") as f:
        for did, (title, text) in corpus.items():
            f.write(json.dumps({"_id": did, "title": title, "text": text}) + "\n")
    with open(directory / "queries.jsonl", "w") as f:
        for qid, text in queries.items():
            f.write(json.dumps({"_id": qid, "text": text}) + "\n")
    for split in splits:
        lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{g}" for q, docs in qrels.items() for d, g in docs.items()]
        (directory / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return directory


def lora_cfg(*overrides):
    return load_config(None, ["model.lora=true", *overrides], schema=FinetuneConfig, check=check_finetune)
