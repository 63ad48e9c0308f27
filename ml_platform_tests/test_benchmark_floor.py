"""The benchmark's floor (benchmarks/floor.py) does the pipeline's work: on the same batch and config it
trains the same models to the same metrics and winner as the platform, and with --tracking it logs to
MLflow what the model assets log and registers the winner as champion."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from ml_platform.lib.mlflow_store import MlflowStore
from ml_platform.lib.provenance import MODEL_HASH_TAG
from ml_platform.lib.settings import PROJECT_ROOT
from ml_platform_tests.conftest import PlatformUnderTest, inherited_environment

FLOOR = PROJECT_ROOT / "benchmarks" / "floor.py"


def start_floor(home: Path, config_path: Path, batch_file: Path, *flags: str) -> subprocess.Popen:
    """The floor script in a fresh process and a fresh home holding only the batch file."""
    incoming = home / "data" / "incoming"
    incoming.mkdir(parents=True)
    shutil.copyfile(batch_file, incoming / batch_file.name)
    env = {
        **inherited_environment(),
        "ML_PLATFORM_HOME": str(home),
        "ML_PLATFORM_CONFIG": str(config_path),
    }
    return subprocess.Popen(
        [sys.executable, str(FLOOR), "--home", str(home), "--batch", batch_file.stem, *flags],
        env=env,
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def floor_result(process: subprocess.Popen) -> dict:
    """The floor's JSON line, once it has finished."""
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-4000:]
    return json.loads(stdout.strip().splitlines()[-1])


def assert_same_metrics(floor: dict[str, dict[str, float]], platform: dict[str, dict[str, float]]) -> None:
    assert set(floor) == set(platform)
    for model, metrics in platform.items():
        assert set(floor[model]) == set(metrics), model
        for metric, value in metrics.items():
            assert abs(floor[model][metric] - value) <= 1e-9, (model, metric, floor[model][metric], value)


def own_tags(run) -> dict[str, str]:
    """A run's tags without MLflow's own, the two that name the process (Dagster run id, floor mark) and
    the model's pickle hash: the floor reads its features into pandas its own way, so the same fitted
    model (the same predictions, whose hash is compared) is laid out in other bytes."""
    return {
        key: value
        for key, value in run.data.tags.items()
        if not key.startswith("mlflow.") and key not in ("dagster.run_id", "benchmark", MODEL_HASH_TAG)
    }


def test_floor_trains_and_logs_what_the_platform_does(platform: PlatformUnderTest, tmp_path: Path):
    (batch_id,) = platform.write_batches(1, rows=2000)
    batch_file = platform.incoming_dir / f"{batch_id}.{platform.config.data.file_format}"
    config_path = tmp_path / "small_platform.yaml"
    config_path.write_text(yaml.safe_dump(platform.config.model_dump(mode="json")))

    # Both floors run while the platform materializes the same batch in this process.
    floors = [
        start_floor(tmp_path / "floor_homes" / "bare", config_path, batch_file),
        start_floor(tmp_path / "floor_homes" / "tracking", config_path, batch_file, "--tracking"),
    ]
    try:
        assert platform.materialize(batch_id).success
    finally:
        bare, tracked = (floor_result(process) for process in floors)

    report = json.loads((platform.settings.reports_dir / batch_id / "evaluation_report.json").read_text())
    platform_metrics = {name: candidate["metrics"] for name, candidate in report["candidates"].items()}
    assert set(platform_metrics) == set(platform.config.models)
    for floor in (bare, tracked):
        assert floor["rows"] == 2000
        assert (floor["train_rows"], floor["validation_rows"], floor["test_rows"]) == (1200, 400, 400)
        assert_same_metrics(floor["models"], platform_metrics)
        assert floor["winner"] == report["winner"]
    assert bare["mlflow_run_ids"] == {} and bare["champion"] == {}
    assert not (tmp_path / "floor_homes" / "bare" / "mlflow").exists()

    # With --tracking: one MLflow run per model with the assets' params, metrics, tags and artifacts.
    experiment = platform.config.tracking.experiment_name
    floor_store = MlflowStore(f"sqlite:///{tmp_path / 'floor_homes' / 'tracking' / 'mlflow' / 'mlflow.db'}", experiment)
    platform_store = MlflowStore(platform.settings.local_tracking_uri, experiment)
    floor_client, platform_client = floor_store.client(), platform_store.client()
    assert set(tracked["mlflow_run_ids"]) == set(platform.config.models)
    for name, run_id in tracked["mlflow_run_ids"].items():
        floor_run = floor_client.get_run(run_id)
        platform_run = platform_client.get_run(report["candidates"][name]["mlflow_run_id"])
        assert floor_run.info.run_name == platform_run.info.run_name == f"{name}-{batch_id}"
        assert floor_run.data.params == platform_run.data.params
        assert set(floor_run.data.metrics) == set(platform_run.data.metrics)
        assert_same_metrics(
            {name: {k: v for k, v in floor_run.data.metrics.items() if k != "fit_seconds"}},
            {name: {k: v for k, v in platform_run.data.metrics.items() if k != "fit_seconds"}},
        )
        # Same data hash (the same feature rows, in the same order), config hash, code and library versions.
        assert own_tags(floor_run) == own_tags(platform_run)
        # The evaluation plots on the winner's run are the platform's extra: the floor draws none.
        assert {a.path for a in floor_client.list_artifacts(run_id)} == {
            a.path for a in platform_client.list_artifacts(platform_run.info.run_id) if a.path != "evaluation"
        }
    winner_run = floor_client.get_run(tracked["mlflow_run_ids"][report["winner"]])
    assert winner_run.data.tags["data_hash"] == tracked["data_hash"]

    # ... and the winner registered as champion (a fresh home has none), as the platform did.
    model_name = platform.config.promotion.registered_model_name
    floor_champion = floor_store.champion_version(model_name)
    platform_champion = platform_store.champion_version(model_name)
    assert tracked["champion"] == {"model_name": model_name, "version": "1", "alias": "champion"}
    assert floor_champion.run_id == tracked["mlflow_run_ids"][report["winner"]]
    assert floor_champion.tags["model_name"] == platform_champion.tags["model_name"] == report["winner"]
    assert floor_champion.tags["promotion_reason"] == platform_champion.tags["promotion_reason"]
