"""Training: the seeded train/test split and one model asset per configured algorithm."""

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from ml_platform.defs.partitions import batch_partitions
from ml_platform.defs.retries import EXTERNAL_SYSTEM_RETRY, retry_only_transient
from ml_platform.lib.batches import batches_up_to
from ml_platform.lib.clearml_store import ClearMLStore, ping_server
from ml_platform.lib.config import (
    DataConfig,
    ModelSpec,
    PlatformConfig,
    TrainingConfig,
    canonical_param_names,
    code_version,
    fingerprint,
)
from ml_platform.lib.evaluation import (
    Predictions,
    labels_unseen_in_training,
    metrics_of,
    per_class_metrics,
    per_class_run_metrics,
    predict,
    score,
)
from ml_platform.lib.mlflow_store import MlflowStore, study_metrics
from ml_platform.lib.provenance import ModelRunRecord, frame_hash, model_run_record, reproduction_tags
from ml_platform.lib.report_plots import PLOT_TITLES, image_markdown, objective_over_trials_figure, to_png
from ml_platform.lib.training import FittedModel, TrainTestSplit, carve_validation, fit_model, split_train_test
from ml_platform.lib.tuning import StudyResult, run_study, search_left_after, trials_markdown
from ml_platform.resources.clearml_tracking import ClearMLTrackingResource
from ml_platform.resources.mlflow_tracking import MlflowTrackingResource
from ml_platform.resources.warehouse import WarehouseResource

FEATURES_KEY = dg.AssetKey("features")


@dataclass
class TrainingData:
    """The split the candidates train and are scored on, with the batches and data hash behind it, and
    the content hash of each batch's file (what `ml-platform reproduce` rebuilds from)."""

    split: TrainTestSplit
    batches: list[str]
    data_hash: str
    # A class-level default, so a TrainingData pickled before this field existed reads as "not recorded".
    batch_hashes: dict[str, str | None] | None = None


@dataclass
class TrainedCandidate:
    """What downstream steps need of a trained model; the model itself lives in MLflow.

    `validation_metrics` pick the winner; `metrics` and `held_out` (its predictions of the held-out
    rows, for the promotion gate's paired comparison) are on the rows no candidate was chosen on."""

    name: str
    model_type: str
    params: dict[str, Any]
    metrics: dict[str, float]
    validation_metrics: dict[str, float]
    held_out: Predictions
    run_id: str
    model_uri: str
    # Multi-class only: precision, recall and support of each label on the held-out rows.
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)


class ModelParamsConfig(dg.Config):
    """Launch-time hyperparameter overrides, on top of the config file's, validated the same way."""

    params: dict[str, Any] = {}


