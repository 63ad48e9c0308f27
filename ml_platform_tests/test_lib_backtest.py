"""The backtest's pure part: a fitted model scored batch by batch, error rows, the trend and its verdict."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ml_platform.lib.backtest import BacktestResult, BatchScore, Trend, model_inputs, run_backtest, trend
from ml_platform.lib.config import CLASSIFICATION_METRICS
from ml_platform.lib.demo_data import generate_churn_batch
from ml_platform.lib.evaluation import score
from ml_platform.lib.training import fit_model, split_train_test
from ml_platform_tests.conftest import small_config

CONFIG = small_config()
DRIFT = 0.2


def batch(number: int, rows: int = 1500) -> pd.DataFrame:
    """A batch as the `features` table holds it: the data set's columns and the batch id."""
    return generate_churn_batch(number, rows, drift=DRIFT).assign(batch_id=f"batch_{number:04d}")


@pytest.fixture(scope="module")
def model():
    """Logistic regression trained on batch 1, as the pipeline would train it."""
    split = split_train_test(batch(1), CONFIG.data, CONFIG.training, "batch_0001")
    return fit_model("classification", "logistic_regression", {}, split, random_state=7).pipeline


def backtest(model, batches: dict[str, pd.DataFrame], metric: str = "roc_auc", mode: str = "max") -> BacktestResult:
    return run_backtest(model, batches, CONFIG.data, metric=metric, mode=mode)


def test_every_batch_is_scored_in_the_given_order_on_all_its_rows_with_every_task_metric(model):
    batches = {f"batch_{n:04d}": batch(n, rows=1000 + n) for n in (4, 2, 3)}

    result = backtest(model, batches)

    assert [row.batch_id for row in result.batches] == ["batch_0004", "batch_0002", "batch_0003"]
    assert [row.rows for row in result.batches] == [1004, 1002, 1003]
    assert result.rows_scored == 3009 and result.errors == ()
    for row in result.batches:
        assert set(row.metrics) == set(CLASSIFICATION_METRICS)
        assert all(0.0 <= value <= 1.0 for value in row.metrics.values())
    x, y = model_inputs(batches["batch_0002"], CONFIG.data)
    assert result.batches[1].metrics == score("classification", model, x, y, CONFIG.data.classes)


def test_model_inputs_leave_out_target_id_and_batch_id_and_give_numbers_as_floats():
    x, y = model_inputs(batch(2, rows=50), CONFIG.data)

    assert not {"churned", "customer_id", "batch_id"} & set(x.columns)
    assert {"tenure_months", "contract_type", "age"} <= set(x.columns)
    assert x["tenure_months"].dtype == "float64" and x["age"].dtype == "float64"  # int and nullable Int64
    assert x["contract_type"].dtype == object
    assert y.name == "churned" and len(y) == 50


def test_model_inputs_leave_out_the_columns_the_contract_marks_as_not_features():
    region = CONFIG.data.columns["region"].model_copy(update={"role": "ignore"})
    data = CONFIG.data.model_copy(update={"columns": {**CONFIG.data.columns, "region": region}})

    x, _ = model_inputs(batch(2, rows=20), data)

    assert "region" not in x.columns and "tenure_months" in x.columns


def test_a_batch_the_model_cannot_read_is_an_error_row_and_the_others_are_still_scored(model):
    batches = {
        "batch_0002": batch(2),
        "batch_0003": batch(3).drop(columns=["region"]),
        "batch_0004": batch(4).drop(columns=["churned"]),
        "batch_0005": batch(5),
    }

    result = backtest(model, batches)

    assert [row.batch_id for row in result.scored] == ["batch_0002", "batch_0005"]
    errors = {row.batch_id: row.error for row in result.errors}
    assert errors["batch_0003"].startswith("ValueError: columns are missing") and "region" in errors["batch_0003"]
    assert errors["batch_0004"] == "KeyError: no target column 'churned' in the batch's features"
    assert result.batches[1].metrics is None and result.batches[2].metrics is None
    assert result.batches[2].rows == 1500
    # The trend runs over the scored batches, keeping their places: three batches apart.
    first, last = result.scored[0].metrics["roc_auc"], result.scored[1].metrics["roc_auc"]
    assert result.trend.slope == pytest.approx((last - first) / 3)
    assert result.trend.change == pytest.approx(last - first)


def test_an_undefined_primary_metric_is_left_out_of_the_trend_and_written_as_null(model):
    batches = {"batch_0002": batch(2), "batch_0003": batch(3).assign(churned=0), "batch_0004": batch(4)}

    with pytest.warns(UserWarning, match="Only one class"):  # ROC AUC is undefined on a single class
        result = backtest(model, batches)

    assert result.errors == () and np.isnan(result.batches[1].metrics["roc_auc"])
    assert 0.0 <= result.batches[1].metrics["accuracy"] <= 1.0  # the other metrics are still there
    first, last = (result.batches[i].metrics["roc_auc"] for i in (0, 2))
    assert result.trend.slope == pytest.approx((last - first) / 2)
    report = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert report["batches"][1]["metrics"]["roc_auc"] is None
    assert "| batch_0003 | 1500 | n/a |" in result.markdown()


