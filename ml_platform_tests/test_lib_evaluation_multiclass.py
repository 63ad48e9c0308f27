"""Multi-class evaluation: the metrics, the per-class figures, an unseen label and the paired bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm
from sklearn.linear_model import LogisticRegression

from ml_platform.lib.config import CLASSIFICATION_METRICS, PromotionConfig
from ml_platform.lib.evaluation import (
    Predictions,
    _metric_on_counts,
    _resample_counts,
    decide_on_held_out_rows,
    labels_unseen_in_training,
    metrics_of,
    paired_bootstrap,
    per_class_metrics,
    per_class_run_metrics,
    predict,
)
from ml_platform.lib.training import stratification

CLASSES = ("class_0", "class_1", "class_2")


def three_classes(n_rows: int, seed: int) -> tuple[pd.DataFrame, pd.Series]:
    """Three labels, one feature per label that reveals it through noise."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 3, n_rows)
    x = pd.DataFrame({f"f{k}": (codes == k) * 1.5 + rng.normal(size=n_rows) for k in range(3)})
    return x, pd.Series(np.array(CLASSES)[codes], name="y")


def scorer(y: pd.Series, skill: float, seed: int, decimals: int | None = None) -> Predictions:
    """A probability matrix leaning to the true label by `skill`; rounded to `decimals`, many rows tie."""
    rng = np.random.default_rng(seed)
    truth = np.asarray(y)
    logits = skill * np.column_stack([truth == label for label in CLASSES]) + rng.normal(size=(len(y), 3))
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    if decimals is not None:
        probabilities = np.round(probabilities, decimals)
    return Predictions(np.array(CLASSES)[probabilities.argmax(axis=1)], probabilities, CLASSES)


def test_three_classes_score_as_scikit_learns_macro_metrics():
    x, y = three_classes(300, seed=0)
    model = LogisticRegression().fit(x, y)

    predictions = predict("classification", model, x, CLASSES)
    metrics = metrics_of("classification", y, predictions)

    assert predictions.scores.shape == (300, 3)
    assert metrics == pytest.approx(
        {
            "f1": skm.f1_score(y, predictions.labels, average="macro"),
            "roc_auc": skm.roc_auc_score(y, model.predict_proba(x), multi_class="ovr", average="macro"),
            "precision": skm.precision_score(y, predictions.labels, average="macro"),
            "recall": skm.recall_score(y, predictions.labels, average="macro"),
            "accuracy": skm.accuracy_score(y, predictions.labels),
        }
    )


def test_a_binary_model_keeps_the_positive_class_probability_as_its_scores():
    x, y = three_classes(200, seed=1)
    y = (y == "class_0").astype(int)
    model = LogisticRegression().fit(x, y)

    predictions = predict("classification", model, x, [0, 1])

    assert predictions.scores.ndim == 1
    np.testing.assert_array_equal(predictions.scores, model.predict_proba(x)[:, 1])
    assert metrics_of("classification", y, predictions)["roc_auc"] == skm.roc_auc_score(y, predictions.scores)


def test_the_positive_class_of_a_binary_category_target_is_its_last_label():
    y = pd.Series(["No", "No", "No", "Yes"])
    labels = np.array(["No", "Yes", "No", "Yes"])
    probability_of_second = np.array([0.1, 0.8, 0.3, 0.9])

    yes_positive = metrics_of("classification", y, Predictions(labels, probability_of_second, ("No", "Yes")))
    no_positive = metrics_of("classification", y, Predictions(labels, 1 - probability_of_second, ("Yes", "No")))

    assert (yes_positive["recall"], yes_positive["precision"]) == (1.0, 0.5)
    assert (no_positive["recall"], no_positive["precision"]) == (pytest.approx(2 / 3), 1.0)
    assert yes_positive["roc_auc"] == no_positive["roc_auc"] == 1.0


def test_a_label_unseen_in_training_gets_probability_zero_and_counts_as_missed():
    x, y = three_classes(300, seed=2)
    trained_without_class_2 = y != "class_2"
    model = LogisticRegression().fit(x[trained_without_class_2], y[trained_without_class_2])

    predictions = predict("classification", model, x, CLASSES)
    metrics = metrics_of("classification", y, predictions)
    per_class = per_class_metrics(y, predictions)

    assert labels_unseen_in_training(y[trained_without_class_2], y) == ["class_2"]
    np.testing.assert_array_equal(predictions.scores[:, 2], 0.0)
    assert per_class["class_2"] == {"precision": 0.0, "recall": 0.0, "support": int((y == "class_2").sum())}
    assert metrics["recall"] == pytest.approx((per_class["class_0"]["recall"] + per_class["class_1"]["recall"]) / 3)
    assert all(math.isfinite(value) for value in metrics.values())


