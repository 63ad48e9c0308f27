"""The cluster deployment, for real: PostgreSQL, Redis, an MLflow server, two Celery workers and
Dagster's webserver and daemon, started by `ml-platform cluster up` on 127.0.0.1 and stopped after.

One cluster serves the module; its tests run in order on it (batches land, faults are injected,
a batch runs from the CLI) and the last one kills its supervisor to check what the next `up` does.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import dagster as dg
import mlflow.sklearn
import psutil
import pytest
import requests
from dagster._core.storage.dagster_run import IN_PROGRESS_RUN_STATUSES
from mlflow import MlflowClient

from ml_platform.cluster import cluster_processes, environment, health, layout_for, supervisor
from ml_platform.lib.cluster import SECRET_VARIABLES, ClusterLayout
from ml_platform.lib.demo_data import write_demo_batches
from ml_platform.lib.mlflow_store import tracking_uri_in_use
from ml_platform.lib.settings import PROJECT_ROOT, Settings
from ml_platform_tests.conftest import Cli, small_config
from ml_platform_tests.servers import free_port, wait_for

BATCHES = [f"batch_{number:04d}" for number in range(1, 4)]
MODEL = "churn_classifier"


@dataclass
class ClusterUnderTest:
    cli: Cli
    layout: ClusterLayout
    faults: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return environment(self.layout)

    @contextlib.contextmanager
    def instance(self) -> Iterator[dg.DagsterInstance]:
        with mock.patch.dict(os.environ, self.env), dg.DagsterInstance.get() as instance:
            yield instance

    def mlflow(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.layout.tracking_uri, registry_uri=self.layout.tracking_uri)

    def pid(self, part: str) -> int:
        return supervisor(self.layout).supervisor.getProcessInfo(part)["pid"]

    def stop(self, part: str) -> None:
        supervisor(self.layout).supervisor.stopProcess(part, True)

    def start(self, part: str) -> None:
        supervisor(self.layout).supervisor.startProcess(part, True)


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterUnderTest]:
    # PostgreSQL runs as the `postgres` user when the tests run as root: its folder must be enterable.
    root = Path(tempfile.mkdtemp(prefix="ml-platform-cluster-", dir="/tmp"))
    root.chmod(0o711)
    cli = Cli(root / "project")
    cli.overrides["ML_PLATFORM_CLUSTER_DIR"] = str(root / "cluster")
    ports = [free_port() for _ in range(4)]
    started = cli(
        "cluster", "up", "--workers", "2",
        "--postgres-port", str(ports[0]), "--redis-port", str(ports[1]),
        "--mlflow-port", str(ports[2]), "--dagster-port", str(ports[3]),
        # A step whose worker was killed goes to another worker 30 s later; a run is bounded to 5 minutes.
        "--step-timeout-s", "30", "--max-run-minutes", "5",
    )  # fmt: skip
    assert "up: mlflow, worker-1, worker-2, dagster-webserver, dagster-daemon" in started.stdout, started.stdout
    with mock.patch.dict(os.environ, cli.overrides):
        layout = layout_for(root / "cluster", Settings.from_env())
    under_test = ClusterUnderTest(cli, layout)
    try:
        yield under_test
    finally:
        cli("cluster", "down")
        leftovers = list(cluster_processes(layout))
        # The parts' logs outlive the cluster, for a failure seen in CI.
        shutil.copytree(layout.logs_dir, PROJECT_ROOT / "test-output" / "cluster-logs", dirs_exist_ok=True)
        shutil.rmtree(root, ignore_errors=True)
        assert leftovers == [], f"left running after `cluster down`: {leftovers}"


def test_cluster_up_starts_every_part_answering_on_localhost_only(cluster: ClusterUnderTest) -> None:
    status = cluster.cli("cluster", "status").stdout
    for part in cluster.layout.part_names():
        assert re.search(rf"{part}\s+│ RUNNING\s+│ \d+\s+│ [\d-]+\s+│ ok", status), status

    listening = {
        (conn.laddr.ip, conn.laddr.port)
        for process in cluster_processes(cluster.layout)
        for conn in _connections(process)
        if conn.status == psutil.CONN_LISTEN
    }
    assert {port for _, port in listening} >= set(cluster.layout.ports.by_part().values())
    assert {ip for ip, _ in listening} == {"127.0.0.1"}
    assert cluster.layout.secrets_file.stat().st_mode & 0o777 == 0o600
    assert "ready" in cluster.cli("cluster", "logs", "worker-1", "-n", "200").stdout
    assert (
        "no part 'worker-9': expected one of postgres, redis"
        in cluster.cli("cluster", "logs", "worker-9", exit_code=2).stderr
    )


def test_batches_landing_run_on_the_workers_through_faults_with_nothing_lost(cluster: ClusterUnderTest) -> None:
    """Three batches land at once: the sensor adds their partitions and the daemon runs them, two at a
    time, their steps on the Celery workers; meanwhile a worker is killed mid-step, Redis restarts and
    the MLflow server is down for 20 s."""
    write_demo_batches(cluster.cli.home / "data" / "incoming", len(BATCHES), 1000, seed=7, drift=0.0)
    with cluster.instance() as instance:
        killed = wait_for(lambda: _kill_a_worker_in_a_model_step(cluster, instance), 240, "a model step on a worker")
        cluster.faults["worker"] = killed
        wait_for(lambda: _succeeded(instance), 400, "a batch to succeed")
        cluster.stop("redis")
        cluster.start("redis")
        cluster.faults["redis"] = f"restarted while {len(_in_progress(instance))} run(s) were in progress"
        wait_for(lambda: _in_a_model_step(instance), 240, "another run to train")
        cluster.stop("mlflow")
        time.sleep(20)
        cluster.start("mlflow")
        cluster.faults["mlflow"] = "stopped for 20 s while a run trained"
        wait_for(lambda: set(_succeeded(instance)) >= set(BATCHES), 600, f"every batch to succeed: {BATCHES}")
        runs = instance.get_runs()
        workers = _workers_that_ran_steps(instance, runs)
        decisions = sorted(_champion_step_spans(instance, runs))

    by_batch = {batch: [run for run in runs if run.tags.get("dagster/partition") == batch] for batch in BATCHES}
    for batch, batch_runs in by_batch.items():
        # One run per batch, or the run and its retry; never two successes.
        assert [run.status for run in batch_runs].count(dg.DagsterRunStatus.SUCCESS) == 1, (batch, batch_runs)
        assert all(run.is_finished for run in batch_runs)
    assert workers == {"worker-1", "worker-2"}
    # The champion decisions ran one at a time (the `model_registry` pool), whichever worker ran them.
    assert len(decisions) >= len(BATCHES)
    assert all(end <= next_start for (_, end), (next_start, _) in zip(decisions, decisions[1:], strict=False))
    print(f"\nfaults: {cluster.faults}; runs: {len(runs)} for {len(BATCHES)} batches")

    client = cluster.mlflow()
    experiment = client.get_experiment_by_name(small_config().tracking.experiment_name)
    finished = client.search_runs([experiment.experiment_id], "attributes.status = 'FINISHED'", max_results=500)
    per_batch_model = [(run.data.tags.get("dagster.partition"), run.data.tags.get("model_name")) for run in finished]
    assert sorted(per_batch_model) == sorted({(b, m) for b in BATCHES for m in small_config().models}), (
        "one finished MLflow run per model per batch"
    )
    versions = client.search_model_versions(f"name = '{MODEL}'")
    assert sorted(version.tags["batch"] for version in versions) == BATCHES, "one model version per batch"
    # No orphan version: each comes from a finished run of its batch, and the champion's model loads.
    assert {version.run_id for version in versions} <= {run.info.run_id for run in finished}
    with tracking_uri_in_use(cluster.layout.tracking_uri):
        assert hasattr(mlflow.sklearn.load_model(f"models:/{MODEL}@champion"), "predict_proba")
    assert _log_lines(cluster, "database is locked") == []


def test_a_batch_runs_from_the_cli_after_postgres_restarts(cluster: ClusterUnderTest) -> None:
    cluster.stop("postgres")
    cluster.start("postgres")
    wait_for(lambda: health(cluster.layout, "postgres", cluster.env)[0], 60, "PostgreSQL to answer again")
    # The daemon's code server, reloading its location while PostgreSQL was down, keeps the load error
    # ("too many retries for DB connection") and would fail the next run at dequeue: the daemon is
    # restarted after a database restart (the README says so).
    cluster.stop("dagster-daemon")
    cluster.start("dagster-daemon")
    cluster.faults["postgres"] = "restarted between runs, then the daemon"

    outcome = cluster.cli("--deployment", "cluster", "run", "batch_0001").stdout

    assert re.search(r"ok batch_0001 \(run [0-9a-f-]+\)\n  v\d+ (champion|challenger): ", outcome), outcome
    champion = cluster.cli("--deployment", "cluster", "champion").stdout
    alias = requests.get(
        f"{cluster.layout.tracking_uri}/api/2.0/mlflow/registered-models/alias",
        params={"name": MODEL, "alias": "champion"},
        timeout=10,
    ).json()["model_version"]
    assert f"{MODEL} v{alias['version']} @champion" in champion
    shown = _graphql(
        cluster, '{ assetNodes(assetKeys: [{path: ["champion_model"]}]) { partitionStats { numMaterialized } } }'
    )
    assert shown["assetNodes"][0]["partitionStats"]["numMaterialized"] == len(BATCHES)


def test_no_secret_reaches_a_log_a_config_view_or_mlflow(cluster: ClusterUnderTest) -> None:
    secrets = [cluster.env[name] for name in SECRET_VARIABLES]
    instance_view = _graphql(cluster, "{ instance { info } }")["instance"]["info"]
    run_configs = _graphql(cluster, "{ runsOrError(limit: 50) { ... on Runs { results { runConfigYaml } } } }")
    client = cluster.mlflow()
    experiment = client.get_experiment_by_name(small_config().tracking.experiment_name)
    params = [run.data.params | run.data.tags for run in client.search_runs([experiment.experiment_id])]
    readable = [
        path
        for folder in (cluster.layout.logs_dir, cluster.layout.dagster_home, cluster.layout.shared_dir)
        for path in folder.rglob("*")
        if path.is_file()
    ]
    for secret in secrets:
        assert secret not in instance_view
        assert secret not in str(run_configs)
        assert all(secret not in str(values) for values in params)
        assert [path for path in readable if secret.encode() in path.read_bytes()] == []


def test_cluster_up_refuses_a_taken_port_and_starts_nothing(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "project")
    cli.overrides["ML_PLATFORM_CLUSTER_DIR"] = str(tmp_path / "cluster")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        refused = cli("cluster", "up", "--dagster-port", str(port), exit_code=2)
    assert f"port {port} (dagster-webserver) is taken by another process" in refused.stderr
    assert not (tmp_path / "cluster" / "supervisord.pid").exists()


def test_cluster_up_refuses_a_postgres_folder_of_another_version(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "project")
    cli.overrides["ML_PLATFORM_CLUSTER_DIR"] = str(tmp_path / "cluster")
    (tmp_path / "cluster" / "postgres").mkdir(parents=True)
    (tmp_path / "cluster" / "postgres" / "PG_VERSION").write_text("11\n")

    refused = cli("cluster", "up", "--postgres-port", str(free_port()), "--dagster-port", str(free_port()),
                  "--redis-port", str(free_port()), "--mlflow-port", str(free_port()), exit_code=2)  # fmt: skip

    assert re.search(r"was made by PostgreSQL 11, this machine has \d+: upgrade it", refused.stderr), refused.stderr
    assert not (tmp_path / "cluster" / "supervisord.pid").exists()


def test_the_next_up_stops_what_a_dead_cluster_left(cluster: ClusterUnderTest) -> None:
    os.kill(int(cluster.layout.supervisor_pidfile.read_text()), signal.SIGKILL)
    orphans = wait_for(lambda: list(cluster_processes(cluster.layout)), 10, "the orphaned parts")
    with socket.socket() as taken:  # so that `up` stops after its checks: this test is about the leftovers
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        refused = cluster.cli("cluster", "up", "--dagster-port", str(port), exit_code=2)

    assert re.search(
        r"a previous cluster in \S+ died without `cluster down`: stopped what it left \(.*postgres", refused.stdout
    )
    assert f"port {port} (dagster-webserver) is taken" in refused.stderr
    assert not any(process.is_running() for process in orphans)
    assert list(cluster_processes(cluster.layout)) == []


# ---- what the tests read from the cluster ---------------------------------------------------------


def _connections(process: psutil.Process):
    with contextlib.suppress(psutil.Error):
        return process.net_connections(kind="inet")
    return []


def _succeeded(instance: dg.DagsterInstance) -> list[str]:
    runs = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.SUCCESS]))
    return [run.tags["dagster/partition"] for run in runs if "dagster/partition" in run.tags]


def _in_progress(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    return instance.get_runs(dg.RunsFilter(statuses=list(IN_PROGRESS_RUN_STATUSES)))


def _model_step_workers(instance: dg.DagsterInstance, run: dg.DagsterRun) -> dict[str, str]:
    """The model steps of `run` that a worker has started and not finished, with that worker's name."""
    started, finished = {}, set()
    for entry in instance.all_logs(run.run_id):
        event = entry.dagster_event
        if event is None or not (entry.step_key or "").endswith("_model") or entry.step_key == "champion_model":
            continue
        if event.is_engine_event and "Celery worker" in event.engine_event_data.metadata:
            started[entry.step_key] = event.engine_event_data.metadata["Celery worker"].value.split("@")[0]
        elif event.is_step_success or event.is_step_failure:
            finished.add(entry.step_key)
    return {step: worker for step, worker in started.items() if step not in finished}


