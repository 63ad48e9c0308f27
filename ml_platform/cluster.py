"""The cluster's processes: start them in order under supervisord, check each one's health, stop
them all. `ml_platform.lib.cluster` says what the parts are; `ml-platform cluster` is the command.

The parts start in two stages (`ClusterLayout.start_stages`): the stores (PostgreSQL, Redis), then,
once both answer, everything that uses them together (the MLflow server, the Celery workers, Dagster's
webserver and daemon). A start that fails anywhere stops everything it started, so a failed `up`
leaves nothing running.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

from ml_platform.lib import cluster as plan
from ml_platform.lib.cluster import ClusterLayout, ClusterPorts
from ml_platform.lib.settings import PROJECT_ROOT, Settings


class ClusterError(Exception):
    """A cluster that cannot start or be reached; the message is the one line a person needs."""


@dataclass(frozen=True)
class PartStatus:
    name: str
    state: str  # supervisord's: RUNNING, STOPPED, FATAL, BACKOFF, ... or DOWN when supervisord is not running
    pid: int | None
    port: int | None
    healthy: bool
    detail: str = ""


def layout_for(root: Path, settings: Settings, **overrides) -> ClusterLayout:
    """The layout of the cluster in `root`: as it was started (its `cluster.yaml`), else the defaults
    for `settings`' home and config with `overrides` (ports, workers, timeouts)."""
    chosen = {"home": settings.home, "config_path": settings.config_path, **overrides}
    saved_file = root / "cluster.yaml"
    if saved_file.is_file() and not overrides:
        saved = plan.load_yaml(saved_file)
        chosen = {
            **saved,
            "ports": ClusterPorts(**saved.get("ports", {})),
            "home": Path(saved["home"]),
            "config_path": Path(saved["config_path"]),
        }
    return ClusterLayout(root=root.resolve(), project_root=PROJECT_ROOT, venv_bin=Path(sys.executable).parent, **chosen)


def environment(layout: ClusterLayout) -> dict[str, str]:
    """The cluster's environment (with its secrets) for a client; fails when the cluster never started."""
    if not layout.secrets_file.is_file():
        raise ClusterError(f"no cluster in {layout.root}: start it with `ml-platform cluster up`")
    return plan.cluster_environment(layout, plan.read_env_file(layout.secrets_file))


# ---- up -------------------------------------------------------------------------------------------


def up(layout: ClusterLayout, say: Callable[[str], None] = print, timeout_s: float = 180) -> None:
    """Start every part, in order, each once the one before answers. Nothing is left running on failure."""
    if supervisor_running(layout):
        raise ClusterError(f"a cluster is already running in {layout.root}: see `ml-platform cluster status`")
    if leftovers := stop_leftovers(layout):
        say(f"a previous cluster in {layout.root} died without `cluster down`: stopped what it left ({leftovers})")
    postgres_bin = _postgres_bin()
    problems = [
        *plan.taken_ports(layout.ports, _port_is_free),
        *filter(None, [plan.postgres_version_problem(layout.postgres_data, _postgres_major(postgres_bin))]),
    ]
    redis_server = shutil.which("redis-server")
    if not redis_server:
        problems.append("redis-server is not installed: apt-get install redis-server (make cluster does it)")
    if problems:
        raise ClusterError("; ".join(problems))
    run_as = _postgres_user()
    passwords = _passwords(layout)
    _write_configs(layout, postgres_bin, Path(redis_server), run_as, passwords)
    _initialise_postgres(layout, postgres_bin, run_as, passwords["ML_PLATFORM_PG_PASSWORD"])
    # The venv's executables first, for any part that starts another (dbt's runner looks for `dbt`).
    path = f"{layout.venv_bin}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, **plan.cluster_environment(layout, passwords), "PATH": path}
    subprocess.run([str(layout.venv_bin / "supervisord"), "-c", str(layout.supervisor_config)], env=env, check=True)
    try:
        deadline = time.monotonic() + 20
        while not supervisor_running(layout):
            if time.monotonic() > deadline:
                raise ClusterError(f"supervisord did not answer: see {layout.log_file('supervisord')}")
            time.sleep(0.2)
        for stage in layout.start_stages():
            _start_stage(layout, stage, env, timeout_s)
            say(f"  up: {', '.join(stage)}")
    except BaseException:
        down(layout)
        raise


