"""`ml-platform ui`: Dagster's UI (webserver and daemon) and MLflow's UI on 127.0.0.1, stopped together.

Each server runs in a session (process group) of its own, with its output in a log file, so Ctrl-C
reaches this command only; stopping a server then means stopping its whole group: `dagster dev`'s
webserver, daemon, code server and run workers, MLflow's uvicorn and job runner. Nothing is left
running when this command ends, whether by Ctrl-C, SIGTERM or a server that died.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit, urlunsplit

import typer
from rich.markup import escape

from ml_platform.cli.common import console, fail, load_platform_config
from ml_platform.lib.settings import PROJECT_ROOT, Settings

HOST = "127.0.0.1"  # never 0.0.0.0: both UIs can start runs and change the registry, without a login
VENV_BIN = Path(sys.executable).parent  # the venv's own executables, whether or not it is on PATH
STOP_GRACE_S = 60.0  # `dagster dev` gives its webserver and daemon 60 s each to finish
LOG_TAIL_LINES = 15
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")  # `dagster dev` colours its log lines
LOCATIONS_QUERY = (
    "{workspaceOrError {... on Workspace {locationEntries {name loadStatus"
    " locationOrLoadError {__typename ... on PythonError {message}}}}}}"
)


@dataclass
class Server:
    name: str
    url: str
    process: subprocess.Popen
    log: Path

    @property
    def running(self) -> bool:
        return self.process.poll() is None


class _Stop(Exception):
    """SIGTERM or SIGHUP, handled like Ctrl-C."""


def ui(
    dagster_port: Annotated[int, typer.Option(min=1, max=65535, help="Port of Dagster's webserver.")] = 3000,
    mlflow_port: Annotated[int, typer.Option(min=1, max=65535, help="Port of MLflow's UI.")] = 5000,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait for both UIs to answer.")] = 300,
) -> None:
    """Start Dagster's UI (webserver and daemon, so schedules and sensors run) and MLflow's UI on
    127.0.0.1; Ctrl-C stops both. With MLFLOW_TRACKING_URI naming a server, only Dagster starts.

    Example: ml-platform ui --dagster-port 3000 --mlflow-port 5000
    """
    settings = Settings.from_env()
    config = load_platform_config(settings)
    tracking_uri = settings.tracking_uri_for(config)
    remote_mlflow = tracking_uri.startswith(("http://", "https://"))

    ports = (
        {"--dagster-port": dagster_port}
        if remote_mlflow
        else {"--dagster-port": dagster_port, "--mlflow-port": mlflow_port}
    )
    if len(set(ports.values())) < len(ports):
        fail(f"--dagster-port and --mlflow-port are both {dagster_port}: give each UI its own port")
    for option, port in ports.items():
        if problem := port_problem(port):
            fail(f"{option} {port}: {problem}")

    # dagster dev must find the instance the CLI uses: DAGSTER_HOME with the project's dagster.yaml.
    from ml_platform.defs.runs import project_instance

    project_instance(settings).dispose()
    env = child_env(settings)

    servers: list[Server] = []
    with stop_signals_interrupt():
        try:
            servers.append(start_dagster(settings, dagster_port, env))
            if not remote_mlflow:
                artifacts = settings.artifact_location_for(config)
                servers.append(start_mlflow(settings, tracking_uri, artifacts, mlflow_port, env))
            logs = ", ".join(str(server.log) for server in servers)
            say(f"starting {' and '.join(server.name for server in servers)} (logs: {logs}) ...")
            wait_until_ready(servers, timeout)
            print_addresses(servers, settings, tracking_uri)
            died = wait_for_stop_or_exit(servers)
        except (KeyboardInterrupt, _Stop):
            died = None
        finally:
            with ignoring_stop_signals():
                stop_all(servers)
    if died is not None:
        fail(f"{died.name} stopped unexpectedly (exit {died.process.returncode}); {log_tail(died.log)}")
    say(f"stopped {' and '.join(server.name for server in servers)}")


def say(line: str) -> None:
    """A line on stdout as written: no wrapping inside a path or URL, no markup in paths."""
    console.print(line, highlight=False, markup=False, soft_wrap=True)


def port_problem(port: int, host: str = HOST) -> str | None:
    """Why `port` cannot be used on `host`, or None. Binds as the servers will (SO_REUSEADDR), so a
    closed connection lingering in TIME_WAIT does not count, a listening process does."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return f"the port is taken on {host} (another process listens there); pick another port"
            return f"cannot listen on {host}:{port}: {error.strerror}"
    return None


