"""Run-status sensors: notify on failed runs and failed checks, write each run's summary under
`reports/runs/`, and call the configured MonitoringHooks; and the sensor that sends what the
notification outbox keeps once its channel answers again.

They watch every run of the instance, not only those the daemon launched: `ml-platform run` and
`dagster asset materialize` runs have no code-location origin, and a run-status sensor filters those
out unless `monitor_all_code_locations` is set. A run is reported once, by whoever claims it first
(these sensors or `ml-platform run` itself): see `report.py`.
"""

import dagster as dg

from ml_platform.defs.monitoring.report import call_hooks, report_run_end, run_info
from ml_platform.lib.config import PlatformConfig
from ml_platform.lib.notifications import FlushResult
from ml_platform.lib.settings import Settings
from ml_platform.monitoring import load_hooks
from ml_platform.resources.notifier import NotifierResource

# Run-status sensors look at the event log every few seconds; a failure is reported within that.
INTERVAL_SECONDS = 5
SENSOR_REPORTER = "run-status sensor"


def build_monitoring_sensors(config: PlatformConfig, settings: Settings) -> list[dg.SensorDefinition]:
    hooks = load_hooks(config.monitoring.hooks)
    reports_dir = settings.reports_dir

    def report(context: dg.RunStatusSensorContext, notifier: NotifierResource) -> None:
        """The ended run's notification, summary and hooks, unless `ml-platform run` reported it already."""
        report_run_end(
            context.instance,
            context.dagster_run.run_id,
            notifier,
            hooks,
            settings.home,
            reports_dir,
            context.log,
            SENSOR_REPORTER,
        )

    @dg.run_failure_sensor(
        name="run_failure_notifications",
        minimum_interval_seconds=INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        monitor_all_code_locations=True,
        description="Notifies (log, Slack, webhook, email: `notifications.channels`) when a run fails, "
        "writes its summary under reports/runs/ and calls the monitoring hooks' on_error. Every run of the "
        "instance, `ml-platform run` and `dagster asset materialize` included; once per run.",
    )
    def run_failure_notifications(context: dg.RunFailureSensorContext, notifier: NotifierResource) -> None:
        report(context, notifier)

    @dg.run_status_sensor(
        run_status=dg.DagsterRunStatus.SUCCESS,
        name="run_success_monitor",
        minimum_interval_seconds=INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        monitor_all_code_locations=True,
        description="For each successful run: writes its summary under reports/runs/, notifies about failed "
        "asset checks (dbt tests with severity warn, the champion's quality bar) and calls on_experiment_end. "
        "Every run of the instance; once per run.",
    )
    def run_success_monitor(context: dg.RunStatusSensorContext, notifier: NotifierResource) -> None:
        report(context, notifier)

    @dg.sensor(
        name="notification_outbox",
        minimum_interval_seconds=config.notifications.outbox.flush_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Sends the notifications a channel could not take (kept in notifications/outbox.json "
        "under the home) once the channel answers again, each at most once.",
    )
    def notification_outbox(context: dg.SensorEvaluationContext, notifier: NotifierResource) -> dg.SkipReason:
        return dg.SkipReason(describe_flush(notifier.flush_outbox(context.log)))

    sensors = [run_failure_notifications, run_success_monitor, notification_outbox]
    if hooks:

        @dg.run_status_sensor(
            run_status=dg.DagsterRunStatus.STARTED,
            name="run_start_hooks",
            minimum_interval_seconds=INTERVAL_SECONDS,
            default_status=dg.DefaultSensorStatus.RUNNING,
            monitor_all_code_locations=True,
            description="Calls the monitoring hooks' on_experiment_start for each run that starts.",
        )
        def run_start_hooks(context: dg.RunStatusSensorContext, notifier: NotifierResource) -> None:
            call_hooks(hooks, "on_experiment_start", run_info(context.dagster_run, notifier), context.log)

        sensors.append(run_start_hooks)
    return sensors


def describe_flush(result: FlushResult) -> str:
    """The tick's reason: `outbox empty`, or what was delivered and what still waits for which channel."""
    if not result.delivered and not result.waiting:
        return "outbox empty"
    parts = [f"delivered {result.delivered} kept notification(s)"] if result.delivered else []
    if result.waiting:
        down = "; ".join(f"{key}: {reason}" for key, reason in sorted(result.down.items()))
        parts.append(f"{result.waiting} waiting" + (f" ({down})" if down else ""))
    return ", ".join(parts)