def _start_stage(layout: ClusterLayout, names: list[str], env: dict[str, str], timeout_s: float) -> None:
    """Start the parts together and wait until every one answers."""
    if any(name.startswith("worker-") for name in names):
        _purge_queue(env)
    for name in names:
        try:
            supervisor(layout).supervisor.startProcess(name, False)
        except xmlrpc.client.Fault as fault:
            raise ClusterError(f"{name} did not start ({fault.faultString}): see {layout.log_file(name)}") from None
    pending = list(names)
    deadline = time.monotonic() + timeout_s
    while pending:
        pending = [name for name in pending if not _answers_or_gave_up(layout, name, env)]
        if pending and time.monotonic() > deadline:
            raise ClusterError(
                f"timed out after {timeout_s:.0f} s waiting for {', '.join(pending)} to answer: "
                f"see {', '.join(str(layout.log_file(name)) for name in pending)}"
            )
        time.sleep(0.5)
    if "postgres" in names:
        _create_databases(env)


def _answers_or_gave_up(layout: ClusterLayout, name: str, env: dict[str, str]) -> bool:
    state = supervisor(layout).supervisor.getProcessInfo(name)["statename"]
    if state in ("FATAL", "EXITED", "STOPPED"):
        raise ClusterError(f"{name} exited ({_last_line(layout.log_file(name))}): see {layout.log_file(name)}")
    return state == "RUNNING" and health(layout, name, env)[0]


def _last_line(log: Path) -> str:
    with contextlib.suppress(OSError):
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        return lines[-1].strip() if lines else "no output"
    return "no log"


def _passwords(layout: ClusterLayout) -> dict[str, str]:
    """The cluster's passwords, generated on its first start into an owner-only file."""
    if layout.secrets_file.is_file():
        return plan.read_env_file(layout.secrets_file)
    passwords = plan.generate_secrets()
    plan.write_env_file(layout.secrets_file, passwords)
    return passwords


def _write_configs(
    layout: ClusterLayout, postgres_bin: Path, redis_server: Path, run_as: str | None, passwords: dict[str, str]
) -> None:
    for folder in (layout.logs_dir, layout.redis_dir, layout.mlflow_artifacts, layout.dagster_home, layout.shared_dir):
        folder.mkdir(parents=True, exist_ok=True)
    for number in range(1, layout.workers + 1):
        (layout.worker_dir(number) / "tmp").mkdir(parents=True, exist_ok=True)
    layout.settings_file.write_text(
        plan.dump_yaml(
            {
                "ports": vars(layout.ports),
                "workers": layout.workers,
                "step_timeout_s": layout.step_timeout_s,
                "max_run_seconds": layout.max_run_seconds,
                "home": str(layout.home),
                "config_path": str(layout.config_path),
            }
        )
    )
    layout.supervisor_config.write_text(plan.supervisord_conf(layout, postgres_bin, redis_server, run_as))
    plan.write_env_file(layout.redis_dir / "redis.conf", {})  # owner-only before the password is in it
    (layout.redis_dir / "redis.conf").write_text(plan.redis_conf(layout, passwords["ML_PLATFORM_REDIS_PASSWORD"]))
    embedded = plan.load_yaml(PROJECT_ROOT / "dagster.yaml")
    (layout.dagster_home / "dagster.yaml").write_text(plan.dump_yaml(plan.dagster_yaml(embedded, layout)))


