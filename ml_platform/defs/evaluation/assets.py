"""Evaluation: the report comparing every candidate, and the champion in the Model Registry."""

import dagster as dg

from ml_platform.defs.evaluation.plots import publish_evaluation_plots
from ml_platform.defs.partitions import batch_partitions
from ml_platform.defs.retries import EXTERNAL_SYSTEM_RETRY, retry_only_transient
from ml_platform.defs.training.assets import TrainedCandidate, TrainingData
from ml_platform.lib.config import PlatformConfig, code_version
from ml_platform.lib.evaluation import (
    PromotionDecision,
    champion_saw_batch,
    decide_promotion,
    metrics_table_markdown,
    pick_winner,
    quality_problems,
    score,
)
from ml_platform.resources.mlflow_tracking import MlflowTrackingResource
from ml_platform.resources.reports import ReportsResource

# The champion_model check that notifies when a batch's winner is worse than the configured bar.
QUALITY_CHECK = "meets_quality_bar"


def build_evaluation_assets(config: PlatformConfig) -> list[dg.AssetsDefinition]:
    """`evaluation_report` over every model asset of the config, and `champion_model` after it."""
    task = config.data.task
    metric = config.promotion.primary_metric
    mode = config.primary_metric_mode
    model_assets = {f"{name}_model": dg.AssetIn(key=f"{name}_model") for name in config.models}
    # The held-out rows the plots are drawn on.
    plot_inputs = {"training_data": dg.AssetIn(key="training_data")}
    quality = config.notifications.quality

    @dg.asset(
        partitions_def=batch_partitions,
        group_name="evaluation",
        ins={**model_assets, **plot_inputs},
        code_version=code_version(config.promotion),
        description=f"Every candidate scored on the held-out split; the winner by {metric} ({mode}); "
        "plots of the winner, the candidates and the metrics over batches.",
    )
    def evaluation_report(
        context: dg.AssetExecutionContext,
        reports: ReportsResource,
        mlflow: MlflowTrackingResource,
        training_data: TrainingData,
        **candidates: TrainedCandidate,
    ) -> dg.Output[dict]:
        scores = {candidate.name: candidate.metrics for candidate in candidates.values()}
        winner = pick_winner(scores, metric, mode)
        table = metrics_table_markdown(scores, task, winner)
        report = {
            "batch": context.partition_key,
            "task": task,
            "primary_metric": metric,
            "mode": mode,
            "winner": winner,
            "candidates": {
                c.name: {
                    "model_type": c.model_type,
                    "metrics": c.metrics,
                    "params": c.params,
                    "mlflow_run_id": c.run_id,
                    "model_uri": c.model_uri,
                }
                for c in candidates.values()
            },
        }
        path = reports.write_json(context.partition_key, "evaluation_report", report)
        plots = publish_evaluation_plots(context, config, report, table, training_data, reports, mlflow)
        return dg.Output(
            report,
            metadata={
                "winner": winner,
                f"winner_{metric}": dg.MetadataValue.float(scores[winner][metric]),
                "metrics": dg.MetadataValue.md(table),
                "report_file": dg.MetadataValue.path(str(path)),
                **plots,
            },
        )

    @dg.asset(
        partitions_def=batch_partitions,
        group_name="evaluation",
        kinds={"mlflow"},
        code_version=code_version(config.promotion),
        pool="model_registry",
        retry_policy=EXTERNAL_SYSTEM_RETRY,
        check_specs=[
            dg.AssetCheckSpec(
                QUALITY_CHECK,
                asset="champion_model",
                description=f"The batch's winner meets the quality bar: {metric} no worse than "
                f"{quality.primary_metric_threshold} and no more than {quality.max_drop_vs_champion} worse "
                "than the champion (`notifications.quality`). A failure notifies; the run still succeeds.",
            )
        ],
        description="The batch's winner registered in the MLflow Model Registry: alias `champion` if it beats "
        "the current champion on this batch's held-out data by the configured margin, else `challenger`.",
    )
    @retry_only_transient
    def champion_model(
        context: dg.AssetExecutionContext,
        evaluation_report: dict,
        training_data: TrainingData,
        mlflow: MlflowTrackingResource,
    ) -> dg.MaterializeResult:
        model_name = config.promotion.registered_model_name
        winner = evaluation_report["candidates"][evaluation_report["winner"]]
        # The report scored every candidate on this batch's held-out rows; the champion is scored
        # on the very same rows, unless it has trained on them (see champion_saw_batch).
        challenger_score = winner["metrics"][metric]
        split = training_data.split
        incumbent = mlflow.store.champion_version(model_name)
        champion_score = None
        if incumbent is None:
            decision = decide_promotion(metric, mode, config.promotion.min_improvement, challenger_score, None)
        elif champion_saw_batch(
            incumbent.tags.get("window"),
            incumbent.tags.get("batch"),
            context.partition_key,
            context.instance.get_dynamic_partitions(batch_partitions.name),
        ):
            decision = PromotionDecision(
                "challenger",
                f"the champion (v{incumbent.version}) was trained on a cumulative window up to "
                f"{incumbent.tags['batch']}, which holds this batch's held-out rows: no fair comparison; "
                "promote by hand if intended",
            )
        else:
            champion = mlflow.store.load_model(f"models:/{model_name}/{incumbent.version}")
            try:
                champion_score = score(task, champion, split.x_test, split.y_test)[metric]
            except (ValueError, KeyError, TypeError) as error:  # the old model cannot read the new data
                decision = PromotionDecision(
                    "challenger",
                    f"the champion (v{incumbent.version}) cannot be scored on this batch's held-out data "
                    f"({type(error).__name__}: {str(error).splitlines()[0][:200]}); promote by hand if intended",
                )
            else:
                decision = decide_promotion(
                    metric, mode, config.promotion.min_improvement, challenger_score, champion_score
                )
        version = mlflow.store.register(
            model_name,
            winner["model_uri"],
            winner["mlflow_run_id"],
            alias=decision.alias,
            tags={
                "batch": context.partition_key,
                "window": config.training.window,
                "model_name": evaluation_report["winner"],
                metric: f"{challenger_score:.6f}",
                "promotion_reason": decision.reason,
                "dagster.run_id": context.run.run_id,
            },
        )
        context.log.info(f"{model_name} v{version} is {decision.alias}: {decision.reason}")
        current = version if decision.alias == "champion" else incumbent.version
        problems = quality_problems(
            metric,
            mode,
            challenger_score,
            champion_score,
            quality.primary_metric_threshold,
            quality.max_drop_vs_champion,
        )
        return dg.MaterializeResult(
            check_results=[
                dg.AssetCheckResult(
                    check_name=QUALITY_CHECK,
                    passed=not problems,
                    severity=dg.AssetCheckSeverity.WARN,
                    description="; ".join(problems) or None,
                    metadata={
                        "model": evaluation_report["winner"],
                        metric: dg.MetadataValue.float(challenger_score),
                        **({"champion": dg.MetadataValue.float(champion_score)} if champion_score is not None else {}),
                    },
                )
            ],
            metadata={
                "registered_model": model_name,
                "version": version,
                "alias": decision.alias,
                "reason": decision.reason,
                "champion_version": str(current),
                f"challenger_{metric}": dg.MetadataValue.float(challenger_score),
                **(
                    {f"previous_champion_{metric}": dg.MetadataValue.float(champion_score)}
                    if champion_score is not None
                    else {}
                ),
                "mlflow_run": dg.MetadataValue.url(mlflow.store.run_url(winner["mlflow_run_id"])),
            },
        )

    return [evaluation_report, champion_model]
