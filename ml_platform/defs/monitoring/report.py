"""What happens when a run ends, whoever notices first: the run-status sensors under the daemon, or
the `ml-platform run` command that ran it. Once per run.

A failed run: a notification, the hooks' `on_error`, its summary under `reports/runs/`. A successful
run: a notification per failed asset check, its summary, the hooks' `on_experiment_end`.

Why two callers. Dagster's run-status sensors see only runs launched from their own code location
unless they are told otherwise: a run started by `execute_in_process` (`ml-platform run`) or by
`dagster asset materialize` has no remote origin, so the sensors' location filter skipped it. They
now watch every run of the instance (`monitor_all_code_locations`), and cover those runs whenever
the daemon runs. Without a daemon nobody would, so `ml-platform run` reports its own runs as soon
as they end. Whoever comes first claims the run (the `ml_platform/reported` run tag, set under a
file lock beside the outbox) and the other sees the claim and does nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path

import dagster as dg
from filelock import FileLock

from ml_platform.defs.monitoring.run_summary import load_run_summary, write_run_summary
from ml_platform.defs.runs import step_error
from ml_platform.defs.tags import PARTITION_TAG
from ml_platform.lib.notifications import Notification
from ml_platform.monitoring import MonitoringHook, RunError, RunInfo, load_hooks
from ml_platform.resources.notifier import NotifierResource, notifier_from_config

# "<run id> by <reporter>": the run id is in the value because a retry or a re-execution copies
# its parent's tags, and the copy must not count as the child's own report.
REPORTED_TAG = "ml_platform/reported"
CLAIM_LOCK = Path("notifications") / "run_reports.lock"  # under ML_PLATFORM_HOME
CLAIM_LOCK_TIMEOUT_SECONDS = 30


def claim_run(instance: dg.DagsterInstance, run_id: str, reporter: str, home: Path) -> bool:
    """True for the first caller per run (who then reports it), False for every later one.

    Run tags are upserts, so the read and the write are made one step by a file lock under the home,
    which the daemon and the CLI share.
    """
    lock_path = Path(home) / CLAIM_LOCK
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_path), timeout=CLAIM_LOCK_TIMEOUT_SECONDS):
        run = instance.get_run_by_id(run_id)
        if run is None or run.tags.get(REPORTED_TAG, "").split(" ", 1)[0] == run_id:
            return False
        instance.add_run_tags(run_id, {REPORTED_TAG: f"{run_id} by {reporter}"})
        return True


def report_run_end(
    instance: dg.DagsterInstance,
    run_id: str,
    notifier: NotifierResource,
    hooks: list[MonitoringHook],
    home: Path,
    reports_dir: Path,
    log: logging.Logger,
    reporter: str,
) -> dict[str, str] | None:
    """Report a run that ended (failed or succeeded), unless someone already has.

    None when it was not this call's to report (not ended, or claimed before); else the channels'
    outcomes of what it notified (`{"webhook": "sent"}`, empty when there was nothing to notify).
    """
    run = instance.get_run_by_id(run_id)
    if run is None or run.status not in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.SUCCESS):
        return None
    if not claim_run(instance, run_id, reporter, home):
        log.info(f"run {run_id} was already reported ({run.tags.get(REPORTED_TAG)})")
        return None
    info = run_info(run, notifier)
    outcomes: dict[str, str] = {}
    if run.status == dg.DagsterRunStatus.FAILURE:
        steps, message = _failure(instance, run_id)
        notification = failure_notification(info, steps, assets_of_steps(instance, run_id, steps), message)
        outcomes |= notifier.notify(notification, log)
        call_hooks(hooks, "on_error", RunError(info, steps, message), log)
        # Last: people hear of the failure even if the reports folder cannot be written.
        write_run_summary(instance, run_id, reports_dir)
    else:
        for check in failed_checks(instance, run_id):
            outcomes |= notifier.notify(check_notification(info, check), log)
        write_run_summary(instance, run_id, reports_dir)
        if hooks:
            call_hooks(hooks, "on_experiment_end", load_run_summary(instance, run_id, reports_dir), log)
    outcomes.pop("log", None)
    return outcomes


def _failure(instance: dg.DagsterInstance, run_id: str) -> tuple[list[str], str]:
    """The failed steps and the first one's own error, else the run failure's message."""
    failures = [
        record.event_log_entry.dagster_event
        for record in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records
    ]
    steps = list(dict.fromkeys(event.step_key for event in failures if event.step_key))
    message = step_error(failures[0]) if failures else None
    if not message:
        run_failures = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_FAILURE, limit=1).records
        event = run_failures[0].event_log_entry.dagster_event if run_failures else None
        message = (event.message if event is not None else None) or "the run failed"
    return steps, message


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


def run_info(run: dg.DagsterRun, notifier: NotifierResource) -> RunInfo:
    return RunInfo(
        run_id=run.run_id,
        job_name=run.job_name,
        partition=run.tags.get(PARTITION_TAG),
        tags=dict(run.tags),
        url=notifier.run_url(run.run_id),
    )


def assets_of_steps(instance: dg.DagsterInstance, run_id: str, steps: list[str]) -> list[str]:
    """The assets the failed steps were to materialize, from the run's plan."""
    planned = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED).records
    return sorted(
        {
            record.event_log_entry.dagster_event.asset_key.to_user_string()
            for record in planned
            if record.event_log_entry.step_key in steps
        }
    )


def call_hooks(hooks: list[MonitoringHook], method: str, argument, log) -> None:
    for hook in hooks:
        try:
            getattr(hook, method)(argument)
        except Exception as error:  # one broken hook must not silence the others or stop the sensor
            log.warning(f"monitoring hook {type(hook).__name__}.{method} failed: {type(error).__name__}: {error}")


CLI_REPORTER = "ml-platform run"


def report_cli_run(instance: dg.DagsterInstance, run_id: str, config, settings) -> dict[str, str] | None:
    """Report a run `ml-platform run` just finished, as the sensors would (unless they already did);
    the channels' outcomes (`{"webhook": "sent"}`), or None when the sensors had reported it.

    The notification's log line goes to a logger of its own, not the terminal: the command prints
    one line per run, and the whole message is for the channels.
    """
    log = logging.getLogger("ml_platform.cli.monitoring")
    if not log.handlers:  # without a handler of its own, Python's last resort prints warnings on stderr
        log.addHandler(logging.NullHandler())
        log.propagate = False
    notifier = notifier_from_config(config.notifications, settings.output_root)
    hooks = load_hooks(config.monitoring.hooks)
    return report_run_end(instance, run_id, notifier, hooks, settings.home, settings.reports_dir, log, CLI_REPORTER)
