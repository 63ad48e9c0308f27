"""Real servers the tests start on 127.0.0.1 and stop: an HTTP endpoint that records what it receives,
and an MLflow tracking server."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MLFLOW = str(Path(sys.executable).parent / "mlflow")


class RecordingHTTPServer(ThreadingHTTPServer):
    """Answers the first requests with `first` statuses, every later one with `status`; keeps what it
    received (a GET with `json` None).

    `stop()` closes its port (connections are refused, as from a receiver that is down) and `start()`
    listens on the same port again, keeping what it received.
    """

    def __init__(self, status: int, first: tuple[int, ...] = (), port: int = 0) -> None:
        self.status = status
        self.first = list(first)
        self.received: list[dict[str, Any]] = []
        super().__init__(("127.0.0.1", port), _RecordingHandler)
        self.running = False

    def start(self) -> RecordingHTTPServer:
        if not self.running:
            if self.socket.fileno() < 0:  # stopped: listen on the same port again
                self.socket = socket.socket(self.address_family, self.socket_type)
                self.server_bind()
                self.server_activate()
            threading.Thread(target=self.serve_forever, daemon=True).start()
            self.running = True
        return self

    def stop(self) -> None:
        if self.running:
            self.shutdown()
            self.running = False
        self.socket.close()

    def next_status(self) -> int:
        return self.first.pop(0) if self.first else self.status

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


class _RecordingHandler(BaseHTTPRequestHandler):
    server: RecordingHTTPServer

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append({"path": self.path, "headers": dict(self.headers), "json": json.loads(body)})
        self.send_response(self.server.next_status())
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        self.server.received.append({"path": self.path, "headers": dict(self.headers), "json": None})
        self.send_response(self.server.next_status())
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # keep the test output quiet
        pass


@contextmanager
def http_servers() -> Iterator[Callable[..., RecordingHTTPServer]]:
    """Start recording servers (`start(status)`); all are shut down on exit."""
    servers: list[RecordingHTTPServer] = []

    def start(status: int = 200, first: tuple[int, ...] = (), port: int = 0) -> RecordingHTTPServer:
        server = RecordingHTTPServer(status, first, port)
        servers.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


def wait_for(condition: Callable[[], Any], timeout_s: float, what: str, every_s: float = 0.5) -> Any:
    """Poll every `every_s` until `condition()` is truthy and return it; fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def free_port() -> int:
    """A port nothing listens on at the moment of asking."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


@contextmanager
def mlflow_server(directory: Path, backend_store_uri: str | None = None, timeout_s: float = 120) -> Iterator[str]:
    """A real `mlflow server` on 127.0.0.1 with its store (`backend_store_uri`, by default
    `directory/server.db`) and served artifacts (`directory/artifacts/`); yields its URL once
    `/health` answers.

    It runs in a session of its own and the whole process group (uvicorn and its worker) is stopped
    on exit: SIGTERM, then SIGKILL after 10 s. Its output is in `directory/server.log`.
    """
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [MLFLOW, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    command += ["--backend-store-uri", backend_store_uri or f"sqlite:///{directory / 'server.db'}"]
    command += ["--artifacts-destination", str(directory / "artifacts"), "--serve-artifacts"]
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
    # No usage telemetry (no internet here) and no GenAI job runner (seven huey consumers).
    env |= {"MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = directory / "server.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            command, cwd=directory, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: process.poll() is not None or answers(f"{url}/health"), timeout_s, f"mlflow server at {url}")
        assert process.poll() is None, f"mlflow server exited {process.returncode}:\n{log.read_text()[-3000:]}"
        yield url
    finally:
        _stop_group(process)


def _stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the process group `process` leads, SIGKILL to what is left after 10 s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            process.poll()  # reap the leader, so an empty group reads as gone
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
