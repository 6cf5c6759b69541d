"""The metrics BLURB scores its task types by, written out so every number can be checked: tests compare
them to seqeval, scikit-learn and scipy on the same predictions.

    entity_scores(gold_tags, pred_tags)   NER: entity-level P/R/F1, seqeval's strict IOB2 mode
                                          (precision_score(..., mode="strict", scheme=IOB2))
    token_scores(gold_tags, pred_tags)    PICO: token-level F1 over the span types (B-/I- dropped, O not a
                                          class), macro-averaged: f1_score(average="macro", labels=types)
    micro_f1(gold, pred, labels)          relations: micro-F1 over the positive relation classes (the
                                          negative one left out, as BLURB scores ChemProt/DDI/GAD)
    multilabel_micro_f1(gold, pred)       documents (HoC style): micro-F1 over (example, label) pairs
    pearson(gold, pred)                   similarity (BIOSSES): scipy.stats.pearsonr's r
    blurb_average(scores_by_type)         the macro average over the task types present

Strict IOB2 (seqeval): an entity is B-X followed by any I-X; an I-X that does not continue a B-X or I-X of
the same type is no entity; an entity ends at the sentence end, at O, at B-, or at an I- of another type.
Undefined ratios (no predicted or no gold entity) are 0, as seqeval and scikit-learn report them.
"""
import math

import numpy as np


def entities(tags: list[str]) -> set[tuple[str, int, int]]:
    """(type, start, end) spans of one sentence's IOB2 tags, end exclusive, in seqeval's strict mode."""
    spans, kind, start = set(), None, None
    for i, tag in enumerate([*tags, "O"]):  # the sentinel closes an entity cut at the sentence end
        prefix, _, name = tag.partition("-")
        if kind is not None and not (prefix == "I" and name == kind):
            spans.add((kind, start, i))
            kind = None
        if prefix == "B":
            kind, start = name, i
    return spans


def _prf(tp: int, predicted: int, gold: int) -> dict:
    precision = tp / predicted if predicted else 0.0
    recall = tp / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def entity_scores(gold: list[list[str]], pred: list[list[str]]) -> dict:
    """Micro precision/recall/F1 over the entities of all sentences, and per entity type."""
    _same_shapes(gold, pred)
    gold_spans = [(n, *s) for n, tags in enumerate(gold) for s in entities(tags)]
    pred_spans = [(n, *s) for n, tags in enumerate(pred) for s in entities(tags)]
    hits = set(gold_spans) & set(pred_spans)
    result = {**_prf(len(hits), len(pred_spans), len(gold_spans)), "gold_entities": len(gold_spans),
              "predicted_entities": len(pred_spans)}
    types = sorted({s[1] for s in gold_spans} | {s[1] for s in pred_spans})
    result["per_type"] = {t: {**_prf(sum(h[1] == t for h in hits), sum(s[1] == t for s in pred_spans),
                                     sum(s[1] == t for s in gold_spans)),
                              "support": sum(s[1] == t for s in gold_spans)} for t in types}
    return result


def token_scores(gold: list[list[str]], pred: list[list[str]]) -> dict:
    """Token-level F1 per span type (a token's class is its tag without B-/I-) and their macro average."""
    _same_shapes(gold, pred)
    strip = lambda tag: tag.partition("-")[2] if tag != "O" else "O"  # noqa: E731
    g = [strip(t) for tags in gold for t in tags]
    p = [strip(t) for tags in pred for t in tags]
    types = sorted((set(g) | set(p)) - {"O"})
    per_type = {}
    for t in types:
        tp = sum(a == t and b == t for a, b in zip(g, p))
        per_type[t] = {**_prf(tp, p.count(t), g.count(t)), "support": g.count(t)}
    macro = float(np.mean([s["f1"] for s in per_type.values()])) if per_type else 0.0
    return {"f1": macro, "per_type": per_type}


def micro_f1(gold, pred, labels) -> dict:
    """Micro P/R/F1 of single-label predictions counted over the classes `labels` only."""
    gold, pred, labels = np.asarray(gold), np.asarray(pred), list(labels)
    if gold.shape != pred.shape:
        raise ValueError(f"gold has {gold.shape} items but pred {pred.shape}")
    tp = int(np.sum((gold == pred) & np.isin(pred, labels)))
    return _prf(tp, int(np.isin(pred, labels).sum()), int(np.isin(gold, labels).sum()))


def multilabel_micro_f1(gold, pred) -> dict:
    """Micro P/R/F1 of (n, labels) 0/1 indicator matrices."""
    gold, pred = np.asarray(gold, dtype=bool), np.asarray(pred, dtype=bool)
    if gold.shape != pred.shape:
        raise ValueError(f"gold has shape {gold.shape} but pred {pred.shape}")
    return _prf(int((gold & pred).sum()), int(pred.sum()), int(gold.sum()))


def best_threshold(gold, probabilities, grid=tuple(np.round(np.arange(0.05, 0.96, 0.05), 2))) -> float:
    """The threshold of `grid` with the highest micro-F1 (the lowest on ties): chosen on val, used on test."""
    scores = [(multilabel_micro_f1(gold, np.asarray(probabilities) >= t)["f1"], -t) for t in grid]
    return float(-max(scores)[1])


def pearson(gold, pred) -> float:
    """Pearson's r; 0 when either side is constant (scipy returns nan there)."""
    gold, pred = np.asarray(gold, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    a, b = gold - gold.mean(), pred - pred.mean()
    den = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else 0.0


def blurb_average(scores_by_type: dict[str, list[float]]) -> dict:
    """BLURB's score: the mean over task types of each type's mean over its tasks; says which types."""
    present = {t: float(np.mean(v)) for t, v in scores_by_type.items() if v}
    return {"score": float(np.mean(list(present.values()))) if present else None,
            "types_included": sorted(present), "per_type": present}


def _same_shapes(gold, pred):
    if len(gold) != len(pred) or any(len(a) != len(b) for a, b in zip(gold, pred)):
        raise ValueError("gold and predicted tags must have the same sentences and lengths")
