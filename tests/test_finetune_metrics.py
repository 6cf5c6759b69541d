"""Classification metrics equal scikit-learn's on fixed predictions; seed summaries; the report table."""
import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from biomamba.metrics.classification import classification_metrics, mean_std, summarise_seeds
from biomamba.eval.report_finetune import comparison, table, verdicts

CASES = [
    # balanced 5 classes, random predictions
    (np.random.default_rng(0).integers(0, 5, 200), np.random.default_rng(1).integers(0, 5, 200)),
    # a class never predicted (precision 0/0) and a class predicted but absent from y_true
    ([0, 0, 1, 1, 2, 2, 2, 0], [0, 1, 1, 1, 3, 3, 2, 0]),
    # perfect and all-wrong binary
    ([0, 1, 1, 0], [0, 1, 1, 0]),
    ([0, 1, 1, 0], [1, 0, 0, 1]),
    # skewed
    ([4] * 30 + [0] * 3 + [2] * 7, [4] * 25 + [0] * 8 + [2] * 7),
]


@pytest.mark.parametrize("y_true, y_pred", CASES)
def test_metrics_equal_scikit_learn(y_true, y_pred):
    ours = classification_metrics(y_true, y_pred, names=[f"c{i}" for i in range(5)])
    assert ours["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred), abs=1e-12)
    for average in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average=average, zero_division=0)
        assert ours[f"{average}_f1"] == pytest.approx(f, abs=1e-12)
        assert ours[f"{average}_precision"] == pytest.approx(p, abs=1e-12)
        assert ours[f"{average}_recall"] == pytest.approx(r, abs=1e-12)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=range(5), zero_division=0)
    for c in range(5):
        row = ours["per_class"][f"c{c}"]
        assert (row["precision"], row["recall"], row["f1"], row["support"]) == pytest.approx((p[c], r[c], f[c], s[c]))


def test_metrics_over_named_labels_equal_scikit_learn():
    y_true, y_pred = [0, 0, 1, 2], [0, 1, 1, 1]
    ours = classification_metrics(y_true, y_pred, labels=[0, 1, 2, 3])
    assert ours["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, labels=[0, 1, 2, 3], average="macro",
                                                      zero_division=0))


def test_mean_and_sample_std_over_seeds():
    assert mean_std([0.5]) == (0.5, 0.0)
    mean, std = mean_std([0.6, 0.7, 0.95])
    assert mean == pytest.approx(np.mean([0.6, 0.7, 0.95]))
    assert std == pytest.approx(np.std([0.6, 0.7, 0.95], ddof=1))
    means, stds = summarise_seeds([{"accuracy": 0.5, "macro_f1": 0.4, "weighted_f1": 0.45},
                                   {"accuracy": 0.7, "macro_f1": 0.6, "weighted_f1": 0.65}])
    assert means["macro_f1"] == pytest.approx(0.5) and stds["accuracy"] == pytest.approx(np.std([0.5, 0.7], ddof=1))


def _fake_run(name, macro_f1s):
    scores = [{"accuracy": f + 0.1, "macro_f1": f, "weighted_f1": f + 0.05} for f in macro_f1s]
    means, stds = summarise_seeds(scores)
    return {"run": name, "task": "sentence-roles", "model": f"/x/{name}", "model_kind": "biomamba", "parameters": 1e6,
            "seeds": list(range(len(scores))), "mean": {"test": means, "val": means, "wall_s": 10.0},
            "std": {"test": stds, "val": stds, "wall_s": 1.0}, "per_seed": []}


def test_report_says_which_run_is_better_and_by_how_much():
    rows = comparison([_fake_run("mamba", [0.60, 0.62, 0.61]), _fake_run("bert", [0.50, 0.52, 0.51])])
    assert rows[1]["delta_vs_first"]["macro_f1"] == pytest.approx(-0.10)
    text = table(rows)
    assert "0.6100 ± 0.0100" in text and "-0.1000" in text
    (verdict,) = verdicts(rows)
    assert verdict.startswith("sentence-roles: mamba is better than bert by 0.1000 test macro-F1")
    assert "more than 2 standard errors" in verdict
