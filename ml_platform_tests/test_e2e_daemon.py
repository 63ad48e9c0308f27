"""End to end under the real Dagster daemon: a file dropped in the incoming folder becomes a partition
and a successful run on its own; a malformed one fails and the failure notification reaches a webhook
that was down when the run failed, from the outbox, once the webhook is back; and the batch is
quarantined: neither the pipeline schedule nor the sensor runs it again while its content is the same.

The daemon runs as a subprocess against a temporary DAGSTER_HOME (with the project's dagster.yaml) and
loads the project's workspace.yaml, as `dagster dev` does; the webhook is a real HTTP server here.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import dagster as dg
import pytest
from dagster._core.scheduler.instigation import InstigatorType, TickStatus

from ml_platform.lib.demo_data import generate_churn_batch, write_demo_batches
from ml_platform.lib.outbox import Outbox
from ml_platform.lib.settings import PROJECT_ROOT
from ml_platform_tests.conftest import small_config, subprocess_environment
from ml_platform_tests.servers import wait_for

pytestmark = pytest.mark.timeout(900)


@pytest.fixture
def daemon_home(tmp_path, http_server, monkeypatch):
    """A platform home whose config sends notifications to `http_server`, and a Dagster home beside it."""
    config = small_config(
        **{
            "automation.new_batch_sensor.minimum_interval_seconds": 1,
            "automation.new_batch_sensor.settle_seconds": 1,
            # Only the sensors under test, and the pipeline schedule every minute: it must find nothing to
            # run (a batch running, up to date or quarantined); the other cron ticks stay off.
            "automation.schedules.retraining.enabled": False,
            "automation.schedules.backtest.enabled": False,
            "automation.schedules.pipeline.cron": "* * * * *",
            "notifications.channels.webhook_url": http_server.url("/hooks/ml"),
            "notifications.outbox.flush_interval_seconds": 1,
        }
    )
    env = {
        **subprocess_environment(tmp_path, config, platform_home=tmp_path),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
    return tmp_path, config, env


@pytest.fixture
def daemon(daemon_home):
    home, config, env = daemon_home
    with dagster_daemon(env, PROJECT_ROOT / "workspace.yaml", home / "daemon.log") as instance:
        yield home, config, instance


@contextlib.contextmanager
def dagster_daemon(env: dict[str, str], workspace: Path, log_path: Path) -> Iterator[dg.DagsterInstance]:
    """`dagster-daemon run` on `workspace` in the environment `env`, its output in `log_path`; yields the
    instance of env's DAGSTER_HOME and stops the daemon with everything it started."""
    # The instance first: it creates and stamps the SQLite storages, which the daemon and its code server
    # would otherwise both do at once ("alembic_version has more than one head present").
    instance = dg.DagsterInstance.from_config(env["DAGSTER_HOME"])
    with (
        log_path.open("w") as log,
        started([str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(workspace)], env, log),
    ):
        try:
            yield instance
        finally:
            instance.dispose()


