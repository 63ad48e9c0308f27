"""`ml-platform cluster up/status/down/logs`: the cluster deployment on this machine (`ml_platform/cluster.py`),
and `--deployment cluster`, which points every other command at it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from ml_platform.cli.common import console, fail, print_table
from ml_platform.lib.settings import Settings

cluster_app = typer.Typer(
    help="The cluster deployment: PostgreSQL, Redis, an MLflow server, Celery workers and Dagster, on 127.0.0.1.",
    no_args_is_help=True,
)


def cluster_dir() -> Path:
    """ML_PLATFORM_CLUSTER_DIR when set, else `.cluster/` under the platform's home."""
    from ml_platform.lib.cluster import CLUSTER_DIR_VARIABLE

    return Path(os.environ.get(CLUSTER_DIR_VARIABLE) or Settings.from_env().home / ".cluster").resolve()


def current_layout():
    """The cluster this project's commands talk to, as it was started."""
    from ml_platform.cluster import layout_for

    return layout_for(cluster_dir(), Settings.from_env())


def use_cluster() -> None:
    """Point this process at the cluster: its Dagster instance, MLflow server, shared data and secrets."""
    from ml_platform.cluster import ClusterError, environment, supervisor_running

    layout = current_layout()
    try:
        variables = environment(layout)
    except ClusterError as error:
        fail(str(error))
    if not supervisor_running(layout):
        fail(f"the cluster in {layout.root} is not running: start it with `ml-platform cluster up`")
    os.environ.update(variables)


@cluster_app.command("up")
def up(
    workers: Annotated[int, typer.Option(min=1, max=16, help="Celery workers to start.")] = 2,
    postgres_port: Annotated[int, typer.Option(help="PostgreSQL's port.")] = 55432,
    redis_port: Annotated[int, typer.Option(help="Redis's port.")] = 56379,
    mlflow_port: Annotated[int, typer.Option(help="The MLflow tracking server's port.")] = 5080,
    dagster_port: Annotated[int, typer.Option(help="Dagster's webserver's port.")] = 3080,
    max_run_minutes: Annotated[
        int, typer.Option(min=1, help="A run still going after this long is failed (then retried once).")
    ] = 30,
    step_timeout_s: Annotated[
        int, typer.Option(min=10, help="A step whose worker died is given to another worker after this long.")
    ] = 900,
) -> None:
    """Start the cluster on 127.0.0.1, each part supervised, with its pid, port and log under the cluster's folder.

    Example: ml-platform cluster up --workers 2
    """
    from ml_platform.cluster import ClusterError, layout_for
    from ml_platform.cluster import up as start
    from ml_platform.lib.cluster import ClusterPorts

    layout = layout_for(
        cluster_dir(),
        Settings.from_env(),
        ports=ClusterPorts(postgres_port, redis_port, mlflow_port, dagster_port),
        workers=workers,
        max_run_seconds=max_run_minutes * 60,
        step_timeout_s=step_timeout_s,
    )
    console.print(f"starting the cluster in {layout.root} (logs: {layout.logs_dir}) ...")
    try:
        start(layout, say=console.print)
    except ClusterError as error:
        fail(str(error))
    console.print(
        f"Dagster  {layout.dagster_url}\nMLflow   {layout.tracking_uri}\n"
        f"run a batch: ml-platform --deployment cluster run batch_0001   stop: ml-platform cluster down",
        highlight=False,
    )


@cluster_app.command("status")
def status() -> None:
    """Each part of the cluster: its state, pid, port and whether it answers.

    Example: ml-platform cluster status
    """
    from ml_platform.cluster import status as part_statuses

    parts = part_statuses(current_layout())
    print_table(
        "cluster",
        ["part", "state", "pid", "port", "health"],
        [
            (part.name, part.state, part.pid, part.port, "ok" if part.healthy else (part.detail or "-"))
            for part in parts
        ],
    )
    if any(not part.healthy for part in parts):
        raise typer.Exit(code=1)


@cluster_app.command("down")
def down() -> None:
    """Stop everything the cluster started; nothing is left running. Its data stays for the next `up`.

    Example: ml-platform cluster down
    """
    from ml_platform.cluster import down as stop

    stopped = stop(current_layout())
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "the cluster was not running")


@cluster_app.command("logs")
def logs(
    part: Annotated[str, typer.Argument(help="postgres, redis, mlflow, worker-N, dagster-webserver, dagster-daemon")],
    lines: Annotated[int, typer.Option("--lines", "-n", min=1, help="How many of the last lines.")] = 50,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines.")] = False,
) -> None:
    """The last lines of one part's log.

    Example: ml-platform cluster logs worker-1 -n 100
    """
    layout = current_layout()
    names = [*layout.part_names(), "supervisord"]
    if part not in names:
        fail(f"no part {part!r}: expected one of {', '.join(names)}")
    log = layout.log_file(part)
    if not log.is_file():
        fail(f"{part} has no log yet ({log})")
    if follow:
        os.execvp("tail", ["tail", "-n", str(lines), "-F", str(log)])
    with log.open(errors="replace") as file:
        tail = file.readlines()[-lines:]
    console.out("".join(tail), end="", highlight=False)
