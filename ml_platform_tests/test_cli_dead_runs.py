"""`ml-platform run` killed: with SIGKILL its run is found dead by the next command (failed, its MLflow
run ended, its batch free to run again); with SIGTERM it fails its own run and says so in one line.

Both commands are the installed console script in real processes on a copy of the prepared home, killed
while their run executes; they run at once, on different batches, as two terminals would.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass

import dagster as dg
import pytest
from mlflow import MlflowClient

from ml_platform.defs.monitoring.dead_runs import PID_TAG, build_dead_run_sensor
from ml_platform.lib.settings import PROJECT_ROOT
from ml_platform_tests.conftest import ML_PLATFORM, Cli, PreparedHome, copy_home
from ml_platform_tests.servers import wait_for

pytestmark = pytest.mark.timeout(600)


@dataclass
class Killed:
    cli: Cli
    instance: dg.DagsterInstance
    killed_run: dg.DagsterRun  # batch_0002's, by SIGKILL while a model's MLflow run was RUNNING
    killed_mlflow_runs: list[str]
    stopped_run: dg.DagsterRun  # batch_0001's, by SIGTERM inside a step
    stopped: subprocess.CompletedProcess


@pytest.fixture(scope="module")
def killed(prepared_home: PreparedHome, tmp_path_factory: pytest.TempPathFactory):
    cli = Cli(tmp_path_factory.mktemp("cli_dead_runs"))
    copy_home(prepared_home.home, cli.home)
    cli.overrides["DAGSTER_HOME"] = str(cli.home / "dagster_home")
    if not (cli.home / "dagster_home" / "dagster.yaml").exists():  # the pools and queue limits apply
        shutil.copy(PROJECT_ROOT / "dagster.yaml", cli.home / "dagster_home" / "dagster.yaml")
    instance = dg.DagsterInstance.from_config(cli.overrides["DAGSTER_HOME"])
    tracking = MlflowClient(f"sqlite:///{cli.home / 'mlflow' / 'mlflow.db'}")

    def start(*batches: str) -> subprocess.Popen:
        return subprocess.Popen(
            [ML_PLATFORM, "run", *batches], env=cli.env, cwd=cli.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip

    def run_of(process: subprocess.Popen) -> dg.DagsterRun | None:
        runs = instance.get_runs(dg.RunsFilter(tags={PID_TAG: str(process.pid)}))
        return runs[0] if runs else None

    def running_mlflow_runs(run_id: str) -> list[str]:
        experiments = [experiment.experiment_id for experiment in tracking.search_experiments()]
        found = tracking.search_runs(
            experiments, f"tags.`dagster.run_id` = '{run_id}' AND attributes.status = 'RUNNING'"
        )
        return [found_run.info.run_id for found_run in found]

    to_kill, to_stop = start("batch_0002"), start("batch_0001", "batch_0002")
    try:
        # The stop first, at its run's first step: the run to be killed then has both cores to reach a model.
        stopped_run = wait_for(lambda: run_of(to_stop), 240, "the run to be stopped to start")
        wait_for(lambda: step_started(instance, stopped_run.run_id), 240, "a step of the run to be stopped")
        to_stop.send_signal(signal.SIGTERM)

        killed_run = wait_for(lambda: run_of(to_kill), 240, "the run to be killed to start")
        # A model's MLflow run is RUNNING only while its model is written, a second or so on an idle machine:
        # polled every half second, all three can come and go unseen.
        killed_mlflow_runs = wait_for(
            lambda: running_mlflow_runs(killed_run.run_id), 240, "a model's MLflow run", every_s=0.02
        )
        to_kill.send_signal(signal.SIGKILL)
        to_kill.wait(30)
        stdout, stderr = to_stop.communicate(timeout=120)
    finally:
        for process in (to_kill, to_stop):
            if process.poll() is None:
                process.kill()
                process.wait()
    yield Killed(
        cli,
        instance,
        killed_run,
        killed_mlflow_runs,
        stopped_run,
        subprocess.CompletedProcess(to_stop.args, to_stop.returncode, stdout, stderr),
    )
    instance.dispose()


def step_started(instance: dg.DagsterInstance, run_id: str) -> bool:
    return bool(instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START))


def test_a_run_stopped_by_sigterm_fails_itself_and_says_so_in_one_line(killed: Killed):
    stopped = killed.stopped
    run = killed.instance.get_run_by_id(killed.stopped_run.run_id)

    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr
    assert run.status == dg.DagsterRunStatus.FAILURE
    assert stopped.stderr.strip().splitlines() == [
        f"error: stopped by SIGTERM: run {run.run_id} of batch_0001 marked failed; not run: batch_0002"
    ]
    messages = [record.message for record in killed.instance.all_logs(run.run_id)]
    assert "ml-platform run was stopped by SIGTERM." in messages
    # The command stopped there: batch_0002 got no run from it.
    assert len(killed.instance.get_runs(dg.RunsFilter(tags={PID_TAG: run.tags[PID_TAG]}))) == 1


def test_a_run_killed_by_sigkill_is_failed_by_the_sensor_with_its_mlflow_run_ended(killed: Killed):
    from ml_platform.defs.definitions import build_resources
    from ml_platform.lib.config import load_config
    from ml_platform.lib.settings import Settings

    client = MlflowClient(f"sqlite:///{killed.cli.home / 'mlflow' / 'mlflow.db'}")
    dead_id = killed.killed_run.run_id
    assert killed.instance.get_run_by_id(dead_id).status == dg.DagsterRunStatus.STARTED  # what SIGKILL leaves

    settings = Settings(home=killed.cli.home, config_path=killed.cli.root / "platform.yaml")
    mlflow = build_resources(load_config(settings.config_path), settings)["mlflow"]
    with dg.build_sensor_context(instance=killed.instance, resources={"mlflow": mlflow}) as context:
        result = build_dead_run_sensor(settings)(context)

    assert result.skip_reason is None
    run = killed.instance.get_run_by_id(dead_id)
    assert run.status == dg.DagsterRunStatus.FAILURE  # no longer counted by the queue's one-run-per-batch limit
    assert run.tags["dagster/failure_reason"] == "UNEXPECTED_TERMINATION"  # so run_retries may retry it
    assert [client.get_run(run_id).info.status for run_id in killed.killed_mlflow_runs] == ["KILLED"]
    assert killed.instance.event_log_storage.get_concurrency_run_ids() == set()
    with dg.build_sensor_context(instance=killed.instance, resources={"mlflow": mlflow}, cursor=result.cursor) as again:
        assert build_dead_run_sensor(settings)(again).skip_reason  # each dead run is handled once


DIES_IN_THE_POOL = """
import os, signal
import dagster as dg
from ml_platform.defs.monitoring.dead_runs import process_tags

@dg.asset(pool="model_registry")
def champion_model():
    os.kill(os.getpid(), signal.SIGKILL)

dg.materialize([champion_model], instance=dg.DagsterInstance.get(), tags=process_tags())
"""


def test_the_next_command_fails_a_run_whose_process_died_holding_the_pool(killed: Killed):
    """A real in-place run killed inside a step of the `model_registry` pool: its slot is held until the
    next `ml-platform run` (here one that then refuses its argument) fails the run and frees it."""
    died = subprocess.run(
        [sys.executable, "-c", DIES_IN_THE_POOL], env=killed.cli.env, capture_output=True, text=True, timeout=120
    )
    assert died.returncode == -signal.SIGKILL, died.stderr
    job = "__ephemeral_asset_job__"  # dg.materialize's
    [dead] = killed.instance.get_runs(dg.RunsFilter(job_name=job, statuses=[dg.DagsterRunStatus.STARTED]))

    result = killed.cli("run", "batch_9999", exit_code=2)

    line = f"marked run {dead.run_id} ({job}, pid {dead.tags[PID_TAG]}) failed: its process is gone"
    assert line in result.stdout
    assert killed.instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
    assert killed.instance.event_log_storage.get_concurrency_run_ids() == set()
