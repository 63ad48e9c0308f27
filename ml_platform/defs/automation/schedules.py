"""Cron schedules: the platform's retraining, backtest and pipeline schedules (`automation.schedules`)
and the tasks added with TaskScheduler (`ml-platform schedules add`), read from the schedules file.

A tick that finds nothing to do says why (no batches yet, every batch up to date, a batch
quarantined, no champion to backtest) instead of launching a run that would fail or recompute what
has not changed.
"""

import dagster as dg

from ml_platform.defs.automation.sensors import TRIGGER_TAG
from ml_platform.defs.automation.staleness import STALE_REASON_TAG, describe_reasons, reasons_to_run
from ml_platform.defs.drift.retraining import DRIFT_REASON_TAG, drift_retraining_request
from ml_platform.defs.evaluation.backtest import plan_backtest
from ml_platform.defs.experiments.jobs import experiment_run_config
from ml_platform.defs.ingestion.quarantine import batch_quarantine
from ml_platform.defs.partitions import batch_partitions, batches_with
from ml_platform.defs.tags import EXPERIMENT_ID_TAG, PARTITION_TAG
from ml_platform.lib.batches import batch_file
from ml_platform.lib.config import ConfigError, ExperimentConfig, PlatformConfig, ScheduleSpec, fingerprint
from ml_platform.lib.ingestion import ingestion_code_version
from ml_platform.lib.settings import Settings
from ml_platform.resources.mlflow_tracking import MlflowTrackingResource
from ml_platform.resources.warehouse import WarehouseResource
from ml_platform.scheduler import BacktestTask, PipelineTask, TrainingTask, cron_problem, load_scheduled_tasks

ACTIVE_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]
RETRAINING_GROUPS = {"training", "evaluation"}


def build_schedules(config: PlatformConfig, settings: Settings) -> list[dg.ScheduleDefinition]:
    specs = config.automation.schedules
    for kind in ("retraining", "backtest", "pipeline"):
        spec = getattr(specs, kind)
        if problem := cron_problem(spec.cron, spec.timezone):
            raise ConfigError(f"{settings.config_path}: automation.schedules.{kind}: {problem}")
    schedules = [
        _stale_batches_schedule(
            "retraining_schedule",
            specs.retraining,
            config,
            settings,
            job_name="batch_pipeline",
            groups=RETRAINING_GROUPS,
            latest_only=True,
            retrain_on_drift=config.drift.retrain_on_drift,
            description="Retrains the newest batch's models where data, code or config changed since they were "
            "trained (or a run failed), or, with `drift.retrain_on_drift`, where its drift report says it drifted "
            "after they were trained; skips when they are up to date, or the batch is quarantined.",
        ),
        _stale_batches_schedule(
            "pipeline_schedule",
            specs.pipeline,
            config,
            settings,
            job_name="batch_pipeline",
            groups=None,
            latest_only=False,
            description="Runs the whole pipeline for every batch that is stale or was never run, except "
            "quarantined ones (refused at ingestion, file and config unchanged since).",
        ),
        _backtest_schedule("backtest_schedule", specs.backtest, config.promotion.registered_model_name, "champion"),
    ]
    for task in load_scheduled_tasks(settings.home / config.automation.schedules_file):
        spec = ScheduleSpec(cron=task.cron, timezone=task.timezone)
        if isinstance(task, TrainingTask):
            schedules.append(_training_schedule(task, spec))
        elif isinstance(task, BacktestTask):
            schedules.append(_backtest_schedule(task.name, spec, task.model, task.alias))
        elif isinstance(task, PipelineTask):
            schedules.append(
                _stale_batches_schedule(
                    task.name,
                    spec,
                    config,
                    settings,
                    job_name=task.pipeline,
                    groups=None,
                    latest_only=False,
                    description=f"{task.pipeline} for every batch that is stale or was never run "
                    "(added with `ml-platform schedules add pipeline`).",
                )
            )
    return schedules


def _status(spec: ScheduleSpec) -> dg.DefaultScheduleStatus:
    return dg.DefaultScheduleStatus.RUNNING if spec.enabled else dg.DefaultScheduleStatus.STOPPED


