"""`ml-platform reproduce`: rebuild a model run through the real pipeline in a scratch home, and compare.

The scratch home (a temporary folder) has its own Dagster instance, DuckDB warehouse, MLflow store and
reports; the user's home is only read: the recorded run, its artifacts and the batch files. The batch
files of the training window, each checked against its recorded content hash, go through `raw_batch`,
dbt's features, `training_data` and the model's asset, fitted with the params the run recorded (a
tuned model's best params: the study is not run again). `lib/reproduce.py` decides what differs.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ml_platform.lib.mlflow_store import MlflowStore, tracking_uri_in_use
from ml_platform.lib.provenance import BATCH_HASHES_ARTIFACT
from ml_platform.lib.reproduce import (
    CannotReproduce,
    Comparison,
    ModelReference,
    ModelRun,
    compare_runs,
    launch_params,
    recorded_config,
    recorded_model_run,
    verified_batch_files,
)
from ml_platform.lib.settings import Settings

CONFIG_ARTIFACT = "config.json"


@dataclass(frozen=True)
class Reproduction:
    label: str  # "churn_classifier version 2", or the model's name for a run id
    recorded: ModelRun
    batch_hashes: dict[str, str | None]
    comparison: Comparison


def reproduce(reference: ModelReference, store: MlflowStore, settings: Settings) -> Reproduction:
    """Find the run `reference` names in `store`, rebuild it from the batch files under `settings`' home
    in a scratch home, and compare. Raises CannotReproduce before any rebuild when it cannot be done."""
    label, run = _recorded_run(reference, store)
    recorded = recorded_model_run(run.info.run_id, run.data.metrics, run.data.tags)
    config = recorded_config(_artifact(store, recorded, CONFIG_ARTIFACT), recorded.run_id)
    batch_hashes = _artifact(store, recorded, BATCH_HASHES_ARTIFACT)
    files = verified_batch_files(
        recorded.batch, batch_hashes, settings.incoming_dir(config), config.data.file_format, label
    )
    with tempfile.TemporaryDirectory(prefix="ml-platform-reproduce-") as scratch:
        rebuilt = rebuild(recorded, config, files, Path(scratch))
    return Reproduction(label, recorded, batch_hashes, compare_runs(recorded, rebuilt))


def _recorded_run(reference: ModelReference, store: MlflowStore):
    """(label, MLflow run) of the reference: a registered version's run, or the run itself."""
    from mlflow.exceptions import MlflowException

    client = store.client()
    try:
        if reference.run_id:
            run = client.get_run(reference.run_id)
            return run.data.tags.get("model_name", "run"), run
        if reference.alias:
            version = store.champion_version(reference.model, reference.alias)
            if version is None:
                raise CannotReproduce(f"no version of {reference.model!r} holds @{reference.alias}")
        else:
            version = client.get_model_version(reference.model, reference.version)
        return f"{reference.model} version {version.version}", client.get_run(version.run_id)
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise CannotReproduce(f"{reference.text}: {error.message}") from error
        raise


def _artifact(store: MlflowStore, run: ModelRun, path: str):
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    with tracking_uri_in_use(store.tracking_uri):
        try:
            return mlflow.artifacts.load_dict(f"runs:/{run.run_id}/{path}")
        except (MlflowException, OSError) as error:
            raise CannotReproduce(
                f"run {run.run_id} has no {path}: it was trained before models recorded it; train it again"
            ) from error


def rebuild(recorded: ModelRun, config, batch_files: dict[str, Path], scratch: Path) -> ModelRun:
    """Run the batches through ingestion, dbt, `training_data` and the model's asset in the scratch home,
    oldest first (a cumulative window's earlier batches up to their features), and return the new run."""
    import dagster as dg
    from dagster._core.storage.defs_state.base import set_defs_state_storage

    from ml_platform.defs.definitions import build_batch_assets, build_resources
    from ml_platform.defs.partitions import batch_partitions
    from ml_platform.defs.runs import first_failure
    from ml_platform.resources.mlflow_tracking import MlflowTrackingResource

    params = launch_params(recorded, config)
    settings = Settings(home=scratch, config_path=scratch / "platform.yaml")
    incoming = settings.incoming_dir(config)
    incoming.mkdir(parents=True)
    for path in batch_files.values():
        shutil.copy2(path, incoming / path.name)
    resources = {
        **build_resources(config, settings),
        # Never the environment's MLFLOW_TRACKING_URI nor the config's artifact location: those are the user's.
        "mlflow": MlflowTrackingResource(
            tracking_uri=settings.local_tracking_uri,
            artifact_location=settings.artifact_location(settings.local_tracking_uri),
            experiment_name=config.tracking.experiment_name,
        ),
    }
    asset = f"{recorded.model_name}_model"
    up_to_features = dg.AssetSelection.groups("ingestion", "features")
    quiet = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
    current = recorded.batch
    earlier = [batch for batch in batch_files if batch != current]
    (scratch / "dagster_home").mkdir()
    # An instance without a dagster.yaml says so, and welcomes the user to telemetry, on stdout.
    (scratch / "dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with (
        dg.DagsterInstance.local_temp(tempdir=str(scratch / "dagster_home")) as instance,
        set_defs_state_storage(instance.defs_state_storage),
    ):
        instance.add_dynamic_partitions(batch_partitions.name, list(batch_files))
        assets = build_batch_assets(config)
        steps = [(batch, up_to_features, quiet) for batch in earlier]
        steps.append(
            (
                current,
                up_to_features | dg.AssetSelection.assets("training_data", asset),
                {**quiet, "ops": {asset: {"config": {"params": params}}}},
            )
        )
        for batch, selection, run_config in steps:
            # dbt prints its progress to stdout, where the command's own verdict goes.
            with contextlib.redirect_stdout(io.StringIO()):
                result = dg.materialize(
                    assets,
                    resources=resources,
                    instance=instance,
                    partition_key=batch,
                    selection=selection,
                    run_config=run_config,
                    raise_on_error=False,
                )
            if not result.success:
                raise CannotReproduce(f"the rebuild of {batch} failed: {first_failure(result.all_events)}")
        run_id = result.asset_materializations_for_node(asset)[0].metadata["mlflow_run_id"].value
        rebuilt = resources["mlflow"].store.client().get_run(run_id)
    return ModelRun(run_id, rebuilt.data.metrics, rebuilt.data.tags)
