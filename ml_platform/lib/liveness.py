"""Which runs are dead: a run whose process is gone, and the files such a process leaves behind.

A run executed in the process that started it (`ml-platform run`, `dagster asset materialize`) has no
run launcher that Dagster's run monitoring could ask about it: killed with SIGKILL (or with its
machine), it stays STARTED for ever, blocking its batch's queue and the pool slots it held. So each
such run records its process (pid, host, when the process started) and the next command or sensor
tick asks the operating system whether that process is still the one that started the run.

A pid alone is not enough: the kernel reuses pids, so a live pid whose process started after the run's
process did is another program, and the run's own process is gone. A run recorded on another host is
never judged here (its process table is not this one's).
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

# Process start times are known to the clock tick on Linux, but the boot time they are counted from
# only to the second: two readings of the same process's start may differ by up to a second.
START_TIME_TOLERANCE_SECONDS = 2.0

# A temporary file or folder that names the pid of the process writing it:
# `.batch_0001.duckdb.<pid>-<hex>.building` (and its `.wal`), `parse-<pid>-<hex>` (dbt's parse folder).
_BUILDING = re.compile(r"^\.(?P<batch>.+)\.duckdb\.(?P<pid>\d+)-[0-9a-f]+\.building(\.wal)?$")
_PARSE_DIR = re.compile(r"^parse-(?P<pid>\d+)-[0-9a-f]+$")


@dataclass(frozen=True)
class RunProcess:
    """The process executing a run: its pid on `host`, which had started by `started_by` (epoch seconds)."""

    pid: int
    host: str
    started_by: float


def is_orphaned(process: RunProcess, this_host: str, started_at: Callable[[int], float | None]) -> bool:
    """Whether the run executed by `process` is dead: its pid is gone, or now belongs to a process that
    started after the run's had (a reused pid). `started_at(pid)` is when the live process with that pid
    started, or None when there is none. A process on another host is never judged dead from here."""
    if process.host != this_host:
        return False
    current = started_at(process.pid)
    if current is None:
        return True
    return current > process.started_by + START_TIME_TOLERANCE_SECONDS


def this_host() -> str:
    return socket.gethostname()


def process_started_at(pid: int) -> float | None:
    """When the process `pid` started (epoch seconds), or None when there is no such process.

    Reads /proc (Linux): field 22 of /proc/<pid>/stat counts clock ticks since boot. Where there is no
    /proc the pid's existence is all that is known, and a live pid counts as started at the epoch (so a
    reused pid is taken for the run's own process: a dead run is then missed, never a live one failed).
    """
    if pid <= 0:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return _exists_without_proc(pid)
    # The command name (field 2) is in parentheses and may hold spaces: count fields after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # a zombie has exited; only its parent has not collected it yet
        return None
    ticks = int(fields[19])
    return _boot_time() + ticks / os.sysconf("SC_CLK_TCK")


def _exists_without_proc(pid: int) -> float | None:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return 0.0
    return 0.0


def _boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise OSError("/proc/stat has no btime line")


def dead_writer_leftovers(
    warehouse_dir: Path, dbt_runs_dir: Path, started_at: Callable[[int], float | None]
) -> list[Path]:
    """Temporary files whose writing process is dead: half-built batch databases (`.building` and their
    WAL) in the warehouse and dbt's parse folders. A file whose pid now belongs to a process that started
    after the file was last written was left by an earlier process with that pid."""
    candidates = [
        (path, int(match["pid"])) for path, match in _matching(warehouse_dir, _BUILDING) if path.is_file()
    ] + [(path, int(match["pid"])) for path, match in _matching(dbt_runs_dir, _PARSE_DIR) if path.is_dir()]
    leftovers = []
    for path, pid in candidates:
        try:
            written = path.stat().st_mtime
        except FileNotFoundError:  # its writer finished meanwhile
            continue
        if is_orphaned(RunProcess(pid, "", written), "", started_at):
            leftovers.append(path)
    return sorted(leftovers)


def dbt_run_folders(dbt_runs_dir: Path, run_ids: Iterable[str]) -> list[Path]:
    """The dbt artifact folders of these runs (`<first 8 characters of the run id>-<hex>`)."""
    prefixes = {run_id[:8] for run_id in run_ids}
    if not prefixes or not dbt_runs_dir.is_dir():
        return []
    return sorted(path for path in dbt_runs_dir.iterdir() if path.is_dir() and path.name.split("-", 1)[0] in prefixes)


def _matching(folder: Path, pattern: re.Pattern[str]):
    if not folder.is_dir():
        return []
    return [(path, match) for path in folder.iterdir() if (match := pattern.match(path.name))]


def building_name(database_name: str, pid: int, token: str) -> str:
    """The temporary name a batch database is built under: it names the pid building it, so a
    process killed mid-build leaves a file the next command can tell is nobody's."""
    return f".{database_name}.{pid}-{token}.building"