def test_an_empty_batch_is_an_error_row(model):
    result = backtest(model, {"batch_0002": batch(2).iloc[0:0], "batch_0003": batch(3)})

    assert result.batches[0].error == "ValueError: the batch has no rows"
    assert result.trend.verdict == "too few batches" and result.trend.slope is None


def test_labels_drifting_away_from_what_the_model_learned_show_as_a_degrading_trend(model):
    """Batch by batch, 10% more of the labels are flipped: ROC AUC falls, and an error metric
    read in its own direction would say the same."""
    rng = np.random.default_rng(0)
    batches = {}
    for step, number in enumerate(range(2, 7)):
        frame = batch(number)
        flipped = rng.uniform(size=len(frame)) < 0.1 * step
        batches[f"batch_{number:04d}"] = frame.assign(churned=np.where(flipped, 1 - frame["churned"], frame["churned"]))

    result = backtest(model, batches)

    auc = [row.metrics["roc_auc"] for row in result.batches]
    assert result.trend.verdict == "degrading"
    assert result.trend.slope < -result.trend.tolerance < 0
    assert result.trend.change == pytest.approx(auc[-1] - auc[0])
    assert result.trend.slope == pytest.approx(np.polyfit(range(5), auc, 1)[0])


@pytest.mark.parametrize(
    ("values", "mode", "verdict"),
    [
        ([0.80, 0.78, 0.75, 0.71], "max", "degrading"),
        ([0.70, 0.74, 0.77, 0.80], "max", "improving"),
        ([0.80, 0.801, 0.799, 0.8], "max", "stable"),
        ([10.0, 11.0, 12.5, 14.0], "min", "degrading"),  # an error metric going up
        ([14.0, 12.0, 11.0, 10.0], "min", "improving"),
        ([10.0, 10.05, 9.98, 10.02], "min", "stable"),  # within 1% of ~10 per batch
        ([0.8], "max", "too few batches"),
    ],
)
def test_trend_verdict_reads_the_slope_in_the_metrics_direction(values, mode, verdict):
    assert trend(list(enumerate(values)), mode).verdict == verdict


def test_trend_slope_is_least_squares_and_tolerance_relative_to_the_mean():
    points = [(0, 0.9), (1, 0.7), (3, 0.8), (4, 0.5)]

    fitted = trend(points, "max", relative_tolerance=0.1)

    assert fitted.slope == pytest.approx(np.polyfit([0, 1, 3, 4], [0.9, 0.7, 0.8, 0.5], 1)[0])
    assert fitted.change == pytest.approx(0.5 - 0.9)
    assert fitted.tolerance == pytest.approx(0.1 * 0.725)
    assert trend(points, "max", relative_tolerance=1.0).verdict == "stable"  # a wide tolerance absorbs it


def test_report_dict_is_plain_json_and_the_markdown_has_a_row_per_batch(model):
    result = backtest(model, {"batch_0002": batch(2), "batch_0003": batch(3).drop(columns=["region", "age"])})

    report = json.loads(json.dumps(result.to_dict()))
    assert report["primary_metric"] == "roc_auc" and report["mode"] == "max"
    assert [row["batch"] for row in report["batches"]] == ["batch_0002", "batch_0003"]
    assert report["batches"][0]["metrics"] == dict(result.batches[0].metrics)
    assert report["batches"][1]["metrics"] is None and "region" in report["batches"][1]["error"]
    assert report["trend"]["verdict"] == "too few batches"

    lines = result.markdown().splitlines()
    assert lines[0] == "| batch | rows | roc_auc | f1 | precision | recall | accuracy |"
    assert lines[2].startswith(f"| batch_0002 | 1500 | {result.batches[0].metrics['roc_auc']:.4f} |")
    assert lines[3].startswith("| batch_0003 | 1500 | error: ValueError: columns are missing")
    assert lines[3].count("|") == lines[0].count("|")  # the error keeps the table's shape


def test_markdown_escapes_a_pipe_in_an_error():
    result = BacktestResult(
        "regression", "rmse", "min", (BatchScore("b1", 3, error="KeyError: a|b"),), Trend(None, None, "x", 0.0)
    )

    assert "| b1 | 3 | error: KeyError: a\\|b |  |  |" in result.markdown()


def test_nothing_to_backtest_or_an_unknown_metric_is_refused(model):
    with pytest.raises(ValueError, match="no batches to backtest"):
        backtest(model, {})
    with pytest.raises(ValueError, match="'rmse' is not a classification metric"):
        backtest(model, {"batch_0002": batch(2)}, metric="rmse", mode="min")
    with pytest.raises(ValueError, match="mode must be"):
        trend([(0, 1.0), (1, 2.0)], "up")
