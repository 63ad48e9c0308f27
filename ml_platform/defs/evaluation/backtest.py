"""The champion backtest: how the current champion does on every batch after the one it trained on.

Not partitioned: one materialization scores one model version on all the later batches that have
features. The schedule asks `plan_backtest` first and skips with its reason; a run started
by hand with nothing to score still materializes, with `status: nothing to backtest` and the reason.
"""

import re
from dataclasses import dataclass, field, replace

import dagster as dg

from ml_platform.defs.partitions import batch_partitions
from ml_platform.defs.training.assets import FEATURES_KEY
from ml_platform.lib.backtest import run_backtest
from ml_platform.lib.config import PlatformConfig
from ml_platform.lib.mlflow_store import MlflowStore
from ml_platform.lib.warehouse import Warehouse
from ml_platform.resources.mlflow_tracking import MlflowTrackingResource
from ml_platform.resources.reports import ReportsResource
from ml_platform.resources.warehouse import WarehouseResource

BACKTEST_KEY = dg.AssetKey("champion_backtest")
# Backtest reports go to `reports/backtest/<model>-v<version>.json`, beside the batches' folders.
REPORTS_FOLDER = "backtest"


class BacktestConfig(dg.Config):
    """Which model version to backtest: the holder of `alias` in `registered_model_name`."""

    registered_model_name: str | None = None  # None: the config's promotion.registered_model_name
    alias: str = "champion"


@dataclass(frozen=True)
class BacktestPlan:
    """The version holding the alias and the batches to score it on; `skip_reason` when there are none."""

    model_name: str
    alias: str
    version: str | None = None
    trained_on: str | None = None
    batches: list[str] = field(default_factory=list)
    without_features: list[str] = field(default_factory=list)  # later batches dbt has not built yet
    skip_reason: str | None = None


def plan_backtest(
    instance: dg.DagsterInstance, store: MlflowStore, model_name: str, alias: str, warehouse: Warehouse
) -> BacktestPlan:
    """The batches after the one the alias's version was trained on (its `batch` tag), in partition
    order, that have a `features` table; or why there is nothing to backtest."""
    version = store.champion_version(model_name, alias)
    if version is None:
        return BacktestPlan(model_name, alias, skip_reason=f"{model_name!r} has no version with alias {alias!r} yet")
    plan = BacktestPlan(model_name, alias, str(version.version), version.tags.get("batch"))
    ordered = instance.get_dynamic_partitions(batch_partitions.name)
    if plan.trained_on is None:
        reason = f"{model_name} v{plan.version} has no 'batch' tag: which batches came after it is unknown"
        return replace(plan, skip_reason=reason)
    if plan.trained_on not in ordered:
        reason = f"{model_name} v{plan.version} was trained on {plan.trained_on}, which is no longer a batch partition"
        return replace(plan, skip_reason=reason)
    later = ordered[ordered.index(plan.trained_on) + 1 :]
    if not later:
        reason = f"{model_name} v{plan.version} @{alias} was trained on {plan.trained_on}, the latest batch"
        return replace(plan, skip_reason=reason)
    # A batch rejected at ingestion, or re-ingested and waiting for dbt, has no features to score.
    ready = [batch_id for batch_id in later if warehouse.has_table(batch_id, "features")]
    waiting = [batch_id for batch_id in later if batch_id not in ready]
    reason = None if ready else f"no batch after {plan.trained_on} has features yet ({', '.join(waiting)})"
    return replace(plan, batches=ready, without_features=waiting, skip_reason=reason)


def build_backtest_assets(config: PlatformConfig) -> list[dg.AssetsDefinition]:
    """`champion_backtest`: the registered model's champion scored on every later batch."""
    data = config.data
    metric = config.promotion.primary_metric
    mode = config.primary_metric_mode
    # The asset's run config is also named `config` (Dagster's rule), so the default is read here.
    default_model_name = config.promotion.registered_model_name

    @dg.asset(
        key=BACKTEST_KEY,
        group_name="evaluation",
        kinds={"mlflow"},
        deps=[FEATURES_KEY, dg.AssetKey("champion_model")],
        code_version="1",
        description="The champion scored on every batch after the one it was trained on (out-of-time): "
        f"all {data.task} metrics per batch and the trend of {metric}.",
    )
    def champion_backtest(
        context: dg.AssetExecutionContext,
        config: BacktestConfig,
        mlflow: MlflowTrackingResource,
        warehouse: WarehouseResource,
        reports: ReportsResource,
    ) -> dg.MaterializeResult:
        model_name = config.registered_model_name or default_model_name
        plan = plan_backtest(context.instance, mlflow.store, model_name, config.alias, warehouse.warehouse)
        if plan.skip_reason is not None:
            context.log.info(f"Nothing to backtest: {plan.skip_reason}")
            return dg.MaterializeResult(
                metadata={"status": "nothing to backtest", "reason": plan.skip_reason, "registered_model": model_name}
            )
        if plan.without_features:
            context.log.warning(f"Left out, no features yet: {', '.join(plan.without_features)}")
        model = mlflow.store.load_model(f"models:/{model_name}/{plan.version}")
        features = {batch_id: warehouse.warehouse.read_table([batch_id], "features") for batch_id in plan.batches}
        result = run_backtest(model, features, data, metric=metric, mode=mode)
        report = {
            "registered_model": model_name,
            "version": plan.version,
            "alias": plan.alias,
            "trained_on_batch": plan.trained_on,
            "batches_without_features": plan.without_features,
            **result.to_dict(),
        }
        path = reports.write_json(REPORTS_FOLDER, report_name(model_name, plan.version), report)
        trend = result.trend
        trend_metadata = (
            {}
            if trend.slope is None  # fewer than two batches scored
            else {
                f"{metric}_slope_per_batch": dg.MetadataValue.float(trend.slope),
                f"{metric}_change": dg.MetadataValue.float(trend.change),
            }
        )
        return dg.MaterializeResult(
            metadata={
                "status": "scored",
                "registered_model": model_name,
                "version": plan.version,
                "alias": plan.alias,
                "trained_on_batch": plan.trained_on,
                "batches_scored": ", ".join(batch.batch_id for batch in result.scored),
                "batches_failed": len(result.errors),
                "backtest": dg.MetadataValue.md(result.markdown()),
                "verdict": trend.verdict,
                **trend_metadata,
                "report_file": dg.MetadataValue.path(str(path)),
                "dagster/row_count": result.rows_scored,
            }
        )

    return [champion_backtest]


def report_name(model_name: str, version: str) -> str:
    """`<model>-v<version>`, with anything but letters, digits, '_', '-' and '.' replaced: a registered
    model name may hold characters a file name cannot."""
    return f"{re.sub(r'[^A-Za-z0-9_.-]', '_', model_name)}-v{version}"


backtest_job = dg.define_asset_job(
    "backtest",
    selection=dg.AssetSelection.assets(BACKTEST_KEY),
    description="Score the champion on every batch after the one it was trained on; "
    "the per-batch metrics and trend in the asset's metadata and reports/backtest/.",
)
