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
    PairedComparison,
    Predictions,
    PromotionDecision,
    earlier_than_champion,
    first_champion,
    gate_decision,
    is_better,
    metrics_of,
    metrics_table_markdown,
    paired_bootstrap,
    pick_winner,
    recorded_decision,
    score,
    unfair_comparison,
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


# ---------------------------------------------------------------- the paired bootstrap


def churn_like(n_rows: int, seed: int = 0) -> pd.Series:
    return pd.Series(np.random.default_rng(seed).random(n_rows) < 0.25).astype(int)


def scorer(y: pd.Series, skill: float, seed: int) -> Predictions:
    """Predictions whose scores separate the classes by `skill` standard deviations."""
    rng = np.random.default_rng(seed)
    scores = 1 / (1 + np.exp(-(skill * y.to_numpy() + rng.normal(size=len(y)))))
    return Predictions((scores > 0.5).astype(int), scores)


def bootstrap(y, winner, champion, metric="roc_auc", mode="max", samples=1000, seed=42) -> PairedComparison:
    return paired_bootstrap(metric, mode, y, winner, champion, samples, 0.95, seed)


@pytest.mark.parametrize("metric", list(CLASSIFICATION_METRICS))
def test_bootstrap_scores_both_models_exactly_as_scikit_learn_does(metric):
    y = churn_like(500)
    winner, champion = scorer(y, 1.5, seed=1), scorer(y, 0.5, seed=2)

    comparison = bootstrap(y, winner, champion, metric=metric, samples=200)

    assert comparison.winner == pytest.approx(metrics_of("classification", y, winner)[metric])
    assert comparison.champion == pytest.approx(metrics_of("classification", y, champion)[metric])
    assert comparison.improvement == pytest.approx(comparison.winner - comparison.champion)


@pytest.mark.parametrize("metric", list(REGRESSION_METRICS))
def test_bootstrap_scores_regression_as_scikit_learn_and_counts_lower_error_as_improvement(metric):
    rng = np.random.default_rng(5)
    y = pd.Series(rng.normal(10, 3, 800))
    close, far = Predictions(y.to_numpy() + rng.normal(0, 1, 800)), Predictions(y.to_numpy() + rng.normal(0, 3, 800))

    comparison = bootstrap(y, close, far, metric=metric, mode=REGRESSION_METRICS[metric], samples=300)

    assert comparison.winner == pytest.approx(metrics_of("regression", y, close)[metric])
    assert comparison.champion == pytest.approx(metrics_of("regression", y, far)[metric])
    assert comparison.improvement > 0
    assert comparison.low > 0


def test_a_clearly_better_model_has_its_whole_interval_above_zero():
    y = churn_like(1000)

    comparison = bootstrap(y, scorer(y, 2.0, seed=1), scorer(y, 1.0, seed=2))

    assert 0 < comparison.low < comparison.improvement < comparison.high
    assert comparison.rows == 1000
    assert comparison.samples == 1000


def test_a_difference_inside_the_noise_has_an_interval_across_zero():
    """Two models of the same skill: on 1,000 rows their ROC AUCs differ by luck alone."""
    y = churn_like(1000)

    comparison = bootstrap(y, scorer(y, 1.0, seed=1), scorer(y, 1.0, seed=2))

    assert comparison.low < 0 < comparison.high
    assert comparison.high - comparison.low > 0.01  # about four standard errors of the difference


def test_the_same_model_against_itself_improves_by_exactly_nothing():
    y = churn_like(400)
    same = scorer(y, 1.0, seed=1)

    comparison = bootstrap(y, same, same)

    assert (comparison.improvement, comparison.low, comparison.high) == (0.0, 0.0, 0.0)


def test_the_bootstrap_is_seeded():
    y = churn_like(300)
    winner, champion = scorer(y, 1.2, seed=1), scorer(y, 1.0, seed=2)

    assert bootstrap(y, winner, champion, seed=7) == bootstrap(y, winner, champion, seed=7)
    assert bootstrap(y, winner, champion, seed=7).low != bootstrap(y, winner, champion, seed=8).low


def test_resamples_holding_one_class_only_are_left_out_of_the_interval():
    y = pd.Series([1, 1] + [0] * 28)
    comparison = bootstrap(y, scorer(y, 2.0, seed=1), scorer(y, 1.0, seed=2), samples=500)

    assert 0 < comparison.samples < 500  # some resamples had no positive row
    assert np.isfinite([comparison.low, comparison.high]).all()


def test_a_large_batch_is_resampled_in_chunks_with_the_same_result():
    y = churn_like(11_000)
    winner, champion = scorer(y, 1.1, seed=1), scorer(y, 1.0, seed=2)

    comparison = bootstrap(y, winner, champion, samples=500)  # 5.5 million cells: two chunks

    assert comparison.samples == 500
    assert comparison.low < comparison.improvement < comparison.high


def test_a_comparison_survives_the_round_trip_through_version_tags():
    y = churn_like(300)
    comparison = bootstrap(y, scorer(y, 1.2, seed=1), scorer(y, 1.0, seed=2), samples=200)

    assert PairedComparison.from_tags(comparison.as_tags()) == comparison
    assert PairedComparison.from_tags({}) is None


