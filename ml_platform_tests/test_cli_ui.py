"""`ml-platform ui` as a command: ports it refuses, a tracking server it does not shadow, and SIGTERM
stopping everything it started. The browser tests (test_ui_browser.py) cover both UIs and Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from ml_platform.cli.ui import port_problem, public_uri
from ml_platform_tests.conftest import Cli, inherited_environment
from ml_platform_tests.servers import free_port, wait_for

pytestmark = pytest.mark.timeout(900)

ML_PLATFORM = str(Path(sys.executable).parent / "ml-platform")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        **inherited_environment(),
        "ML_PLATFORM_HOME": str(tmp_path / "home"),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "COLUMNS": "200",
    }


@pytest.fixture
def listener():
    """A port some other process listens on."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def still_running(processes: list[psutil.Process]) -> list[int]:
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process.pid)
        except psutil.NoSuchProcess:
            pass
    return alive


@pytest.mark.parametrize("option", ["--dagster-port", "--mlflow-port"])
def test_a_taken_port_is_refused_before_anything_starts(listener, option, tmp_path):
    ports = {"--dagster-port": str(free_port()), "--mlflow-port": str(free_port()), option: str(listener)}
    result = Cli(tmp_path)("ui", *(item for pair in ports.items() for item in pair), exit_code=2)
    assert f"{option} {listener}: the port is taken on 127.0.0.1" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "dagster_home" / "dagster-dev.log").exists()


def test_one_port_for_both_uis_is_refused(tmp_path):
    result = Cli(tmp_path)("ui", "--dagster-port", "3999", "--mlflow-port", "3999", exit_code=2)
    assert "--dagster-port and --mlflow-port are both 3999" in result.stderr


def test_port_problem_tells_a_free_port_from_a_taken_one(listener):
    assert port_problem(free_port()) is None
    assert "taken" in port_problem(listener)


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("https://user:token@mlflow.example.com:8443/base?key=secret", "https://mlflow.example.com:8443/base"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("sqlite:////srv/mlflow/mlflow.db", "sqlite:////srv/mlflow/mlflow.db"),
        ("postgresql://ml:pw@db:5432/mlflow", "postgresql://db:5432/mlflow"),
    ],
)
def test_addresses_are_printed_without_credentials(uri, shown):
    assert public_uri(uri) == shown


def start_ui(env: dict[str, str], output_path: Path, *args: str) -> subprocess.Popen:
    """`ml-platform ui` in a session of its own (only the signals the test sends reach it), until it
    says the UIs answer."""
    with output_path.open("w") as output:
        process = subprocess.Popen(
            [ML_PLATFORM, "ui", *args], env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    wait_for(
        lambda: process.poll() is not None or "Ctrl-C stops" in output_path.read_text(),
        600,
        "`ml-platform ui` to report the UIs ready",
    )
    assert process.poll() is None, output_path.read_text()
    return process


def stopped(process: subprocess.Popen, sig: signal.Signals | None) -> int:
    """Send `sig` (None: none) and wait for the command to end; killed with its group if it hangs."""
    if sig is not None:
        process.send_signal(sig)
    try:
        return process.wait(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise


def test_with_a_tracking_server_only_dagster_starts_and_sigterm_stops_everything(env, tmp_path):
    server_port, dagster_port = free_port(), free_port()
    env["MLFLOW_TRACKING_URI"] = f"http://user:s3cret@127.0.0.1:{server_port}/"
    output_path = tmp_path / "ui.out"
    process = start_ui(env, output_path, "--dagster-port", str(dagster_port))
    tree: list[psutil.Process] = []
    try:
        printed = output_path.read_text()
        assert "Ctrl-C stops it" in printed
        assert f"http://127.0.0.1:{dagster_port}" in printed
        assert f"http://127.0.0.1:{server_port}/" in printed and "s3cret" not in printed
        parent = psutil.Process(process.pid)
        tree = [parent, *parent.children(recursive=True)]
        commands = [" ".join(child.cmdline()) for child in tree[1:]]
        assert any("dagster dev" in command for command in commands), commands
        assert not any("mlflow" in command for command in commands), commands
    finally:
        returncode = stopped(process, signal.SIGTERM)
    printed = output_path.read_text()
    assert returncode == 0, printed
    assert "stopped Dagster" in printed
    assert not still_running(tree), f"left running after SIGTERM: {still_running(tree)}"
    assert port_problem(dagster_port) is None


def test_a_server_that_dies_ends_the_command_with_its_log_and_nothing_left_running(env, tmp_path):
    env["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{free_port()}"  # only Dagster: a quicker start
    output_path = tmp_path / "ui.out"
    process = start_ui(env, output_path, "--dagster-port", str(free_port()))
    tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    try:
        [webserver] = [p for p in tree if "dagster_webserver" in " ".join(p.cmdline())]
        webserver.kill()  # `dagster dev` notices within 5 s and shuts the daemon down
    finally:
        returncode = stopped(process, None)
    printed = output_path.read_text()
    assert returncode == 2, printed
    assert "error: Dagster stopped unexpectedly" in printed
    assert f"last lines of {tmp_path / 'dagster_home' / 'dagster-dev.log'}" in printed
    assert not still_running(tree), f"left running: {still_running(tree)}"
