"""Predictions: each batch's features scored by the model that held `@champion` when the step ran."""

import dagster as dg

from ml_platform.defs.evaluation.plots import CHAMPION_KEY
from ml_platform.defs.partitions import batch_partitions
from ml_platform.defs.retries import EXTERNAL_SYSTEM_RETRY, retry_only_transient
from ml_platform.defs.training.assets import FEATURES_KEY
from ml_platform.lib.config import PlatformConfig, fingerprint
from ml_platform.lib.predictions import (
    CHAMPION_ALIAS,
    PREDICTIONS_TABLE,
    ModelReference,
    ModelReferenceError,
    class_shares,
    quantiles_markdown,
    resolve_model,
    score_features,
    score_quantiles,
    scored_column,
)
from ml_platform.lib.report_plots import image_markdown, score_histogram_figure, to_png
from ml_platform.resources.mlflow_tracking import MlflowTrackingResource
from ml_platform.resources.warehouse import WarehouseResource


def build_prediction_assets(config: PlatformConfig) -> list[dg.AssetsDefinition]:
    """`predictions` for the config's registered model."""
    model_name = config.promotion.registered_model_name
    id_column = config.data.id_column

    @dg.asset(
        partitions_def=batch_partitions,
        group_name="predictions",
        kinds={"mlflow", "duckdb"},
        # After champion_model: the batch is scored by the champion its own decision left.
        deps=[FEATURES_KEY, CHAMPION_KEY],
        # What it reads of the config: a gate or model change re-scores through champion_model's data version.
        code_version=fingerprint({"registered_model": model_name, "id_column": id_column}),
        retry_policy=EXTERNAL_SYSTEM_RETRY,
        description=f"The batch's features scored by {model_name}@{CHAMPION_ALIAS} (the version it named when "
        f"the step ran, recorded on every row), written as table `{PREDICTIONS_TABLE}` in the batch's DuckDB file.",
    )
    @retry_only_transient
    def predictions(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource, mlflow: MlflowTrackingResource
    ) -> dg.MaterializeResult:
        from mlflow.exceptions import MlflowException  # imported when scoring: loading the definitions stays quick

        batch, store = context.partition_key, warehouse.warehouse
        try:
            # Resolved once, before loading: the alias may move meanwhile, this version stays the one used.
            champion = resolve_model(mlflow.store.client(), ModelReference(model_name, alias=CHAMPION_ALIAS))
        except ModelReferenceError as error:
            # Only a champion removed by hand gets here: champion_model always leaves one.
            raise dg.Failure(f"batch {batch} not scored: {error}", allow_retries=False) from None
        features = store.read_table([batch], "features")
        model = mlflow.store.load_pyfunc(champion.uri)
        try:
            scored = score_features(model, features, id_column, champion, config.data.classes)
        except (ValueError, MlflowException) as error:
            # The data set changed shape and the gate kept the old champion (it could not be compared):
            # the batch is recorded as not scored, and the run goes on, as champion_model's does.
            reason = f"{champion.uri} cannot score this batch's features ({str(error).splitlines()[0][:300]})"
            context.log.warning(f"batch {batch} not scored: {reason}")
            return dg.MaterializeResult(
                metadata={"status": "not scored", "reason": reason, "model_version": champion.version}
            )
        store.write_table(batch, PREDICTIONS_TABLE, scored)
        context.log.info(f"Scored {len(scored)} rows of {batch} with {champion.uri}")
        return dg.MaterializeResult(metadata=prediction_metadata(scored, champion, store.batch_database(batch)))

    return [predictions]


def prediction_metadata(scored, champion, database) -> dict[str, dg.MetadataValue | str | int | float]:
    """What a person checks on a batch's predictions: which model, how many rows, how the scores spread."""
    column = scored_column(scored)
    shares = class_shares(scored)
    histogram = score_histogram_figure(scored[column], column, f"{column} of {len(scored)} rows, v{champion.version}")
    return {
        "dagster/row_count": len(scored),
        "registered_model": champion.name,
        "model_version": champion.version,
        "model_run_id": champion.run_id,
        "scored_column": column,
        "score_quantiles": dg.MetadataValue.md(quantiles_markdown(score_quantiles(scored), column)),
        "score_histogram": dg.MetadataValue.md(image_markdown(f"{column} distribution", to_png(histogram))),
        **{f"predicted_share_{label}": dg.MetadataValue.float(share) for label, share in shares.items()},
        "warehouse_table": dg.MetadataValue.path(f"{database}::{PREDICTIONS_TABLE}"),
    }
