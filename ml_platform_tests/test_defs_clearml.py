"""The pipeline with `tracking.backends: [mlflow, clearml]`: one batch materialized, and each model
run (and an experiment's run on the batch) is in both trackers with the same params, metrics and
tags; MLflow's registry alone holds the champion."""

from __future__ import annotations

import pickle
import socket

import dagster as dg
import numpy as np
import pytest

from ml_platform.lib.clearml_store import OfflineSession, offline_sessions
from ml_platform.lib.config import ConfigError, PlatformConfig, load_experiment_config, validated_config
from ml_platform.lib.settings import PROJECT_ROOT
from ml_platform_tests.conftest import Cli, PlatformUnderTest, small_config

CLEARML_VARIABLES = ("CLEARML_API_HOST", "CLEARML_API_ACCESS_KEY", "CLEARML_API_SECRET_KEY", "CLEARML_CACHE_DIR")


def both_backends() -> PlatformConfig:
    config = small_config(**{"tracking.backends": ["mlflow", "clearml"]})
    # Two candidates keep the run short and still make a winner and a runner-up.
    config.models = {name: config.models[name] for name in ("logistic_regression", "random_forest")}
    return config


@pytest.fixture(scope="module")
def run(module_platform: PlatformUnderTest):
    with pytest.MonkeyPatch.context() as monkeypatch:
        for name in CLEARML_VARIABLES:
            monkeypatch.delenv(name, raising=False)
        config = both_backends()
        (batch,) = module_platform.write_batches(1, rows=600)
        result = module_platform.materialize(batch, config=config)
    assert result.success
    sessions = offline_sessions(module_platform.settings.clearml_dir / "offline", config.tracking.experiment_name)
    return module_platform, config, batch, result, {session.name: session for session in sessions}


def model_metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(asset)]
    return {key: value.value for key, value in event.materialization.metadata.items()}


def test_each_model_run_is_in_both_trackers_with_the_same_params_metrics_and_tags(run):
    platform, config, batch, result, sessions = run
    client = platform.mlflow(config).client()
    assert set(sessions) == {f"logistic_regression-{batch}", f"random_forest-{batch}", f"evaluation-{batch}"}
    for name in config.models:
        metadata = model_metadata(result, f"{name}_model")
        session: OfflineSession = sessions[f"{name}-{batch}"]
        mlflow_run = client.get_run(metadata["mlflow_run_id"])

        assert session.task_id == metadata["clearml_task_id"]
        assert (session.status, session.task_type) == ("completed", "training")
        labels = dict(tag.split(":", 1) for tag in session.tags)
        assert labels == {
            "batch": batch,
            "data_hash": mlflow_run.data.tags["data_hash"],
            "code_version": mlflow_run.data.tags["code_version"],
            "config_hash": mlflow_run.data.tags["config_hash"],
            "model": name,
            "mlflow_run": mlflow_run.info.run_id,
        }
        every_tag = {
            key.removeprefix("tags/"): value for key, value in session.parameters.items() if key[:5] == "tags/"
        }
        platform_tags = {key: value for key, value in mlflow_run.data.tags.items() if not key.startswith("mlflow.")}
        assert every_tag == {**platform_tags, "mlflow_run_id": mlflow_run.info.run_id}
        params = {
            key.removeprefix("params/"): value for key, value in session.parameters.items() if key[:7] == "params/"
        }
        assert params == {key: value for key, value in mlflow_run.data.params.items()}
        scalars = session.last_scalars()
        assert np.isclose(scalars["roc_auc/test"], mlflow_run.data.metrics["roc_auc"])
        assert np.isclose(scalars["roc_auc/validation"], mlflow_run.data.metrics["validation_roc_auc"])
        assert set(session.artifacts) == {"training_ids", "batch_hashes", "config"}
        (model,) = session.models
        assert model.name == name
        assert np.isclose(model.metadata["roc_auc"], mlflow_run.data.metrics["roc_auc"])
        pipeline = pickle.loads(session.read_member(model.weights_member))
        assert type(pipeline).__name__ == "Pipeline"


def test_the_batch_evaluation_plots_go_to_an_evaluation_task_labelled_with_the_winner(run):
    _, _, batch, result, sessions = run
    evaluation = sessions[f"evaluation-{batch}"]
    winner = model_metadata(result, "evaluation_report")["winner"]
    assert (evaluation.task_type, evaluation.status) == ("qc", "completed")
    assert f"winner:{winner}" in evaluation.tags and f"batch:{batch}" in evaluation.tags
    assert {"evaluation/roc_curves", "evaluation/confusion_matrix"} <= set(evaluation.images)
    assert "evaluation_report" in evaluation.artifacts


