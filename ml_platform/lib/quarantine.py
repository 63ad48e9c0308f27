"""Quarantine: a batch refused at ingestion is not run again until something it depends on changes.

Ingestion is deterministic: the same file under the same code and config is refused the same way every
time. So a batch whose last ingestion was refused, with inputs unchanged since (the file's content hash,
the ingestion's code version, which covers the data contract and the re-delivery policy), is
quarantined: the schedules, the new-batch sensor and `ml-platform run --only-stale` leave it alone
instead of failing and notifying on every tick. A corrected file (new content) or a changed contract
releases it on its own; `ml-platform run BATCH` always runs it (a person asked), and if that run
stores the batch the quarantine ends.

Pure: the failure record and the current inputs are read by the caller (`defs/ingestion/quarantine.py`
reads them from Dagster's event log, where the refused run recorded them).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rejection:
    """What a refused ingestion recorded: the inputs it was refused with, and why.

    `order` places it among the batch's ingestions (Dagster's event-log storage id: larger is later).
    `content_hash` is None when the file was missing.
    """

    content_hash: str | None
    code_version: str
    error: str
    run_id: str
    order: int
    timestamp: float | None = None


@dataclass(frozen=True)
class Quarantine:
    """A batch held back, with the refusal that put it there."""

    batch: str
    error: str
    run_id: str
    content_hash: str | None
    timestamp: float | None = None

    def describe(self) -> str:
        """One line: which batch, since which run, and its error's first line."""
        return f"{self.batch}: quarantined since run {self.run_id[:8]} (file and config unchanged): {self.error}"

    def to_dict(self) -> dict:
        return {
            "batch": self.batch,
            "error": self.error,
            "run_id": self.run_id,
            "content_hash": self.content_hash,
            "timestamp": self.timestamp,
        }


def quarantine_of(
    batch: str,
    rejection: Rejection | None,
    *,
    accepted_order: int | None,
    content_hash: str | None,
    code_version: str,
) -> Quarantine | None:
    """Whether `batch` is quarantined, given its latest refusal and its current inputs.

    - no refusal recorded: not quarantined;
    - the batch was stored after its latest refusal (`accepted_order`: its latest successful
      ingestion; a retry, a forced run that got through): not quarantined;
    - the file's content differs from the refused one (`content_hash`, None when the file is missing):
      a corrected file, not quarantined;
    - the ingestion's code or config changed (`code_version`): not quarantined;
    - otherwise quarantined, with the latest refusal's error. Several refusals of the same inputs (a
      forced run refused again) are one quarantine: only the latest counts.
    """
    if rejection is None:
        return None
    if accepted_order is not None and accepted_order > rejection.order:
        return None
    if content_hash != rejection.content_hash or code_version != rejection.code_version:
        return None
    return Quarantine(batch, rejection.error, rejection.run_id, rejection.content_hash, rejection.timestamp)


def error_headline(message: str) -> str:
    """The error's first line, for a table cell or a metadata entry; a first line that only announces a
    list ("... does not match the data contract:") takes the list's first item with it."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    if not lines:
        return "no error message"
    headline = lines[0]
    if headline.endswith(":") and len(lines) > 1:
        headline = f"{headline} {lines[1].removeprefix('- ')}" + (" (and more)" if len(lines) > 2 else "")
    return headline
