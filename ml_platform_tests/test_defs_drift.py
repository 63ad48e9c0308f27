"""`drift_report` through real Dagster, MLflow and DuckDB: a batch like the champion's is not drifted,
a drifted one notifies once per report, and with `drift.retrain_on_drift` the retraining schedule
retrains a batch whose drift report is newer than its models."""

from __future__ import annotations

import json

import pytest

from ml_platform.defs.drift.assets import DRIFT_REPORT_KEY
from ml_platform.defs.drift.retraining import DRIFT_REASON_TAG
from ml_platform_tests.conftest import small_config
from ml_platform_tests.servers import http_servers
from ml_platform_tests.test_automation_schedules import evaluate, skip_message

DRIFTED_BATCH = "batch_0003"
# One quick candidate: the drifted batch goes through the whole pipeline once.
ONE_MODEL = {"models": {"logistic_regression": {"type": "logistic_regression", "params": {}}}}


@pytest.fixture(scope="module")
def webhook():
    with http_servers() as start:
        yield start(200)


@pytest.fixture(scope="module")
def platform(module_two_batches, webhook):
    """The prepared home (batch_0001 crowned v1, batch_0002 compared with it) with one model and a webhook."""
    module_two_batches.config = small_config(
        **ONE_MODEL, **{"notifications.channels.webhook_url": webhook.url("/hook")}
    )
    return module_two_batches


def drift_report(platform, batch: str):
    result = platform.materialize(batch, selection=[DRIFT_REPORT_KEY])
    assert result.success
    [materialization] = result.asset_materializations_for_node("drift_report")
    return materialization.metadata


def report_file(platform, batch: str) -> dict:
    return json.loads((platform.settings.reports_dir / batch / "drift_report.json").read_text())


def test_a_batch_like_the_champions_training_batch_has_not_drifted(platform, webhook):
    metadata = drift_report(platform, "batch_0002")
    report = report_file(platform, "batch_0002")
    assert report["verdict"] == "no drift" and report["drifted_features"] == []
    # The champion before this batch, whether or not batch_0002's own decision promoted its winner.
    assert report["champion"] == {"version": "1", "batch": "batch_0001"}
    assert report["previous_batch"] == "batch_0001"
    features = {feature["feature"] for feature in report["against_champion"]["features"]}
    assert {"monthly_charges", "contract_type", "tenure_bucket"} <= features
    assert "churned" not in features and "customer_id" not in features
    prediction = report["prediction_drift"]
    assert prediction["reference_rows_are"] == "the rows the champion was not fitted on"
    assert 0 < prediction["reference_rows"] < 1500 and prediction["batch_rows"] == 1500
    assert prediction["drifted"] is False
    assert metadata["verdict"].value == "no drift" and metadata["champion_version"].value == "1"
    assert "| monthly_charges | ks |" in metadata["features"].value
    assert (platform.settings.reports_dir / "batch_0002" / "drift_psi.png").read_bytes().startswith(b"\x89PNG")
    assert webhook.received == []


def test_a_drifted_batch_notifies_once_per_report_and_retrains_when_the_report_is_newer(platform, webhook):
    platform.write_batches(1, rows=800, first=3, drift=0.3)  # prices 60% above batch_0001's
    assert platform.materialize(DRIFTED_BATCH).success
    report = report_file(platform, DRIFTED_BATCH)
    assert report["verdict"] == "drift" and report["share_drifted"] > 0.1
    assert {"monthly_charges", "charges_per_product"} <= set(report["drifted_features"])
    assert report["previous_batch"] == "batch_0002"
    assert report["prediction_drift"]["drifted"] is True
    [message] = webhook.received
    assert message["json"]["title"] == f"Drift: batch {DRIFTED_BATCH} against {report['champion']['batch']}"
    assert "monthly_charges" in message["json"]["summary"]
    retraining = small_config(**ONE_MODEL, **{"drift.retrain_on_drift": True})
    # The run that wrote the report trained the models too: they have seen the drifted rows.
    assert skip_message(evaluate(platform, "retraining_schedule", retraining)).startswith("up to date")

    again = drift_report(platform, DRIFTED_BATCH)
    assert again["notified"].value.startswith("not sent again: this report")
    assert len(webhook.received) == 1
    # Now the latest report is newer than the models.
    [request] = evaluate(platform, "retraining_schedule", retraining).run_requests
    assert request.partition_key == DRIFTED_BATCH
    assert request.tags[DRIFT_REASON_TAG].startswith("drift: ")
    assert "trained before the report: logistic_regression_model" in request.tags[DRIFT_REASON_TAG]
    assert request.run_key.startswith(f"drift:{DRIFTED_BATCH}:")
    assert {key.to_user_string() for key in request.asset_selection} >= {"training_data", "champion_model"}
    assert DRIFT_REPORT_KEY not in request.asset_selection
    # The same report asks for the same run, which Dagster launches once.
    assert evaluate(platform, "retraining_schedule", retraining).run_requests[0].run_key == request.run_key
    # Off (the default): the batch is up to date.
    assert skip_message(evaluate(platform, "retraining_schedule", platform.config)).startswith("up to date")