def test_nothing_is_unseen_when_every_scored_label_was_trained_on():
    assert labels_unseen_in_training(pd.Series([0, 1, 2]), pd.Series([2, 0]), pd.Series([], dtype=int)) == []


def test_a_label_absent_from_the_scored_rows_is_left_out_of_the_roc_auc():
    y = pd.Series(["class_0", "class_1", "class_0", "class_1"])
    predictions = scorer(y, 3.0, seed=3)

    roc_auc = metrics_of("classification", y, predictions)["roc_auc"]

    expected = np.mean([skm.roc_auc_score(y == label, predictions.scores[:, k]) for k, label in enumerate(CLASSES[:2])])
    assert roc_auc == pytest.approx(expected)


def test_per_class_metrics_name_each_label_with_its_precision_recall_and_support():
    y = pd.Series(["class_0", "class_0", "class_1", "class_2"])
    predictions = Predictions(np.array(["class_0", "class_1", "class_1", "class_1"]), np.zeros((4, 3)), CLASSES)

    assert per_class_metrics(y, predictions) == {
        "class_0": {"precision": 1.0, "recall": 0.5, "support": 2},
        "class_1": {"precision": pytest.approx(1 / 3), "recall": 1.0, "support": 1},
        "class_2": {"precision": 0.0, "recall": 0.0, "support": 1},
    }


def test_per_class_run_metrics_have_names_mlflow_accepts():
    names = per_class_run_metrics({"très bon!": {"precision": 1.0, "recall": 0.5, "support": 2}})

    assert names == {"class_tr_s_bon__precision": 1.0, "class_tr_s_bon__recall": 0.5}


@pytest.mark.parametrize("decimals", [None, 1], ids=["distinct scores", "tied scores"])
@pytest.mark.parametrize("metric", list(CLASSIFICATION_METRICS))
def test_the_multiclass_bootstrap_scores_both_models_exactly_as_metrics_of(metric, decimals):
    _, y = three_classes(400, seed=4)
    winner, champion = scorer(y, 2.0, seed=5, decimals=decimals), scorer(y, 0.7, seed=6, decimals=decimals)

    comparison = paired_bootstrap(metric, "max", y, winner, champion, 300, 0.95, seed=1)

    assert comparison.winner == pytest.approx(metrics_of("classification", y, winner)[metric])
    assert comparison.champion == pytest.approx(metrics_of("classification", y, champion)[metric])
    assert comparison.samples == 300


def test_each_multiclass_resample_agrees_with_scikit_learn_on_the_rows_drawn():
    """A dozen held-out rows, whose resamples often miss a class: the macro averages skip it as scikit-learn does."""
    _, y = three_classes(12, seed=7)
    model = scorer(y, 1.0, seed=8)
    counts = _resample_counts(np.random.default_rng(0), 3, len(y))
    # And a resample without any row of class_2, in the truth or the predictions.
    without_class_2 = (np.asarray(y) != "class_2") & (model.labels != "class_2")
    counts = np.vstack([counts, np.where(without_class_2, 2.0, 0.0)])
    macro = {"f1": skm.f1_score, "precision": skm.precision_score, "recall": skm.recall_score}
    for metric, sklearn_metric in macro.items():
        values = _metric_on_counts(metric, np.asarray(y), model, counts)
        for resample, value in zip(counts, values, strict=True):
            rows = np.repeat(np.arange(len(y)), resample.astype(int))
            expected = sklearn_metric(y.iloc[rows], model.labels[rows], average="macro", zero_division=0)
            assert value == pytest.approx(expected)


def test_the_gate_promotes_a_clearly_better_multiclass_model_and_not_an_equal_one():
    _, y = three_classes(600, seed=9)
    promotion = PromotionConfig(primary_metric="roc_auc", min_held_out_rows=200, bootstrap_samples=500)
    better, worse = scorer(y, 2.5, seed=10), scorer(y, 0.8, seed=11)

    promoted = decide_on_held_out_rows(promotion, "max", 42, y, better, worse, "1")
    kept = decide_on_held_out_rows(promotion, "max", 42, y, worse, worse, "1")

    assert promoted.alias == "champion" and promoted.comparison.low > 0
    assert kept.alias == "challenger" and kept.comparison.improvement == 0.0


@pytest.mark.parametrize(
    "labels, expected",
    [
        (["a"] * 10 + ["b"] * 10 + ["c"] * 10, "stratified"),
        (["a"] * 15 + ["b"] * 14 + ["c"], "plain"),  # a class of one row cannot be in both parts
        (["a", "b", "c", "d", "a", "b", "c", "d", "a", "b"], "plain"),  # 2 held-out rows for 4 classes
    ],
)
def test_a_split_is_stratified_only_when_every_class_can_be_in_both_parts(labels, expected):
    y = pd.Series(labels)

    stratify = stratification(y, test_size=0.2)

    assert ("stratified" if stratify is not None else "plain") == expected