def _initialise_postgres(layout: ClusterLayout, postgres_bin: Path, run_as: str | None, password: str) -> None:
    """A PostgreSQL cluster under the project on first start, its superuser's password from the secrets file."""
    data = layout.postgres_data
    if (data / "PG_VERSION").is_file():
        return
    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    password_file = layout.root / "initial-password"
    plan.write_env_file(password_file, {})
    password_file.write_text(password + "\n")
    as_user: list[str] = []
    if run_as:
        if subprocess.run(["runuser", "-u", run_as, "--", "test", "-x", str(layout.root)]).returncode != 0:
            raise ClusterError(
                f"PostgreSQL runs as user {run_as} (it refuses root), who cannot enter {layout.root}: give its "
                f"folders search permission (chmod o+x) or set ML_PLATFORM_CLUSTER_DIR to a folder it can enter"
            )
        owner = pwd.getpwnam(run_as)
        for path in (data, password_file):
            os.chown(path, owner.pw_uid, owner.pw_gid)
        as_user = ["runuser", "-u", run_as, "--"]
    try:
        done = subprocess.run(
            [
                *as_user,
                str(postgres_bin / "initdb"),
                "-D",
                str(data),
                "-U",
                plan.POSTGRES_USER,
                f"--pwfile={password_file}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--no-instructions",
            ],
            capture_output=True,
            text=True,
        )
    finally:
        password_file.unlink(missing_ok=True)
    if done.returncode != 0:
        shutil.rmtree(data, ignore_errors=True)  # a half-made data folder would be refused on the next start
        raise ClusterError(f"initdb failed: {(done.stderr or done.stdout).strip().splitlines()[-1]}")


def _create_databases(env: dict[str, str]) -> None:
    import psycopg2

    with contextlib.closing(_connect_postgres(env, "postgres")) as connection:
        connection.autocommit = True
        with connection.cursor() as cursor:
            for database in plan.DATABASES:
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
                if cursor.fetchone() is None:
                    cursor.execute(f"CREATE DATABASE {psycopg2.extensions.quote_ident(database, cursor)}")


def _purge_queue(env: dict[str, str]) -> None:
    """Steps queued or unacknowledged by a previous cluster belong to runs that died with it: a new
    worker would run them against a dead run."""
    import redis

    client = _redis(env)
    with contextlib.suppress(redis.RedisError):
        for key in client.scan_iter("dagster*"):
            client.delete(key)
        client.delete("unacked", "unacked_index", "unacked_mutex")


# ---- health ---------------------------------------------------------------------------------------


def health(layout: ClusterLayout, name: str, env: dict[str, str]) -> tuple[bool, str]:
    """Whether the part answers as it should, and what it said when it does not."""
    try:
        if name == "postgres":
            _connect_postgres(env, "postgres").close()
        elif name == "redis":
            _redis(env).ping()
        elif name == "mlflow":
            _get(f"{layout.tracking_uri}/health")
        elif name == "dagster-webserver":
            _get(f"{layout.dagster_url}/server_info")
        elif name == "dagster-daemon":
            return _process_running(layout, name), ""
        elif name.startswith("worker-"):
            return _worker_answers(env, name)
        return True, ""
    except Exception as error:  # noqa: BLE001 - any failure to answer is "unhealthy", with its reason
        return False, _without_secrets(f"{type(error).__name__}: {error}", env)


def _worker_answers(env: dict[str, str], name: str) -> tuple[bool, str]:
    from dagster_celery.make_app import make_app

    app = make_app({"broker": env["ML_PLATFORM_CELERY_BROKER"], "backend": env["ML_PLATFORM_CELERY_BACKEND"]})
    try:
        replies = app.control.ping(timeout=1.0)
    finally:
        app.close()
    if any(worker.startswith(f"{name}@") for reply in replies for worker in reply):
        return True, ""
    return False, "busy or not answering"


def _connect_postgres(env: dict[str, str], database: str):
    import psycopg2

    return psycopg2.connect(
        host=env["ML_PLATFORM_PG_HOST"],
        port=int(env["ML_PLATFORM_PG_PORT"]),
        user=env["ML_PLATFORM_PG_USER"],
        password=env["ML_PLATFORM_PG_PASSWORD"],
        dbname=database,
        connect_timeout=2,
    )


