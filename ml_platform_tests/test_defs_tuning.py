"""A model with a `search:` block: tuned by Optuna, its trials nested under its MLflow run, trained with the best."""

from __future__ import annotations

import pytest

from ml_platform.defs.training.assets import TrainedCandidate
from ml_platform_tests.conftest import PlatformUnderTest, small_config

SEARCH = {"params": {"C": {"type": "float", "low": 0.01, "high": 10.0, "log": True}}, "n_trials": 3, "cv_folds": 2}


@pytest.fixture
def tuned(two_batches: PlatformUnderTest):
    """`logistic_regression_model` of batch_0002 materialized with a 3-trial search (only it and its split)."""
    config = small_config(**{"models.logistic_regression.search": SEARCH})
    result = two_batches.materialize(
        "batch_0002", config=config, selection=["training_data", "logistic_regression_model"]
    )
    assert result.success
    return two_batches, config, result


def test_a_searched_model_logs_each_trial_as_a_nested_run_and_trains_with_the_best(tuned):
    platform, config, result = tuned
    candidate: TrainedCandidate = result.output_for_node("logistic_regression_model")
    metadata = result.asset_materializations_for_node("logistic_regression_model")[0].metadata
    store = platform.mlflow(config)
    client = store.client()

    trials = client.search_runs(
        [store.experiment_id()], filter_string=f"tags.`mlflow.parentRunId` = '{candidate.run_id}'"
    )
    assert sorted(run.data.tags["optuna.trial"] for run in trials) == ["0", "1", "2"]
    assert {run.info.status for run in trials} == {"FINISHED"}
    best = max(trials, key=lambda run: run.data.metrics["tuning_roc_auc"])
    assert candidate.params["C"] == pytest.approx(float(best.data.params["C"]))
    parent = client.get_run(candidate.run_id)
    assert float(parent.data.params["C"]) == pytest.approx(candidate.params["C"])
    assert parent.data.tags["tuning.best_trial"] == best.data.tags["optuna.trial"]
    assert parent.data.metrics["tuning_best_roc_auc"] == pytest.approx(best.data.metrics["tuning_roc_auc"])

    table = metadata["tuning_trials"].value
    assert table.startswith("| trial | params | roc_auc | state |") and table.count("| COMPLETE |") == 3
    assert metadata["tuning_plot"].value.startswith("![Objective over trials](data:image/png;base64,")
    assert metadata["tuning_best_trial"].value == int(best.data.tags["optuna.trial"])
