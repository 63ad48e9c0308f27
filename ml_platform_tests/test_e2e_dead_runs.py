"""Under the real daemon: a run worker killed with SIGKILL inside `champion_model` is failed, retried
once by `run_retries` and succeeds; the `model_registry` pool slot it held is freed by run monitoring,
so neither its retry nor the next batch's champion step waits for a person.

The daemon's instance is the project's dagster.yaml with short monitoring intervals (1 s instead of
the production 30 s and 60 s), so the test takes seconds of monitoring, not minutes.
"""

from __future__ import annotations

import os
import re
import signal
import time

import dagster as dg
import pytest
import yaml
from mlflow import MlflowClient

from ml_platform.lib.demo_data import write_demo_batches
from ml_platform_tests.servers import wait_for
from ml_platform_tests.test_e2e_daemon import daemon, daemon_home, land, runs_for  # noqa: F401 (fixtures)

pytestmark = pytest.mark.timeout(900)


@pytest.fixture
def fast_monitoring(daemon_home):  # noqa: F811 (the imported fixture)
    """The test's own dagster.yaml: the project's, with run monitoring polling every second."""
    home, config, env = daemon_home
    path = home / "dagster_home" / "dagster.yaml"
    settings = yaml.safe_load(path.read_text())
    settings["run_monitoring"].update(poll_interval_seconds=1, free_slots_after_run_end_seconds=1)
    path.write_text(yaml.safe_dump(settings))
    return daemon_home


def worker_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        if match := re.match(r"Started process for run \(pid: (\d+)\)", record.message or ""):
            return int(match[1])
    return None


def step_started(instance: dg.DagsterInstance, run_id: str, step: str) -> bool:
    events = instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START)
    return any(record.step_key == step for record in events)


def test_a_worker_killed_inside_champion_model_is_retried_and_frees_the_pool(fast_monitoring, daemon):  # noqa: F811
    # fast_monitoring comes first: the daemon starts on the dagster.yaml it wrote.
    home, config, instance = daemon
    incoming, staging = home / config.data.incoming_dir, home / "staging"
    first, second = write_demo_batches(staging, 2, 1500, drift=0.03)

    land(first, incoming)
    [record] = wait_for(lambda: runs_for(instance, "batch_0001"), 240, "the run of batch_0001")
    run_id = record.dagster_run.run_id
    wait_for(lambda: step_started(instance, run_id, "champion_model"), 420, "champion_model to start")
    pid = wait_for(lambda: worker_pid(instance, run_id), 30, "the run worker's pid")
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    land(second, incoming)  # the next batch: its champion step needs the pool slot the dead step held

    dead = wait_for(lambda: finished(instance, run_id), 60, "the killed run to be failed")
    assert dead.status == dg.DagsterRunStatus.FAILURE
    wait_for(lambda: run_id not in instance.event_log_storage.get_concurrency_run_ids(), 60, "the slot to be freed")
    freed_after = time.monotonic() - killed_at
    retry = wait_for(lambda: retry_of(instance, run_id), 120, "the retry of the killed run")
    retried = wait_for(lambda: finished(instance, retry.run_id), 300, "the retry to finish")
    assert retried.status == dg.DagsterRunStatus.SUCCESS, (home / "daemon.log").read_text()[-3000:]
    [next_record] = wait_for(lambda: runs_for(instance, "batch_0002"), 120, "the run of batch_0002")
    next_run = wait_for(lambda: finished(instance, next_record.dagster_run.run_id), 420, "batch_0002's run")
    assert next_run.status == dg.DagsterRunStatus.SUCCESS
    done_after = time.monotonic() - killed_at
    print(f"\nslot freed {freed_after:.1f} s after the kill; retry and next batch done after {done_after:.1f} s")

    # Exactly one model version per batch, whichever step of the killed attempt had registered one
    # (retry-safe registration finds the earlier attempt's version instead of adding one).
    client = MlflowClient(f"sqlite:///{home / 'mlflow' / 'mlflow.db'}")
    versions = client.search_model_versions(f"name = '{config.promotion.registered_model_name}'")
    assert sorted(version.tags.get("batch") for version in versions) == ["batch_0001", "batch_0002"]


def finished(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRun | None:
    run = instance.get_run_by_id(run_id)
    return run if run is not None and run.is_finished else None


def retry_of(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRun | None:
    runs = instance.get_runs(dg.RunsFilter(tags={"dagster/parent_run_id": run_id}))
    return runs[0] if runs else None