def _redis(env: dict[str, str]):
    import redis

    return redis.Redis.from_url(env["ML_PLATFORM_CELERY_BROKER"], socket_timeout=2, socket_connect_timeout=2)


def _get(url: str) -> None:
    import requests

    requests.get(url, timeout=2).raise_for_status()


def _without_secrets(text: str, env: dict[str, str]) -> str:
    for name in plan.SECRET_VARIABLES:
        if env.get(name):
            text = text.replace(env[name], "***")
    return text


# ---- status, down, logs ---------------------------------------------------------------------------


def supervisor(layout: ClusterLayout) -> xmlrpc.client.ServerProxy:
    from supervisor.xmlrpc import SupervisorTransport

    transport = SupervisorTransport(None, None, f"unix://{layout.supervisor_socket}")
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)


def supervisor_running(layout: ClusterLayout) -> bool:
    if not layout.supervisor_socket.exists():
        return False
    try:
        return supervisor(layout).supervisor.getState()["statename"] == "RUNNING"
    except (OSError, xmlrpc.client.Error):
        return False


def _process_running(layout: ClusterLayout, name: str) -> bool:
    return supervisor(layout).supervisor.getProcessInfo(name)["statename"] == "RUNNING"


def status(layout: ClusterLayout) -> list[PartStatus]:
    """Each part: supervisord's state, pid, port and whether it answers."""
    ports = layout.ports.by_part()
    if not supervisor_running(layout):
        return [PartStatus(name, "DOWN", None, ports.get(name), False) for name in layout.part_names()]
    env = environment(layout)
    infos = {info["name"]: info for info in supervisor(layout).supervisor.getAllProcessInfo()}
    statuses = []
    for name in layout.part_names():
        info = infos.get(name, {"statename": "UNKNOWN", "pid": 0})
        running = info["statename"] == "RUNNING"
        healthy, detail = health(layout, name, env) if running else (False, "")
        statuses.append(PartStatus(name, info["statename"], info["pid"] or None, ports.get(name), healthy, detail))
    return statuses


def down(layout: ClusterLayout) -> list[str]:
    """Stop every part (the daemon first, PostgreSQL last), then supervisord; then anything of this
    cluster still alive. Returns what was stopped."""
    stopped = []
    if supervisor_running(layout):
        proxy = supervisor(layout)
        stopped = [info["name"] for info in proxy.supervisor.getAllProcessInfo() if info["statename"] == "RUNNING"]
        pid = _supervisor_pid(layout)
        # supervisord's own shutdown stops the parts one after another in reverse priority, each
        # gone before the next is asked: the stores outlive everything that writes to them.
        with contextlib.suppress(OSError, xmlrpc.client.Error):
            proxy.supervisor.shutdown()
        if pid:
            # Each part has `stopwaitsecs` (20 s) before supervisord kills it; what outlives that is a leftover.
            with contextlib.suppress(psutil.NoSuchProcess, psutil.TimeoutExpired):
                psutil.Process(pid).wait(timeout=25 * len(layout.part_names()))
    if leftovers := stop_leftovers(layout):
        stopped.append(f"leftovers: {leftovers}")
    return stopped


def _supervisor_pid(layout: ClusterLayout) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(layout.supervisor_pidfile.read_text().strip())
    return None


def cluster_processes(layout: ClusterLayout) -> Iterator[psutil.Process]:
    """Every live process of this cluster, except this process and its ancestors: those that carry its
    folder in their environment, or work in it (Redis overwrites its environment with its title)."""
    mine = {os.getpid(), *(parent.pid for parent in psutil.Process().parents())}
    for process in psutil.process_iter():
        if process.pid in mine:
            continue
        with contextlib.suppress(psutil.Error):
            if process.environ().get(plan.CLUSTER_MARK_VARIABLE) == str(layout.root) or Path(
                process.cwd()
            ).is_relative_to(layout.root):
                yield process


