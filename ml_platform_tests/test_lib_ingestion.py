"""Batch ingestion: a good batch loads typed; every bad batch is rejected, named, and loads nothing."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from ml_platform.lib.config import DataConfig
from ml_platform.lib.demo_data import generate_churn_batch, write_demo_batches
from ml_platform.lib.ingestion import SQL_TYPES, BatchSummary, BatchValidationError, ingest_batch

ROWS = 40


def table_exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    return con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]).fetchone()[0] > 0


def editable_demo_frame(n_rows: int = ROWS) -> pd.DataFrame:
    """A demo batch as plain objects, so any cell can be set to any text."""
    return generate_churn_batch(1, n_rows).astype(object)


def assert_rejected(path: Path, data: DataConfig, con: duckdb.DuckDBPyConnection, *fragments: str) -> str:
    """Ingesting `path` fails naming the file and each fragment, and leaves no table behind."""
    with pytest.raises(BatchValidationError) as error:
        ingest_batch(path, data, con)
    message = str(error.value)
    assert message.startswith(f"{path}: batch rejected")
    for fragment in fragments:
        assert fragment in message
    assert error.value.path == path
    assert not table_exists(con, "raw_batch")
    assert not table_exists(con, "landed")
    return message


# ---------------------------------------------------------------- good batches


def test_good_csv_batch_loads_with_contract_types_rows_nulls_and_hash(tmp_path, data, con):
    [path] = write_demo_batches(tmp_path, 1, ROWS)
    expected = generate_churn_batch(1, ROWS)

    summary = ingest_batch(path, data, con)

    column_types = dict(
        con.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = 'raw_batch' ORDER BY ordinal_position"
        ).fetchall()
    )
    assert column_types == {name: SQL_TYPES[spec.type] for name, spec in data.columns.items()}
    assert summary == BatchSummary(
        rows=ROWS,
        columns=list(data.columns),
        content_hash=hashlib.sha256(path.read_bytes()).hexdigest(),
        null_counts={name: int(count) for name, count in expected.isna().sum().items()},
        # An empty field in a CSV is a blank: in the number columns, each is one of those nulls.
        blank_counts={
            name: int(expected[name].isna().sum())
            for name, spec in data.columns.items()
            if spec.type in ("integer", "float")
        },
    )
    assert summary.null_counts["total_charges"] > 0
    assert con.execute("SELECT count(*) FROM raw_batch").fetchone()[0] == ROWS


def test_good_batch_keeps_the_file_row_order_and_values(tmp_path, data, con):
    [path] = write_demo_batches(tmp_path, 1, ROWS)

    ingest_batch(path, data, con)

    loaded = con.execute("SELECT * FROM raw_batch").df()
    expected = generate_churn_batch(1, ROWS)
    assert loaded["customer_id"].tolist() == expected["customer_id"].tolist()
    assert loaded["monthly_charges"].tolist() == expected["monthly_charges"].tolist()
    assert loaded["churned"].tolist() == expected["churned"].tolist()


def test_ingest_creates_the_table_named_by_the_caller(tmp_path, data, con):
    [path] = write_demo_batches(tmp_path, 1, ROWS)

    ingest_batch(path, data, con, table="typed_batch")

    assert table_exists(con, "typed_batch")
    assert not table_exists(con, "raw_batch")


def test_good_parquet_batch_loads_with_contract_types(tmp_path, data, con):
    parquet = data.model_copy(update={"file_format": "parquet"})
    [path] = write_demo_batches(tmp_path, 1, ROWS, file_format="parquet")

    summary = ingest_batch(path, parquet, con)

    column_types = dict(
        con.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'raw_batch'"
        ).fetchall()
    )
    assert column_types == {name: SQL_TYPES[spec.type] for name, spec in data.columns.items()}
    assert summary.rows == ROWS
    assert summary.content_hash == hashlib.sha256(path.read_bytes()).hexdigest()
    assert summary.null_counts["age"] == int(generate_churn_batch(1, ROWS)["age"].isna().sum())


# ---------------------------------------------------------------- bad content, checked against the contract


def _set(column: str, row_index: int, value: object) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def edit(frame: pd.DataFrame) -> pd.DataFrame:
        frame.loc[row_index, column] = value
        return frame

    return edit


def _duplicate_id(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[7, "customer_id"] = frame.loc[2, "customer_id"]
    return frame


def _single_class(frame: pd.DataFrame) -> pd.DataFrame:
    frame["churned"] = 0
    return frame


@pytest.mark.parametrize(
    ("edit", "fragments"),
    [
        pytest.param(
            lambda frame: frame.drop(columns=["region"]),
            ["missing column(s): region", "expected columns: customer_id, tenure_months"],
            id="missing-column",
        ),
        pytest.param(
            lambda frame: frame.assign(favourite_colour="red"),
            ["unexpected column(s) not in the contract: favourite_colour", "expected columns: customer_id"],
            id="unexpected-column",
        ),
        pytest.param(
            _set("tenure_months", 2, "abc"),
            ["column 'tenure_months': expected integer values; data row 3 has 'abc'"],
            id="text-in-integer-column",
        ),
        pytest.param(
            _set("monthly_charges", 4, "cheap"),
            ["column 'monthly_charges': expected finite float values; data row 5 has 'cheap'"],
            id="text-in-float-column",
        ),
        pytest.param(
            _set("contract_type", 2, "weekly"),
            [
                "column 'contract_type': expected one of ['month-to-month', 'one_year', 'two_year']; "
                "data row 3 has 'weekly'"
            ],
            id="unknown-category",
        ),
        pytest.param(
            _set("age", 2, 150),
            ["column 'age': expected values <= 120; data row 3 has '150'"],
            id="above-max",
        ),
        pytest.param(
            _set("num_products", 9, 0),
            ["column 'num_products': expected values >= 1; data row 10 has '0'"],
            id="below-min",
        ),
        pytest.param(
            _set("region", 2, None),
            ["column 'region': expected a value in every row (nullable: false); data row 3 has empty"],
            id="null-in-non-nullable-column",
        ),
        pytest.param(
            _duplicate_id,
            ["column 'customer_id': expected unique ids; 'C0001-0000002' appears in data rows 3, 8"],
            id="duplicate-ids",
        ),
        pytest.param(
            _single_class,
            ["target 'churned': expected at least two classes to train a classifier; found only [0]"],
            id="single-class-target",
        ),
    ],
)
def test_batch_breaking_the_contract_is_rejected_naming_column_row_and_expectation(
    tmp_path, data, con, edit, fragments
):
    path = tmp_path / "batch_0001.csv"
    edit(editable_demo_frame()).to_csv(path, index=False)

    assert_rejected(path, data, con, *fragments)


def test_every_offending_row_is_counted(tmp_path, data, con):
    frame = editable_demo_frame()
    frame.loc[[3, 5, 8], "region"] = "mars"
    path = tmp_path / "batch_0001.csv"
    frame.to_csv(path, index=False)

    assert_rejected(path, data, con, "column 'region'", "data row 4 has 'mars' (3 rows affected)")


def test_rejected_batch_leaves_an_earlier_table_untouched(tmp_path, data, con):
    [good] = write_demo_batches(tmp_path, 1, ROWS)
    ingest_batch(good, data, con)
    bad = tmp_path / "batch_0002.csv"
    _set("tenure_months", 0, "abc")(editable_demo_frame(ROWS + 5)).to_csv(bad, index=False)

    with pytest.raises(BatchValidationError):
        ingest_batch(bad, data, con)

    assert con.execute("SELECT count(*) FROM raw_batch").fetchone()[0] == ROWS


@pytest.mark.parametrize(("column", "value"), [("tenure_months", "3.5"), ("churned", "0.6")])
def test_fractional_number_in_an_integer_column_is_rejected(tmp_path, data, con, column, value):
    path = tmp_path / "batch_0001.csv"
    _set(column, 2, value)(editable_demo_frame()).to_csv(path, index=False)

    assert_rejected(path, data, con, f"column '{column}': expected integer values; data row 3 has '{value}'")


# ---------------------------------------------------------------- damaged files


def test_missing_file_is_rejected_naming_it(tmp_path, data, con):
    assert_rejected(tmp_path / "batch_0009.csv", data, con, "file not found")


def test_empty_file_is_rejected(tmp_path, data, con):
    path = tmp_path / "batch_0001.csv"
    path.write_bytes(b"")

    assert_rejected(path, data, con, "file is empty (0 bytes); expected a header and data rows")


def test_header_only_file_is_rejected(tmp_path, data, con):
    path = tmp_path / "batch_0001.csv"
    path.write_text(",".join(data.columns) + "\n")

    assert_rejected(path, data, con, "file has a header but no data rows")


def test_truncated_csv_is_rejected_naming_the_line(tmp_path, data, con):
    [good] = write_demo_batches(tmp_path, 1, ROWS)
    lines = good.read_bytes().split(b"\n")
    # The header, four whole rows, then the fifth row cut after its third field.
    cut = b"\n".join(lines[:5]) + b"\n" + b",".join(lines[5].split(b",")[:3])
    path = tmp_path / "batch_0002.csv"
    path.write_bytes(cut)

    assert_rejected(path, data, con, "Line: 6", "Expected Number of Columns: 12")


def test_non_utf8_header_is_rejected_saying_utf8_was_expected(tmp_path, data, con):
    [good] = write_demo_batches(tmp_path, 1, ROWS)
    path = tmp_path / "batch_0002.csv"
    path.write_bytes(good.read_bytes().replace(b"region", "régïon".encode("latin-1"), 1))

    assert_rejected(path, data, con, "header is not UTF-8 text", "expected a UTF-8 CSV")


def test_non_utf8_category_value_is_rejected_naming_the_line(tmp_path, data, con):
    frame = editable_demo_frame(2000)
    frame.loc[1499, "region"] = "nörth"
    path = tmp_path / "batch_0001.csv"
    path.write_bytes(frame.to_csv(index=False).encode("latin-1"))

    assert_rejected(path, data, con, "Line: 1501", "not utf-8 encoded")


def test_non_utf8_value_in_an_early_row_is_blamed_on_its_row_not_the_header(tmp_path, data, con):
    frame = editable_demo_frame()
    frame.loc[2, "region"] = "nörth"
    path = tmp_path / "batch_0001.csv"
    path.write_bytes(frame.to_csv(index=False).encode("latin-1"))

    message = assert_rejected(path, data, con)

    assert "header" not in message
    assert "Line: 4" in message or "data row 3" in message


def test_truncated_parquet_is_rejected_naming_the_file(tmp_path, data, con):
    parquet = data.model_copy(update={"file_format": "parquet"})
    [good] = write_demo_batches(tmp_path, 1, ROWS, file_format="parquet")
    path = tmp_path / "batch_0002.parquet"
    path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])

    assert_rejected(path, parquet, con, "not a readable Parquet file")


def test_parquet_breaking_the_contract_is_rejected_like_csv(tmp_path, data, con):
    parquet = data.model_copy(update={"file_format": "parquet"})
    path = tmp_path / "batch_0001.parquet"
    _set("contract_type", 2, "weekly")(generate_churn_batch(1, ROWS)).to_parquet(path, index=False)

    assert_rejected(path, parquet, con, "column 'contract_type'", "data row 3 has 'weekly'")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_float_is_rejected_naming_the_column(tmp_path, data, value):
    frame = generate_churn_batch(1, 50)
    frame["total_charges"] = frame["total_charges"].astype(object)
    frame.loc[2, "total_charges"] = value
    path = tmp_path / "batch.csv"
    frame.to_csv(path, index=False)
    con = duckdb.connect()
    with pytest.raises(BatchValidationError, match=r"column 'total_charges': expected finite float values; data row 3"):
        ingest_batch(path, data, con)


def test_an_integer_column_with_allowed_values_takes_them_however_written_and_refuses_others(tmp_path, con):
    data = DataConfig.model_validate(
        {
            "name": "grades",
            "task": "classification",
            "target": "grade",
            "id_column": "id",
            "columns": {
                "id": {"type": "string", "nullable": False},
                "grade": {"type": "integer", "nullable": False, "allowed": [1, 2, 3]},
            },
        }
    )
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    good.write_text("id,grade\na,1\nb, 2\nc,3.0\n")
    bad.write_text("id,grade\na,1\nb,2\nc,4\n")

    assert ingest_batch(good, data, con, table="grades").rows == 3
    assert con.execute("SELECT list(grade ORDER BY id) FROM grades").fetchone()[0] == [1, 2, 3]
    assert_rejected(bad, data, con, "column 'grade': expected one of [1, 2, 3]; data row 3 has '4'")
