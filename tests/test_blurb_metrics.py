"""BLURB's metrics equal seqeval (strict IOB2), scikit-learn and scipy on the same predictions."""
import random

import numpy as np
import pytest
from scipy.stats import pearsonr
from seqeval.metrics import f1_score as seqeval_f1, precision_score as seqeval_precision, recall_score as seqeval_recall
from seqeval.scheme import IOB2
from sklearn.metrics import f1_score

from biomamba.metrics import blurb

EDGE_CASES = {
    "entity cut at the sentence end": ([["O", "B-Chem", "I-Chem"]], [["O", "B-Chem", "I-Chem"]]),
    "I- without B-": ([["O", "B-Chem", "I-Chem", "O"]], [["O", "I-Chem", "I-Chem", "O"]]),
    "I- of another type": ([["B-Chem", "I-Chem", "O"]], [["B-Chem", "I-Dis", "O"]]),
    "empty predictions": ([["B-Chem", "O"], ["O", "B-Dis"]], [["O", "O"], ["O", "O"]]),
    "no gold entity": ([["O", "O"]], [["B-Chem", "O"]]),
    "adjacent B- B-": ([["B-Chem", "B-Chem", "I-Chem"]], [["B-Chem", "I-Chem", "I-Chem"]]),
}


def seqeval_scores(gold, pred):
    kw = {"mode": "strict", "scheme": IOB2, "zero_division": 0}
    return {"precision": seqeval_precision(gold, pred, **kw), "recall": seqeval_recall(gold, pred, **kw),
            "f1": seqeval_f1(gold, pred, **kw)}


def random_tags(rng, length):
    return [rng.choice(["O", "O", "B-Chem", "I-Chem", "B-Dis", "I-Dis"]) for _ in range(length)]


@pytest.mark.parametrize("case", EDGE_CASES)
def test_entity_scores_equal_seqeval_strict_on_edge_cases(case):
    gold, pred = EDGE_CASES[case]
    ours = blurb.entity_scores(gold, pred)
    assert {k: ours[k] for k in ("precision", "recall", "f1")} == pytest.approx(seqeval_scores(gold, pred))


def test_entity_scores_equal_seqeval_strict_on_random_tags():
    rng = random.Random(0)
    for _ in range(50):
        lengths = [rng.randint(1, 12) for _ in range(rng.randint(1, 6))]
        gold = [random_tags(rng, n) for n in lengths]
        pred = [random_tags(rng, n) for n in lengths]
        ours = blurb.entity_scores(gold, pred)
        assert {k: ours[k] for k in ("precision", "recall", "f1")} == pytest.approx(seqeval_scores(gold, pred))


def test_strict_iob2_spans():
    assert blurb.entities(["B-A", "I-A", "O", "I-A", "B-A", "I-B", "B-B"]) == {("A", 0, 2), ("A", 4, 5), ("B", 6, 7)}


def test_token_f1_equals_scikit_learn_macro_over_span_types():
    rng = random.Random(1)
    gold = [random_tags(rng, rng.randint(1, 10)) for _ in range(30)]
    pred = [random_tags(rng, len(g)) for g in gold]
    strip = lambda t: t.split("-")[-1]  # noqa: E731
    flat_gold, flat_pred = [strip(t) for s in gold for t in s], [strip(t) for s in pred for t in s]
    expected = f1_score(flat_gold, flat_pred, labels=["Chem", "Dis"], average="macro", zero_division=0)
    assert blurb.token_scores(gold, pred)["f1"] == pytest.approx(expected)


def test_relation_micro_f1_equals_scikit_learn_without_the_negative_class():
    rng = np.random.default_rng(2)
    gold, pred = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    expected = f1_score(gold, pred, labels=[1, 2, 3], average="micro")
    assert blurb.micro_f1(gold, pred, [1, 2, 3])["f1"] == pytest.approx(expected)
    assert blurb.micro_f1([0, 0], [0, 0], [1])["f1"] == 0.0  # nothing positive anywhere


def test_multilabel_micro_f1_equals_scikit_learn():
    rng = np.random.default_rng(3)
    gold, pred = rng.integers(0, 2, (40, 5)), rng.integers(0, 2, (40, 5))
    assert blurb.multilabel_micro_f1(gold, pred)["f1"] == pytest.approx(f1_score(gold, pred, average="micro"))


def test_threshold_is_the_best_of_the_grid_on_val():
    gold = np.array([[1, 0], [0, 1], [1, 1]])
    probabilities = np.array([[0.3, 0.1], [0.26, 0.32], [0.4, 0.36]])  # only 0.30 of the grid is perfect
    threshold = blurb.best_threshold(gold, probabilities)
    assert threshold == 0.3
    assert blurb.multilabel_micro_f1(gold, probabilities >= threshold)["f1"] == 1.0


def test_pearson_equals_scipy():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=50), rng.normal(size=50)
    assert blurb.pearson(a, a + b) == pytest.approx(pearsonr(a, a + b)[0], abs=1e-12)
    assert blurb.pearson(a, np.ones(50)) == 0.0  # scipy: nan with a warning


def test_blurb_average_is_over_the_task_types_present_and_names_them():
    average = blurb.blurb_average({"ner": [0.8, 0.6], "document": [0.5], "similarity": []})
    assert average["score"] == pytest.approx((0.7 + 0.5) / 2)
    assert average["types_included"] == ["document", "ner"]
