"""The cluster deployment on paper: its parts, where each keeps its files, its secrets and the
configuration files each part reads. Pure: `ml_platform.cluster` starts and stops the processes.

The cluster is the same code location on distributed engines: Dagster's storage on PostgreSQL, an
MLflow tracking server backed by PostgreSQL that serves artifacts itself, Celery workers taking steps
from Redis. Every part binds 127.0.0.1 and is supervised by supervisord under the cluster's folder.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

DEPLOYMENT_VARIABLE = "ML_PLATFORM_DEPLOYMENT"
CLUSTER_DIR_VARIABLE = "ML_PLATFORM_CLUSTER_DIR"
# Every process of a cluster carries its folder in this variable, so leftovers of a cluster whose
# supervisor died can be found and stopped.
CLUSTER_MARK_VARIABLE = "ML_PLATFORM_CLUSTER_MARK"

POSTGRES_USER = "ml_platform"
DATABASES = ("dagster", "mlflow")
# Names of the environment variables that hold secrets; their values never reach a log or a config view.
SECRET_VARIABLES = (
    "ML_PLATFORM_PG_PASSWORD",
    "ML_PLATFORM_REDIS_PASSWORD",
    "ML_PLATFORM_CELERY_BROKER",
    "ML_PLATFORM_CELERY_BACKEND",
    "MLFLOW_BACKEND_STORE_URI",
)

# A step's Celery task is acknowledged when it ends, not when it starts: a worker killed mid-step
# leaves its task in Redis, and after `visibility_timeout` another worker runs the step again. The
# timeout must exceed the longest step, or a slow step would also start on a second worker.
DEFAULT_STEP_TIMEOUT_S = 900
STEP_TIMEOUT_VARIABLE = "ML_PLATFORM_STEP_TIMEOUT_S"


def step_timeout_from_env() -> int:
    return int(os.environ.get(STEP_TIMEOUT_VARIABLE) or DEFAULT_STEP_TIMEOUT_S)


@dataclass(frozen=True)
class ClusterPorts:
    postgres: int = 55432
    redis: int = 56379
    mlflow: int = 5080
    dagster: int = 3080

    def by_part(self) -> dict[str, int]:
        return {
            "postgres": self.postgres,
            "redis": self.redis,
            "mlflow": self.mlflow,
            "dagster-webserver": self.dagster,
        }


@dataclass(frozen=True)
class ClusterLayout:
    """Where a cluster keeps everything, under one folder (`.cluster/` in the project by default)."""

    root: Path
    project_root: Path
    venv_bin: Path
    # The platform's home (incoming batches) and config, the same for every part and client.
    home: Path
    config_path: Path
    ports: ClusterPorts = field(default_factory=ClusterPorts)
    workers: int = 2
    step_timeout_s: int = DEFAULT_STEP_TIMEOUT_S
    # A run still going after this long is failed by the daemon's run monitoring (a run whose step was
    # lost with its worker would otherwise wait forever), then retried once by `run_retries`.
    max_run_seconds: int = 1800

    @property
    def secrets_file(self) -> Path:
        return self.root / "secrets.env"

    @property
    def settings_file(self) -> Path:
        """The ports, worker count and timeouts the cluster was started with, for `status` and clients."""
        return self.root / "cluster.yaml"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def supervisor_config(self) -> Path:
        return self.root / "supervisord.conf"

    @property
    def supervisor_socket(self) -> Path:
        return self.root / "supervisor.sock"

    @property
    def supervisor_pidfile(self) -> Path:
        return self.root / "supervisord.pid"

    @property
    def postgres_data(self) -> Path:
        return self.root / "postgres"

    @property
    def redis_dir(self) -> Path:
        return self.root / "redis"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.root / "mlflow-artifacts"

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster_home"

    @property
    def shared_dir(self) -> Path:
        """What every worker reads and writes: the warehouse, reports, step outputs (a shared mount on
        several machines)."""
        return self.root / "shared"

    def worker_dir(self, number: int) -> Path:
        """Each worker's own working folder and temporary folder: nothing may rely on the starter's."""
        return self.root / "workers" / f"worker-{number}"

    def log_file(self, part: str) -> Path:
        return self.logs_dir / f"{part}.log"

    @property
    def tracking_uri(self) -> str:
        return f"http://127.0.0.1:{self.ports.mlflow}"

    @property
    def dagster_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.dagster}"

    def start_stages(self) -> list[list[str]]:
        """The parts in the order they start, each stage together: the stores, then what uses them."""
        workers = [f"worker-{n}" for n in range(1, self.workers + 1)]
        return [["postgres", "redis"], ["mlflow", *workers, "dagster-webserver", "dagster-daemon"]]

    def part_names(self) -> list[str]:
        return [name for stage in self.start_stages() for name in stage]


def generate_secrets() -> dict[str, str]:
    """Fresh passwords: hex, so they need no quoting in a URL or a config file."""
    return {"ML_PLATFORM_PG_PASSWORD": secrets.token_hex(16), "ML_PLATFORM_REDIS_PASSWORD": secrets.token_hex(16)}


def write_env_file(path: Path, values: Mapping[str, str]) -> None:
    """`KEY=value` lines in a file only its owner can read, created with those permissions (never
    readable by others, not even for a moment)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.writelines(f"{key}={value}\n" for key, value in values.items())
    os.chmod(path, 0o600)


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        key, separator, value = line.partition("=")
        if not separator:
            raise ValueError(f"{path}: line {number}: expected KEY=value")
        values[key.strip()] = value.strip()
    return values


