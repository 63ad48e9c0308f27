"""The per-batch DuckDB warehouse: atomic replacement, nothing left behind, reads stacked in order."""

from __future__ import annotations

import duckdb
import pytest

from ml_platform.lib.batches import InvalidBatchIdError
from ml_platform.lib.warehouse import Warehouse
from ml_platform_tests.conftest import overlapping_entries


def stored_files(root) -> list[str]:
    """The warehouse's files, without the writer locks' folder."""
    return sorted(path.name for path in root.iterdir() if path.name != ".locks")


def build_rows(n_rows: int, label: str = "a"):
    """A `build` callback that creates table `t` with `n_rows` rows tagged `label`, returning n_rows."""

    def build(con: duckdb.DuckDBPyConnection) -> int:
        con.execute(f"CREATE TABLE t AS SELECT range AS i, '{label}' AS label FROM range({n_rows})")
        return n_rows

    return build


def count_rows(warehouse: Warehouse, batch_id: str) -> int:
    with duckdb.connect(str(warehouse.batch_database(batch_id)), read_only=True) as con:
        return con.execute("SELECT count(*) FROM t").fetchone()[0]


def test_replace_batch_creates_the_database_file_and_returns_the_build_result(tmp_path):
    warehouse = Warehouse(tmp_path / "warehouse")

    result = warehouse.replace_batch("batch_0001", build_rows(5))

    assert result == 5
    assert warehouse.batch_database("batch_0001") == tmp_path / "warehouse" / "batch_0001.duckdb"
    assert warehouse.batch_database("batch_0001").is_file()
    assert count_rows(warehouse, "batch_0001") == 5


def test_replacing_a_batch_again_replaces_instead_of_appending(tmp_path):
    warehouse = Warehouse(tmp_path)
    warehouse.replace_batch("batch_0001", build_rows(5))

    warehouse.replace_batch("batch_0001", build_rows(3))

    assert count_rows(warehouse, "batch_0001") == 3
    assert stored_files(tmp_path) == ["batch_0001.duckdb"]


def test_failed_build_leaves_the_previous_database_byte_for_byte_and_no_temporary_files(tmp_path):
    warehouse = Warehouse(tmp_path)
    warehouse.replace_batch("batch_0001", build_rows(5))
    before = warehouse.batch_database("batch_0001").read_bytes()

    def failing_build(con: duckdb.DuckDBPyConnection) -> None:
        con.execute("CREATE TABLE t AS SELECT range AS i FROM range(1000)")
        raise RuntimeError("contract check failed")

    with pytest.raises(RuntimeError, match="contract check failed"):
        warehouse.replace_batch("batch_0001", failing_build)

    assert warehouse.batch_database("batch_0001").read_bytes() == before
    assert stored_files(tmp_path) == ["batch_0001.duckdb"]


def test_failed_first_build_creates_no_database(tmp_path):
    warehouse = Warehouse(tmp_path)

    def failing_build(con: duckdb.DuckDBPyConnection) -> None:
        raise ValueError("bad batch")

    with pytest.raises(ValueError, match="bad batch"):
        warehouse.replace_batch("batch_0001", failing_build)

    assert stored_files(tmp_path) == []


def test_read_table_stacks_batches_in_the_order_given(tmp_path):
    warehouse = Warehouse(tmp_path)
    warehouse.replace_batch("batch_0001", build_rows(2, "first"))
    warehouse.replace_batch("batch_0002", build_rows(3, "second"))

    stacked = warehouse.read_table(["batch_0002", "batch_0001"], "t")

    assert stacked["label"].tolist() == ["second"] * 3 + ["first"] * 2
    assert stacked["i"].tolist() == [0, 1, 2, 0, 1]
    assert stacked.index.tolist() == list(range(5))


def test_read_table_of_one_batch_is_that_batch(tmp_path):
    warehouse = Warehouse(tmp_path)
    warehouse.replace_batch("batch_0001", build_rows(4))

    assert warehouse.read_table(["batch_0001"], "t")["i"].tolist() == [0, 1, 2, 3]


def test_read_table_of_a_missing_batch_names_the_batch(tmp_path):
    warehouse = Warehouse(tmp_path)
    warehouse.replace_batch("batch_0001", build_rows(2))

    with pytest.raises(FileNotFoundError, match="batch 'batch_0002' has no warehouse database"):
        warehouse.read_table(["batch_0001", "batch_0002"], "t")


def test_warehouse_refuses_an_unsafe_batch_id(tmp_path):
    with pytest.raises(InvalidBatchIdError):
        Warehouse(tmp_path).replace_batch("../escape", build_rows(1))

    assert stored_files(tmp_path) == []


def test_reading_no_batches_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no batches given to read 'features'"):
        Warehouse(tmp_path).read_table([], "features")


def test_has_table_tells_whether_a_batch_has_been_through_dbt(tmp_path):
    warehouse = Warehouse(tmp_path)
    warehouse.replace_batch("b1", lambda con: con.execute("CREATE TABLE raw_batch AS SELECT 1 AS x"))
    assert warehouse.has_table("b1", "raw_batch")
    assert not warehouse.has_table("b1", "features")
    assert not warehouse.has_table("b2", "raw_batch")


def test_one_writer_per_batch_at_a_time(tmp_path):
    warehouse = Warehouse(tmp_path)
    assert overlapping_entries(lambda: warehouse.writing("b1")) == 0