# ---------------------------------------------------------------- the promotion rules


def comparison_of(improvement: float, low: float, high: float, rows: int = 1000) -> PairedComparison:
    return PairedComparison("roc_auc", 0.8 + improvement, 0.8, improvement, low, high, 0.95, rows, 2000)


def test_first_model_becomes_champion_when_there_is_none():
    decision = first_champion("roc_auc", 0.8123)

    assert decision.alias == "champion"
    assert decision.reason == "no current champion; roc_auc=0.8123"


def test_the_gate_promotes_when_the_whole_interval_is_above_the_minimum_effect():
    decision = gate_decision(comparison_of(0.03, 0.012, 0.05), "3", min_improvement=0.01, min_held_out_rows=200)

    assert decision.alias == "champion"
    assert decision.comparison.improvement == 0.03
    assert decision.reason == (
        "beats the champion (v3): roc_auc 0.8300 vs 0.8000, improvement +0.0300 "
        "(95% interval +0.0120 to +0.0500, 1000 rows); needed above 0.01"
    )


@pytest.mark.parametrize(
    ("low", "high"),
    [(-0.01, 0.05), (0.005, 0.05), (0.01, 0.05)],  # across zero, above zero but not the minimum, at it
)
def test_the_gate_keeps_a_challenger_whose_interval_reaches_below_the_minimum_effect(low, high):
    """The demo's old promotion: 0.8112 vs 0.8095, a point difference well inside the noise."""
    decision = gate_decision(comparison_of(0.02, low, high), "3", min_improvement=0.01, min_held_out_rows=200)

    assert decision.alias == "challenger"
    assert decision.reason.startswith("not surely better than the champion (v3): roc_auc 0.8200 vs 0.8000")


def test_the_gate_decides_nothing_on_too_few_rows_and_says_so():
    decision = gate_decision(comparison_of(0.2, 0.1, 0.3, rows=150), "3", min_improvement=0.0, min_held_out_rows=200)

    assert decision.alias == "challenger"
    assert decision.reason.startswith("too few held-out rows to decide (150, needs 200)")


BATCHES = ["b1", "b2", "b3"]


def test_a_batch_older_than_the_champions_never_takes_the_alias():
    decision = earlier_than_champion("b1", "7", "b3", BATCHES)

    assert decision.alias == "challenger"
    assert "trained on b1, earlier than the champion's batch b3 (v7)" in decision.reason


@pytest.mark.parametrize(
    ("batch", "champion_batch"),
    [("b3", "b3"), ("b3", "b1"), ("b2", "gone"), ("new", "b1"), ("b2", None)],
)
def test_the_same_or_a_later_batch_or_one_out_of_the_order_goes_on_to_the_comparison(batch, champion_batch):
    assert earlier_than_champion(batch, "7", champion_batch, BATCHES) is None


def test_a_champion_that_trained_on_held_out_rows_is_not_compared_on_them():
    decision = unfair_comparison("b2", "4", rows_seen_by_champion=880)

    assert decision.alias == "challenger"
    assert "trained on 880 of b2's held-out rows" in decision.reason


def test_a_champion_without_a_record_of_its_training_rows_is_not_compared():
    decision = unfair_comparison("b2", "4", rows_seen_by_champion=None)

    assert decision.alias == "challenger"
    assert "has no record of the rows it trained on" in decision.reason


def test_a_champion_that_never_saw_the_rows_is_compared():
    assert unfair_comparison("b2", "4", rows_seen_by_champion=0) is None


RULES = "rules-1"


def recorded(alias: str = "champion", incumbent: str = "3") -> dict[str, str]:
    return PromotionDecision(alias, "beats v3", comparison_of(0.03, 0.01, 0.05)).as_tags(incumbent, RULES)


@pytest.mark.parametrize(
    ("champion_now", "case"),
    [("3", "the step failed before the alias moved"), ("5", "the alias moved, the history write failed")],
)
def test_a_retried_decision_stands_while_the_champion_is_the_one_it_was_made_against_or_itself(champion_now, case):
    decision = recorded_decision(recorded(), version="5", champion_now=champion_now, rules=RULES)

    assert decision == PromotionDecision("champion", "beats v3", comparison_of(0.03, 0.01, 0.05)), case


def test_a_first_decision_stands_on_retry_with_no_champion_yet():
    tags = PromotionDecision("champion", "no current champion").as_tags(None, RULES)

    assert recorded_decision(tags, version="1", champion_now=None, rules=RULES).alias == "champion"


@pytest.mark.parametrize(
    ("tags", "champion_now", "rules"),
    [
        ({}, "3", RULES),  # registered before decisions were recorded
        (recorded(), "4", RULES),  # another batch took the alias in between: decide against it
        (recorded(), "3", "rules-2"),  # the promotion config changed since
    ],
)
def test_a_recorded_decision_is_made_again_when_it_no_longer_stands(tags, champion_now, rules):
    assert recorded_decision(tags, version="5", champion_now=champion_now, rules=rules) is None