def _in_a_model_step(instance: dg.DagsterInstance) -> bool:
    return any(_model_step_workers(instance, run) for run in _in_progress(instance))


def _kill_a_worker_in_a_model_step(cluster: ClusterUnderTest, instance: dg.DagsterInstance) -> str | None:
    for run in _in_progress(instance):
        for step, worker in _model_step_workers(instance, run).items():
            os.kill(cluster.pid(worker), signal.SIGKILL)
            return f"{worker} killed in step {step} of {run.tags.get('dagster/partition')}"
    return None


def _workers_that_ran_steps(instance: dg.DagsterInstance, runs: list[dg.DagsterRun]) -> set[str]:
    return {
        entry.dagster_event.engine_event_data.metadata["Celery worker"].value.split("@")[0]
        for run in runs
        for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
        if "Celery worker" in entry.dagster_event.engine_event_data.metadata
    }


def _champion_step_spans(instance: dg.DagsterInstance, runs: list[dg.DagsterRun]) -> list[tuple[float, float]]:
    """When each run's champion step started and ended."""
    spans = []
    for run in runs:
        times = {
            entry.dagster_event.event_type: entry.timestamp
            for entry in instance.all_logs(run.run_id)
            if entry.step_key == "champion_model" and entry.dagster_event and entry.dagster_event.is_step_event
        }
        if dg.DagsterEventType.STEP_START in times and dg.DagsterEventType.STEP_SUCCESS in times:
            spans.append((times[dg.DagsterEventType.STEP_START], times[dg.DagsterEventType.STEP_SUCCESS]))
    return spans


def _log_lines(cluster: ClusterUnderTest, text: str) -> list[str]:
    return [
        line
        for log in cluster.layout.logs_dir.glob("*.log")
        for line in log.read_text(errors="replace").splitlines()
        if text in line
    ]


def _graphql(cluster: ClusterUnderTest, query: str) -> dict:
    response = requests.post(f"{cluster.layout.dagster_url}/graphql", json={"query": query}, timeout=30)
    response.raise_for_status()
    body = response.json()
    assert "errors" not in body, body
    return body["data"]


def test_a_command_for_a_cluster_that_is_not_running_says_how_to_start_it(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "project")
    cli.overrides["ML_PLATFORM_CLUSTER_DIR"] = str(tmp_path / "cluster")

    refused = cli("--deployment", "cluster", "batches", "list", exit_code=2)

    assert f"no cluster in {tmp_path / 'cluster'}: start it with `ml-platform cluster up`" in refused.stderr
    assert "the cluster was not running" in cli("cluster", "down").stdout