def child_env(settings: Settings) -> dict[str, str]:
    """The servers' environment: the settings as this command resolved them (a relative
    ML_PLATFORM_CONFIG would otherwise resolve against the servers' working directory), the venv's
    executables first, no MLflow usage telemetry (Dagster's is off in dagster.yaml)."""
    return {
        **os.environ,
        "ML_PLATFORM_HOME": str(settings.home),
        "ML_PLATFORM_CONFIG": str(settings.config_path),
        "DAGSTER_HOME": str(settings.dagster_home),
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "MLFLOW_DISABLE_TELEMETRY": os.environ.get("MLFLOW_DISABLE_TELEMETRY", "true"),
        # MLflow's job runner (GenAI evaluation jobs: seven huey consumers) has no use here.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": os.environ.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false"),
    }


def start_dagster(settings: Settings, port: int, env: dict[str, str]) -> Server:
    command = [str(VENV_BIN / "dagster"), "dev", "-h", HOST, "-p", str(port)]
    command += ["-w", str(PROJECT_ROOT / "workspace.yaml")]
    log = settings.dagster_home / "dagster-dev.log"
    return Server("Dagster", f"http://{HOST}:{port}", _spawn(command, PROJECT_ROOT, env, log), log)


def start_mlflow(
    settings: Settings, tracking_uri: str, artifacts: str | None, port: int, env: dict[str, str]
) -> Server:
    """MLflow's UI on the platform's store. Runs keep their own artifact location (file:// under
    `mlflow/artifacts/`), which the server reads directly; `--default-artifact-root` puts an
    experiment created in the UI there too, instead of a `./mlruns` wherever the server started."""
    command = [str(VENV_BIN / "mlflow"), "ui", "--backend-store-uri", tracking_uri]
    command += ["--default-artifact-root", artifacts] if artifacts else []
    # One uvicorn worker is plenty for one person and spares 2 cores three idle processes.
    command += ["--host", HOST, "--port", str(port), "--workers", "1"]
    settings.mlflow_dir.mkdir(parents=True, exist_ok=True)
    log = settings.mlflow_dir / "ui.log"
    return Server("MLflow", f"http://{HOST}:{port}", _spawn(command, settings.mlflow_dir, env, log), log)


def _spawn(command: list[str], cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as output:
        return subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a process group of its own: Ctrl-C reaches us, we stop the group
        )


def wait_until_ready(servers: list[Server], timeout: float) -> None:
    """Until every server answers HTTP (and Dagster has loaded its code location), or fail naming
    the server that exited or did not answer in time."""
    deadline = time.monotonic() + timeout
    pending = list(servers)
    while pending:
        for server in list(pending):
            if not server.running:
                fail(f"{server.name} exited (code {server.process.returncode}) while starting; {log_tail(server.log)}")
            if _answers(server):
                pending.remove(server)
        if pending and time.monotonic() > deadline:
            names = " and ".join(server.name for server in pending)
            fail(f"{names} did not answer within {timeout:.0f} s; {log_tail(pending[0].log)}")
        if pending:
            time.sleep(0.5)
    for server in servers:
        if server.name == "Dagster" and (problem := dagster_location_problem(server.url)):
            say(f"warning: the code location did not load: {problem}")