def _stale_batches_schedule(
    name: str,
    spec: ScheduleSpec,
    config: PlatformConfig,
    settings: Settings,
    *,
    job_name: str,
    groups: set[str] | None,
    latest_only: bool,
    description: str,
    retrain_on_drift: bool = False,
) -> dg.ScheduleDefinition:
    incoming_dir = settings.incoming_dir(config)
    ingestion_version = ingestion_code_version(config.data, config.training)

    @dg.schedule(
        name=name,
        cron_schedule=spec.cron,
        execution_timezone=spec.timezone,
        job_name=job_name,
        default_status=_status(spec),
        description=description,
    )
    def stale_batches(context: dg.ScheduleEvaluationContext):
        instance = context.instance
        batches = instance.get_dynamic_partitions(batch_partitions.name)
        if not batches:
            return dg.SkipReason(f"no batches yet: drop a file in {incoming_dir} or run `ml-platform batches scan`")
        if latest_only:
            batches = batches[-1:]
        asset_graph = context.repository_def.asset_graph
        keys = [
            key
            for key in asset_graph.materializable_asset_keys
            if asset_graph.get(key).partitions_def is not None
            and (groups is None or asset_graph.get(key).group_name in groups)
        ]
        tick = context.scheduled_execution_time.isoformat()
        requests, up_to_date, busy, quarantined = [], [], [], []
        for batch in batches:
            if instance.get_run_records(dg.RunsFilter(statuses=ACTIVE_STATUSES, tags={PARTITION_TAG: batch}), limit=1):
                busy.append(batch)
                continue
            source = batch_file(incoming_dir, batch, config.data.file_format)
            if quarantine := batch_quarantine(instance, batch, source, ingestion_version):
                quarantined.append(quarantine.describe())
                continue
            reasons = reasons_to_run(instance, asset_graph, batch, keys, source)
            if not reasons:
                if retrain_on_drift and (
                    drifted := drift_retraining_request(instance, config, batch, keys, name, TRIGGER_TAG)
                ):
                    context.log.info(f"{batch}: {drifted.tags[DRIFT_REASON_TAG]}")
                    requests.append(drifted)
                else:
                    up_to_date.append(batch)
                continue
            context.log.info(f"{batch}:\n{describe_reasons(reasons)}")
            requests.append(
                dg.RunRequest(
                    # One run per batch and tick: a tick evaluated again (a daemon restarted) launches nothing
                    # twice, and a tick with several stale batches is allowed (Dagster needs a key for each).
                    run_key=f"{batch}@{tick}",
                    partition_key=batch,
                    asset_selection=list(reasons),
                    tags={TRIGGER_TAG: name, STALE_REASON_TAG: describe_reasons(reasons)[:1000]},
                )
            )
        if requests:
            return requests
        parts = []
        if up_to_date:
            parts.append(f"up to date (data, code and config unchanged): {', '.join(up_to_date)}")
        if busy:
            parts.append(f"a run is already queued or running for: {', '.join(busy)}")
        if quarantined:
            parts.append(
                "refused at ingestion, not run again until its file or the config changes (or `ml-platform run "
                f"BATCH`): {'; '.join(quarantined)}"
            )
        return dg.SkipReason("; ".join(parts))

    return stale_batches


def _backtest_schedule(name: str, spec: ScheduleSpec, model: str, alias: str) -> dg.ScheduleDefinition:
    @dg.schedule(
        name=name,
        cron_schedule=spec.cron,
        execution_timezone=spec.timezone,
        job_name="backtest",
        default_status=_status(spec),
        description=f"Scores {model}@{alias} on every batch that came after the one it was trained on.",
    )
    def backtest(context: dg.ScheduleEvaluationContext, mlflow: MlflowTrackingResource, warehouse: WarehouseResource):
        plan = plan_backtest(context.instance, mlflow.store, model, alias, warehouse.warehouse)
        if plan.skip_reason:
            return dg.SkipReason(plan.skip_reason)
        return dg.RunRequest(
            # The same version on the same batches was backtested already: Dagster skips a repeated key.
            run_key=f"{model}@{alias}:v{plan.version}:{fingerprint(plan.batches)}",
            run_config={"ops": {"champion_backtest": {"config": {"registered_model_name": model, "alias": alias}}}},
            tags={TRIGGER_TAG: name},
        )

    return backtest


def _training_schedule(task: TrainingTask, spec: ScheduleSpec) -> dg.ScheduleDefinition:
    experiment = ExperimentConfig.model_validate(task.config)

    @dg.schedule(
        name=task.name,
        cron_schedule=spec.cron,
        execution_timezone=spec.timezone,
        job_name="experiment",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Trains experiment {task.experiment_name} (id {task.experiment_id}) on the newest batch "
        "with features (added with `ml-platform schedules add training`).",
    )
    def training(context: dg.ScheduleEvaluationContext):
        ready = batches_with(context.instance, dg.AssetKey("features"))
        if not ready:
            return dg.SkipReason("no batch has features yet: the pipeline has not run on any batch")
        return dg.RunRequest(
            partition_key=ready[-1],
            run_config=experiment_run_config(task.experiment_id, task.experiment_name, experiment),
            tags={TRIGGER_TAG: task.name, EXPERIMENT_ID_TAG: task.experiment_id},
        )

    return training
