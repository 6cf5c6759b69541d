"""Multiple-choice QA metrics, as lm-eval 0.4.x computes them, plus an interval for each accuracy.

    pred, pred_norm = choice_predictions(loglikelihoods, choices)
    summary = accuracy_summary(correct)   # {"acc", "n", "correct", "stderr", "ci95": [lo, hi]}

acc: argmax of the choices' loglikelihoods; acc_norm: argmax of loglikelihood / len(choice) in
characters (lm-eval's ConfigurableTask.process_results: the choice as doc_to_choice gives it, without
the target delimiter); ties go to the first choice (numpy argmax). stderr is lm-eval's
(sample standard deviation / sqrt(n)); ci95 is the Wilson score interval, which stays inside [0, 1]
and is honest for the small n of QA test sets (BioASQ 13b: 82 yes/no questions).
"""
from __future__ import annotations

import math

import numpy as np

Z95 = 1.959963984540054  # the 97.5% quantile of the standard normal


def choice_predictions(loglikelihoods, choices) -> tuple[int, int]:
    """(argmax loglikelihood, argmax loglikelihood per character of the choice)."""
    lls = np.asarray(loglikelihoods, dtype=np.float64)
    lengths = np.array([float(len(c)) for c in choices])
    return int(np.argmax(lls)), int(np.argmax(lls / lengths))


def wilson_interval(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion correct / n."""
    if n == 0:
        return (0.0, 1.0)
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # at 0 or n hits a bound is exactly 0 or 1; the formula leaves rounding dust there
    return (0.0 if correct == 0 else centre - half, 1.0 if correct == n else centre + half)


def accuracy_summary(correct) -> dict:
    """acc, n, the count correct, lm-eval's stderr and the 95% Wilson interval of 0/1 outcomes."""
    outcomes = np.asarray(correct, dtype=np.float64)
    n, hits = len(outcomes), int(outcomes.sum())
    stderr = float(outcomes.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    lo, hi = wilson_interval(hits, n)
    return {"acc": hits / n if n else float("nan"), "n": n, "correct": hits, "stderr": stderr, "ci95": [lo, hi]}
