"""Which runs are dead (`lib/liveness.py`): the rule on plain values, the operating system's answers on
real processes, and the leftovers of a process killed while it built a batch's database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ml_platform.lib.liveness import (
    RunProcess,
    building_name,
    dbt_run_folders,
    dead_writer_leftovers,
    is_orphaned,
    process_started_at,
)

HOST = "worker-1"


def started(table: dict[int, float]):
    return table.get


@pytest.mark.parametrize(
    ("process", "table", "dead"),
    [
        (RunProcess(100, HOST, 1000.0), {}, True),  # the pid is gone
        (RunProcess(100, HOST, 1000.0), {100: 1000.4}, False),  # the same process (start read to the second)
        (RunProcess(100, HOST, 1000.0), {100: 990.0}, False),  # started before the run: the run's own
        (RunProcess(100, HOST, 1000.0), {100: 1500.0}, True),  # the pid reused by a later process
        (RunProcess(100, "worker-2", 1000.0), {}, False),  # another host's process: never judged here
    ],
    ids=["pid-gone", "same-process", "started-earlier", "pid-reused", "other-host"],
)
def test_a_run_is_orphaned_only_when_its_process_is_gone_or_replaced_on_this_host(process, table, dead):
    assert is_orphaned(process, HOST, started(table)) is dead


def test_another_hosts_process_is_not_even_looked_up():
    looked_up = []
    is_orphaned(RunProcess(100, "worker-2", 1000.0), HOST, lambda pid: looked_up.append(pid))
    assert looked_up == []


def test_the_start_time_of_a_real_process_and_none_once_it_is_killed():
    before = time.time()
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert process_started_at(child.pid) == pytest.approx(before, abs=2.0)
        assert process_started_at(os.getpid()) < before
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert process_started_at(child.pid) is None


def test_a_batch_database_half_built_by_a_killed_process_is_a_leftover_and_a_live_ones_is_not(tmp_path: Path):
    warehouse, dbt_runs = tmp_path / "warehouse", tmp_path / "dbt_runs"
    # A real build through Warehouse.replace_batch, killed (SIGKILL) inside it: its temporary file stays.
    script = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from ml_platform.lib.warehouse import Warehouse

        def build(con):
            con.execute("CREATE TABLE raw AS SELECT 1 AS x")
            con.execute("CHECKPOINT")
            os.kill(os.getpid(), signal.SIGKILL)

        Warehouse(Path({str(warehouse)!r})).replace_batch("batch_0001", build)
        """
    )
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    [left] = [path for path in warehouse.iterdir() if path.name.endswith(".building")]
    live = warehouse / building_name("batch_0002.duckdb", os.getpid(), "ab12")
    live.write_bytes(b"being built")
    dbt_runs.mkdir()
    (dbt_runs / f"parse-{os.getpid()}-cd34ef5").mkdir()
    (dbt_runs / "1a2b3c4d-0011223").mkdir()  # a failed build's artifacts, kept to debug: not the sweep's

    assert dead_writer_leftovers(warehouse, dbt_runs, process_started_at) == [left]


def test_a_reused_pid_does_not_keep_an_old_leftover(tmp_path: Path):
    leftover = tmp_path / building_name("batch_0001.duckdb", os.getpid(), "ab12")
    leftover.write_bytes(b"")
    os.utime(leftover, (0, 0))  # written long before this process (which now has that pid) started

    assert dead_writer_leftovers(tmp_path, tmp_path / "none", process_started_at) == [leftover]


def test_a_runs_dbt_folders_are_found_by_its_id(tmp_path: Path):
    for name in ("d0259ff0-c17c3ff", "d0259ff0-0a0b0c0", "98517ed4-fd18839", "parse-12-abcdef0"):
        (tmp_path / name).mkdir()

    found = dbt_run_folders(tmp_path, ["d0259ff0-bd9b-44a8-a043-0d09e7831cc1"])

    assert [path.name for path in found] == ["d0259ff0-0a0b0c0", "d0259ff0-c17c3ff"]
    assert dbt_run_folders(tmp_path / "missing", ["d0259ff0"]) == []