def build_training_assets(config: PlatformConfig) -> list[dg.AssetsDefinition]:
    """`training_data` and one `<name>_model` asset per model in the config."""

    @dg.asset(
        partitions_def=batch_partitions,
        group_name="training",
        deps=[FEATURES_KEY],
        code_version=code_version(config.data, config.training),
        description="Seeded split of the batch's features into training, validation (picks the winner) and "
        f"held-out rows (the promotion gate's): window {config.training.window}, test size "
        f"{config.training.test_size}, validation size {config.training.validation_size}.",
    )
    def training_data(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.Output[TrainingData]:
        training_set = prepare_training_data(context, config.data, config.training, warehouse, validation=True)
        split = training_set.split
        unseen = unseen_labels(config.data, split)
        if unseen:
            context.log.warning(
                f"Label(s) of {config.data.target!r} in the validation or held-out rows but not in the training "
                f"rows: {', '.join(unseen)}; no model can predict them, they count as misses in the metrics"
            )
        return dg.Output(
            training_set,
            metadata={
                "dagster/row_count": len(split.train) + len(split.validation) + len(split.test),
                "train_rows": len(split.train),
                "validation_rows": len(split.validation),
                "test_rows": len(split.test),
                "held_out_ids_sha256": split.provenance.held_out_ids_sha256,
                "batches": ", ".join(training_set.batches),
                "data_hash": training_set.data_hash,
                "feature_columns": ", ".join(split.feature_columns),
                **({"unseen_labels": ", ".join(unseen)} if unseen else {}),
            },
        )

    return [training_data, *(build_model_asset(config, name, spec) for name, spec in config.models.items())]


def prepare_training_data(
    context: dg.OpExecutionContext,
    data: DataConfig,
    training: TrainingConfig,
    warehouse: WarehouseResource,
    validation: bool = False,
) -> TrainingData:
    """The batch's features (with earlier batches' under a cumulative window), split and hashed;
    `validation` also carves the rows the candidates are compared on out of the training rows."""
    batches = training_window(context, training.window, warehouse)
    features = warehouse.warehouse.read_table(batches, "features")
    split = split_train_test(features, data, training, context.partition_key)
    if validation:
        split = carve_validation(split, data, training)
    return TrainingData(
        split=split,
        batches=batches,
        data_hash=frame_hash(features),
        batch_hashes=warehouse.warehouse.content_hashes(batches),
    )


def unseen_labels(data: DataConfig, split: TrainTestSplit) -> list[str]:
    """The target labels the models are scored on but never trained on (classification only)."""
    if data.task != "classification":
        return []
    return labels_unseen_in_training(split.y_train, split.y_validation, split.y_test)


def training_window(context: dg.OpExecutionContext, window: str, warehouse: WarehouseResource) -> list[str]:
    """The batches to train on: this one, or (cumulative) every earlier batch with features too."""
    if window == "batch":
        return [context.partition_key]
    window = batches_up_to(
        context.instance.get_dynamic_partitions(batch_partitions.name),
        context.partition_key,
        ready=context.instance.get_materialized_partitions(FEATURES_KEY),
    )
    # A batch re-ingested since its features were built has none until dbt runs on it again.
    *earlier, current = window
    ready = [batch_id for batch_id in earlier if warehouse.warehouse.has_table(batch_id, "features")]
    if skipped := sorted(set(earlier) - set(ready)):
        context.log.warning(f"Left out of the window, features being rebuilt: {', '.join(skipped)}")
    return [*ready, current]


def build_model_asset(platform: PlatformConfig, name: str, spec: ModelSpec) -> dg.AssetsDefinition:
    """`<name>_model`: fit the spec's Pipeline (with the best params of its study when it has a
    `search:` block), score it on the held-out rows, log one MLflow run (the trials nested under it)."""
    model_code_version = code_version(spec, platform.training)

    @dg.asset(
        name=f"{name}_model",
        partitions_def=batch_partitions,
        group_name="training",
        kinds={"sklearn", "mlflow"},
        code_version=model_code_version,
        retry_policy=EXTERNAL_SYSTEM_RETRY,
        description=f"{spec.type} trained on the batch's training split, logged to MLflow."
        + (
            f" Tuned first: {spec.search.n_trials} Optuna trials over {', '.join(spec.search.params)}."
            if spec.search is not None
            else ""
        ),
    )
    @retry_only_transient
    def model_asset(
        context: dg.AssetExecutionContext,
        config: ModelParamsConfig,
        training_data: TrainingData,
        mlflow: MlflowTrackingResource,
        clearml: ClearMLTrackingResource,
    ) -> dg.Output[TrainedCandidate]:
        clearml_store = clearml_store_for(platform, clearml)
        split = training_data.split
        params = {
            **canonical_param_names(spec.type, spec.params),
            **canonical_param_names(spec.type, config.params),
        }
        task, classes = platform.data.task, platform.data.classes
        study = None
        if (search := search_left_after(spec.type, spec.search, config.params)) is not None:
            study = run_study(
                task, spec.type, params, search, split, platform.training.random_state, search.metric, classes
            )
            context.log.info(f"{name}: best of {len(study.trials)} trials: {study.best.params} ({study.scoring})")
            params = {**params, **study.best.params}
        fitted = fit_model(task, spec.type, params, split, platform.training.random_state)
        held_out = predict(task, fitted.pipeline, split.x_test, classes)
        metrics = metrics_of(task, split.y_test, held_out)
        validation_metrics = score(task, fitted.pipeline, split.x_validation, split.y_validation, classes)
        per_class = per_class_metrics(split.y_test, held_out) if held_out.multiclass else {}
        record = model_run_record(
            spec.type,
            fitted,
            {
                **metrics,
                **{f"validation_{metric}": value for metric, value in validation_metrics.items()},
                **per_class_run_metrics(per_class),
            },
            split,
            platform.training,
            training_data.data_hash,
            platform,
            {
                **run_tags(context),
                "model_name": name,
                "dagster.asset_key": context.asset_key.to_user_string(),
                **reproduction_tags(fitted, held_out),
            },
            training_data.batch_hashes,
        )
        run_name = f"{name}-{context.partition_key}"
        run_id, model_uri, clearml_metadata = log_run(
            context, mlflow.store, clearml_store, run_name, record, fitted, split, study
        )
        context.log.info(f"{name}: {metrics} (MLflow run {run_id})")
        with warnings.catch_warnings():
            # `data_version` is beta in Dagster 1.13 and used here knowingly (see below); its warning
            # would print once per model on every `ml-platform run` and say nothing a user can act on.
            warnings.simplefilter("ignore", dg.BetaWarning)
            output = dg.Output(
                TrainedCandidate(
                    name, spec.type, fitted.params, metrics, validation_metrics, held_out, run_id, model_uri, per_class
                ),
                metadata={
                    **{metric: dg.MetadataValue.float(value) for metric, value in metrics.items()},
                    **{
                        f"validation_{metric}": dg.MetadataValue.float(value)
                        for metric, value in validation_metrics.items()
                    },
                    **({"per_class": dg.MetadataValue.json(per_class)} if per_class else {}),
                    "fit_seconds": fitted.fit_seconds,
                    "mlflow_run_id": run_id,
                    "model_uri": model_uri,
                    "mlflow_run": dg.MetadataValue.url(mlflow.store.run_url(run_id)),
                    **clearml_metadata,
                    **(study_metadata(study) if study is not None else {}),
                },
                # Params given at launch change the model without changing the code version: the data
                # version says what this model was really built from, so its dependents see the change.
                data_version=dg.DataVersion(
                    fingerprint({"code": model_code_version, "params": fitted.params, "data": training_data.data_hash})
                ),
            )
        return output

    return model_asset


def clearml_store_for(platform: PlatformConfig, clearml: ClearMLTrackingResource) -> ClearMLStore | None:
    """The ClearML store when `tracking.backends` lists it. Resolved, and a configured server pinged,
    before any fitting: a half-configured environment or a server that does not answer fails the
    step at once, before its MLflow run is logged."""
    if "clearml" not in platform.tracking.backends:
        return None
    store = clearml.store
    if not store.target.offline:
        ping_server(store.target.api_host)
    return store


def log_run(
    context: dg.OpExecutionContext,
    mlflow_store: MlflowStore,
    clearml_store: ClearMLStore | None,
    run_name: str,
    record: ModelRunRecord,
    fitted: FittedModel,
    split: TrainTestSplit,
    study: StudyResult | None = None,
) -> tuple[str, str, dict[str, str]]:
    """A model run logged to MLflow, then to ClearML when the config lists it (tagged with the MLflow
    run's id). Returns the MLflow run id, the model URI and the metadata naming the ClearML task."""
    run_id, model_uri = mlflow_store.log_fitted_model(run_name, record, fitted, split, study)
    if clearml_store is None:
        return run_id, model_uri, {}
    tagged = dataclasses.replace(record, tags={**record.tags, "mlflow_run_id": run_id})
    task_id, _ = clearml_store.log_fitted_model(run_name, tagged, fitted)
    context.log.info(f"{run_name}: logged to ClearML too (task {task_id})")
    return run_id, model_uri, {"clearml_task_id": task_id}


def study_metadata(study: StudyResult) -> dict[str, dg.MetadataValue]:
    """What the model's page shows of its study: the trials, the objective over them, the winner."""
    return {
        "tuning_trials": dg.MetadataValue.md(trials_markdown(study)),
        "tuning_plot": dg.MetadataValue.md(
            image_markdown(PLOT_TITLES["objective_over_trials"], to_png(objective_over_trials_figure(study)))
        ),
        "tuning_scoring": study.scoring,
        "tuning_best_trial": study.best.number,
        **{name: dg.MetadataValue.float(value) for name, value in study_metrics(study).items()},
    }


def run_tags(context: dg.OpExecutionContext) -> dict[str, str]:
    """The tags that tie an MLflow run to its Dagster run and batch."""
    return {"dagster.run_id": context.run.run_id, "dagster.partition": context.partition_key}
