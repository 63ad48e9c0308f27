"""The DuckDB warehouse: one database file per batch.

DuckDB allows a single writer per database file. Giving every batch (partition) its own file
means runs of different batches never contend for a lock, and replacing a batch is an atomic
rename of a freshly built file: a failed ingestion leaves the previous version untouched, and
re-ingesting a batch replaces it instead of appending duplicates.

Each batch's file also records what the batch delivered (`batch_delivery`: its data set, content
hash, id column and what the re-delivery rule did; the ids are those of its `raw_batch`), so the
warehouse knows, per data set, which ids and which content every stored batch delivered, and that
record is swapped in atomically with the rows it describes.
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

from ml_platform.lib.batches import InvalidBatchIdError, validate_batch_id
from ml_platform.lib.liveness import building_name
from ml_platform.lib.redelivery import StoredDelivery

T = TypeVar("T")
# The one-row table in each batch's file that says what the batch delivered (written by ingestion).
DELIVERY_TABLE = "batch_delivery"
RAW_TABLE = "raw_batch"


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

    @contextlib.contextmanager
    def delivering(self) -> Iterator[None]:
        """Hold the warehouse's delivery lock: one batch at a time is checked against the stored
        batches and swapped in, so two batches holding the same ids, ingested at once, cannot both be
        stored without seeing each other."""
        locks = self.root / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        with FileLock(locks / "deliveries.lock"):
            yield

    def stored_batches(self) -> list[str]:
        """The batch ids with a database in the warehouse, in name order."""
        if not self.root.is_dir():
            return []
        found = []
        for path in sorted(self.root.glob("*.duckdb")):
            try:
                found.append(validate_batch_id(path.stem))
            except InvalidBatchIdError:
                continue
        return found

    def stored_deliveries(
        self, incoming_ids: pd.DataFrame, id_column: str, exclude: str | None = None, timeout_s: float = 60.0
    ) -> list[StoredDelivery]:
        """What every stored batch but `exclude` delivered, with the ids of `incoming_ids` (column `id`)
        it holds too.

        The overlap is computed inside each batch's database, so only the shared ids reach Python.
        Ids are compared as text: a contract that changed an id's type still finds it. A batch stored
        before deliveries were recorded has no data set or content hash, and `id_column` as its id.
        """
        deliveries = []
        for batch_id in self.stored_batches():
            if batch_id == exclude:
                continue

            def overlap(con: duckdb.DuckDBPyConnection, batch_id: str = batch_id) -> StoredDelivery:
                record = _delivery_record(con)
                column = (record or {}).get("id_column") or id_column
                ids: frozenset = frozenset()
                if _has_column(con, RAW_TABLE, column):
                    con.register("incoming_ids", incoming_ids)
                    shared = con.execute(
                        f'SELECT i.id FROM incoming_ids i SEMI JOIN "{RAW_TABLE}" r '
                        f'ON CAST(r."{column}" AS VARCHAR) = CAST(i.id AS VARCHAR)'
                    ).fetchall()
                    ids = frozenset(row[0] for row in shared)
                return StoredDelivery(
                    batch_id=batch_id,
                    dataset=(record or {}).get("dataset"),
                    content_hash=(record or {}).get("content_hash"),
                    ids=ids,
                )

            deliveries.append(_when_unlocked(self.batch_database(batch_id), overlap, timeout_s))
        return deliveries

    def delivered_ids(self, batch_ids: Sequence[str], timeout_s: float = 60.0) -> dict[str, frozenset]:
        """The ids each batch delivered (the ids of its stored rows, after the re-delivery rule), by batch.

        What the warehouse holds, to inspect it (the champion decision uses the ids each model recorded
        it was fitted on instead). Under the `update` policy a batch's ids may also be in a later batch,
        whose rows replace its own where both are read.
        """
        delivered = {}
        for batch_id in batch_ids:
            path = self.batch_database(batch_id)
            if not path.exists():
                raise FileNotFoundError(f"batch {batch_id!r} has no warehouse database at {path}; ingest it first")

            def ids(con: duckdb.DuckDBPyConnection, batch_id: str = batch_id) -> frozenset:
                column = (_delivery_record(con) or {}).get("id_column")
                if column is None:
                    raise ValueError(f"batch {batch_id!r} was stored before deliveries were recorded: ingest it again")
                return frozenset(row[0] for row in con.execute(f'SELECT "{column}" FROM "{RAW_TABLE}"').fetchall())

            delivered[batch_id] = _when_unlocked(path, ids, timeout_s)
        return delivered

    def content_hashes(self, batch_ids: Sequence[str], timeout_s: float = 60.0) -> dict[str, str | None]:
        """The sha256 of the file each batch was ingested from, by batch (None for a batch stored before
        deliveries were recorded): what a model trained on them records, to be rebuilt from the same files."""
        return {
            batch_id: (_when_unlocked(self.batch_database(batch_id), _delivery_record, timeout_s) or {}).get(
                "content_hash"
            )
            for batch_id in batch_ids
        }

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

    def write_table(self, batch_id: str, table: str, frame: pd.DataFrame) -> None:
        """Replace `table` in the batch's existing database with `frame`, under the batch's writer lock.

        One transaction: a reader sees the previous table or the new one, never a half-written one.
        """
        path = self.batch_database(batch_id)
        if not path.exists():
            raise FileNotFoundError(f"batch {batch_id!r} has no warehouse database at {path}; ingest it first")
        with self.writing(batch_id), duckdb.connect(str(path)) as con:
            con.register("new_rows", frame)
            con.execute("BEGIN TRANSACTION")
            con.execute(f'CREATE OR REPLACE TABLE "{table}" AS SELECT * FROM new_rows')
            con.execute("COMMIT")

    def read_table(self, batch_ids: Sequence[str], table: str, timeout_s: float = 60.0) -> pd.DataFrame:
        """`table` from each batch's database, stacked in the order given.

        No row is read twice: a row whose id a later batch in `batch_ids` delivered again (the
        re-delivery policy `update`) is replaced by that later row, so a cumulative window reads each id
        once, as its latest batch has it. `attrs["superseded_rows"]` says how many rows were left out.

        A batch being rebuilt by another run holds its file's write lock for a moment; readers
        wait for it (up to `timeout_s`) rather than fail.
        """
        if not batch_ids:
            raise ValueError(f"no batches given to read {table!r} from")
        frames, id_columns = [], set()
        for batch_id in batch_ids:
            path = self.batch_database(batch_id)
            if not path.exists():
                raise FileNotFoundError(f"batch {batch_id!r} has no warehouse database at {path}; ingest it first")

            def read(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
                id_columns.add((_delivery_record(con) or {}).get("id_column"))
                return con.execute(f'SELECT * FROM "{table}"').df()

            frames.append(_when_unlocked(path, read, timeout_s))
        if len(frames) == 1:
            return frames[0]
        stacked = pd.concat(frames, ignore_index=True)
        superseded = 0
        if len(id_columns) == 1 and (id_column := next(iter(id_columns))) in stacked.columns:
            latest = ~stacked.duplicated(subset=[id_column], keep="last")
            superseded = int((~latest).sum())
            if superseded:
                stacked = stacked[latest].reset_index(drop=True)
        stacked.attrs["superseded_rows"] = superseded
        return stacked

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


def _delivery_record(con: duckdb.DuckDBPyConnection) -> dict | None:
    """The batch's delivery record, or None for a batch stored before they were recorded."""
    if not _has_column(con, DELIVERY_TABLE, "content_hash"):
        return None
    cursor = con.execute(f'SELECT * FROM "{DELIVERY_TABLE}" LIMIT 1')
    names, rows = [column[0] for column in cursor.description], cursor.fetchall()
    return dict(zip(names, rows[0], strict=True)) if rows else None


def _has_column(con: duckdb.DuckDBPyConnection, table: str, column: str) -> bool:
    return bool(
        con.execute(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = ? AND column_name = ?",
            [table, column],
        ).fetchall()[0][0]
    )


def _query_when_unlocked(path: Path, sql: str, timeout_s: float) -> pd.DataFrame:
    return _when_unlocked(path, lambda con: con.execute(sql).df(), timeout_s)


def _when_unlocked(path: Path, read: Callable[[duckdb.DuckDBPyConnection], T], timeout_s: float) -> T:
    """`read(con)` on the database opened read-only, waiting (bounded) while a writer holds it."""
    deadline = time.monotonic() + timeout_s
    delay = 0.05
    while True:
        try:
            with duckdb.connect(str(path), read_only=True) as con:
                return read(con)
        except duckdb.IOException as error:
            if "lock" not in str(error).lower() or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
