"""Pipeline runs and batches as summaries, read from Dagster's event log: never a state file of our own.

`summarize_run` turns one run's step stats and materializations into a `RunSummary`;
`write_run_summary` keeps it as `reports/runs/<run_id>.json` (the run-status sensor calls it when a
run ends); `batch_history` is one line per batch partition for `ml-platform status`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import dagster as dg

from ml_platform.defs.partitions import batch_partitions
from ml_platform.defs.runs import step_error
from ml_platform.defs.tags import EXPERIMENT_ID_TAG, PARTITION_TAG
from ml_platform.lib.notifications import first_lines
from ml_platform.lib.run_summary import (
    ERROR_LINES,
    BatchStatus,
    ChampionDecision,
    RunSummary,
    StageSummary,
    duration_between,
    timestamp_to_datetime,
    trigger_tags,
)

CHAMPION_KEY = dg.AssetKey("champion_model")
REPORT_KEY = dg.AssetKey("evaluation_report")
MODEL_SUFFIX = "_model"
# Run records fetched per query while looking for pipeline runs among experiment runs.
RUN_PAGE = 50


def summarize_run(instance: dg.DagsterInstance, run_id: str) -> RunSummary:
    """What one run did: its stages with durations, each model's metrics, the winner, the champion
    decision, what triggered it and, for a failed run, the first step's error."""
    run = instance.get_run_by_id(run_id)
    if run is None:
        raise KeyError(f"no Dagster run {run_id!r} in this instance")
    stats = instance.get_run_stats(run_id)
    materializations = {
        record.asset_key: _metadata_values(record.asset_materialization.metadata)
        for record in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
        if record.asset_key is not None and record.asset_materialization is not None
    }
    report = materializations.get(REPORT_KEY, {})
    champion = materializations.get(CHAMPION_KEY)
    return RunSummary(
        run_id=run_id,
        job_name=run.job_name,
        partition=run.tags.get(PARTITION_TAG),
        status=run.status.value,
        start=timestamp_to_datetime(stats.start_time),
        end=timestamp_to_datetime(stats.end_time),
        duration_seconds=duration_between(stats.start_time, stats.end_time),
        stages=_stages(instance, run_id),
        metrics=_model_metrics(materializations),
        winner=report.get("winner"),
        champion=_champion_decision(champion) if champion is not None else None,
        trigger=trigger_tags(run.tags),
        error=_first_error(instance, run_id) if run.status == dg.DagsterRunStatus.FAILURE else None,
    )


