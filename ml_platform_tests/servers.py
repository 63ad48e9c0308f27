"""Real servers the tests start on 127.0.0.1 and stop: an HTTP endpoint that records what it receives."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class RecordingHTTPServer(ThreadingHTTPServer):
    """Answers the first POSTs with `first` statuses, every later one with `status`; keeps what it received.

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
