"""Several batches at once, through the commands people and CI use, on one warehouse folder,
one SQLite MLflow store and one Dagster instance: nothing is corrupted or locked out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb

from ml_platform.lib.settings import PROJECT_ROOT, Settings
from ml_platform_tests.conftest import small_config, subprocess_environment

BIN = Path(sys.executable).parent


def champion_step_spans(instance: dg.DagsterInstance, run_id: str) -> tuple[float, float]:
    """When the run's `champion_model` step started and finished."""
    times = {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is not None and event.step_key == "champion_model":
            if event.event_type == dg.DagsterEventType.STEP_START:
                times["start"] = record.timestamp
            elif event.event_type == dg.DagsterEventType.STEP_SUCCESS:
                times["end"] = record.timestamp
    return times["start"], times["end"]


def test_three_batches_materialized_at_once_all_succeed(tmp_path: Path):
    home, config = tmp_path / "home", small_config()
    env = subprocess_environment(tmp_path, config, platform_home=home)
    config_path, dagster_home = Path(env["ML_PLATFORM_CONFIG"]), Path(env["DAGSTER_HOME"])

    def run(*args: str) -> subprocess.Popen:
        return subprocess.Popen(
            args, env=env, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    for command in (["demo-data", "--batches", "3", "--rows", "2000"], ["batches", "scan"]):
        setup = run(str(BIN / "ml-platform"), *command)
        assert setup.wait(timeout=120) == 0, setup.stdout.read()

    dagster = str(BIN / "dagster")
    parallel_job = [dagster, "job", "execute", "-m", "ml_platform.definitions", "-j", "batch_pipeline_parallel"]
    runs = {
        # Two runs with a process per step (two models train at a time) ...
        **{
            batch: run(*parallel_job, "--tags", json.dumps({"dagster/partition": batch}))
            for batch in ("batch_0001", "batch_0002")
        },
        # ... and the command CI runs, all at once.
        "batch_0003": run(
            dagster,
            "asset",
            "materialize",
            "-m",
            "ml_platform.definitions",
            "--select",
            "*",
            "--partition",
            "batch_0003",
        ),
    }
    outputs = {batch: process.communicate(timeout=900)[0] for batch, process in runs.items()}
    for batch, process in runs.items():
        assert process.returncode == 0, f"{batch} failed:\n{outputs[batch][-5000:]}"

    settings = Settings(home=home, config_path=config_path)
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        records = instance.get_run_records()
        assert len(records) == 3
        assert {r.dagster_run.tags["dagster/partition"] for r in records} == set(runs)
        assert all(r.dagster_run.status == dg.DagsterRunStatus.SUCCESS for r in records)
        done = instance.get_materialized_partitions(dg.AssetKey("champion_model"))
        assert done == set(runs)
        # The `model_registry` pool: no two champion decisions were ever in progress together.
        decisions = sorted(champion_step_spans(instance, r.dagster_run.run_id) for r in records)
        for (_, ended), (started, _) in zip(decisions, decisions[1:], strict=False):
            assert ended <= started, f"champion decisions overlapped: {decisions}"

    for batch in runs:
        with duckdb.connect(str(settings.warehouse_dir / f"{batch}.duckdb"), read_only=True) as con:
            assert con.execute("SELECT count(*) FROM features").fetchone()[0] == 2000
        assert json.loads((settings.reports_dir / batch / "evaluation_report.json").read_text())["batch"] == batch

    from mlflow import MlflowClient

    client = MlflowClient(settings.local_tracking_uri, registry_uri=settings.local_tracking_uri)
    experiment = client.get_experiment_by_name(config.tracking.experiment_name)
    mlflow_runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags["dagster.partition"] for r in mlflow_runs) == sorted(list(runs) * 3)
    name = config.promotion.registered_model_name
    assert len(client.search_model_versions(f"name='{name}'")) == 3
    # The champion decisions ran one at a time (pool `model_registry`): each version was decided
    # against the champion left by the decision before it, and the alias is on the last one promoted.
    champion_then = ""
    for number in (1, 2, 3):
        version = client.get_model_version(name, str(number))
        assert version.tags["decision.incumbent"] == champion_then, version.tags
        if version.tags["decision.alias"] == "champion":
            champion_then = str(number)
    assert client.get_model_version(name, "1").tags["promotion_reason"].startswith("no current champion")
    assert str(client.get_model_version_by_alias(name, "champion").version) == champion_then
