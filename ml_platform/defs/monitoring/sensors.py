"""Run-status sensors: notify on failed runs and failed checks, write each run's summary under
`reports/runs/`, and call the configured MonitoringHooks. They watch every job of the code location.
"""

import dagster as dg

from ml_platform.defs.monitoring.run_summary import load_run_summary, write_run_summary
from ml_platform.defs.runs import step_error
from ml_platform.defs.tags import PARTITION_TAG
from ml_platform.lib.config import PlatformConfig
from ml_platform.lib.notifications import Notification
from ml_platform.lib.settings import Settings
from ml_platform.monitoring import MonitoringHook, RunError, RunInfo, load_hooks
from ml_platform.resources.notifier import NotifierResource

# Run-status sensors look at the event log every few seconds; a failure is reported within that.
INTERVAL_SECONDS = 5


def build_monitoring_sensors(config: PlatformConfig, settings: Settings) -> list[dg.SensorDefinition]:
    hooks = load_hooks(config.monitoring.hooks)
    reports_dir = settings.reports_dir

    @dg.run_failure_sensor(
        name="run_failure_notifications",
        minimum_interval_seconds=INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Notifies (log, Slack, webhook, email: `notifications.channels`) when a run fails, "
        "writes its summary under reports/runs/ and calls the monitoring hooks' on_error.",
    )
    def run_failure_notifications(context: dg.RunFailureSensorContext, notifier: NotifierResource) -> None:
        run = context.dagster_run
        failures = context.get_step_failure_events()
        steps = [event.step_key for event in failures if event.step_key]
        message = (step_error(failures[0]) if failures else None) or context.failure_event.message or "the run failed"
        info = _run_info(run, notifier)
        notifier.notify(
            failure_notification(info, steps, _assets_of_steps(context.instance, run.run_id, steps), message),
            context.log,
        )
        _call_hooks(hooks, "on_error", RunError(info, steps, message), context.log)
        # Last: people hear of the failure even if the reports folder cannot be written.
        write_run_summary(context.instance, run.run_id, reports_dir)

    @dg.run_status_sensor(
        run_status=dg.DagsterRunStatus.SUCCESS,
        name="run_success_monitor",
        minimum_interval_seconds=INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="For each successful run: writes its summary under reports/runs/, notifies about failed "
        "asset checks (dbt tests with severity warn, the champion's quality bar) and calls on_experiment_end.",
    )
    def run_success_monitor(context: dg.RunStatusSensorContext, notifier: NotifierResource) -> None:
        run = context.dagster_run
        info = _run_info(run, notifier)
        for check in failed_checks(context.instance, run.run_id):
            notifier.notify(check_notification(info, check), context.log)
        write_run_summary(context.instance, run.run_id, reports_dir)
        if hooks:
            _call_hooks(
                hooks, "on_experiment_end", load_run_summary(context.instance, run.run_id, reports_dir), context.log
            )

    sensors = [run_failure_notifications, run_success_monitor]
    if hooks:

        @dg.run_status_sensor(
            run_status=dg.DagsterRunStatus.STARTED,
            name="run_start_hooks",
            minimum_interval_seconds=INTERVAL_SECONDS,
            default_status=dg.DefaultSensorStatus.RUNNING,
            description="Calls the monitoring hooks' on_experiment_start for each run that starts.",
        )
        def run_start_hooks(context: dg.RunStatusSensorContext, notifier: NotifierResource) -> None:
            _call_hooks(hooks, "on_experiment_start", _run_info(context.dagster_run, notifier), context.log)

        sensors.append(run_start_hooks)
    return sensors


def failure_notification(run: RunInfo, steps: list[str], assets: list[str], message: str) -> Notification:
    partition = f" for {run.partition}" if run.partition else ""
    return Notification(
        title=f"Run failed: {run.job_name}{partition}",
        severity="error",
        summary=f"{run.job_name}{partition} failed"
        + (f" in step {', '.join(steps)}" if steps else "")
        + (f" (asset {', '.join(assets)})" if assets else ""),
        fields={
            "run": run.run_id,
            "job": run.job_name,
            **({"partition": run.partition} if run.partition else {}),
            **({"step": ", ".join(steps)} if steps else {}),
            **({"asset": ", ".join(assets)} if assets else {}),
        },
        error=message,
        link=run.url,
    )


def check_notification(run: RunInfo, check) -> Notification:
    """A failed asset check of a successful run (a quality drop, a dbt test with severity warn)."""
    target = check.asset_key.to_user_string()
    partition = check.partition or run.partition
    details = {key: str(getattr(value, "value", value)) for key, value in check.metadata.items()}
    return Notification(
        title=f"Check failed: {target} {check.check_name}" + (f" for {partition}" if partition else ""),
        severity="error" if check.severity == dg.AssetCheckSeverity.ERROR else "warning",
        summary=check.description or f"asset check {check.check_name} on {target} did not pass",
        fields={
            "run": run.run_id,
            "job": run.job_name,
            **({"partition": partition} if partition else {}),
            "asset": target,
            "check": check.check_name,
            **details,
        },
        link=run.url,
    )


def failed_checks(instance: dg.DagsterInstance, run_id: str) -> list:
    """The asset check evaluations of a run that did not pass."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    evaluations = [record.event_log_entry.dagster_event.event_specific_data for record in records]
    return [evaluation for evaluation in evaluations if not evaluation.passed]


def _run_info(run: dg.DagsterRun, notifier: NotifierResource) -> RunInfo:
    return RunInfo(
        run_id=run.run_id,
        job_name=run.job_name,
        partition=run.tags.get(PARTITION_TAG),
        tags=dict(run.tags),
        url=notifier.run_url(run.run_id),
    )


def _assets_of_steps(instance: dg.DagsterInstance, run_id: str, steps: list[str]) -> list[str]:
    """The assets the failed steps were to materialize, from the run's plan."""
    planned = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED).records
    return sorted(
        {
            record.event_log_entry.dagster_event.asset_key.to_user_string()
            for record in planned
            if record.event_log_entry.step_key in steps
        }
    )


def _call_hooks(hooks: list[MonitoringHook], method: str, argument, log) -> None:
    for hook in hooks:
        try:
            getattr(hook, method)(argument)
        except Exception as error:  # one broken hook must not silence the others or stop the sensor
            log.warning(f"monitoring hook {type(hook).__name__}.{method} failed: {type(error).__name__}: {error}")
