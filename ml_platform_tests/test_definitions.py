"""The code location as the UI and CI see it: a snapshot of the graph, and Dagster's own validation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from ml_platform.defs.definitions import build_definitions, build_resources
from ml_platform.lib.settings import PROJECT_ROOT, Settings
from ml_platform_tests.conftest import small_config

EXPECTED_GROUPS = {
    "raw_batch": "ingestion",
    "stg_batch": "features",
    "features": "features",
    "training_data": "training",
    "gradient_boosting_model": "training",
    "logistic_regression_model": "training",
    "random_forest_model": "training",
    "evaluation_report": "evaluation",
    "champion_model": "evaluation",
    "predictions": "predictions",
    "champion_backtest": "evaluation",
    "drift_report": "drift",
}
EXPECTED_CHECKS = {
    ("champion_model", "meets_quality_bar"),
    ("stg_batch", "not_null_stg_batch_batch_id"),
    ("features", "not_null_features_batch_id"),
    ("features", "features_have_unique_ids"),
    ("features", "features_target_has_no_nulls"),
    ("features", "churn_features_are_in_range"),
}


def graph(defs: dg.Definitions):
    return defs.resolve_asset_graph()


def test_assets_are_grouped_by_stage_and_partitioned_by_batch(tmp_path: Path):
    defs = build_definitions(small_config(), Settings(home=tmp_path, config_path=tmp_path / "unused.yaml"))
    asset_graph = graph(defs)
    groups = {key.to_user_string(): asset_graph.get(key).group_name for key in asset_graph.get_all_asset_keys()}
    assert groups == EXPECTED_GROUPS
    for key in asset_graph.get_all_asset_keys():
        # The backtest spans batches; everything else is one batch's.
        expected = (
            None if key.to_user_string() == "champion_backtest" else dg.DynamicPartitionsDefinition(name="batches")
        )
        assert asset_graph.get(key).partitions_def == expected
    checks = {(key.asset_key.to_user_string(), key.name) for key in asset_graph.asset_check_keys}
    assert checks == EXPECTED_CHECKS
    assert {job.name for job in defs.resolve_all_job_defs()} >= {
        "batch_pipeline",
        "batch_pipeline_parallel",
        "experiment",
        "backtest",
    }
    for job in ("batch_pipeline", "batch_pipeline_parallel"):
        assert dg.AssetKey("drift_report") in defs.resolve_job_def(job).asset_layer.selected_asset_keys


def test_the_automation_is_in_the_code_location_and_on_by_default(tmp_path: Path):
    defs = build_definitions(small_config(), Settings(home=tmp_path, config_path=tmp_path / "unused.yaml"))
    schedules = {schedule.name: schedule for schedule in defs.schedules}
    assert set(schedules) == {"retraining_schedule", "backtest_schedule", "pipeline_schedule"}
    assert schedules["retraining_schedule"].cron_schedule == "*/2 * * * *"
    assert schedules["backtest_schedule"].job_name == "backtest"
    sensors = {sensor.name: sensor for sensor in defs.sensors}
    assert set(sensors) == {
        "new_batch_sensor",
        "run_failure_notifications",
        "run_success_monitor",
        "notification_outbox",
        "dead_run_sensor",
    }
    for definition in [*schedules.values(), *sensors.values()]:
        assert definition.default_status.value == "RUNNING", definition.name


def test_code_versions_follow_the_config_each_asset_reads(tmp_path: Path):
    settings = Settings(home=tmp_path, config_path=tmp_path / "unused.yaml")

    def code_versions(config) -> dict[str, str]:
        asset_graph = graph(build_definitions(config, settings))
        return {key.to_user_string(): asset_graph.get(key).code_version for key in asset_graph.get_all_asset_keys()}

    before = code_versions(small_config())
    after = code_versions(small_config(**{"models.random_forest.params.n_estimators": 31}))
    assert {name for name in before if before[name] != after[name]} == {"random_forest_model"}
    promotion = code_versions(small_config(**{"promotion.min_improvement": 0.01}))
    assert {name for name in before if before[name] != promotion[name]} == {"evaluation_report", "champion_model"}
    drift = code_versions(small_config(**{"drift.psi_threshold": 0.1}))
    assert {name for name in before if before[name] != drift[name]} == {"drift_report"}


def test_the_graph_flows_from_ingestion_to_the_champion(tmp_path: Path):
    asset_graph = graph(build_definitions(small_config(), Settings(home=tmp_path, config_path=tmp_path / "x.yaml")))

    def parents(name: str) -> set[str]:
        return {key.to_user_string() for key in asset_graph.get(dg.AssetKey(name)).parent_keys}

    assert parents("stg_batch") == {"raw_batch"}
    assert parents("features") == {"stg_batch"}
    assert parents("training_data") == {"features"}
    # Upstream of nothing, so it never holds up training; in every batch pipeline job.
    assert parents("drift_report") == {"features"}
    assert not asset_graph.get(dg.AssetKey("drift_report")).child_keys
    assert parents("random_forest_model") == {"training_data"}
    assert parents("evaluation_report") == {
        "training_data",  # the held-out rows its plots are drawn on
        "random_forest_model",
        "gradient_boosting_model",
        "logistic_regression_model",
    }
    assert parents("champion_model") == {  # the winner's held-out predictions, for the paired comparison
        "evaluation_report",
        "training_data",
        "random_forest_model",
        "gradient_boosting_model",
        "logistic_regression_model",
    }
    assert parents("predictions") == {"features", "champion_model"}  # scored after the batch's own decision


def test_one_model_asset_per_configured_algorithm(tmp_path: Path):
    config = small_config(
        **{"models": {"shallow_forest": {"type": "random_forest"}, "boosted": {"type": "gradient_boosting"}}}
    )
    keys = {
        k.to_user_string()
        for k in graph(build_definitions(config, Settings(tmp_path, tmp_path / "x"))).get_all_asset_keys()
    }
    assert {"shallow_forest_model", "boosted_model"} <= keys
    assert "random_forest_model" not in keys


def test_dagster_definitions_validate_passes_with_only_the_venv_binary(tmp_path: Path):
    # No venv on PATH, as when CI calls .venv/bin/dagster: nothing may depend on finding a tool there.
    env = {**os.environ, "PATH": "/usr/bin:/bin", "DAGSTER_HOME": str(tmp_path), "ML_PLATFORM_HOME": str(tmp_path)}
    result = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "All code locations passed validation" in result.stderr + result.stdout


def test_tracking_uri_from_the_environment_stays_an_env_var(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://bob:s3cret@mlflow.example.com")
    settings = Settings(home=tmp_path, config_path=tmp_path / "x.yaml")
    resource = build_resources(small_config(), settings)["mlflow"]
    assert resource.tracking_uri == dg.EnvVar("MLFLOW_TRACKING_URI")  # the UI shows the variable's name
    assert resource.process_config_and_initialize().tracking_uri == "https://bob:s3cret@mlflow.example.com"


def test_config_tracking_uri_wins_over_the_environment_and_the_local_store_is_the_default(tmp_path: Path, monkeypatch):
    settings = Settings(home=tmp_path, config_path=tmp_path / "x.yaml")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert build_resources(small_config(), settings)["mlflow"].tracking_uri == settings.local_tracking_uri
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    configured = small_config(**{"tracking.tracking_uri": "http://127.0.0.1:6000"})
    assert build_resources(configured, settings)["mlflow"].tracking_uri == "http://127.0.0.1:6000"


def test_artifacts_stay_in_the_project_for_the_embedded_store_and_follow_the_config(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    settings = Settings(home=tmp_path, config_path=tmp_path / "x.yaml")
    local = build_resources(small_config(), settings)["mlflow"]
    assert local.artifact_location == (tmp_path / "mlflow" / "artifacts").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert build_resources(small_config(), settings)["mlflow"].artifact_location is None  # the server decides
    configured = small_config(**{"tracking.artifact_location": "s3://bucket/ml"})
    assert build_resources(configured, settings)["mlflow"].artifact_location == "s3://bucket/ml"
