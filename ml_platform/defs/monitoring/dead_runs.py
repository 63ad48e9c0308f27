"""Dead runs: found, marked failed, their pool slots freed and their leftovers cleaned.

Dagster's run monitoring (`dagster.yaml`) covers what the daemon launched: a run worker killed under
its code server is failed by that server, retried once by `run_retries`, and the pool slots a finished
run still holds are freed after `free_slots_after_run_end_seconds`. Two cases are left to this module:

- a run executed in the process that started it (`ml-platform run`): no launcher can be asked about
  it, so it carries its process in run tags (`process_tags`);
- a daemon-launched run whose whole tree died (`dagster dev` killed): no code server is left to notice,
  and the default run launcher cannot check a worker's health. Its worker's pid is in the run's
  "Started process for run (pid: N)" event.

Which of them are dead is `lib/liveness.py`'s rule. `reap_dead_runs` is called by `ml-platform run`
before it starts and by `dead_run_sensor` on every tick; both also end the MLflow runs a dead Dagster
run left RUNNING and remove its temporary files.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
from dagster._core.events import DagsterEventType, JobFailureData, RunFailureReason
from dagster._core.storage.tags import GRPC_INFO_TAG, RUN_FAILURE_REASON_TAG

from ml_platform.defs.tags import PARTITION_TAG
from ml_platform.lib.liveness import (
    RunProcess,
    dbt_run_folders,
    dead_writer_leftovers,
    is_orphaned,
    process_started_at,
    this_host,
)
from ml_platform.lib.settings import Settings
from ml_platform.resources.mlflow_tracking import MlflowTrackingResource

# The process executing a run in place (`ml-platform run`): pid, host, and when the process started.
PID_TAG = "ml_platform/pid"
HOST_TAG = "ml_platform/host"
PROCESS_STARTED_TAG = "ml_platform/process_started_at"

# Dead runs are rare and each check is a query of the in-progress runs and a read of /proc: every
# 30 s costs nothing measurable on 2 cores, and a dead run's batch waits at most that long.
SENSOR_INTERVAL_SECONDS = 30
# A daemon-launched run's own code server fails it within a second of its worker's death; this
# module only steps in when that server is gone too, so it leaves a fresh worker's run alone a while.
LAUNCHED_RUN_GRACE_SECONDS = 10
# What the sensor's first tick looks back over for finished runs to clean after.
FIRST_LOOK_BACK = timedelta(hours=1)

_STARTED_PROCESS = re.compile(r"^Started process for run \(pid: (\d+)\)")
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", ""}


def process_tags() -> dict[str, str]:
    """Run tags naming this process, for a run executed in it."""
    import os

    pid = os.getpid()
    return {
        PID_TAG: str(pid),
        HOST_TAG: this_host(),
        PROCESS_STARTED_TAG: f"{process_started_at(pid) or time.time():.2f}",
    }


@dataclass(frozen=True)
class DeadRun:
    run: dg.DagsterRun
    process: RunProcess

    def describe(self) -> str:
        batch = self.run.tags.get(PARTITION_TAG)
        return f"run {self.run.run_id} ({self.run.job_name}{f' for {batch}' if batch else ''}, pid {self.process.pid})"


def run_process(instance: dg.DagsterInstance, run: dg.DagsterRun, now: float) -> RunProcess | None:
    """The process executing `run`, when this host can judge it: from its tags (a run executed in place),
    or, for a run the default launcher started in a local code server, from its worker's start event."""
    tags = run.tags
    if PID_TAG in tags:
        try:
            return RunProcess(int(tags[PID_TAG]), tags.get(HOST_TAG, ""), float(tags[PROCESS_STARTED_TAG]))
        except (KeyError, ValueError):
            return None
    if GRPC_INFO_TAG not in tags or run.status != dg.DagsterRunStatus.STARTED:
        return None
    try:
        server = json.loads(tags[GRPC_INFO_TAG])
    except ValueError:
        return None
    if not server.get("socket") and server.get("host", "") not in _LOCAL_HOSTS:
        return None  # a code server elsewhere: its workers are not in this process table
    for record in reversed(instance.all_logs(run.run_id, of_type=DagsterEventType.ENGINE_EVENT)):
        if match := _STARTED_PROCESS.match(record.message or ""):  # the newest worker's
            if now - record.timestamp < LAUNCHED_RUN_GRACE_SECONDS:
                return None
            return RunProcess(int(match[1]), this_host(), record.timestamp)
    return None