def cluster_environment(layout: ClusterLayout, passwords: Mapping[str, str]) -> dict[str, str]:
    """The environment every part of the cluster and every client of it runs with. Dagster reads the
    secrets through `env:` entries of its dagster.yaml, MLflow's server its store from the environment."""
    pg, redis = passwords["ML_PLATFORM_PG_PASSWORD"], passwords["ML_PLATFORM_REDIS_PASSWORD"]
    ports = layout.ports
    return {
        DEPLOYMENT_VARIABLE: "cluster",
        CLUSTER_DIR_VARIABLE: str(layout.root),
        CLUSTER_MARK_VARIABLE: str(layout.root),
        "ML_PLATFORM_HOME": str(layout.home),
        "ML_PLATFORM_CONFIG": str(layout.config_path),
        "DAGSTER_HOME": str(layout.dagster_home),
        "ML_PLATFORM_DATA_DIR": str(layout.shared_dir),
        "MLFLOW_TRACKING_URI": layout.tracking_uri,
        "ML_PLATFORM_PG_HOST": "127.0.0.1",
        "ML_PLATFORM_PG_PORT": str(ports.postgres),
        "ML_PLATFORM_PG_USER": POSTGRES_USER,
        "ML_PLATFORM_PG_PASSWORD": pg,
        "ML_PLATFORM_REDIS_PASSWORD": redis,
        "ML_PLATFORM_CELERY_BROKER": f"redis://:{redis}@127.0.0.1:{ports.redis}/0",
        "ML_PLATFORM_CELERY_BACKEND": f"redis://:{redis}@127.0.0.1:{ports.redis}/1",
        STEP_TIMEOUT_VARIABLE: str(layout.step_timeout_s),
        "MLFLOW_BACKEND_STORE_URI": f"postgresql+psycopg2://{POSTGRES_USER}:{pg}@127.0.0.1:{ports.postgres}/mlflow",
    }


def celery_executor_config(step_timeout_s: int) -> dict:
    """The `celery_executor`'s config, for the jobs and for the workers (`ml_platform.cluster_worker`):
    one source, so both sides agree on the broker and on how tasks are acknowledged."""
    return {
        "broker": {"env": "ML_PLATFORM_CELERY_BROKER"},
        "backend": {"env": "ML_PLATFORM_CELERY_BACKEND"},
        "config_source": {
            "task_acks_late": True,
            "task_reject_on_worker_lost": True,
            "broker_transport_options": {"visibility_timeout": step_timeout_s},
            "result_backend_transport_options": {"visibility_timeout": step_timeout_s},
            # A Redis restart is a few seconds of refused connections: keep trying instead of failing the run.
            "broker_connection_retry_on_startup": True,
            "broker_connection_max_retries": 60,
            "redis_retry_on_timeout": True,
            "redis_backend_health_check_interval": 5,
            "result_expires": 24 * 3600,  # results in Redis are bounded: a day
        },
    }


def dagster_yaml(embedded: Mapping, layout: ClusterLayout) -> dict:
    """The cluster's dagster.yaml: the embedded one's policies (queue, pools, retries, monitoring)
    on PostgreSQL storage, whose credentials are `env:` entries (never written into the file), and
    with a maximum run time."""
    config = {key: value for key, value in embedded.items() if key != "storage"}
    config["storage"] = {
        "postgres": {
            "postgres_db": {
                "username": {"env": "ML_PLATFORM_PG_USER"},
                "password": {"env": "ML_PLATFORM_PG_PASSWORD"},
                "hostname": {"env": "ML_PLATFORM_PG_HOST"},
                "port": {"env": "ML_PLATFORM_PG_PORT"},
                "db_name": "dagster",
                # With SQLAlchemy 2, a bare postgresql:// means psycopg 3, which dagster-postgres cannot use.
                "scheme": "postgresql+psycopg2",
            }
        }
    }
    config["run_monitoring"] = {**embedded.get("run_monitoring", {}), "max_runtime_seconds": layout.max_run_seconds}
    return config


def redis_conf(layout: ClusterLayout, password: str) -> str:
    """Redis with its queue on disk (append-only file), so queued steps survive a Redis restart."""
    return "\n".join(
        [
            "bind 127.0.0.1",
            f"port {layout.ports.redis}",
            "protected-mode yes",
            f"requirepass {password}",
            f"dir {layout.redis_dir}",
            "appendonly yes",
            "appendfsync everysec",
            'save ""',
            "",
        ]
    )


