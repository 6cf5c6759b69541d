"""Small task files in BLURB's formats, with labels a working model learns in a few steps."""
import json
import random
from pathlib import Path

CHEMICALS = ["aspirin", "insulin", "heparin", "glucose", "sodium", "cortisol"]
WORDS = ["the", "patients", "received", "and", "were", "treated", "with", "levels", "of", "in", "serum"]
SPLIT_FILES = {"train": "train", "val": "devel", "test": "test"}


def ner_sentences(n: int, seed: int) -> list[list[tuple[str, str]]]:
    """Sentences of filler words with chemical names tagged B-Chemical (two-word ones B- I-)."""
    rng = random.Random(seed)
    sentences = []
    for _ in range(n):
        pairs = []
        for _ in range(rng.randint(4, 9)):
            if rng.random() < 0.3:
                pairs.append((rng.choice(CHEMICALS), "B-Chemical"))
                if rng.random() < 0.3:
                    pairs.append(("acid", "I-Chemical"))
            else:
                pairs.append((rng.choice(WORDS), "O"))
        sentences.append(pairs)
    return sentences


def write_ner_dir(directory: Path, sizes=(60, 20, 20)) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for (split, stem), n in zip(SPLIT_FILES.items(), sizes):
        text = "\n\n".join("\n".join(f"{w}\t{t}" for w, t in s) for s in ner_sentences(n, list(SPLIT_FILES).index(split)))
        (directory / f"{stem}.tsv").write_text(text + "\n")
    return directory


def write_multilabel_jsonl(path: Path, n=120) -> Path:
    """Rows whose labels are the topics whose keyword occurs in the text."""
    rng = random.Random(1)
    topics = {"drug": "aspirin", "gene": "kinase", "cell": "neuron"}
    rows = []
    for i in range(n):
        chosen = [t for t in topics if rng.random() < 0.4]
        words = [topics[t] for t in chosen] + rng.sample(WORDS, 4)
        rng.shuffle(words)
        rows.append({"pmid": str(i), "text": " ".join(words), "labels": chosen,
                     "split": ["train", "train", "train", "val", "test"][i % 5]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_relation_dir(directory: Path, n=(60, 20, 20)) -> Path:
    """ChemProt-style: a sentence with @CHEMICAL$ and @GENE$; the verb decides the relation."""
    rng = random.Random(2)
    verbs = {"CPR:4": "inhibits", "CPR:3": "activates", "false": "and"}
    directory.mkdir(parents=True, exist_ok=True)
    for (split, stem), size in zip({"train": "train", "val": "dev", "test": "test"}.items(), n):
        lines = ["index\tsentence\tlabel"]
        for i in range(size):
            label = rng.choice(list(verbs))
            lines.append(f"{split}{i}\t@CHEMICAL$ {verbs[label]} @GENE$ in {rng.choice(WORDS)} cells .\t{label}")
        (directory / f"{stem}.tsv").write_text("\n".join(lines) + "\n")
    return directory


def write_similarity_dir(directory: Path, n=(40, 12, 12)) -> Path:
    """BIOSSES-style pairs: the score is the number of shared words."""
    rng = random.Random(3)
    directory.mkdir(parents=True, exist_ok=True)
    for stem, size in zip(("train", "dev", "test"), n):
        lines = ["index\tsentence1\tsentence2\tscore"]
        for i in range(size):
            a = rng.sample(WORDS, 5)
            shared = rng.randint(0, 4)
            b = a[:shared] + rng.sample([w for w in CHEMICALS], 5 - shared)
            lines.append(f"{i}\t{' '.join(a)}\t{' '.join(b)}\t{float(shared)}")
        (directory / f"{stem}.tsv").write_text("\n".join(lines) + "\n")
    return directory
