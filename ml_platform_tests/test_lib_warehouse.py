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


# ---------------------------------------------------------------- what each batch delivered


def store_delivery(warehouse: Warehouse, batch_id: str, tmp_path, frame, policy: str = "reject"):
    """Ingest `frame` as `batch_id` through the contract and the re-delivery rule, as `raw_batch` does."""
    from ml_platform.lib.config import load_config
    from ml_platform.lib.ingestion import ingest_delivery
    from ml_platform.lib.settings import DEFAULT_CONFIG_PATH

    data = load_config(DEFAULT_CONFIG_PATH).data.model_copy(update={"redelivered_ids": policy})
    path = tmp_path / f"{batch_id}.csv"
    path.write_text(frame.to_csv(index=False))
    with warehouse.delivering():
        return warehouse.replace_batch(
            batch_id,
            lambda con: ingest_delivery(
                path, data, con, batch_id, lambda ids: warehouse.stored_deliveries(ids, data.id_column, batch_id)
            ),
        )


def demo_frame(batch_number: int, rows: int = 30):
    from ml_platform.lib.demo_data import generate_churn_batch

    return generate_churn_batch(batch_number, rows)


def test_the_warehouse_knows_which_ids_and_content_each_batch_delivered(tmp_path):
    warehouse = Warehouse(tmp_path / "warehouse")
    first = store_delivery(warehouse, "batch_0001", tmp_path, demo_frame(1))
    store_delivery(warehouse, "batch_0002", tmp_path, demo_frame(2))

    delivered = warehouse.delivered_ids(["batch_0001", "batch_0002"])
    assert delivered["batch_0001"] == set(demo_frame(1)["customer_id"])
    assert delivered["batch_0002"] == set(demo_frame(2)["customer_id"])
    incoming = demo_frame(2).head(3).rename(columns={"customer_id": "id"})[["id"]]
    stored = {delivery.batch_id: delivery for delivery in warehouse.stored_deliveries(incoming, "customer_id")}
    assert stored["batch_0001"].ids == frozenset() and stored["batch_0001"].content_hash == first.content_hash
    assert stored["batch_0002"].ids == set(incoming["id"]) and stored["batch_0002"].dataset == "churn"


def test_a_refused_re_delivery_leaves_the_warehouse_as_it_was(tmp_path):
    from ml_platform.lib.ingestion import RedeliveryError

    warehouse = Warehouse(tmp_path / "warehouse")
    store_delivery(warehouse, "batch_0001", tmp_path, demo_frame(1))
    before = stored_files(warehouse.root)
    copy = pd_concat(demo_frame(1).head(22), demo_frame(4).head(8))
    with pytest.raises(
        RedeliveryError,
        match=r"batch_0004.csv: batch rejected, 22 of its 30 ids were delivered before \(22 in batch_0001\)",
    ):
        store_delivery(warehouse, "batch_0004", tmp_path, copy)
    assert stored_files(warehouse.root) == before


def test_dropped_re_deliveries_are_left_out_and_counted(tmp_path):
    warehouse = Warehouse(tmp_path / "warehouse")
    store_delivery(warehouse, "batch_0001", tmp_path, demo_frame(1))
    summary = store_delivery(
        warehouse, "batch_0004", tmp_path, pd_concat(demo_frame(1).head(22), demo_frame(4).head(8)), "drop"
    )
    assert (summary.rows, summary.dropped_rows, summary.redelivered_from) == (8, 22, ("batch_0001",))
    assert warehouse.delivered_ids(["batch_0004"])["batch_0004"] == set(demo_frame(4).head(8)["customer_id"])


def test_updated_rows_replace_the_earlier_ones_where_batches_are_read_together(tmp_path):
    warehouse = Warehouse(tmp_path / "warehouse")
    store_delivery(warehouse, "batch_0001", tmp_path, demo_frame(1))
    updated = demo_frame(1).head(5).assign(support_tickets=99)
    summary = store_delivery(warehouse, "batch_0004", tmp_path, pd_concat(updated, demo_frame(4).head(5)), "update")
    assert (summary.rows, summary.replacing_rows) == (10, 5)

    window = warehouse.read_table(["batch_0001", "batch_0004"], "raw_batch")
    assert len(window) == 30 + 10 - 5 and window.attrs["superseded_rows"] == 5
    assert window["customer_id"].is_unique
    assert (window.set_index("customer_id").loc[updated["customer_id"], "support_tickets"] == 99).all()
    # Each batch alone is what it delivered; a re-run of the earlier batch is not refused by the later one.
    assert len(warehouse.read_table(["batch_0001"], "raw_batch")) == 30
    assert store_delivery(warehouse, "batch_0001", tmp_path, demo_frame(1), "update").rows == 30


def pd_concat(*frames):
    import pandas as pd

    return pd.concat(frames, ignore_index=True)