def supervisord_conf(layout: ClusterLayout, postgres_bin: Path, redis_server: Path, run_as: str | None) -> str:
    """supervisord's configuration: every part a program, none started by supervisord itself (the
    cluster starts them in order, each once the one before answers), each restarted when it dies,
    its output in `logs/PART.log` (rotated, so logs stay bounded), its process group stopped with it.

    `run_as` is the user PostgreSQL runs as when the cluster is started by root (PostgreSQL refuses root).
    """
    bin_ = layout.venv_bin
    ports = layout.ports
    workspace = layout.project_root / "workspace.yaml"
    commands = {
        "postgres": (
            f"{postgres_bin / 'postgres'} -D {layout.postgres_data} -p {ports.postgres} "
            f"-c listen_addresses=127.0.0.1 -c unix_socket_directories={layout.postgres_data}",
            layout.postgres_data,
        ),
        "redis": (f"{redis_server} {layout.redis_dir / 'redis.conf'}", layout.redis_dir),
        "mlflow": (
            f"{bin_ / 'mlflow'} server --host 127.0.0.1 --port {ports.mlflow} --serve-artifacts "
            f"--artifacts-destination {layout.mlflow_artifacts} --workers 2",
            layout.root,
        ),
        "dagster-webserver": (
            f"{bin_ / 'dagster-webserver'} -h 127.0.0.1 -p {ports.dagster} -w {workspace}",
            layout.project_root,
        ),
        "dagster-daemon": (f"{bin_ / 'dagster-daemon'} run -w {workspace}", layout.project_root),
    }
    for number in range(1, layout.workers + 1):
        directory = layout.worker_dir(number)
        # Solo pool: the worker is the process that runs the step, so killing it loses nothing but
        # the step, which Redis hands to another worker (tasks are acknowledged late).
        commands[f"worker-{number}"] = (
            f"{bin_ / 'celery'} -A ml_platform.cluster_worker worker --pool=solo --prefetch-multiplier=1 "
            f"-Q dagster -n worker-{number}@%%h --without-gossip --without-mingle --loglevel INFO",
            directory,
        )
    sections = [
        "[unix_http_server]",
        f"file={layout.supervisor_socket}",
        "chmod=0700",
        "",
        "[supervisord]",
        f"logfile={layout.log_file('supervisord')}",
        "logfile_maxbytes=10MB",
        "logfile_backups=2",
        f"pidfile={layout.supervisor_pidfile}",
        f"directory={layout.root}",
        "umask=077",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl=unix://{layout.supervisor_socket}",
        "",
    ]
    for priority, name in enumerate(layout.part_names(), start=1):
        command, directory = commands[name]
        sections += [
            f"[program:{name}]",
            f"command={command}",
            f"directory={directory}",
            # supervisord stops in reverse priority: the daemon first, PostgreSQL last.
            f"priority={priority}",
            "autostart=false",
            "autorestart=true",
            "startsecs=3",
            "startretries=3",
            "stopasgroup=true",
            "killasgroup=true",
            "stopwaitsecs=20",
            "redirect_stderr=true",
            f"stdout_logfile={layout.log_file(name)}",
            "stdout_logfile_maxbytes=10MB",
            "stdout_logfile_backups=2",
        ]
        if name.startswith("worker-"):
            sections.append(f"environment=TMPDIR={directory / 'tmp'},HOME={directory}")
        if name == "mlflow":
            # No usage telemetry (these machines have no internet) and no GenAI job runner (seven consumers).
            sections.append("environment=MLFLOW_DISABLE_TELEMETRY=true,MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false")
        if name == "postgres" and run_as:
            sections.append(f"user={run_as}")
        sections.append("")
    return "\n".join(sections)


def taken_ports(ports: ClusterPorts, is_free: Callable[[int], bool]) -> list[str]:
    """One line per part whose port something else holds."""
    return [
        f"port {port} ({part}) is taken by another process: stop it, or start the cluster with "
        f"--{'dagster' if part == 'dagster-webserver' else part}-port"
        for part, port in ports.by_part().items()
        if not is_free(port)
    ]


def postgres_version_problem(data_dir: Path, installed_major: int) -> str | None:
    """PostgreSQL cannot start on a data folder made by another major version: say so before trying."""
    version_file = data_dir / "PG_VERSION"
    if not version_file.is_file():
        return None
    made_by = version_file.read_text().strip()
    if made_by != str(installed_major):
        return (
            f"PostgreSQL data folder {data_dir} was made by PostgreSQL {made_by}, this machine has "
            f"{installed_major}: upgrade it (pg_upgrade) or move it away to start afresh"
        )
    return None


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def dump_yaml(content: Mapping) -> str:
    return yaml.safe_dump(dict(content), sort_keys=False)
