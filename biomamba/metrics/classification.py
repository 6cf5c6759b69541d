"""Classification metrics, written out so every number can be checked: tests compare them to scikit-learn.

    scores = classification_metrics(y_true, y_pred, names=["no", "yes"])
    scores["accuracy"], scores["macro_f1"], scores["weighted_f1"], scores["per_class"]["yes"]["f1"]

Definitions (scikit-learn's, with zero_division=0):
  precision_c = TP_c / (TP_c + FP_c), recall_c = TP_c / (TP_c + FN_c), F1_c = 2 P R / (P + R), 0 when undefined
  macro-F1    = the unweighted mean of F1_c over the classes averaged
  weighted-F1 = the mean of F1_c weighted by support_c (the number of true examples of c)
The classes averaged are the union of labels in y_true and y_pred (scikit-learn's default), unless
`labels` names them. The per-class report lists every class of `names` (support 0 included).
Seeds are summarised by mean and sample standard deviation (ddof=1; 0 for a single seed).
"""
import math

import numpy as np

SUMMARY_KEYS = ("accuracy", "macro_f1", "weighted_f1")


def confusion(y_true, y_pred, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) counts: rows are true classes, columns predicted ones."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.shape} items but y_pred {y_pred.shape}")
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def _ratio(num, den) -> np.ndarray:
    return np.divide(num, den, out=np.zeros(len(num), dtype=np.float64), where=den > 0)


def per_class_scores(matrix: np.ndarray) -> dict:
    """precision, recall, f1 and support per class (arrays indexed by class id)."""
    tp = np.diag(matrix).astype(np.float64)
    predicted, support = matrix.sum(0), matrix.sum(1)
    precision, recall = _ratio(tp, predicted), _ratio(tp, support)
    f1 = _ratio(2 * precision * recall, precision + recall)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def classification_metrics(y_true, y_pred, names=None, labels=None) -> dict:
    """Accuracy, macro/weighted precision, recall and F1, and a per-class report.

    y_true, y_pred: class ids (ints). names: the class names by id (default: the ids as strings).
    labels: the class ids to average over (default: those present in y_true or y_pred).
    """
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    labels = None if labels is None else [int(c) for c in labels]
    if len(y_true) == 0:
        raise ValueError("no examples to score")
    n_classes = int(max(y_true.max(), y_pred.max(), max(labels or [0])) + 1)
    if names is not None:
        n_classes = max(n_classes, len(names))
    names = list(names) if names is not None else [str(i) for i in range(n_classes)]
    matrix = confusion(y_true, y_pred, n_classes)
    scores = per_class_scores(matrix)
    averaged = np.array(sorted(set(y_true.tolist()) | set(y_pred.tolist())) if labels is None else labels)
    support = scores["support"][averaged]
    result = {"accuracy": float(np.mean(y_true == y_pred)), "examples": int(len(y_true))}
    for key in ("precision", "recall", "f1"):
        values = scores[key][averaged]
        result[f"macro_{key}"] = float(values.mean())
        result[f"weighted_{key}"] = float((values * support).sum() / support.sum()) if support.sum() else 0.0
    result["per_class"] = {names[c]: {"precision": float(scores["precision"][c]), "recall": float(scores["recall"][c]),
                                      "f1": float(scores["f1"][c]), "support": int(scores["support"][c])}
                           for c in range(len(names))}
    result["confusion"] = matrix.tolist()
    return result


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1); the deviation of one value is 0."""
    values = [float(v) for v in values]
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def summarise_seeds(per_seed: list[dict], keys=SUMMARY_KEYS) -> tuple[dict, dict]:
    """{key: mean}, {key: std} over seeds of the scalar metrics `keys` (each seed's dict holds them)."""
    means, stds = {}, {}
    for key in keys:
        means[key], stds[key] = mean_std([scores[key] for scores in per_seed])
    return means, stds


def per_class_table(per_class: dict) -> str:
    """A markdown table of a per-class report."""
    lines = ["| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for name, s in per_class.items():
        lines.append(f"| {name} | {s['precision']:.4f} | {s['recall']:.4f} | {s['f1']:.4f} | {s['support']} |")
    return "\n".join(lines) + "\n"
