"""ExperimentManager: experiments recorded in MLflow, run as Dagster runs, compared and ranked."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest
from mlflow import MlflowClient

from ml_platform.defs.tags import EXPERIMENT_ID_TAG
from ml_platform.experiments import ExperimentError, ExperimentManager
from ml_platform.lib.config import load_experiment_config
from ml_platform.lib.settings import DEFAULT_EXPERIMENT_CONFIG_PATH
from ml_platform.lib.training import split_train_test
from ml_platform.lib.warehouse import Warehouse
from ml_platform_tests.conftest import PlatformUnderTest


def experiment_config(*overrides: str):
    return load_experiment_config(DEFAULT_EXPERIMENT_CONFIG_PATH, list(overrides))


@pytest.fixture(scope="module")
def pipeline(module_two_batches: PlatformUnderTest) -> PlatformUnderTest:
    """Two batches through the pipeline (features built, a champion registered), a third only added."""
    module_two_batches.write_batches(1, rows=1500, first=3)
    return module_two_batches


@pytest.fixture(scope="module")
def manager(pipeline: PlatformUnderTest) -> ExperimentManager:
    return ExperimentManager(pipeline.settings, pipeline.instance)


@pytest.fixture(scope="module")
def logreg(manager: ExperimentManager) -> str:
    return manager.create_experiment(experiment_config("model=logistic_regression", "name=logreg"))


@pytest.fixture(scope="module")
def boosting(manager: ExperimentManager) -> str:
    return manager.create_experiment(
        experiment_config("model=gradient_boosting", "model.params.n_estimators=20", "training.test_size=0.25")
    )


@pytest.fixture(scope="module")
def finished_runs(manager: ExperimentManager, logreg: str, boosting: str) -> dict:
    runs = {
        "logreg": manager.run_experiment(logreg, batch="batch_0001"),
        "boosting": manager.run_experiment(boosting, batch="batch_0001"),
    }
    assert all(run.success for run in runs.values()), runs
    return runs


def test_a_created_experiment_is_found_again_by_a_new_manager_by_id_and_by_name(pipeline, logreg):
    fresh = ExperimentManager(pipeline.settings, pipeline.instance)

    by_id, by_name = fresh.get_experiment(logreg), fresh.get_experiment("logreg")

    assert by_id == by_name
    assert by_id.config == experiment_config("model=logistic_regression", "name=logreg")
    assert logreg in [experiment.experiment_id for experiment in fresh.list_experiments()]


def test_the_default_name_is_the_model_type_and_config_hash(manager, boosting):
    experiment = manager.get_experiment(boosting)

    assert experiment.name == f"gradient_boosting-{experiment.config_hash[:8]}"


def test_creating_the_same_experiment_twice_returns_its_id_but_a_changed_config_is_refused(manager, logreg):
    assert manager.create_experiment(experiment_config("model=logistic_regression", "name=logreg")) == logreg

    with pytest.raises(ExperimentError, match="'logreg' .* exists with another config"):
        manager.create_experiment(experiment_config("model=logistic_regression", "model.params.C=2", "name=logreg"))


def test_an_unknown_experiment_is_a_clear_error(manager):
    with pytest.raises(ExperimentError, match="no experiment '424242'"):
        manager.get_experiment("424242")


def test_the_pipelines_own_mlflow_experiment_is_not_an_experiment(manager, pipeline):
    with pytest.raises(ExperimentError, match="no experiment"):
        manager.get_experiment(pipeline.config.tracking.experiment_name)


def test_a_run_is_a_dagster_run_of_the_experiment_job_tagged_with_the_experiment(pipeline, logreg, finished_runs):
    outcome = finished_runs["logreg"]
    records = pipeline.instance.get_run_records(dg.RunsFilter(tags={EXPERIMENT_ID_TAG: logreg}))

    run = {record.dagster_run.run_id: record.dagster_run for record in records}[outcome.dagster_run_id]
    assert run.job_name == "experiment"
    assert run.status == dg.DagsterRunStatus.SUCCESS
    assert run.tags["dagster/partition"] == "batch_0001"
    assert run.run_config["ops"]["train_experiment"]["config"]["config"]["model"]["type"] == "logistic_regression"


def test_a_run_logs_metrics_provenance_and_the_resolved_config_to_the_experiment(
    manager, logreg, finished_runs, tmp_path: Path
):
    outcome = finished_runs["logreg"]
    client = MlflowClient(manager.tracking_uri)
    run = client.get_run(outcome.mlflow_run_id)

    assert run.info.experiment_id == logreg
    assert run.data.metrics["f1"] == pytest.approx(outcome.metrics["f1"])
    config = manager.get_experiment(logreg).config
    assert run.data.tags["config_hash"] == config.config_hash()
    assert run.data.tags["dagster.run_id"] == outcome.dagster_run_id
    for tag in ("data_hash", "code_version", "lib.scikit-learn", "lib.mlflow"):
        assert run.data.tags[tag]
    logged = Path(client.download_artifacts(run.info.run_id, "config.json", str(tmp_path)))
    assert json.loads(logged.read_text()) == config.loggable()


def test_the_experiment_config_drives_the_split_and_the_hyperparameters(manager, finished_runs):
    params = MlflowClient(manager.tracking_uri).get_run(finished_runs["boosting"].mlflow_run_id).data.params

    assert params["test_size"] == "0.25"
    assert params["train_rows"] == str(1500 - 375)
    assert params["max_iter"] == "20"


def test_experiments_leave_the_pipelines_registry_alone(pipeline, manager, finished_runs):
    model_name = pipeline.config.promotion.registered_model_name
    versions = MlflowClient(manager.tracking_uri).search_model_versions(f"name = '{model_name}'")

    assert len(versions) == 2  # one per pipeline run, none from the experiments
    assert all(
        version.tags["dagster.run_id"] not in {r.dagster_run_id for r in finished_runs.values()} for version in versions
    )


def test_without_a_batch_the_newest_batch_with_features_is_used(manager, logreg):
    outcome = manager.run_experiment(logreg)

    assert outcome.success
    assert outcome.batch == "batch_0002"  # batch_0003 has no features yet


def test_a_batch_without_features_fails_the_run_with_the_reason(pipeline, manager, logreg):
    outcome = manager.run_experiment(logreg, batch="batch_0003")

    assert not outcome.success
    assert "batch_0003 has no features yet" in outcome.error
    run = pipeline.instance.get_run_by_id(outcome.dagster_run_id)
    assert run.status == dg.DagsterRunStatus.FAILURE


def test_an_unknown_batch_is_refused_before_anything_runs(pipeline, manager, logreg):
    before = len(pipeline.instance.get_run_records())

    with pytest.raises(ExperimentError, match="unknown batch 'batch_9999'"):
        manager.run_experiment(logreg, batch="batch_9999")

    assert len(pipeline.instance.get_run_records()) == before


def test_compare_puts_every_runs_params_and_metrics_side_by_side(manager, logreg, boosting, finished_runs):
    table = manager.compare_experiments([logreg, boosting])

    assert set(table["experiment_id"]) == {logreg, boosting}
    assert {"params.C", "params.max_iter", "metrics.f1", "metrics.roc_auc"} <= set(table.columns)
    row = table.set_index("run_id").loc[finished_runs["boosting"].mlflow_run_id]
    assert row["metrics.roc_auc"] == pytest.approx(finished_runs["boosting"].metrics["roc_auc"])
    assert row["batch"] == "batch_0001"


def test_compare_without_finished_runs_says_so(manager):
    idle = manager.create_experiment(experiment_config("model=random_forest", "name=never-run"))

    with pytest.raises(ExperimentError, match="no finished runs yet"):
        manager.compare_experiments([idle])


def test_best_run_takes_the_metrics_direction_and_the_best_model_predicts(pipeline, manager, finished_runs):
    best = manager.best_run("f1")
    all_f1 = manager.runs([e.experiment_id for e in manager.list_experiments()])["metrics.f1"]

    assert best["metrics.f1"] == all_f1.max()
    assert manager.best_run("f1", mode="min")["metrics.f1"] == all_f1.min()
    model = manager.get_best_model("f1")
    features = Warehouse(pipeline.settings.warehouse_dir).read_table(["batch_0002"], "features")
    held_out = split_train_test(features, pipeline.config.data, pipeline.config.training, "batch_0002").x_test
    assert set(model.predict(held_out)) <= {0, 1}


def test_best_run_needs_a_direction_for_an_unknown_metric(manager, finished_runs):
    with pytest.raises(ExperimentError, match="pass --mode"):
        manager.best_run("fit_seconds")
    assert manager.best_run("fit_seconds", mode="min")["metrics.fit_seconds"] > 0


def test_status_lists_each_dagster_run_with_its_status_and_metrics(manager, logreg, finished_runs):
    report = manager.status(logreg)

    assert report["name"] == "logreg"
    assert report["model_type"] == "logistic_regression"
    by_run = {run["dagster_run_id"]: run for run in report["runs"]}
    first = by_run[finished_runs["logreg"].dagster_run_id]
    assert first["status"] == "SUCCESS"
    assert first["batch"] == "batch_0001"
    assert first["metrics"]["f1"] == pytest.approx(finished_runs["logreg"].metrics["f1"])