@contextlib.contextmanager
def started(
    command: list[str], env: dict[str, str], log: IO[str], stop: signal.Signals = signal.SIGTERM
) -> Iterator[subprocess.Popen]:
    """A long-running process in its own session, its output in `log`; on exit `stop` to the session
    (so what it started goes with it), SIGKILL after 30 s."""
    process = subprocess.Popen(
        command, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        yield process
    finally:
        os.killpg(process.pid, stop)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def land(source: Path, incoming: Path) -> float:
    """Move a finished file into the incoming folder in one step, as a writer should; returns when."""
    incoming.mkdir(parents=True, exist_ok=True)
    target = incoming / source.name
    os.replace(source, target)
    return time.time()


def runs_for(instance: dg.DagsterInstance, batch: str) -> list[dg.RunRecord]:
    return instance.get_run_records(dg.RunsFilter(tags={"dagster/partition": batch}))


def test_a_dropped_file_is_picked_up_run_and_a_bad_one_notifies(daemon, http_server):
    home, config, instance = daemon
    incoming = home / config.data.incoming_dir
    staging = home / "staging"
    [good] = write_demo_batches(staging, 1, 1500)

    landed = land(good, incoming)
    wait_for(lambda: "batch_0001" in instance.get_dynamic_partitions("batches"), 240, "the partition to be added")
    [record] = wait_for(lambda: runs_for(instance, "batch_0001"), 60, "the sensor's run request")
    assert record.dagster_run.tags["dagster/sensor_name"] == "new_batch_sensor"
    report_latency("first file (daemon starting)", instance, record, landed)
    finished = wait_for(lambda: finished_run(instance, record), 420, "the run to finish")
    assert finished.status == dg.DagsterRunStatus.SUCCESS, (home / "daemon.log").read_text()[-3000:]
    assert instance.get_latest_materialization_event(dg.AssetKey("champion_model")) is not None

    # The receiver is down when the malformed batch fails: the notification waits in the outbox and
    # reaches the receiver, once, when it is back.
    http_server.stop()
    bad = staging / "batch_0002.csv"
    bad.write_text(generate_churn_batch(batch_number=2, n_rows=300).drop(columns=["churned"]).to_csv(index=False))
    landed = land(bad, incoming)
    [failed] = wait_for(lambda: runs_for(instance, "batch_0002"), 240, "the run of the malformed batch")
    report_latency("second file (daemon running)", instance, failed, landed)
    outbox = Outbox(home / "notifications" / "outbox.json")
    [kept] = wait_for(outbox.entries, 420, "the failure notification to be kept in the outbox")
    assert kept.pending == ["webhook"] and http_server.received == []
    http_server.start()
    [notification] = wait_for(lambda: http_server.received, 60, "the kept failure notification")
    delivered = time.time()
    wait_for(lambda: outbox_tick_after(instance, delivered, "outbox empty"), 60, "a flush after the delivery")
    assert len(http_server.received) == 1
    message = notification["json"]
    assert message["title"] == "Run failed: batch_pipeline for batch_0002"
    assert message["fields"]["step"] == "raw_batch"
    assert "churned" in message["error"]
    assert message["link"].endswith(f"/runs/{failed.dagster_run.run_id}")

    # Quarantined: the same content written again is not run by the sensor, and the schedule's next tick
    # skips it saying why. One run, one notification.
    failed_at = instance.get_run_record_by_id(failed.dagster_run.run_id).end_time
    copy = staging / "batch_0002.csv"
    copy.write_bytes((incoming / "batch_0002.csv").read_bytes())
    land(copy, incoming)
    tick = wait_for(lambda: schedule_tick_after(instance, "pipeline_schedule", failed_at), 150, "a schedule tick")
    assert tick.status == TickStatus.SKIPPED, tick
    assert f"batch_0002: quarantined since run {failed.dagster_run.run_id[:8]}" in tick.skip_reason
    assert "up to date (data, code and config unchanged): batch_0001" in tick.skip_reason
    assert len(runs_for(instance, "batch_0002")) == 1
    assert len(http_server.received) == 1


def schedule_tick_after(instance: dg.DagsterInstance, name: str, after: float):
    """The schedule's first finished tick after `after` (a timestamp), if there is one yet."""
    for state in instance.all_instigator_state(instigator_type=InstigatorType.SCHEDULE):
        if state.instigator_name == name:
            ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id, after=after)
            finished = [tick for tick in ticks if tick.status != TickStatus.STARTED]
            return min(finished, key=lambda tick: tick.timestamp) if finished else None
    return None


def outbox_tick_after(instance: dg.DagsterInstance, after: float, reason: str) -> bool:
    """Whether the notification_outbox sensor has finished a tick after `after` that says `reason`."""
    ticks = [
        tick
        for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
        if state.name == "notification_outbox"
        for tick in instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=5)
    ]
    return any(tick.timestamp > after and reason in (tick.skip_reason or "") for tick in ticks)


def finished_run(instance: dg.DagsterInstance, record: dg.RunRecord) -> dg.DagsterRun | None:
    run = instance.get_run_by_id(record.dagster_run.run_id)
    return run if run.is_finished else None


def report_latency(what: str, instance: dg.DagsterInstance, record: dg.RunRecord, landed: float) -> None:
    """Print how long a landed file took to become a run and to start it (`pytest -s` shows it)."""
    run_id = record.dagster_run.run_id
    started = wait_for(lambda: instance.get_run_record_by_id(run_id).start_time, 240, f"{run_id} to start")
    created = record.create_timestamp.timestamp()
    print(f"\n{what}: landed -> run requested {created - landed:.1f} s, run started {started - landed:.1f} s")
