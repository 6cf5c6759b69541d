"""What changes between task kinds in fine-tuning: inputs, label tensors, the metric, the predictions file.

kind            head                                   selects by / reports       BLURB type
classification  sequence, softmax (single label)       macro-F1                   (qa for QA files: accuracy)
relation        sequence, softmax                      micro-F1 w/o the negative  relation
similarity      sequence, 1 output, MSE (regression)   Pearson r                  similarity
multilabel      sequence, a sigmoid per label          micro-F1 at the val-chosen threshold   document
ner             token, softmax per token               entity F1 (strict IOB2)    ner
pico            token, softmax per token               token-level macro-F1       pico

Token tasks follow the usual subword alignment: a word's tag labels its first subword, the other
subwords, special tokens and padding are -100 (never scored); the prediction for a word is read at its
first subword. BioMamba's byte-level BPE sees the words joined by single spaces; a subword belongs to the
word its first non-space character falls in (the tokenizer's offsets); a BERT the same, with its [CLS] and [SEP]
unlabelled (offsets rather than word_ids(): the same-budget BERT has the byte-level BPE, which
word_ids() over pre-split words would tokenize without the leading spaces it was pretrained with).
Words beyond data.max_length are predicted O (the gold tags are scored in full).
"""
import numpy as np
import torch

from biomamba.data.collate import pad_right
from biomamba.metrics import blurb
from biomamba.metrics.classification import classification_metrics

IGNORE = -100
TOKEN_KINDS = ("ner", "pico")
PROBLEM_TYPES = {"similarity": "regression", "multilabel": "multi_label_classification"}
HEADLINE = {"classification": "macro_f1", "relation": "micro_f1", "similarity": "pearson",
            "multilabel": "micro_f1", "ner": "entity_f1", "pico": "token_f1"}
SUMMARY = {"classification": ("accuracy", "macro_f1", "weighted_f1"),
           "relation": ("micro_f1", "micro_precision", "micro_recall", "accuracy", "macro_f1"),
           "similarity": ("pearson",),
           "multilabel": ("micro_f1", "micro_precision", "micro_recall", "threshold"),
           "ner": ("entity_f1", "entity_precision", "entity_recall"),
           "pico": ("token_f1",)}
QA_TASKS = ("pubmedqa:", "bioasq-yesno:")


def blurb_type(kind: str, task: str) -> tuple[str, str]:
    """(BLURB task type, the metric that scores it) of a run."""
    if kind == "classification":
        return ("qa", "accuracy") if task.startswith(QA_TASKS) else ("classification", "macro_f1")
    return {"relation": "relation", "similarity": "similarity", "multilabel": "document", "ner": "ner",
            "pico": "pico"}[kind], HEADLINE[kind]


# ----------------------------------------------------------------------------- inputs

def encode_tokens(examples, tokenizer, family: str, max_length: int) -> list[dict]:
    """input_ids, aligned labels and word_starts (each word's first subword position, -1 if cut off)."""
    return [_aligned(e.tokens, e.label, tokenizer, family, max_length) for e in examples]


def _aligned(words, tags, tokenizer, family, max_length):
    """The words joined by single spaces, tokenized with offsets: a subword belongs to the word its first
    non-space character falls in (a byte-level BPE's leading space included). A BERT adds its own
    special tokens ([CLS] ... [SEP], never labelled); BioMamba's input ends with EOS."""
    text = " ".join(words)
    owner = np.full(len(text), -1)  # char -> word index, -1 on the joining spaces
    start = 0
    for index, word in enumerate(words):
        owner[start:start + len(word)] = index
        start += len(word) + 1
    if family == "bert":
        out = tokenizer(text, truncation=True, max_length=max_length, return_offsets_mapping=True,
                        return_special_tokens_mask=True)
        special = out["special_tokens_mask"]
    else:
        out = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        out = {k: v[:max_length - 1] for k, v in out.items()}
        special = [0] * len(out["input_ids"])
    labels, starts, previous = [], [-1] * len(words), None
    for position, ((begin, end), is_special) in enumerate(zip(out["offset_mapping"], special)):
        inside = owner[begin:end]
        word = None if is_special else int(inside[inside >= 0][0]) if (inside >= 0).any() else previous
        first = word is not None and word != previous
        labels.append(tags[word] if first else IGNORE)
        if first:
            starts[word] = position
        previous = word
    item = {"input_ids": list(out["input_ids"]), "labels": labels, "word_starts": starts}
    if family == "bert" and "token_type_ids" in out:
        item["token_type_ids"] = out["token_type_ids"]
    if family != "bert":
        item["input_ids"].append(tokenizer.eos_token_id)
        item["labels"].append(IGNORE)
    return item


