"""Under the real daemon: a run worker killed with SIGKILL inside `champion_model` is failed, retried
once by `run_retries` and succeeds, registering one model version; the `model_registry` pool slot it
held is freed by run monitoring, so neither its retry nor another batch's champion step waits for a person.

The platform is a copy of the session's prepared home (batches 1 and 2 through the pipeline, a champion),
so the killed run retrains batch_0002 only: its models, report and champion step, a winner never
registered before. Runs are launched with `dagster job launch` to the run queue, as the UI's "Launch
run" does; the daemon and the launches share one code server (`dagster api grpc`, a workspace entry
`grpc_server`), so the platform's definitions are imported once. The instance is the
project's dagster.yaml with run monitoring polling every second (production: 30 s and 60 s).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
import yaml
from mlflow import MlflowClient

from ml_platform.lib.config import PlatformConfig
from ml_platform.lib.settings import PROJECT_ROOT
from ml_platform_tests.conftest import PreparedHome, copy_home, inherited_environment, small_config
from ml_platform_tests.servers import wait_for
from ml_platform_tests.test_e2e_daemon import dagster_daemon, started

pytestmark = pytest.mark.timeout(600)

BIN = Path(sys.executable).parent
RETRAINING = "random_forest_model,gradient_boosting_model,logistic_regression_model,evaluation_report,champion_model"


@dataclass
class DaemonUnderTest:
    home: Path
    config: PlatformConfig
    env: dict[str, str]
    workspace: Path
    instance: dg.DagsterInstance

    def launch(self, batch_id: str, op_selection: str) -> str:
        """Queue a `batch_pipeline` run of `op_selection` for a batch, as a person would; returns its id."""
        run_id = str(uuid.uuid4())
        launched = subprocess.run(
            [str(BIN / "dagster"), "job", "launch", "-w", str(self.workspace), "-j", "batch_pipeline", "--run-id",
             run_id, "-o", op_selection, "--tags", json.dumps({"dagster/partition": batch_id})],
            cwd=PROJECT_ROOT, env=self.env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert launched.returncode == 0, launched.stderr[-3000:]
        return run_id

    def log_tail(self) -> str:
        return "\n".join(path.read_text()[-3000:] for path in (self.home / "code_server.log", self.home / "daemon.log"))


@pytest.fixture(scope="module")
def daemon(prepared_home: PreparedHome, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("dead-runs")
    home = copy_home(prepared_home.home, root / "home")
    config = small_config(
        **{
            # Nothing starts a run but the test: no file is landed, and no cron tick may start one meanwhile.
            "automation.new_batch_sensor.enabled": False,
            "automation.schedules.retraining.enabled": False,
            "automation.schedules.backtest.enabled": False,
            "automation.schedules.pipeline.enabled": False,
        }
    )
    (root / "platform.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json", by_alias=True)))
    dagster_home = home / "dagster_home"
    settings = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())
    settings["run_monitoring"].update(poll_interval_seconds=1, free_slots_after_run_end_seconds=1)
    (dagster_home / "dagster.yaml").write_text(yaml.safe_dump(settings))
    env = {
        **inherited_environment(),
        "ML_PLATFORM_HOME": str(home),
        "ML_PLATFORM_CONFIG": str(root / "platform.yaml"),
        "DAGSTER_HOME": str(dagster_home),
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
    }
    socket = root / "code.sock"
    workspace = root / "workspace.yaml"
    workspace.write_text(
        yaml.safe_dump({"load_from": [{"grpc_server": {"socket": str(socket), "location_name": "ml_platform"}}]})
    )
    code_server = [str(BIN / "dagster"), "api", "grpc", "-m", "ml_platform.definitions", "--socket", str(socket),
                   "--location-name", "ml_platform"]  # fmt: skip
    # SIGKILL: `dagster api grpc` stops only when asked over gRPC; on SIGTERM it waits for that forever.
    with (home / "code_server.log").open("w") as log, started(code_server, env, log, stop=signal.SIGKILL):
        # The daemon loads the workspace once at start: the server must be serving by then.
        serving = "Started Dagster code server"
        wait_for(lambda: serving in (home / "code_server.log").read_text(), 240, "the code server to serve")
        with dagster_daemon(env, workspace, home / "daemon.log") as instance:
            yield DaemonUnderTest(home, config, env, workspace, instance)


def worker_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        if match := re.match(r"Started process for run \(pid: (\d+)\)", record.message or ""):
            return int(match[1])
    return None


def step_started(instance: dg.DagsterInstance, run_id: str, step: str) -> bool:
    events = instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START)
    return any(record.step_key == step for record in events)


def test_a_worker_killed_inside_champion_model_is_retried_and_frees_the_pool(daemon: DaemonUnderTest):
    instance = daemon.instance
    client = MlflowClient(f"sqlite:///{daemon.home / 'mlflow' / 'mlflow.db'}")
    model_name = daemon.config.promotion.registered_model_name
    registered_before = {version.version for version in client.search_model_versions(f"name = '{model_name}'")}

    run_id = daemon.launch("batch_0002", RETRAINING)
    wait_for(lambda: step_started(instance, run_id, "champion_model"), 300, "champion_model to start")
    pid = wait_for(lambda: worker_pid(instance, run_id), 30, "the run worker's pid")
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    # Another batch's champion step: it needs the pool slot the dead step held.
    other_id = daemon.launch("batch_0001", "champion_model")

    dead = wait_for(lambda: finished(instance, run_id), 60, "the killed run to be failed")
    assert dead.status == dg.DagsterRunStatus.FAILURE
    wait_for(lambda: run_id not in instance.event_log_storage.get_concurrency_run_ids(), 60, "the slot to be freed")
    freed_after = time.monotonic() - killed_at
    retry = wait_for(lambda: retry_of(instance, run_id), 120, "the retry of the killed run")
    retried = wait_for(lambda: finished(instance, retry.run_id), 300, "the retry to finish")
    assert retried.status == dg.DagsterRunStatus.SUCCESS, daemon.log_tail()
    other = wait_for(lambda: finished(instance, other_id), 300, "the other batch's champion run")
    assert other.status == dg.DagsterRunStatus.SUCCESS, daemon.log_tail()
    done_after = time.monotonic() - killed_at
    print(f"\nslot freed {freed_after:.1f} s after the kill; retry and the other run done after {done_after:.1f} s")

    # The retry registered the new winner once, whether or not the killed attempt had got as far as
    # registering it (retry-safe registration finds that attempt's version instead of adding one).
    new = [
        version
        for version in client.search_model_versions(f"name = '{model_name}'")
        if version.version not in registered_before
    ]
    assert [(version.tags["batch"], version.tags["dagster.run_id"]) for version in new] == [
        ("batch_0002", retry.run_id)
    ]


def finished(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRun | None:
    run = instance.get_run_by_id(run_id)
    return run if run is not None and run.is_finished else None


def retry_of(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRun | None:
    runs = instance.get_runs(dg.RunsFilter(tags={"dagster/parent_run_id": run_id}))
    return runs[0] if runs else None
