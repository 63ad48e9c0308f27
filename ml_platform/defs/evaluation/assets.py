"""Evaluation: the report comparing every candidate, and the champion in the Model Registry."""

import dataclasses

import dagster as dg

from ml_platform.defs.evaluation.plots import publish_evaluation_plots
from ml_platform.defs.partitions import batch_partitions
from ml_platform.defs.registry_guard import REGISTRY_POOL
from ml_platform.defs.retries import EXTERNAL_SYSTEM_RETRY, retry_only_transient
from ml_platform.defs.training.assets import TrainedCandidate, TrainingData, unseen_labels
from ml_platform.lib.config import PlatformConfig, code_version
from ml_platform.lib.evaluation import (
    PromotionDecision,
    decide_on_held_out_rows,
    earlier_than_champion,
    first_champion,
    metrics_table_markdown,
    pick_winner,
    predict,
    quality_problems,
    recorded_decision,
    unfair_comparison,
)
from ml_platform.resources.clearml_tracking import ClearMLTrackingResource
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
        clearml: ClearMLTrackingResource,
        training_data: TrainingData,
        **candidates: TrainedCandidate,
    ) -> dg.Output[dict]:
        # The winner is picked on the validation rows, so the held-out rows stay unbiased for the gate.
        winner = pick_winner({c.name: c.validation_metrics for c in candidates.values()}, metric, mode)
        scores = {candidate.name: candidate.metrics for candidate in candidates.values()}
        table = metrics_table_markdown(scores, task, winner)
        report = {
            "batch": context.partition_key,
            "task": task,
            "primary_metric": metric,
            "mode": mode,
            "winner": winner,
            "winner_chosen_on": "validation",
            "candidates": {
                c.name: {
                    "model_type": c.model_type,
                    "metrics": c.metrics,
                    "validation_metrics": c.validation_metrics,
                    "params": c.params,
                    **({"per_class": c.per_class} if c.per_class else {}),
                    "mlflow_run_id": c.run_id,
                    "model_uri": c.model_uri,
                }
                for c in candidates.values()
            },
            **({"classes": [str(label) for label in config.data.classes]} if task == "classification" else {}),
            # Labels scored but never trained on: counted as misses, named here so nobody has to guess why.
            "unseen_labels": unseen_labels(config.data, training_data.split),
        }
        path = reports.write_json(context.partition_key, "evaluation_report", report)
        plots = publish_evaluation_plots(context, config, report, table, training_data, reports, mlflow, clearml)
        return dg.Output(
            report,
            metadata={
                "winner": winner,
                f"winner_{metric}": dg.MetadataValue.float(scores[winner][metric]),
                f"winner_validation_{metric}": dg.MetadataValue.float(
                    candidates[f"{winner}_model"].validation_metrics[metric]
                ),
                "metrics": dg.MetadataValue.md(table),
                "report_file": dg.MetadataValue.path(str(path)),
                **plots,
            },
        )

    rules = code_version(config.promotion)

    @dg.asset(
        partitions_def=batch_partitions,
        group_name="evaluation",
        kinds={"mlflow"},
        ins={**model_assets, **plot_inputs, "evaluation_report": dg.AssetIn(key="evaluation_report")},
        code_version=rules,
        pool=REGISTRY_POOL,
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
        description="The batch's winner registered in the MLflow Model Registry: alias `champion` only if it "
        "comes from a batch no older than the champion's, the champion never trained on this batch's held-out "
        f"rows, and a paired bootstrap on those rows puts the whole {config.promotion.confidence:.0%} interval "
        f"of the improvement above {config.promotion.min_improvement:g}; else `challenger`, with the reason.",
    )
    @retry_only_transient
    def champion_model(
        context: dg.AssetExecutionContext,
        reports: ReportsResource,
        evaluation_report: dict,
        training_data: TrainingData,
        mlflow: MlflowTrackingResource,
        **candidates: TrainedCandidate,
    ) -> dg.MaterializeResult:
        model_name = config.promotion.registered_model_name
        batch_id = context.partition_key
        winner = candidates[f"{evaluation_report['winner']}_model"]
        incumbent = mlflow.store.champion_version(model_name)
        champion_now = incumbent and str(incumbent.version)
        # A retry (of the step or the run) finds what an earlier attempt registered from this winner.
        earlier = mlflow.store.version_for_run(model_name, winner.run_id)
        decision = earlier and recorded_decision(earlier.tags, str(earlier.version), champion_now, rules)
        if decision:
            against = earlier.tags["decision.incumbent"] or None
            context.log.info(f"v{earlier.version} was registered from this winner before; its decision stands")
        else:
            against = champion_now
            decision = decide(context, mlflow, incumbent, winner, training_data)
        version = mlflow.store.register(
            model_name,
            winner.model_uri,
            winner.run_id,
            alias=decision.alias,
            tags={
                "batch": batch_id,
                "window": config.training.window,
                "model_name": winner.name,
                metric: f"{winner.metrics[metric]:.6f}",
                **training_data.split.provenance.as_tags(),
                **decision.as_tags(against, rules),
                "dagster.run_id": context.run.run_id,
            },
        )
        context.log.info(f"{model_name} v{version} is {decision.alias}: {decision.reason}")
        comparison = decision.comparison
        champion_score = comparison.champion if comparison else None
        reports.write_json(
            batch_id,
            "promotion_decision",
            {
                "registered_model": model_name,
                "version": version,
                "alias": decision.alias,
                "reason": decision.reason,
                "against": against,
                "comparison": comparison and dataclasses.asdict(comparison),
            },
        )
        problems = quality_problems(
            metric,
            mode,
            winner.metrics[metric],
            champion_score,
            quality.primary_metric_threshold,
            quality.max_drop_vs_champion,
        )
        current = version if decision.alias == "champion" else against
        return dg.MaterializeResult(
            check_results=[
                dg.AssetCheckResult(
                    check_name=QUALITY_CHECK,
                    passed=not problems,
                    severity=dg.AssetCheckSeverity.WARN,
                    description="; ".join(problems) or None,
                    metadata={
                        "model": winner.name,
                        metric: dg.MetadataValue.float(winner.metrics[metric]),
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
                f"challenger_{metric}": dg.MetadataValue.float(winner.metrics[metric]),
                **(
                    {
                        f"previous_champion_{metric}": dg.MetadataValue.float(comparison.champion),
                        "improvement": dg.MetadataValue.float(comparison.improvement),
                        "interval_low": dg.MetadataValue.float(comparison.low),
                        "interval_high": dg.MetadataValue.float(comparison.high),
                        "held_out_rows": comparison.rows,
                    }
                    if comparison
                    else {}
                ),
                "mlflow_run": dg.MetadataValue.url(mlflow.store.run_url(winner.run_id)),
            },
        )

    def decide(
        context: dg.AssetExecutionContext,
        mlflow: MlflowTrackingResource,
        incumbent,
        winner: TrainedCandidate,
        training_data: TrainingData,
    ) -> PromotionDecision:
        """The promotion rules in order: first champion, batch order, a fair comparison, the gate."""
        if incumbent is None:
            return first_champion(metric, winner.metrics[metric])
        batch_id, champion = context.partition_key, str(incumbent.version)
        split = training_data.split
        ordered = context.instance.get_dynamic_partitions(batch_partitions.name)
        return (
            earlier_than_champion(batch_id, champion, incumbent.tags.get("batch"), ordered)
            or unfair_comparison(
                batch_id, champion, mlflow.store.rows_trained_on(incumbent.run_id, split.held_out_ids())
            )
            or compare_with_champion(mlflow, incumbent, winner, split)
        )

    def compare_with_champion(mlflow, incumbent, winner: TrainedCandidate, split) -> PromotionDecision:
        promotion = config.promotion
        champion_model = mlflow.store.load_model(f"models:/{promotion.registered_model_name}/{incumbent.version}")
        try:
            champion_predictions = predict(task, champion_model, split.x_test, config.data.classes)
        except (ValueError, KeyError, TypeError) as error:  # the old model cannot read the new data
            return PromotionDecision(
                "challenger",
                f"the champion (v{incumbent.version}) cannot be scored on this batch's held-out data "
                f"({type(error).__name__}: {str(error).splitlines()[0][:200]}); promote by hand if intended",
            )
        return decide_on_held_out_rows(
            promotion, mode, config.seed, split.y_test, winner.held_out, champion_predictions, str(incumbent.version)
        )

    return [evaluation_report, champion_model]
