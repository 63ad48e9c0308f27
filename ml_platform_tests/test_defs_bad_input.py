"""Bad batches fail at ingestion, name what is wrong, and change nothing downstream or already stored."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import dagster as dg
import pandas as pd
import pytest

from ml_platform.lib.demo_data import generate_churn_batch
from ml_platform_tests.conftest import PlatformUnderTest


def good_frame() -> pd.DataFrame:
    return generate_churn_batch(batch_number=7, n_rows=300)


def csv_bytes(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


def missing_column() -> bytes:
    return csv_bytes(good_frame().drop(columns=["monthly_charges"]))


def wrong_type() -> bytes:
    frame = good_frame().astype({"tenure_months": object})
    frame.loc[4, "tenure_months"] = "twelve"
    return csv_bytes(frame)


def unknown_category() -> bytes:
    frame = good_frame()
    frame.loc[9, "contract_type"] = "lifetime"
    return csv_bytes(frame)


def empty_file() -> bytes:
    return b""


def truncated_file() -> bytes:
    content = csv_bytes(good_frame())
    last_row_start = content.rstrip(b"\n").rfind(b"\n") + 1
    return content[: last_row_start + 12]  # cut inside the last row


def non_utf8_file() -> bytes:
    frame = good_frame()
    frame.loc[3, "region"] = "nörth"
    return frame.to_csv(index=False).encode("latin-1")


def duplicate_ids() -> bytes:
    frame = good_frame()
    frame.loc[20, "customer_id"] = frame.loc[10, "customer_id"]
    return csv_bytes(frame)


def one_class_target() -> bytes:
    return csv_bytes(good_frame().assign(churned=0))


def two_rows_of_both_classes() -> bytes:
    return csv_bytes(good_frame().head(2).assign(churned=[0, 1]))


BAD_BATCHES: dict[str, tuple[Callable[[], bytes], list[str]]] = {
    "missing_column": (missing_column, ["missing column(s): monthly_charges"]),
    "wrong_type": (wrong_type, ["column 'tenure_months'", "expected integer", "data row 5", "'twelve'"]),
    "unknown_category": (unknown_category, ["column 'contract_type'", "'lifetime'", "one of"]),
    "empty_file": (empty_file, ["file is empty"]),
    "truncated_file": (truncated_file, ["Line: 301", "Expected Number of Columns"]),
    "non_utf8_file": (non_utf8_file, ["not utf-8"]),
    "duplicate_ids": (duplicate_ids, ["column 'customer_id'", "expected unique ids", "data rows 11, 21"]),
    "one_class_target": (one_class_target, ["target 'churned'", "at least two classes"]),
    "two_rows_of_both_classes": (
        two_rows_of_both_classes,
        ["2 rows; at least 7 rows are needed to split test_size 0.2 and validation_size 0.25 with 2 classes"],
    ),
}


@pytest.fixture(scope="module")
def trained(module_two_batches: PlatformUnderTest) -> PlatformUnderTest:
    """A platform with good batches through the whole pipeline and a champion registered."""
    return module_two_batches


def stored_state(platform: PlatformUnderTest) -> dict:
    """Everything a bad batch must leave alone."""
    client = platform.mlflow().client()
    name = platform.config.promotion.registered_model_name
    database = platform.settings.warehouse_dir / "batch_0001.duckdb"
    return {
        "warehouse_batch_0001": hashlib.sha256(database.read_bytes()).hexdigest(),
        "warehouse_files": sorted(p.name for p in platform.settings.warehouse_dir.iterdir()),
        "model_versions": sorted(str(v.version) for v in client.search_model_versions(f"name='{name}'")),
        "champion": str(client.get_model_version_by_alias(name, "champion").version),
        "mlflow_runs": len(
            client.search_runs([client.get_experiment_by_name(platform.config.tracking.experiment_name).experiment_id])
        ),
    }


def failure_message(result: dg.ExecuteInProcessResult) -> tuple[str, str]:
    (failure,) = [event for event in result.all_events if event.is_step_failure]
    error, messages = failure.step_failure_data.error, []
    while error is not None:  # Dagster wraps the asset's own exception as the cause
        messages.append(error.message)
        error = error.cause
    return failure.step_key, "\n".join(messages)


@pytest.mark.parametrize("case", list(BAD_BATCHES))
def test_bad_batch_fails_at_ingestion_and_writes_nothing_downstream(trained: PlatformUnderTest, case: str):
    make_content, expected_phrases = BAD_BATCHES[case]
    before = stored_state(trained)
    batch_id = f"bad_{case}"
    path = trained.add_batch_file(batch_id, make_content())

    result = trained.materialize(batch_id, raise_on_error=False)

    assert not result.success
    step, message = failure_message(result)
    assert step == "raw_batch"
    assert str(path) in message
    for phrase in expected_phrases:
        assert phrase in message, f"{phrase!r} not in {message!r}"
    assert result.get_asset_materialization_events() == []
    assert not (trained.settings.warehouse_dir / f"{batch_id}.duckdb").exists()
    assert stored_state(trained) == before


@pytest.mark.parametrize("case", ["wrong_type", "truncated_file"])
def test_bad_replacement_of_a_stored_batch_keeps_the_stored_version(trained: PlatformUnderTest, case: str):
    make_content, _ = BAD_BATCHES[case]
    before = stored_state(trained)
    path = trained.incoming_dir / "batch_0001.csv"
    good_content = path.read_bytes()
    path.write_bytes(make_content())
    try:
        result = trained.materialize("batch_0001", raise_on_error=False)
    finally:
        path.write_bytes(good_content)
    assert not result.success
    assert failure_message(result)[0] == "raw_batch"
    assert stored_state(trained) == before


def test_blank_numbers_are_read_as_missing_and_counted_in_the_raw_batch_metadata(trained: PlatformUnderTest):
    frame = good_frame().astype({"total_charges": object, "age": object})
    frame.loc[[2, 8], "total_charges"] = " "
    frame.loc[5, "age"] = "   "
    trained.add_batch_file("blank_numbers", frame.to_csv(index=False, encoding="utf-8-sig").encode("utf-8-sig"))

    result = trained.materialize("blank_numbers", selection=[dg.AssetKey("raw_batch")])

    [materialization] = result.asset_materializations_for_node("raw_batch")
    metadata = materialization.metadata
    assert metadata["blank_numbers_read_as_missing"].value == 2 + 1 + int(
        good_frame()[["total_charges", "age"]].isna().sum().sum()
    )
    assert "| age |" in metadata["null_counts"].value
