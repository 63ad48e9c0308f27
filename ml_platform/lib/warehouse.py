"""The DuckDB warehouse: one database file per batch.

DuckDB allows a single writer per database file. Giving every batch (partition) its own file
means runs of different batches never contend for a lock, and replacing a batch is an atomic
rename of a freshly built file: a failed ingestion leaves the previous version untouched, and
re-ingesting a batch replaces it instead of appending duplicates.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import duckdb
import pandas as pd

from ml_platform.lib.batches import validate_batch_id

T = TypeVar("T")


class Warehouse:
    def __init__(self, root: Path):
        self.root = root

    def batch_database(self, batch_id: str) -> Path:
        return self.root / f"{validate_batch_id(batch_id)}.duckdb"

    def replace_batch(self, batch_id: str, build: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Build the batch's database in a new file with `build(con)`, then swap it into place.

        If `build` raises, the new file is removed and the existing database is not touched.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        target = self.batch_database(batch_id)
        building = target.with_name(f".{target.name}.{uuid.uuid4().hex}.building")
        try:
            with duckdb.connect(str(building)) as con:
                result = build(con)
                con.execute("CHECKPOINT")
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
            frames.append(_read_when_unlocked(path, table, timeout_s))
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def _read_when_unlocked(path: Path, table: str, timeout_s: float) -> pd.DataFrame:
    deadline = time.monotonic() + timeout_s
    delay = 0.05
    while True:
        try:
            with duckdb.connect(str(path), read_only=True) as con:
                return con.execute(f'SELECT * FROM "{table}"').df()
        except duckdb.IOException as error:
            if "lock" not in str(error).lower() or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
