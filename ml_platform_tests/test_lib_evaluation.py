"""Evaluation: the task's metrics, the winner among candidates, and the promotion decision."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.dummy import DummyRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.tree import DecisionTreeClassifier

from ml_platform.lib.config import CLASSIFICATION_METRICS, REGRESSION_METRICS
from ml_platform.lib.evaluation import (
    champion_saw_batch,
    decide_promotion,
    is_better,
    metrics_table_markdown,
    pick_winner,
    score,
)


def labelled(n_rows: int, seed: int) -> tuple[pd.DataFrame, pd.Series]:
    """A binary label, a feature that reveals it and a feature of pure noise."""
    rng = np.random.default_rng(seed)
    y = pd.Series(rng.integers(0, 2, n_rows), name="y")
    x = pd.DataFrame({"signal": y * 2.0 - 1.0, "noise": rng.normal(size=n_rows)})
    return x, y


def test_perfect_classifier_scores_one_on_every_metric():
    x, y = labelled(200, seed=0)
    model = DecisionTreeClassifier(random_state=0).fit(x[["signal"]], y)

    scores = score("classification", model, x[["signal"]], y)

    assert set(scores) == set(CLASSIFICATION_METRICS)
    assert scores == pytest.approx({name: 1.0 for name in CLASSIFICATION_METRICS})
    assert all(type(value) is float for value in scores.values())


def test_classifier_on_noise_scores_near_chance():
    x_train, y_train = labelled(2000, seed=1)
    x_test, y_test = labelled(2000, seed=2)
    model = LogisticRegression().fit(x_train[["noise"]], y_train)

    scores = score("classification", model, x_test[["noise"]], y_test)

    assert set(scores) == set(CLASSIFICATION_METRICS)
    assert scores["roc_auc"] == pytest.approx(0.5, abs=0.05)
    assert scores["accuracy"] == pytest.approx(0.5, abs=0.05)
    for name in CLASSIFICATION_METRICS:
        assert 0.0 <= scores[name] <= 1.0


def test_perfect_regressor_has_zero_error_and_r2_of_one():
    x = pd.DataFrame({"a": np.arange(50, dtype=float)})
    y = pd.Series(2.0 * x["a"] + 1.0)
    model = LinearRegression().fit(x, y)

    scores = score("regression", model, x, y)

    assert set(scores) == set(REGRESSION_METRICS)
    assert scores["rmse"] == pytest.approx(0.0, abs=1e-9)
    assert scores["mae"] == pytest.approx(0.0, abs=1e-9)
    assert scores["r2"] == pytest.approx(1.0)


def test_mean_predictor_has_r2_zero_and_rmse_of_the_spread():
    rng = np.random.default_rng(3)
    x = pd.DataFrame({"a": rng.normal(size=500)})
    y = pd.Series(rng.normal(10.0, 2.0, size=500))
    model = DummyRegressor(strategy="mean").fit(x, y)

    scores = score("regression", model, x, y)

    assert scores["r2"] == pytest.approx(0.0, abs=1e-12)
    assert scores["rmse"] == pytest.approx(float(y.std(ddof=0)))
    assert scores["mae"] == pytest.approx(float((y - y.mean()).abs().mean()))


SCORES = {
    "forest": {"roc_auc": 0.81, "rmse": 3.0},
    "boosting": {"roc_auc": 0.84, "rmse": 2.5},
    "linear": {"roc_auc": 0.79, "rmse": 2.0},
}


def test_pick_winner_takes_the_highest_score_in_max_mode():
    assert pick_winner(SCORES, "roc_auc", "max") == "boosting"


def test_pick_winner_takes_the_lowest_score_in_min_mode():
    assert pick_winner(SCORES, "rmse", "min") == "linear"


def test_pick_winner_breaks_ties_by_name():
    tied = {"zeta": {"f1": 0.7}, "alpha": {"f1": 0.7}, "mid": {"f1": 0.6}}

    assert pick_winner(tied, "f1", "max") == "alpha"


def test_pick_winner_without_candidates_is_an_error():
    with pytest.raises(ValueError, match="no candidates"):
        pick_winner({}, "f1", "max")


@pytest.mark.parametrize(
    ("candidate", "incumbent", "mode", "margin", "expected"),
    [
        (0.80, 0.70, "max", 0.0, True),
        (0.70, 0.80, "max", 0.0, False),
        (0.70, 0.70, "max", 0.0, False),
        (0.705, 0.70, "max", 0.01, False),
        (0.72, 0.70, "max", 0.01, True),
        (2.0, 3.0, "min", 0.0, True),
        (3.0, 2.0, "min", 0.0, False),
        (2.95, 3.0, "min", 0.1, False),
        (2.8, 3.0, "min", 0.1, True),
    ],
)
def test_is_better_honours_direction_and_margin(candidate, incumbent, mode, margin, expected):
    assert is_better(candidate, incumbent, mode, margin) is expected


def test_first_model_becomes_champion_when_there_is_none():
    decision = decide_promotion("roc_auc", "max", 0.001, challenger=0.8123, champion=None)

    assert decision.alias == "champion"
    assert decision.reason == "no current champion; roc_auc=0.8123"


def test_challenger_better_by_more_than_the_margin_becomes_champion():
    decision = decide_promotion("roc_auc", "max", 0.001, challenger=0.8200, champion=0.8100)

    assert decision.alias == "champion"
    assert "beats the champion" in decision.reason
    assert "roc_auc 0.8200 vs 0.8100" in decision.reason
    assert "margin over 0.001" in decision.reason


@pytest.mark.parametrize(
    ("metric", "mode", "challenger", "champion"),
    [("roc_auc", "max", 0.8105, 0.8100), ("roc_auc", "max", 0.79, 0.81), ("rmse", "min", 2.9995, 3.0)],
)
def test_challenger_not_better_by_the_margin_stays_challenger(metric, mode, challenger, champion):
    decision = decide_promotion(metric, mode, 0.001, challenger=challenger, champion=champion)

    assert decision.alias == "challenger"
    assert decision.reason.startswith("does not beat the champion")
    assert f"{metric} {challenger:.4f} vs {champion:.4f}" in decision.reason


def test_lower_rmse_by_more_than_the_margin_becomes_champion():
    decision = decide_promotion("rmse", "min", 0.1, challenger=2.5, champion=3.0)

    assert decision.alias == "champion"
    assert "rmse 2.5000 vs 3.0000" in decision.reason


def test_metrics_table_lists_every_metric_and_marks_the_winner():
    scores = {
        "random_forest": {"f1": 0.5, "roc_auc": 0.8, "precision": 0.6, "recall": 0.4, "accuracy": 0.85},
        "logistic_regression": {"f1": 0.55, "roc_auc": 0.82, "precision": 0.5, "recall": 0.6, "accuracy": 0.8},
    }

    table = metrics_table_markdown(scores, "classification", winner="logistic_regression")

    assert table.splitlines() == [
        "| model | f1 | roc_auc | precision | recall | accuracy |",
        "|---|---|---|---|---|---|",
        "| **logistic_regression** (winner) | 0.5500 | 0.8200 | 0.5000 | 0.6000 | 0.8000 |",
        "| random_forest | 0.5000 | 0.8000 | 0.6000 | 0.4000 | 0.8500 |",
    ]


def test_metrics_table_shows_missing_and_nan_values_as_not_available():
    table = metrics_table_markdown({"ridge": {"rmse": 1.5, "mae": float("nan")}}, "regression", winner="ridge")

    assert table.splitlines()[-1] == "| **ridge** (winner) | 1.5000 | n/a | n/a |"


@pytest.mark.parametrize(
    ("window", "champion_batch", "batch", "saw"),
    [
        ("cumulative", "b3", "b2", True),  # b3's window held all of b2
        ("cumulative", "b2", "b2", False),  # same batch: the held-out rows were held out then too
        ("cumulative", "b1", "b2", False),  # an earlier champion never saw b2
        ("batch", "b3", "b2", False),  # a per-batch champion only saw b3
        (None, None, "b2", False),  # a version registered without these tags
    ],
)
def test_champion_saw_batch_only_when_a_later_cumulative_window_held_it(window, champion_batch, batch, saw):
    assert champion_saw_batch(window, champion_batch, batch, ["b1", "b2", "b3"]) is saw
