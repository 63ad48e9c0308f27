"""Batches: their ids (the partition keys) and where their files are.

A batch id becomes a Dagster partition key, a file name in the warehouse and a dbt var, so
only plain names are accepted: no path separators, no `..`, no commas, at most 64 characters.
"""

from __future__ import annotations

import re
from pathlib import Path

BATCH_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class InvalidBatchIdError(ValueError):
    pass


def validate_batch_id(batch_id: str) -> str:
    """Return `batch_id` unchanged, or raise InvalidBatchIdError saying what is wrong with it."""
    if not BATCH_ID_PATTERN.fullmatch(batch_id) or ".." in batch_id:
        raise InvalidBatchIdError(
            f"invalid batch id {batch_id!r}: expected 1-64 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit and without '..'"
        )
    return batch_id


def batch_file(incoming_dir: Path, batch_id: str, file_format: str) -> Path:
    """The file a batch is read from: `<incoming_dir>/<batch_id>.<csv|parquet>`."""
    return incoming_dir / f"{validate_batch_id(batch_id)}.{file_format}"


def batches_up_to(ordered_batches: list[str], current: str, ready: set[str]) -> list[str]:
    """The cumulative training window: every earlier batch whose features are built, then `current`.

    Batches that were rejected at ingestion or not yet run have no features and are left out
    rather than failing the window.
    """
    earlier = ordered_batches[: ordered_batches.index(current)]
    return [batch_id for batch_id in earlier if batch_id in ready] + [current]