def stop_leftovers(layout: ClusterLayout) -> str:
    """Stop what is still running of this cluster without a supervisord: SIGTERM, then SIGKILL after 10 s."""
    if supervisor_running(layout):
        return ""
    processes = list(cluster_processes(layout))
    if not processes:
        return ""
    names = f"{len(processes)} process(es): {', '.join(sorted({_name(process) for process in processes}))}"
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(processes, timeout=10)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(alive, timeout=5)
    for stale in (layout.supervisor_socket, layout.supervisor_pidfile, layout.postgres_data / "postmaster.pid"):
        stale.unlink(missing_ok=True)
    return names


def _name(process: psutil.Process) -> str:
    with contextlib.suppress(psutil.Error):
        return process.name()
    return "?"


# ---- the machine ----------------------------------------------------------------------------------


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _postgres_bin() -> Path:
    """PostgreSQL's binaries: `pg_config --bindir`, else those on PATH, else Debian's folder."""
    if pg_config := shutil.which("pg_config"):
        found = Path(subprocess.run([pg_config, "--bindir"], capture_output=True, text=True).stdout.strip())
        if (found / "postgres").is_file():
            return found
    if postgres := shutil.which("postgres"):
        return Path(postgres).resolve().parent
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "postgres").is_file():
            return candidate
    raise ClusterError("PostgreSQL is not installed (no postgres binary on PATH or in /usr/lib/postgresql)")


def _postgres_major(postgres_bin: Path) -> int:
    version = subprocess.run([str(postgres_bin / "postgres"), "--version"], capture_output=True, text=True).stdout
    return int(version.split()[-1].split(".")[0])


def _postgres_user() -> str | None:
    """PostgreSQL refuses to run as root: as root, the cluster runs it as the `postgres` user."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise ClusterError("PostgreSQL refuses to run as root and there is no `postgres` user to run it as") from None
    return "postgres"


# ---- runs -----------------------------------------------------------------------------------------


def submit_run(layout: ClusterLayout, job_name: str, batch_id: str, tags: dict[str, str], assets=None) -> str:
    """Submit a run of `job_name` for `batch_id` to the cluster's webserver: it is queued, and the daemon
    launches it under the run queue's limits (one run per batch, the registry pool) like any other."""
    from dagster_graphql import DagsterGraphQLClient

    client = DagsterGraphQLClient("127.0.0.1", port_number=layout.ports.dagster, timeout=60)
    return client.submit_job_execution(
        job_name,
        repository_location_name="ml_platform",
        tags={**tags, "dagster/partition": batch_id},
        asset_selection=list(assets) if assets else None,
    )


def wait_for_run(instance, run_id: str, retry_grace_s: float = 30.0, every_s: float = 1.0):
    """The run once it has finished, or the retry the daemon started for it (`run_retries`), followed
    to its own end. A failed run is tagged with whether it will be retried a moment after it fails."""
    import dagster as dg
    from dagster._core.storage.tags import PARENT_RUN_ID_TAG, WILL_RETRY_TAG

    run = instance.get_run_by_id(run_id)
    while not run.is_finished:
        time.sleep(every_s)
        run = instance.get_run_by_id(run_id)
    deadline = time.monotonic() + retry_grace_s
    while run.status == dg.DagsterRunStatus.FAILURE and time.monotonic() < deadline:
        if run.tags.get(WILL_RETRY_TAG) == "false":
            break
        if run.tags.get(WILL_RETRY_TAG) == "true":
            retries = instance.get_run_records(dg.RunsFilter(tags={PARENT_RUN_ID_TAG: run_id}), limit=1)
            if retries:
                return wait_for_run(instance, retries[0].dagster_run.run_id, retry_grace_s, every_s)
        time.sleep(every_s)
        run = instance.get_run_by_id(run_id)
    return run
