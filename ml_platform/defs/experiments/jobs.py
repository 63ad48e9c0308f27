"""The `experiment` job: one experiment's model trained and scored on one batch's features.

`ml-platform experiment run` (and `ExperimentManager.run_experiment`) launch it with the experiment's
validated config as run config, so each experiment run is in the Dagster UI with its config, logs
and batch, and can be launched again from the launchpad. It reads the features the batch pipeline
built and writes only to the experiment's own MLflow experiment (and ClearML project, when
`tracking.backends` lists ClearML): the pipeline's assets, models and champion are left as they are.
"""

import dataclasses
from typing import Any

import dagster as dg
from pydantic import Field, ValidationError

from ml_platform.defs.partitions import batch_partitions
from ml_platform.defs.retries import EXTERNAL_SYSTEM_RETRY, retry_only_transient
from ml_platform.defs.training.assets import clearml_store_for, log_run, prepare_training_data, run_tags
from ml_platform.lib.config import ExperimentConfig, PlatformConfig, format_validation_error
from ml_platform.lib.evaluation import score
from ml_platform.lib.provenance import model_run_record
from ml_platform.lib.training import fit_model
from ml_platform.resources.clearml_tracking import ClearMLTrackingResource
from ml_platform.resources.mlflow_tracking import MlflowTrackingResource
from ml_platform.resources.warehouse import WarehouseResource


class ExperimentRunConfig(dg.Config):
    experiment_id: str = Field(description="The experiment's id (its MLflow experiment id).")
    experiment_name: str = Field(description="The MLflow experiment the run is logged to.")
    config: dict[str, Any] = Field(description="The resolved experiment config (configs/experiment.yaml's schema).")


def experiment_run_config(experiment_id: str, experiment_name: str, config: ExperimentConfig) -> dict[str, Any]:
    """The `experiment` job's run config for one experiment (CLI runs and scheduled runs alike)."""
    return {
        "ops": {
            "train_experiment": {
                "config": {
                    "experiment_id": experiment_id,
                    "experiment_name": experiment_name,
                    "config": config.loggable(),
                }
            }
        }
    }


def build_experiment_job(platform: PlatformConfig) -> dg.JobDefinition:
    """The job, for the code location's data set: an experiment must describe the same data."""

    @dg.op(tags={"kind": "sklearn"}, retry_policy=EXTERNAL_SYSTEM_RETRY)
    @retry_only_transient
    def train_experiment(
        context: dg.OpExecutionContext,
        config: ExperimentRunConfig,
        warehouse: WarehouseResource,
        mlflow: MlflowTrackingResource,
        clearml: ClearMLTrackingResource,
    ) -> dict:
        try:
            experiment = ExperimentConfig.model_validate(config.config)
        except ValidationError as error:
            raise dg.Failure(f"experiment config: {format_validation_error(error)}", allow_retries=False) from None
        if experiment.data.name != platform.data.name:
            raise dg.Failure(
                f"experiment data set {experiment.data.name!r} is not the pipeline's {platform.data.name!r}: "
                "batches have features for the pipeline's data set only",
                allow_retries=False,  # retrying cannot fix it
            )
        batch = context.partition_key
        if not warehouse.warehouse.has_table(batch, "features"):
            raise dg.Failure(
                f"batch {batch} has no features yet: run the pipeline for it first (`ml-platform run {batch}`)",
                allow_retries=False,
            )
        training_data = prepare_training_data(context, experiment.data, experiment.training, warehouse)
        split = training_data.split
        spec = experiment.model
        fitted = fit_model(experiment.data.task, spec.type, spec.params, split, experiment.training.random_state)
        metrics = score(experiment.data.task, fitted.pipeline, split.x_test, split.y_test, experiment.data.classes)
        store = dataclasses.replace(mlflow.store, experiment_name=config.experiment_name)
        clearml_store = clearml_store_for(platform, clearml)
        if clearml_store is not None:
            clearml_store = dataclasses.replace(clearml_store, project_name=config.experiment_name)
        record = model_run_record(
            spec.type,
            fitted,
            metrics,
            split,
            experiment.training,
            training_data.data_hash,
            experiment,
            {**run_tags(context), "ml_platform.experiment_id": config.experiment_id, "batch": batch},
        )
        run_id, model_uri, clearml_metadata = log_run(
            context, store, clearml_store, f"{experiment.name}-{batch}", record, fitted, split
        )
        context.log.info(f"experiment {experiment.name} on {batch}: {metrics} (MLflow run {run_id})")
        context.add_output_metadata(
            {
                **{metric: dg.MetadataValue.float(value) for metric, value in metrics.items()},
                "mlflow_run": dg.MetadataValue.url(store.run_url(run_id)),
                "model_uri": model_uri,
                "config_hash": experiment.config_hash(),
                **clearml_metadata,
            }
        )
        return {"mlflow_run_id": run_id, "model_uri": model_uri, "metrics": metrics, "batch": batch}

    @dg.job(
        name="experiment",
        partitions_def=batch_partitions,
        description="Train one experiment's model on one batch's features and log it to the experiment's "
        "MLflow experiment. Launched by `ml-platform experiment run ID --batch B`.",
    )
    def experiment_job():
        train_experiment()

    return experiment_job
