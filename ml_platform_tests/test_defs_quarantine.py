"""Refused batches through real parts: a batch refused at ingestion (a broken contract, a re-delivery)
is recorded on `raw_batch`, quarantined from the schedules and `run --only-stale`, shown by `status`,
released by a corrected file and still run when a person names it; re-delivered content and ids never
reach the warehouse, and the `drop` policy stores the new rows only."""

from __future__ import annotations

import logging

import dagster as dg
import pandas as pd
import pytest

from ml_platform.defs.ingestion.quarantine import latest_rejection
from ml_platform.lib.demo_data import generate_churn_batch
from ml_platform.lib.warehouse import Warehouse
from ml_platform_tests.conftest import Cli, PlatformUnderTest, small_config
from ml_platform_tests.test_automation_schedules import evaluate, selected, skip_message
from ml_platform_tests.test_defs_bad_input import failure_message, missing_column, stored_state


@pytest.fixture(scope="module")
def trained(module_two_batches: PlatformUnderTest) -> PlatformUnderTest:
    """batch_0001 and batch_0002 through the pipeline, a champion registered."""
    return module_two_batches


@pytest.fixture
def cli(trained: PlatformUnderTest, tmp_path) -> Cli:
    cli = Cli(tmp_path)
    cli.overrides.update(ML_PLATFORM_HOME=str(trained.settings.home), DAGSTER_HOME=str(trained.instance.root_directory))
    return cli


def rejection_metadata(platform: PlatformUnderTest, batch: str) -> dict:
    [record] = platform.instance.fetch_observations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("raw_batch"), asset_partitions=[batch]), limit=1
    ).records
    return {key: value.value for key, value in record.asset_observation.metadata.items()}


def test_a_refused_batch_is_quarantined_until_its_file_changes_and_a_person_can_still_force_it(
    trained: PlatformUnderTest, cli: Cli
):
    path = trained.add_batch_file("batch_0003", missing_column())
    refused = trained.materialize("batch_0003", raise_on_error=False)
    assert not refused.success and failure_message(refused)[0] == "raw_batch"

    # The asset shows it (an observation of raw_batch's partition in the UI), with the error's first line.
    metadata = rejection_metadata(trained, "batch_0003")
    assert metadata["quarantined"].startswith("yes: schedules, the new-batch sensor and `ml-platform run --only-stale`")
    assert metadata["error"] == (
        f"{path}: batch rejected, it does not match the data contract: missing column(s): monthly_charges (and more)"
    )

    # No schedule requests it again, tick after tick; the batches that are up to date stay so.
    for _ in range(2):
        message = skip_message(evaluate(trained, "pipeline_schedule"))
        assert "up to date (data, code and config unchanged): batch_0001, batch_0002" in message
        assert f"batch_0003: quarantined since run {refused.run_id[:8]} (file and config unchanged)" in message
    assert "batch_0003: quarantined" in skip_message(evaluate(trained, "retraining_schedule"))

    # Neither does `run --all --only-stale`; `status` shows it.
    output = " ".join(cli("run", "--all", "--only-stale").stdout.split())
    assert "quarantined batch_0003: quarantined since run" in output and "ml-platform run batch_0003" in output
    assert len(trained.instance.get_run_records(dg.RunsFilter(tags={"dagster/partition": "batch_0003"}))) == 1
    [shown] = cli.json("status", "--runs", "0")["quarantined"]
    assert (shown["batch"], shown["run_id"], shown["error"]) == ("batch_0003", refused.run_id, metadata["error"])
    assert "quarantined: refused at ingestion" in " ".join(cli("status", "--runs", "0").stdout.split())

    # A person who names it runs it anyway: refused again, it stays one quarantine, with the newest refusal.
    forced = cli("run", "batch_0003", exit_code=2)
    assert "failed batch_0003" in forced.stdout
    assert latest_rejection(trained.instance, "batch_0003").run_id != refused.run_id

    # A corrected file (new content) runs again on its own, from ingestion on.
    path.write_bytes(generate_churn_batch(3, 300).to_csv(index=False).encode())
    [request] = evaluate(trained, "pipeline_schedule").run_requests
    assert request.partition_key == "batch_0003" and selected(request)[0] == "raw_batch"
    assert cli.json("status", "--runs", "0")["quarantined"] == []
    # ... and so does the same bad file under a changed contract (a new code version of raw_batch).
    path.write_bytes(missing_column())
    assert not evaluate(trained, "pipeline_schedule").run_requests
    loosened = small_config(**{"data.redelivered_ids": "drop"})
    # (every batch has a new code version then; each request has a run key of its own)
    requests = evaluate(trained, "pipeline_schedule", loosened).run_requests
    assert "batch_0003" in [request.partition_key for request in requests]
    assert len({request.run_key for request in requests}) == len(requests)


def batch_0001_frame(trained: PlatformUnderTest) -> pd.DataFrame:
    return pd.read_csv(trained.incoming_dir / "batch_0001.csv")


def test_a_byte_identical_copy_of_an_earlier_batch_is_refused_naming_it_and_changes_nothing(trained):
    before = stored_state(trained)
    path = trained.add_batch_file("batch_0004", (trained.incoming_dir / "batch_0001.csv").read_bytes())

    result = trained.materialize("batch_0004", raise_on_error=False)

    step, message = failure_message(result)
    assert step == "raw_batch"
    assert f"{path}: batch rejected, it is a re-delivery" in message
    assert "equals that of batch batch_0001, already stored" in message
    assert result.get_asset_materialization_events() == []
    assert stored_state(trained) == before
    assert latest_rejection(trained.instance, "batch_0004") is not None  # quarantined like any refusal


def test_rows_delivered_before_are_rejected_by_default_and_dropped_with_a_warning_when_configured(trained):
    earlier = batch_0001_frame(trained)
    mixed = pd.concat([earlier.head(880), generate_churn_batch(5, 300)], ignore_index=True)
    path = trained.add_batch_file("batch_0005", mixed.to_csv(index=False).encode())
    before = stored_state(trained)

    rejected = trained.materialize("batch_0005", raise_on_error=False)

    message = failure_message(rejected)[1]
    assert f"{path}: batch rejected, 880 of its 1180 ids were delivered before (880 in batch_0001)" in message
    assert stored_state(trained) == before

    dropping = small_config(**{"data.redelivered_ids": "drop"})
    stored = trained.materialize("batch_0005", config=dropping, selection=["raw_batch"])
    [materialization] = stored.asset_materializations_for_node("raw_batch")
    metadata = {key: value.value for key, value in materialization.metadata.items()}
    assert (metadata["dagster/row_count"], metadata["dropped_redelivered_rows"]) == (300, 880)
    assert metadata["redelivery_warning"].startswith(
        "dropped 880 row(s) whose ids were delivered before by batch batch_0001"
    )
    warnings = [
        entry.user_message for entry in trained.instance.all_logs(stored.run_id) if entry.level == logging.WARNING
    ]
    assert any(f"{path}: dropped 880 row(s)" in message for message in warnings), warnings
    delivered = Warehouse(trained.settings.warehouse_dir).delivered_ids(["batch_0001", "batch_0005"])
    assert not delivered["batch_0001"] & delivered["batch_0005"]
