"""Measuring one process (tree): wall time, peak RSS of the process and its descendants, its JSON line.

The driver runs every measured variant as a fresh subprocess through `run_measured`; a sampler thread
sums the RSS of the process tree every 50 ms and keeps the maximum.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

SAMPLE_INTERVAL_S = 0.05


def tree_of(process: psutil.Process) -> list[psutil.Process]:
    """The process and all its descendants (empty when it has exited), without copies caught between
    fork and exec (see `without_unexeced_forks`)."""
    try:
        return without_unexeced_forks([process, *process.children(recursive=True)])
    except psutil.Error:
        return []


def without_unexeced_forks(processes: list[psutil.Process]) -> list[psutil.Process]:
    """`processes` without children that still run their parent's command line: a fork (or vfork) caught
    before its exec shares its parent's pages, and counting its RSS would count the parent twice (a
    600 MB process starting `git` would show as 1.2 GB for a moment)."""
    kept = []
    for process in processes:
        try:
            parent = process.parent()
            if parent is not None and process.cmdline() == parent.cmdline():
                continue
        except psutil.Error:
            continue
        kept.append(process)
    return kept


def rss_of(processes: Iterable[psutil.Process]) -> int:
    """Summed RSS in bytes; processes that exit while being read count as 0."""
    total = 0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            total += process.memory_info().rss
    return total


def _busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (all cores)."""
    times = psutil.cpu_times()
    return sum(getattr(times, name, 0.0) for name in ("user", "nice", "system", "irq", "softirq", "steal"))


def _own_cpu_seconds() -> float:
    times = psutil.Process().cpu_times()
    return times.user + times.system


class PeakRssSampler:
    """Every `interval` seconds, sum the RSS of `select()` and keep the maximum (`peak_bytes`).

    `select` returns the processes to count at that moment: a subprocess and its descendants, or the
    run worker tree of a launched run. Use as a context manager around the measured work. It also adds
    up the CPU time of the processes it saw (`cpu_s`) and, from the machine's busy time, how many cores
    other processes kept busy meanwhile (`other_cores`): on a shared machine that is the noise.
    """

    def __init__(self, select: Callable[[], Iterable[psutil.Process]], interval: float = SAMPLE_INTERVAL_S):
        self.select = select
        self.interval = interval
        self.peak_bytes = 0
        self.samples = 0
        self.max_processes = 0
        self.other_cores: float | None = None
        self._cpu_by_pid: dict[int, float] = {}
        self.names_by_pid: dict[int, str] = {}  # the executable of every process counted, for the record
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="peak-rss", daemon=True)

    @property
    def cpu_s(self) -> float:
        return sum(self._cpu_by_pid.values())

    def sample(self) -> None:
        processes = list(self.select())
        self.max_processes = max(self.max_processes, len(processes))
        self.peak_bytes = max(self.peak_bytes, rss_of(processes))
        for process in processes:
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                self._cpu_by_pid[process.pid] = times.user + times.system
                if process.pid not in self.names_by_pid:
                    self.names_by_pid[process.pid] = process.name()
        self.samples += 1

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRssSampler:
        self._started = (time.perf_counter(), _busy_seconds(), _own_cpu_seconds())
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        started, busy, own = self._started
        elapsed = time.perf_counter() - started
        others = (_busy_seconds() - busy) - (_own_cpu_seconds() - own) - self.cpu_s
        self.other_cores = max(0.0, others / elapsed) if elapsed > 0 else None


@dataclass
class Measured:
    """One run of one variant."""

    ok: bool
    wall_s: float
    peak_rss_bytes: int
    returncode: int | None
    report: dict[str, Any] = field(default_factory=dict)  # the subprocess's own JSON line, if any
    error: str = ""  # the last lines of stderr (or why it failed)
    extra: dict[str, Any] = field(default_factory=dict)  # variant-specific figures (launch latency, ...)


def last_json_line(text: str) -> dict[str, Any]:
    """The last stdout line that is a JSON object, or {}."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    return {}


def tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def kill_group(process: subprocess.Popen, grace_s: float = 30.0) -> None:
    """SIGTERM the process group `process` leads (started with start_new_session), then SIGKILL if needed."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def run_measured(
    command: Sequence[str], env: dict[str, str], cwd: Path, timeout_s: float, log_dir: Path | None = None
) -> Measured:
    """Run `command` as a fresh process (its own session), timing it from spawn to exit and sampling the
    peak RSS of its process tree. Output goes to files, so a chatty process never blocks on a pipe."""
    with tempfile.TemporaryDirectory(prefix="bench-out-", dir=log_dir) as out_dir:
        stdout_path, stderr_path = Path(out_dir) / "stdout", Path(out_dir) / "stderr"
        with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
            started = time.perf_counter()
            process = subprocess.Popen(
                list(command), env=env, cwd=cwd, stdout=stdout, stderr=stderr, start_new_session=True
            )
            handle = psutil.Process(process.pid)
            timed_out = False
            with PeakRssSampler(lambda: tree_of(handle)) as sampler:
                try:
                    returncode = process.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    timed_out = True
                    kill_group(process, grace_s=10)
                    returncode = process.returncode
            wall_s = time.perf_counter() - started
        out = stdout_path.read_text(errors="replace")
        err = stderr_path.read_text(errors="replace")
    report = last_json_line(out)
    ok = not timed_out and returncode == 0 and report.get("success", True) is not False
    error = ""
    if timed_out:
        error = f"timed out after {timeout_s:.0f} s\n{tail(err)}"
    elif not ok:
        error = f"exit code {returncode}\n{tail(err) or tail(out)}"
    extra = {"cpu_s": sampler.cpu_s, "other_cores": sampler.other_cores}
    return Measured(ok, wall_s, sampler.peak_bytes, returncode, report, error, extra)