def _answers(server: Server) -> bool:
    if server.name == "MLflow":
        return _get(f"{server.url}/health") is not None
    return _get(f"{server.url}/server_info") is not None and dagster_location_problem(server.url) != "loading"


def dagster_location_problem(url: str) -> str | None:
    """None when every code location has loaded, "loading" while one still loads, else its error."""
    answer = _get(f"{url}/graphql", json.dumps({"query": LOCATIONS_QUERY}).encode())
    if answer is None:
        return "loading"
    workspace = (json.loads(answer).get("data") or {}).get("workspaceOrError") or {}
    entries = workspace.get("locationEntries") or []
    if not entries or any(entry["loadStatus"] != "LOADED" for entry in entries):
        return "loading"
    errors = [entry for entry in entries if (entry["locationOrLoadError"] or {}).get("__typename") == "PythonError"]
    return "; ".join(f"{e['name']}: {e['locationOrLoadError']['message'].strip()}" for e in errors) or None


def _get(url: str, data: bytes | None = None) -> bytes | None:
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.read() if response.status == 200 else None
    except (urllib.error.URLError, OSError):
        return None


def print_addresses(servers: list[Server], settings: Settings, tracking_uri: str) -> None:
    """Where each UI answers; with a tracking server (no MLflow started here), that server's address."""
    about = {
        "Dagster": f"webserver and daemon; DAGSTER_HOME={settings.dagster_home}",
        "MLflow": f"store {public_uri(tracking_uri)}",
    }
    for server in servers:
        say(f"{server.name:8} {server.url}  {about[server.name]}")
    if not any(server.name == "MLflow" for server in servers):
        say(f"{'MLflow':8} {public_uri(tracking_uri)}  the tracking server in use (not started here)")
    say("Ctrl-C stops " + ("both" if len(servers) == 2 else "it"))


def public_uri(uri: str) -> str:
    """`uri` without user info, query or fragment: a server's address must not print its credentials."""
    parts = urlsplit(uri)
    if not parts.hostname:
        return uri
    netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def wait_for_stop_or_exit(servers: list[Server]) -> Server | None:
    """Until a stop signal (KeyboardInterrupt or _Stop, raised out of here) or a server exits (returned)."""
    while True:
        for server in servers:
            if not server.running:
                return server
        time.sleep(1)


def stop_all(servers: list[Server], grace_s: float = STOP_GRACE_S) -> None:
    """SIGINT to every server's process group, as a terminal's Ctrl-C would send; SIGTERM to what is
    left after `grace_s`; SIGKILL after 10 s more. The servers stop side by side, not one by one."""
    groups = [server.process.pid for server in servers]  # start_new_session: the leader's pid is the group id
    for sig, wait_s in ((signal.SIGINT, grace_s), (signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        alive = [group for group in groups if _group_alive(group)]
        if not alive:
            break
        for group in alive:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and any(_group_alive(group) for group in alive):
            for server in servers:
                server.process.poll()  # reap a leader that exited, so its group can empty
            time.sleep(0.2)
    for server in servers:
        server.process.poll()


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def log_tail(log: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The end of a server's log for an error message: without colour codes, and escaped, since
    `fail` prints rich markup and a log line may look like a tag."""
    try:
        tail = log.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"see {log}"
    text = ANSI_ESCAPE.sub("", "\n".join(tail))
    return escape(f"last lines of {log}:\n{text}")


@contextlib.contextmanager
def stop_signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP (the terminal closed) stop the UIs as Ctrl-C does, instead of killing this
    process and leaving the servers running; Ctrl-C is a KeyboardInterrupt even if SIGINT was ignored."""

    def handler(signum, frame):
        raise _Stop(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    # Started in the background by a shell without job control, this process ignores SIGINT, and
    # so would the servers it starts (`dagster dev` would then ignore Ctrl-C and SIGTERM alike).
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def ignoring_stop_signals() -> Iterator[None]:
    """A second Ctrl-C while stopping must not leave servers behind: stopping is bounded anyway."""
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in sigs}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