def find_dead_runs(
    instance: dg.DagsterInstance, started_at: Callable[[int], float | None] = process_started_at
) -> list[DeadRun]:
    """The in-progress runs whose process is gone (`lib/liveness.is_orphaned`)."""
    host, now = this_host(), time.time()
    in_progress = instance.get_runs(
        dg.RunsFilter(
            statuses=[dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
        )
    )
    dead = []
    for run in in_progress:
        process = run_process(instance, run, now)
        if process is not None and is_orphaned(process, host, started_at):
            dead.append(DeadRun(run, process))
    return dead


def mark_failed(instance: dg.DagsterInstance, run: dg.DagsterRun, message: str) -> bool:
    """Fail `run` (unless it finished meanwhile) as a run that died outside its steps, so `run_retries`
    may retry it, and free the pool slots it held. Returns whether this call failed it."""
    current = instance.get_run_by_id(run.run_id)
    failed = current is not None and not current.is_finished
    if failed:
        instance.report_run_failed(
            current, message, JobFailureData(error=None, failure_reason=RunFailureReason.UNEXPECTED_TERMINATION)
        )
    free_pool_slots(instance, run.run_id)
    return failed


def free_pool_slots(instance: dg.DagsterInstance, run_id: str) -> None:
    if instance.event_log_storage.supports_global_concurrency_limits:
        instance.event_log_storage.free_concurrency_slots_for_run(run_id)


def clean_after(
    run_id: str, settings: Settings, mlflow_store: Callable[[], object] | None, dbt_folders: bool = True
) -> list[str]:
    """End the MLflow runs this Dagster run left RUNNING (status KILLED) and, with `dbt_folders`, remove its
    dbt folders. Returns what was done, one phrase each."""
    done = []
    if mlflow_store is not None and (ended := end_mlflow_runs(mlflow_store(), run_id)):
        done.append(f"ended {len(ended)} MLflow run(s) left RUNNING ({', '.join(ended)})")
    folders = dbt_run_folders(settings.dbt_runs_dir, [run_id]) if dbt_folders else []
    for folder in folders:
        remove(folder)
    if folders:
        done.append(f"removed {', '.join(folder.name for folder in folders)}")
    return done


def sweep_leftovers(settings: Settings) -> list[str]:
    """Remove every temporary file (`.building`, dbt parse folders) whose writer is dead; one line, or none."""
    swept = dead_writer_leftovers(settings.warehouse_dir, settings.dbt_runs_dir, process_started_at)
    for path in swept:
        remove(path)
    return [f"removed files of dead processes: {', '.join(path.name for path in swept)}"] if swept else []


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def end_mlflow_runs(store, dagster_run_id: str) -> list[str]:
    """Mark KILLED every MLflow run of `dagster_run_id` (its `dagster.run_id` tag) still RUNNING."""
    from mlflow.entities import ViewType

    client = store.client()
    experiments = [experiment.experiment_id for experiment in client.search_experiments(view_type=ViewType.ALL)]
    if not experiments:
        return []
    running = client.search_runs(
        experiments,
        filter_string=f"tags.`dagster.run_id` = '{dagster_run_id}' AND attributes.status = 'RUNNING'",
        run_view_type=ViewType.ALL,
    )
    with store.write_lock():
        for run in running:
            client.set_terminated(run.info.run_id, status="KILLED")
    return [run.info.run_id for run in running]


def reap_dead_runs(
    instance: dg.DagsterInstance, settings: Settings, mlflow_store: Callable[[], object] | None
) -> list[str]:
    """Fail every dead run this host can judge, free its slots and clean after it; one line per run."""
    lines = []
    for dead in find_dead_runs(instance):
        if not mark_failed(instance, dead.run, f"Its process {dead.process.pid} on {dead.process.host} is gone."):
            continue
        done = clean_after(dead.run.run_id, settings, mlflow_store)
        lines.append(f"marked {dead.describe()} failed: its process is gone" + "".join(f"; {d}" for d in done))
    return lines + (sweep_leftovers(settings) if lines else [])


def mark_stopped(
    instance: dg.DagsterInstance, run_id: str, why: str, settings: Settings, mlflow_store: Callable[[], object]
) -> str:
    """A run whose own process was told to stop (Ctrl-C, SIGTERM): recorded in its log, failed if Dagster
    has not failed it already, its slots freed and its leftovers cleaned, before the process exits.
    Returns what became of the run, for the command's last line."""
    run = instance.get_run_by_id(run_id)
    if run is None:
        return "was not started"
    if run.status == dg.DagsterRunStatus.SUCCESS:  # the signal came as it finished
        return "had succeeded"
    instance.report_engine_event(f"{why}.", run)
    mark_failed(instance, run, f"{why}.")
    clean_after(run_id, settings, mlflow_store)
    sweep_leftovers(settings)
    return "marked failed"


def died(run: dg.DagsterRun) -> bool:
    """A finished run that did not end by a step's own failure: killed, interrupted or canceled."""
    return run.status == dg.DagsterRunStatus.CANCELED or (
        run.status == dg.DagsterRunStatus.FAILURE
        and run.tags.get(RUN_FAILURE_REASON_TAG) != RunFailureReason.STEP_FAILURE.value
    )


def build_dead_run_sensor(settings: Settings) -> dg.SensorDefinition:
    @dg.sensor(
        name="dead_run_sensor",
        minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Fails the runs whose process is gone (an `ml-platform run` killed, or every process of "
        "`dagster dev`), frees their pool slots, ends the MLflow runs that failed or canceled runs left RUNNING "
        "and removes their temporary files.",
    )
    def dead_run_sensor(context: dg.SensorEvaluationContext, mlflow: MlflowTrackingResource) -> dg.SensorResult:
        lines = reap_dead_runs(context.instance, settings, lambda: mlflow.store)
        since = float(context.cursor) if context.cursor else time.time() - FIRST_LOOK_BACK.total_seconds()
        cleaned, newest = clean_after_finished_runs(context.instance, settings, lambda: mlflow.store, since)
        lines += cleaned
        for line in lines:
            context.log.warning(line)
        return dg.SensorResult(
            cursor=f"{newest:.6f}",
            skip_reason=None if lines else "no dead runs, nothing left behind by a failed run",
        )

    return dead_run_sensor


def clean_after_finished_runs(
    instance: dg.DagsterInstance, settings: Settings, mlflow_store: Callable[[], object], since: float
) -> tuple[list[str], float]:
    """For each run that failed or was canceled after `since`: end its MLflow runs left RUNNING and, when it
    died (not by a step's own failure, whose dbt artifacts are kept to debug), remove its dbt folders.
    Returns the lines and the newest update time seen (the next cursor)."""
    records: Sequence[dg.RunRecord] = instance.get_run_records(
        dg.RunsFilter(
            statuses=[dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED],
            updated_after=datetime.fromtimestamp(since, UTC),
        )
    )
    lines, newest = [], since
    for record in records:
        newest = max(newest, record.update_timestamp.timestamp())
        run = record.dagster_run
        if done := clean_after(run.run_id, settings, mlflow_store, dbt_folders=died(run)):
            lines.append(f"after {run.status.value.lower()} run {run.run_id}: {'; '.join(done)}")
    lines += sweep_leftovers(settings)
    return lines, newest
