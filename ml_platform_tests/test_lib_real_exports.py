"""Ingestion of files as people export them: Excel's "CSV UTF-8" (a byte-order mark, CRLF), a
customer-churn export with a space for a missing number, padded fields, a customer code column,
and batches too small to split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml_platform.lib.config import DataConfig, TrainingConfig
from ml_platform.lib.ingestion import BatchValidationError, ingest_batch, ingestion_code_version, minimum_rows_to_split
from ml_platform.lib.training import carve_validation, split_train_test

TELCO_CONTRACT = {
    "name": "telco",
    "task": "classification",
    "target": "SeniorCitizen",
    "id_column": "customerID",
    "columns": {
        "customerID": {"type": "string", "nullable": False},
        "gender": {"type": "category", "nullable": False, "allowed": ["Female", "Male"]},
        "SeniorCitizen": {"type": "integer", "nullable": False, "min": 0, "max": 1},
        "Partner": {"type": "category", "nullable": False, "allowed": ["No", "Yes"]},
        "PaperlessBilling": {"type": "boolean", "nullable": False},
        "tenure": {"type": "integer", "nullable": False},
        "TotalCharges": {"type": "float"},
        "Churn": {"type": "category", "nullable": False, "allowed": ["No", "Yes"]},
    },
}


def telco_frame(rows: int = 40) -> pd.DataFrame:
    """Rows like the public Telco customer-churn export: text codes, Yes/No, `TotalCharges` as text."""
    rng = np.random.default_rng(3)
    total = rng.uniform(18, 8000, rows).round(2).astype(str).astype(object)
    return pd.DataFrame(
        {
            "customerID": [f"{7590 + i}-VHVEG" for i in range(rows)],
            "gender": rng.choice(["Female", "Male"], rows),
            "SeniorCitizen": np.arange(rows) % 2,
            "Partner": rng.choice(["No", "Yes"], rows),
            "PaperlessBilling": rng.choice(["Yes", "No"], rows),
            "tenure": rng.integers(0, 73, rows),
            "TotalCharges": total,
            "Churn": rng.choice(["No", "Yes"], rows),
        }
    )


def excel_csv(frame: pd.DataFrame, path: Path) -> Path:
    """What Excel's "CSV UTF-8" and pandas' `to_csv(encoding="utf-8-sig")` write: a BOM, CRLF."""
    frame.to_csv(path, index=False, encoding="utf-8-sig", lineterminator="\r\n")
    return path


@pytest.fixture(scope="module")
def telco() -> DataConfig:
    return DataConfig.model_validate(TELCO_CONTRACT)


def test_a_csv_with_a_byte_order_mark_and_crlf_is_accepted(tmp_path, telco, con):
    path = excel_csv(telco_frame(), tmp_path / "batch.csv")
    assert path.read_bytes().startswith(b"\xef\xbb\xbfcustomerID,") and b"\r\n" in path.read_bytes()

    summary = ingest_batch(path, telco, con)

    assert summary.rows == 40
    assert con.execute('SELECT "customerID" FROM raw_batch LIMIT 1').fetchone() == ("7590-VHVEG",)


def test_a_blank_in_a_float_column_is_a_missing_value_counted_in_the_summary(tmp_path, telco, con):
    frame = telco_frame()
    frame.loc[[3, 17], "TotalCharges"] = " "  # how the Telco export writes a bill not yet totalled
    frame.loc[21, "TotalCharges"] = ""

    summary = ingest_batch(excel_csv(frame, tmp_path / "batch.csv"), telco, con)

    assert summary.blank_counts["TotalCharges"] == 3
    assert summary.null_counts["TotalCharges"] == 3
    assert con.execute('SELECT count(*) FROM raw_batch WHERE "TotalCharges" IS NULL').fetchone() == (3,)


def test_a_blank_number_in_a_column_that_is_not_nullable_is_refused_by_row(tmp_path, telco, con):
    frame = telco_frame()
    frame["tenure"] = frame["tenure"].astype(object)
    frame.loc[4, "tenure"] = "  "

    with pytest.raises(BatchValidationError, match=r"column 'tenure': expected a value in every row .* data row 5"):
        ingest_batch(excel_csv(frame, tmp_path / "batch.csv"), telco, con)


def test_padding_is_stripped_for_categories_booleans_strings_and_numbers(tmp_path, telco, con):
    frame = telco_frame().astype(object)
    frame.loc[0, ["customerID", "gender", "Partner", "PaperlessBilling", "tenure", "TotalCharges"]] = [
        " 7590-VHVEG ",
        " Female",
        " Yes ",
        "No ",
        " 12 ",
        " 29.85 ",
    ]

    ingest_batch(excel_csv(frame, tmp_path / "batch.csv"), telco, con)

    stored = con.execute(
        'SELECT "customerID", gender, "Partner", "PaperlessBilling", tenure, "TotalCharges" FROM raw_batch LIMIT 1'
    ).fetchone()
    assert stored == ("7590-VHVEG", "Female", "Yes", False, 12, 29.85)


def test_a_text_column_unique_per_row_is_reported_unless_marked_identifier(tmp_path, con):
    with_code = {
        **TELCO_CONTRACT,
        "id_column": "row",
        "columns": {"row": {"type": "integer"}, **TELCO_CONTRACT["columns"]},
    }
    path = excel_csv(telco_frame().rename_axis("row").reset_index(), tmp_path / "batch.csv")

    reported = ingest_batch(path, DataConfig.model_validate(with_code), con)
    with_code["columns"]["customerID"] = {"type": "string", "nullable": False, "role": "identifier"}
    marked = ingest_batch(path, DataConfig.model_validate(with_code), con)

    assert reported.identifier_like_columns == ("customerID",)
    assert marked.identifier_like_columns == ()


@pytest.mark.parametrize(
    ("test_size", "validation_size", "classes", "minimum"),
    [(0.2, 0.25, 2, 7), (0.2, 0.25, 3, 12), (0.2, 0.25, None, 3), (0.5, 0.5, 2, 8), (0.1, 0.1, 2, 13)],
)
def test_the_minimum_rows_to_split_follows_the_shares_and_the_classes(test_size, validation_size, classes, minimum):
    training = TrainingConfig(test_size=test_size, validation_size=validation_size)

    assert minimum_rows_to_split(training, classes) == minimum


def test_a_batch_one_row_short_of_the_minimum_is_refused_and_one_at_it_really_splits(tmp_path, telco, con):
    training = TrainingConfig()
    minimum = minimum_rows_to_split(training, classes=2)

    with pytest.raises(BatchValidationError) as refused:
        ingest_batch(excel_csv(telco_frame(minimum - 1), tmp_path / "short.csv"), telco, con, training=training)
    ingest_batch(excel_csv(telco_frame(minimum), tmp_path / "enough.csv"), telco, con, training=training)
    features = con.execute("SELECT 'b1' AS batch_id, * FROM raw_batch").df()
    split = carve_validation(split_train_test(features, telco, training, "b1"), telco, training)

    assert (
        f"{minimum - 1} rows; at least {minimum} rows are needed to split test_size 0.2 and validation_size 0.25 "
        "with 2 classes (stratified)" in str(refused.value)
    )
    for part in (split.train, split.validation, split.test):
        assert set(part["SeniorCitizen"]) == {0, 1}


def test_a_class_with_a_single_row_is_stored_and_split_without_stratifying(tmp_path, telco, con):
    training = TrainingConfig()
    frame = telco_frame(40).assign(SeniorCitizen=0)
    frame.loc[0, "SeniorCitizen"] = 1

    ingest_batch(excel_csv(frame, tmp_path / "rare.csv"), telco, con, training=training)
    features = con.execute("SELECT 'b1' AS batch_id, * FROM raw_batch").df()
    split = carve_validation(split_train_test(features, telco, training, "b1"), telco, training)

    assert not split.provenance.stratified
    assert len(split.train) + len(split.validation) + len(split.test) == 40


def test_a_changed_split_changes_the_ingestion_code_version_so_a_batch_refused_as_too_small_can_run_again(telco):
    assert ingestion_code_version(telco, TrainingConfig(test_size=0.1)) != ingestion_code_version(
        telco, TrainingConfig()
    )