def label_values(kind: str, examples, encoded, n_labels: int) -> list:
    """What collate turns into the labels tensor: class ids, scores, multi-hot rows or aligned tags."""
    if kind in TOKEN_KINDS:
        return [item["labels"] for item in encoded]
    if kind == "multilabel":
        return [[1.0 if i in set(e.label) else 0.0 for i in range(n_labels)] for e in examples]
    return [e.label for e in examples]


def labels_tensor(kind: str, labels: list) -> torch.Tensor:
    if kind in TOKEN_KINDS:
        padded = torch.full((len(labels), max(map(len, labels))), IGNORE, dtype=torch.long)
        for i, row in enumerate(labels):
            padded[i, :len(row)] = torch.tensor(row, dtype=torch.long)
        return padded
    if kind in ("similarity", "multilabel"):
        return torch.tensor(labels, dtype=torch.float32)
    return torch.tensor(labels, dtype=torch.long)


def collate(items: list[dict], labels, pad_id: int, kind: str = "classification") -> dict:
    """Right-padded tensors: input_ids, attention_mask, [token_type_ids], labels."""
    ids, mask = pad_right([item["input_ids"] for item in items], pad_id)
    batch = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in items[0]:
        batch["token_type_ids"], _ = pad_right([item["token_type_ids"] for item in items], 0)
    if labels is not None:
        batch["labels"] = labels_tensor(kind, labels)
    return batch


# ----------------------------------------------------------------------------- scores

def word_tags(logits: torch.Tensor, starts: list[int], names: list[str]) -> list[str]:
    """A word's tag is the argmax at its first subword; a word cut off by max_length is O."""
    best = logits.argmax(-1).tolist()
    return [names[best[s]] if s >= 0 else "O" for s in starts]


def score_kind(kind, logits: list, split: dict, names, threshold=None) -> tuple[dict, list]:
    """(metrics incl. "loss", per-example prediction rows) of one split's logits (one tensor an example)."""
    gold = split["gold"]
    if kind in TOKEN_KINDS:
        pred = [word_tags(l, item["word_starts"], names) for l, item in zip(logits, split["encoded"])]
        gold_tags = [[names[i] for i in g] for g in gold]
        loss = torch.nn.functional.cross_entropy(torch.cat(logits), torch.tensor(
            [x for item in split["encoded"] for x in item["labels"]]), ignore_index=IGNORE)
        if kind == "ner":
            s = blurb.entity_scores(gold_tags, pred)
            metrics = {"entity_f1": s["f1"], "entity_precision": s["precision"], "entity_recall": s["recall"],
                       "per_type": s["per_type"]}
        else:
            s = blurb.token_scores(gold_tags, pred)
            metrics = {"token_f1": s["f1"], "per_type": s["per_type"]}
        rows = [{"tokens": e, "gold": g, "pred": p} for e, g, p in zip(split["tokens"], gold_tags, pred)]
        return {**metrics, "loss": float(loss)}, rows
    stacked = torch.stack(logits)
    if kind == "similarity":
        pred = stacked[:, 0]
        target = torch.tensor(gold, dtype=torch.float32)
        metrics = {"pearson": blurb.pearson(gold, pred.numpy()),
                   "loss": float(torch.nn.functional.mse_loss(pred, target))}
        return metrics, [{"gold": g, "pred": float(p)} for g, p in zip(gold, pred.tolist())]
    if kind == "multilabel":
        return _multilabel(stacked, gold, names, threshold)
    target = torch.tensor(gold)
    predicted = stacked.argmax(-1)
    metrics = classification_metrics(target.numpy(), predicted.numpy(), names)
    metrics["loss"] = float(torch.nn.functional.cross_entropy(stacked, target))
    if kind == "relation":
        positive = [i for i, n in enumerate(names) if n != split.get("negative")]
        s = blurb.micro_f1(target.numpy(), predicted.numpy(), positive)
        metrics.update(micro_f1=s["f1"], micro_precision=s["precision"], micro_recall=s["recall"])
    return metrics, [{"gold": names[g], "pred": names[p]} for g, p in zip(gold, predicted.tolist())]


def _multilabel(logits, gold, names, threshold):
    probabilities = torch.sigmoid(logits).numpy()
    target = np.zeros_like(probabilities)
    for row, ids in enumerate(gold):
        target[row, ids] = 1.0
    if threshold is None:  # val: choose it; test: the val-chosen one is passed in
        threshold = blurb.best_threshold(target, probabilities)
    predicted = probabilities >= threshold
    s = blurb.multilabel_micro_f1(target, predicted)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.from_numpy(target))
    metrics = {"micro_f1": s["f1"], "micro_precision": s["precision"], "micro_recall": s["recall"],
               "threshold": threshold, "loss": float(loss)}
    rows = [{"gold": [names[i] for i in ids], "pred": [names[i] for i in np.flatnonzero(p)]}
            for ids, p in zip(gold, predicted)]
    return metrics, rows