def test_the_champion_is_still_decided_in_mlflow_registry(run):
    platform, config, _, result, _ = run
    champion = model_metadata(result, "champion_model")
    version = platform.mlflow(config).client().get_model_version_by_alias("churn_classifier", "champion")
    assert champion["champion_version"] == str(version.version) == "1"


def test_backends_must_keep_mlflow_and_name_each_backend_once():
    raw = small_config().model_dump(mode="json")
    for backends, message in ((["clearml"], "must include mlflow"), (["mlflow", "mlflow"], "twice")):
        raw["tracking"]["backends"] = backends
        with pytest.raises(ConfigError, match=f"tracking.backends: .*{message}"):
            validated_config(raw)
    raw["tracking"]["backends"] = ["mlflow", "wandb"]
    with pytest.raises(ConfigError, match="tracking.backends.1"):
        validated_config(raw)


def test_listing_clearml_changes_no_config_hash_and_so_no_model():
    assert small_config(**{"tracking.backends": ["mlflow", "clearml"]}).config_hash() == small_config().config_hash()


def test_an_experiment_run_is_logged_to_the_experiments_clearml_project_too(run):
    from ml_platform.defs.definitions import build_definitions
    from ml_platform.defs.experiments.jobs import experiment_run_config

    platform, config, batch, _, _ = run
    experiment = load_experiment_config(PROJECT_ROOT / "configs" / "experiment.yaml", ["model=logistic_regression"])
    job = build_definitions(config, platform.settings).resolve_job_def("experiment")
    result = job.execute_in_process(
        run_config=experiment_run_config("7", "clearml-experiment", experiment),
        partition_key=batch,
        instance=platform.instance,
    )

    output = result.output_for_node("train_experiment")
    (session,) = offline_sessions(platform.settings.clearml_dir / "offline", "clearml-experiment")
    assert session.name == f"{experiment.name}-{batch}"
    assert f"mlflow_run:{output['mlflow_run_id']}" in session.tags
    assert session.parameters["tags/ml_platform.experiment_id"] == "7"
    assert np.isclose(session.last_scalars()["f1/test"], output["metrics"]["f1"])


def test_the_cli_lists_the_tasks_and_model_versions_logged_offline(run, tmp_path):
    platform, config, batch, _, sessions = run
    cli = Cli(tmp_path / "cli", config)
    cli.overrides["ML_PLATFORM_HOME"] = str(platform.settings.home)

    printed = cli("clearml", "tasks").stdout
    assert f"random_forest-{batch}" in printed and "roc_auc/test" in printed
    listed = cli.json("clearml", "tasks", "--metric", "f1/test")
    assert {row["name"] for row in listed} == set(sessions)
    assert {row["name"]: row["f1/test"] is None for row in listed} == {  # JSON's null, not NaN
        name: name.startswith("evaluation-") for name in sessions
    }
    (version,) = cli.json("clearml", "models", "random_forest")
    assert (version["version"], version["task_name"]) == (1, f"random_forest-{batch}")
    assert (
        "no ClearML model 'nothing' in project 'ml_platform/churn'"
        in cli("clearml", "models", "nothing", exit_code=2).stderr
    )


def test_a_clearml_server_that_does_not_answer_fails_the_model_step_before_its_mlflow_run(run, monkeypatch):
    platform, config, _, _, _ = run
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("CLEARML_API_HOST", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("CLEARML_API_ACCESS_KEY", "key")
    monkeypatch.setenv("CLEARML_API_SECRET_KEY", "secret")
    (batch,) = platform.write_batches(1, rows=600, first=2)

    result = platform.materialize(batch, config=config, raise_on_error=False)

    assert not result.success
    failures = [event for event in result.all_events if event.is_step_failure]
    assert {failure.step_key for failure in failures} == {"logistic_regression_model", "random_forest_model"}
    for failure in failures:
        assert f"ClearML server http://127.0.0.1:{port} did not answer" in failure.step_failure_data.error.message
    runs = (
        platform.mlflow(config)
        .client()
        .search_runs([platform.mlflow(config).experiment_id()], f"tags.`dagster.partition` = '{batch}'")
    )
    assert runs == []
