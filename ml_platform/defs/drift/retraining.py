"""Retraining on drift: the run the retraining schedule requests for a batch that is up to date but
drifted (`drift.retrain_on_drift`), once per drift report; `lib/drift.py` decides whether it is due."""

from __future__ import annotations

import dagster as dg

from ml_platform.defs.drift.assets import DRIFT_REPORT_KEY
from ml_platform.lib.config import PlatformConfig
from ml_platform.lib.drift import drift_retraining_reason

# The run tag that says which drift report a retraining run answers, and why.
DRIFT_REASON_TAG = "ml_platform/drift_reason"


def _latest(instance: dg.DagsterInstance, key: dg.AssetKey, batch: str):
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[batch]), limit=1
    ).records
    return records[0] if records else None


def _run_started_at(instance: dg.DagsterInstance, record) -> float:
    """When the run that wrote `record` started (the record's own time if the run is gone)."""
    run = instance.get_run_record_by_id(record.run_id)
    return (run and run.start_time) or record.timestamp


def drift_retraining_request(
    instance: dg.DagsterInstance,
    config: PlatformConfig,
    batch: str,
    keys: list[dg.AssetKey],
    trigger: str,
    trigger_tag: str,
) -> dg.RunRequest | None:
    """A run of `keys` for `batch` when its latest drift report calls for retraining, else None.

    The run key names the report (its event's storage id): a tick evaluated again, or every later tick
    until the run starts, asks for the same run, which Dagster launches once.
    """
    report = _latest(instance, DRIFT_REPORT_KEY, batch)
    if report is None or not config.drift.retrain_on_drift:
        return None
    metadata = report.asset_materialization.metadata
    models = [dg.AssetKey(f"{name}_model") for name in config.models]
    trained = {key.to_user_string(): getattr(_latest(instance, key, batch), "timestamp", None) for key in models}
    reason = drift_retraining_reason(
        config.drift.retrain_on_drift,
        metadata["verdict"].value,
        metadata["share_drifted"].value,
        metadata["reference_batch"].value,
        _run_started_at(instance, report),
        trained,
    )
    if reason is None:
        return None
    return dg.RunRequest(
        run_key=f"drift:{batch}:{report.storage_id}",
        partition_key=batch,
        asset_selection=keys,
        tags={trigger_tag: trigger, DRIFT_REASON_TAG: reason[:1000]},
    )
