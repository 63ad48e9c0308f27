"""Quarantined batches, from Dagster's own records: a refused ingestion logs an observation of
`raw_batch` for its batch (the file's content hash and the ingestion's code version it was refused
with, and the error), shown on the asset's page in the UI; the rule in `lib/quarantine.py` compares the
latest one with the batch's latest materialization and its file and config now.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from ml_platform.lib.ingestion import file_content_hash
from ml_platform.lib.notifications import first_lines
from ml_platform.lib.quarantine import Quarantine, Rejection, error_headline, quarantine_of

RAW_BATCH_KEY = dg.AssetKey("raw_batch")
# The observation metadata that marks a refusal (and holds the content hash it was refused with).
REJECTED_HASH = "rejected_content_hash"
MISSING_FILE = "file not found"


def content_hash_of(source: Path) -> str | None:
    """The batch file's content hash, None when there is no file."""
    return file_content_hash(source) if source.is_file() else None


def rejection_observation(
    batch: str, source: Path, content_hash: str | None, code_version: str, error: Exception
) -> dg.AssetObservation:
    """What a refused ingestion records on `raw_batch`'s partition, for people (the UI) and the rule."""
    return dg.AssetObservation(
        asset_key=RAW_BATCH_KEY,
        partition=batch,
        description="Refused at ingestion: quarantined while the file and the config stay as they are.",
        metadata={
            "quarantined": "yes: schedules, the new-batch sensor and `ml-platform run --only-stale` skip this "
            f"batch until {source.name} or the data config changes",
            "error": error_headline(str(error)),
            "error_details": dg.MetadataValue.md(f"```\n{first_lines(str(error), 25)}\n```"),
            REJECTED_HASH: content_hash or MISSING_FILE,
            "code_version": code_version,
            "source_file": dg.MetadataValue.path(str(source)),
            "to_release": f"correct {source.name} (new content runs on its own), or force: ml-platform run {batch}",
        },
    )


def latest_rejection(instance: dg.DagsterInstance, batch: str) -> Rejection | None:
    """The batch's latest recorded refusal, if any (one indexed query)."""
    records = instance.fetch_observations(
        dg.AssetRecordsFilter(asset_key=RAW_BATCH_KEY, asset_partitions=[batch]), limit=1
    ).records
    if not records or records[0].asset_observation is None:
        return None
    record = records[0]
    metadata = {key: value.value for key, value in record.asset_observation.metadata.items()}
    if REJECTED_HASH not in metadata:
        return None
    content_hash = metadata[REJECTED_HASH]
    return Rejection(
        content_hash=None if content_hash == MISSING_FILE else str(content_hash),
        code_version=str(metadata.get("code_version")),
        error=str(metadata.get("error")),
        run_id=record.run_id,
        order=record.storage_id,
        timestamp=record.timestamp,
    )


def batch_quarantine(instance: dg.DagsterInstance, batch: str, source: Path, code_version: str) -> Quarantine | None:
    """The batch's quarantine, if it is in one: the file is hashed only for a batch that was refused."""
    rejection = latest_rejection(instance, batch)
    if rejection is None:
        return None
    accepted = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=RAW_BATCH_KEY, asset_partitions=[batch]), limit=1
    ).records
    return quarantine_of(
        batch,
        rejection,
        accepted_order=accepted[0].storage_id if accepted else None,
        content_hash=content_hash_of(source),
        code_version=code_version,
    )
