"""The DuckDB warehouse: one database file per batch.

DuckDB allows a single writer per database file. Giving every batch (partition) its own file
means runs of different batches never contend for a lock, and replacing a batch is an atomic
rename of a freshly built file: a failed ingestion leaves the previous version untouched, and
re-ingesting a batch replaces it instead of appending duplicates.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import duckdb
import pandas as pd
from filelock import FileLock

from ml_platform.lib.batches import validate_batch_id
from ml_platform.lib.liveness import building_name

T = TypeVar("T")


class Warehouse:
    """The folder of per-batch DuckDB files: `<root>/<batch_id>.duckdb`."""

    def __init__(self, root: Path):
        self.root = root

    def batch_database(self, batch_id: str) -> Path:
        return self.root / f"{validate_batch_id(batch_id)}.duckdb"

    @contextlib.contextmanager
    def writing(self, batch_id: str) -> Iterator[None]:
        """Hold the batch's writer lock: its file is swapped in (ingestion) or written (dbt) by one
        process at a time, even when two runs of the same batch were started by hand."""
        locks = self.root / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        with FileLock(locks / f"{validate_batch_id(batch_id)}.lock"):
            yield

    def replace_batch(self, batch_id: str, build: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Build the batch's database in a new file with `build(con)`, then swap it into place.

        If `build` raises, the new file is removed and the existing database is not touched.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        target = self.batch_database(batch_id)
        building = target.with_name(building_name(target.name, os.getpid(), uuid.uuid4().hex))
        try:
            with duckdb.connect(str(building)) as con:
                result = build(con)
                con.execute("CHECKPOINT")
            with self.writing(batch_id):
                # A dbt process killed mid-write leaves its WAL; DuckDB would refuse the new file
                # beside a WAL that is not its own.
                Path(f"{target}.wal").unlink(missing_ok=True)
                os.replace(building, target)
        finally:
            for leftover in (building, Path(f"{building}.wal")):
                leftover.unlink(missing_ok=True)
        return result

    def read_table(self, batch_ids: Sequence[str], table: str, timeout_s: float = 60.0) -> pd.DataFrame:
        """`table` from each batch's database, stacked in the order given.

        A batch being rebuilt by another run holds its file's write lock for a moment; readers
        wait for it (up to `timeout_s`) rather than fail.
        """
        if not batch_ids:
            raise ValueError(f"no batches given to read {table!r} from")
        frames = []
        for batch_id in batch_ids:
            path = self.batch_database(batch_id)
            if not path.exists():
                raise FileNotFoundError(f"batch {batch_id!r} has no warehouse database at {path}; ingest it first")
            frames.append(_query_when_unlocked(path, f'SELECT * FROM "{table}"', timeout_s))
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]

    def has_table(self, batch_id: str, table: str, timeout_s: float = 60.0) -> bool:
        """Whether the batch's database holds `table` (a re-ingested batch has no features until
        dbt has run on it again)."""
        path = self.batch_database(batch_id)
        if not path.exists():
            return False
        found = _query_when_unlocked(
            path, f"SELECT count(*) AS n FROM information_schema.tables WHERE table_name = '{table}'", timeout_s
        )
        return bool(found["n"].iloc[0])


def _query_when_unlocked(path: Path, sql: str, timeout_s: float) -> pd.DataFrame:
    deadline = time.monotonic() + timeout_s
    delay = 0.05
    while True:
        try:
            with duckdb.connect(str(path), read_only=True) as con:
                return con.execute(sql).df()
        except duckdb.IOException as error:
            if "lock" not in str(error).lower() or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