def write_run_summary(instance: dg.DagsterInstance, run_id: str, reports_dir: Path) -> Path:
    """Write `<reports_dir>/runs/<run_id>.json` atomically: a reader sees the old file or the whole new one."""
    summary = summarize_run(instance, run_id)
    path = run_summary_path(reports_dir, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(descriptor, "w") as file:
            json.dump(summary.to_dict(), file, indent=2, sort_keys=True)
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return path


def run_summary_path(reports_dir: Path, run_id: str) -> Path:
    return Path(reports_dir) / "runs" / f"{run_id}.json"


def load_run_summary(instance: dg.DagsterInstance, run_id: str, reports_dir: Path) -> RunSummary:
    """The summary the sensor wrote for a finished run, else one derived from the event log now
    (a run still going, or one that ended before the sensor ran)."""
    path = run_summary_path(reports_dir, run_id)
    if path.is_file():
        try:
            return RunSummary.from_dict(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError):  # unreadable or from an older format: derive it again
            pass
    return summarize_run(instance, run_id)


def is_pipeline_run(run: dg.DagsterRun) -> bool:
    """A run of the batch pipeline's assets for a batch: partitioned, and not an experiment's run
    (experiments train on a batch too, but decide nothing for it)."""
    return PARTITION_TAG in run.tags and EXPERIMENT_ID_TAG not in run.tags


def recent_pipeline_runs(instance: dg.DagsterInstance, limit: int, batch: str | None = None) -> list[dg.RunRecord]:
    """The newest `limit` pipeline runs, newest first; only those of `batch` when given."""
    filters = dg.RunsFilter(tags={PARTITION_TAG: batch}) if batch is not None else None
    found: list[dg.RunRecord] = []
    cursor = None
    while len(found) < limit:
        page = instance.get_run_records(filters, limit=RUN_PAGE, cursor=cursor)
        found.extend(record for record in page if is_pipeline_run(record.dagster_run))
        if len(page) < RUN_PAGE:
            break
        cursor = page[-1].dagster_run.run_id
    return found[:limit]


def batch_history(instance: dg.DagsterInstance) -> list[dict[str, Any]]:
    """One entry per batch partition, in the order the batches were added: its last pipeline run
    (whatever its outcome), and the winner and champion decision last recorded for it.

    A few indexed queries per batch (its newest runs, the latest `evaluation_report` and
    `champion_model` materialization of its partition), never a scan of a run's event log.
    """
    return [
        _batch_status(instance, batch).to_dict() for batch in instance.get_dynamic_partitions(batch_partitions.name)
    ]


def _batch_status(instance: dg.DagsterInstance, batch: str) -> BatchStatus:
    runs = recent_pipeline_runs(instance, 1, batch=batch)
    last_run = runs[0] if runs else None
    report = _latest_metadata(instance, REPORT_KEY, batch) or {}
    champion = _latest_metadata(instance, CHAMPION_KEY, batch)
    # evaluation_report records the winner's primary metric as `winner_<metric>`.
    metric = next((key.removeprefix("winner_") for key in report if key.startswith("winner_")), None)
    return BatchStatus(
        batch=batch,
        last_run_id=last_run.dagster_run.run_id if last_run else None,
        last_run_status=last_run.dagster_run.status.value if last_run else None,
        last_run_time=_run_time(last_run) if last_run else None,
        through_pipeline=champion is not None,
        winner=report.get("winner"),
        primary_metric=metric,
        winner_metric=report.get(f"winner_{metric}") if metric else None,
        champion=_champion_decision(champion) if champion is not None else None,
    )


def _run_time(record: dg.RunRecord) -> datetime:
    """When the run ended, else when it started, else when it was created (still queued)."""
    return timestamp_to_datetime(record.end_time or record.start_time) or record.create_timestamp


def _stages(instance: dg.DagsterInstance, run_id: str) -> list[StageSummary]:
    """A stage per step that has an event, in the order the steps started."""
    stages = [
        StageSummary(
            step_key=step.step_key,
            status=step.status.value if step.status is not None else "NOT_STARTED",
            start=timestamp_to_datetime(step.start_time),
            end=timestamp_to_datetime(step.end_time),
            duration_seconds=duration_between(step.start_time, step.end_time),
        )
        for step in instance.get_run_step_stats(run_id)
    ]
    return sorted(stages, key=lambda stage: (stage.start is None, stage.start or 0, stage.step_key))


def _model_metrics(materializations: Mapping[dg.AssetKey, Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Each `<name>_model` asset's numeric metadata (held-out metrics and fit time), by model name."""
    metrics = {}
    for key, metadata in materializations.items():
        name = key.path[-1]
        if key == CHAMPION_KEY or not name.endswith(MODEL_SUFFIX):
            continue
        metrics[name.removesuffix(MODEL_SUFFIX)] = {
            metric: float(value)
            for metric, value in metadata.items()
            if isinstance(value, int | float) and not isinstance(value, bool)
        }
    return metrics


def _champion_decision(metadata: Mapping[str, Any]) -> ChampionDecision:
    def text(key: str) -> str | None:
        value = metadata.get(key)
        return None if value is None else str(value)

    return ChampionDecision(
        version=text("version"), alias=text("alias"), reason=text("reason"), champion_version=text("champion_version")
    )


def _latest_metadata(instance: dg.DagsterInstance, key: dg.AssetKey, batch: str) -> dict[str, Any] | None:
    """The metadata of the asset's latest materialization for the batch's partition, if any."""
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, asset_partitions=[batch]), limit=1)
    if not records.records or records.records[0].asset_materialization is None:
        return None
    return _metadata_values(records.records[0].asset_materialization.metadata)


def _metadata_values(metadata: Mapping[str, dg.MetadataValue]) -> dict[str, Any]:
    return {key: value.value for key, value in metadata.items()}


def _first_error(instance: dg.DagsterInstance, run_id: str) -> str:
    """The first failed step's own error (under Dagster's wrappers), else the run failure's message."""
    failures = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE, limit=1).records
    if failures:
        event = failures[0].event_log_entry.dagster_event
        if message := step_error(event):
            return first_lines(f"step {event.step_key}: {message}", ERROR_LINES)
    run_failures = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_FAILURE, limit=1).records
    if run_failures:
        entry = run_failures[0].event_log_entry
        data = entry.dagster_event.job_failure_data if entry.dagster_event else None
        if data is not None and data.error is not None:
            return first_lines(data.error.message, ERROR_LINES)
        return first_lines(entry.dagster_event.message if entry.dagster_event else entry.user_message, ERROR_LINES)
    return "the run failed without a recorded error; see its logs in the Dagster UI"
