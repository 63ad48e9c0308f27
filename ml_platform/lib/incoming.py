"""The incoming folder, tick by tick: which files are new complete batches, which are still being
written, which are refused, and what has already been processed (the sensor's cursor).

Pure logic over a directory listing, so the new-batch sensor stays a thin layer and every rule
is tested without a daemon.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ml_platform.lib.batches import InvalidBatchIdError, validate_batch_id

# Names writers and downloaders give a file before it is complete (rsync, browsers, curl -o x.part).
TEMPORARY_SUFFIXES = (".tmp", ".temp", ".part", ".partial", ".crdownload", ".filepart", ".download")
TEMPORARY = "temporary name: still being written"
EMPTY = "empty: still being written"


@dataclass(frozen=True)
class IncomingFile:
    name: str
    size: int
    mtime_ns: int

    @property
    def fingerprint(self) -> str:
        """Changes whenever the file is rewritten: a new fingerprint under a known name is a new version."""
        return f"{self.size}:{self.mtime_ns}"


@dataclass
class IncomingCursor:
    """What the sensor has seen, kept by Dagster between ticks and across daemon restarts."""

    processed: dict[str, str] = field(default_factory=dict)  # file name -> fingerprint
    refused: list[str] = field(default_factory=list)  # names already reported as refused

    @classmethod
    def from_json(cls, text: str | None) -> IncomingCursor:
        if not text:
            return cls()
        raw = json.loads(text)
        return cls(processed=dict(raw.get("processed", {})), refused=list(raw.get("refused", [])))

    def to_json(self) -> str:
        return json.dumps({"processed": self.processed, "refused": self.refused}, sort_keys=True)


@dataclass(frozen=True)
class ReadyBatch:
    batch_id: str
    file: IncomingFile
    # A rewritten file of a batch the sensor already processed: a new run, not a new partition.
    rewritten: bool


@dataclass(frozen=True)
class IncomingPlan:
    ready: list[ReadyBatch]
    waiting: dict[str, str]  # file name -> why it waits
    refused: dict[str, str]  # file name -> why it is refused (reported once)
    deferred: list[str]  # ready, but over the per-tick limit
    already_run: list[str]  # batches first seen here but already through the pipeline
    unchanged: int  # files processed on an earlier tick
    cursor: IncomingCursor

    def skip_reason(self, incoming_dir: Path) -> str:
        """Why the tick requests nothing, with what it saw."""
        parts = [f"no new batch files in {incoming_dir}", f"{self.unchanged} already processed"]
        if self.waiting:
            parts.append(f"{len(self.waiting)} still being written ({', '.join(sorted(self.waiting))})")
        if self.refused:
            parts.append(f"{len(self.refused)} refused")
        if self.already_run:
            parts.append(f"{len(self.already_run)} already through the pipeline ({', '.join(self.already_run)})")
        return "; ".join(parts)


def list_incoming(incoming_dir: Path) -> list[IncomingFile]:
    """Every regular file directly in the folder, in name order (an absent folder is empty)."""
    if not incoming_dir.is_dir():
        return []
    files = []
    with os.scandir(incoming_dir) as entries:
        for entry in entries:
            if entry.is_file(follow_symlinks=False):
                stat = entry.stat(follow_symlinks=False)
                files.append(IncomingFile(entry.name, stat.st_size, stat.st_mtime_ns))
    return sorted(files, key=lambda file: file.name)


def plan_incoming(
    files: list[IncomingFile],
    cursor: IncomingCursor,
    *,
    file_format: str,
    now_ns: int,
    settle_seconds: float,
    max_batches: int,
    through_pipeline: set[str],
) -> IncomingPlan:
    """Sort one listing of the incoming folder into what to run now and what to leave.

    A file is a batch when its name is `<batch id>.<file_format>`. It is ready once it is not empty
    and has not been modified for `settle_seconds` (a writer still appending keeps moving its
    modification time and size). A file the cursor has seen with the same fingerprint is done; a
    rewritten one is ready again. A batch first seen here that is already through the pipeline
    (added and run with the CLI) is recorded without a new run.
    """
    processed = dict(cursor.processed)
    refused_before = set(cursor.refused)
    ready: list[ReadyBatch] = []
    waiting: dict[str, str] = {}
    refused: dict[str, str] = {}
    deferred: list[str] = []
    already_run: list[str] = []
    unchanged = 0
    suffix = f".{file_format}"
    for file in files:
        if is_folder_file(file.name, suffix):
            continue
        if is_temporary(file.name):
            waiting[file.name] = TEMPORARY
            continue
        reason = _refusal(file.name, suffix)
        if reason:
            if file.name not in refused_before:
                refused[file.name] = reason
            continue
        if processed.get(file.name) == file.fingerprint:
            unchanged += 1
            continue
        if file.size == 0:
            waiting[file.name] = EMPTY
            continue
        age_seconds = (now_ns - file.mtime_ns) / 1e9
        if age_seconds < settle_seconds:
            waiting[file.name] = f"modified {age_seconds:.1f} s ago: waiting until {settle_seconds:g} s without change"
            continue
        batch_id = file.name[: -len(suffix)]
        rewritten = file.name in processed
        if not rewritten and batch_id in through_pipeline:
            processed[file.name] = file.fingerprint
            already_run.append(batch_id)
            continue
        if len(ready) >= max_batches:
            deferred.append(batch_id)
            continue
        ready.append(ReadyBatch(batch_id, file, rewritten))
        processed[file.name] = file.fingerprint
    next_cursor = IncomingCursor(processed=processed, refused=sorted(refused_before | set(refused)))
    return IncomingPlan(ready, waiting, refused, deferred, already_run, unchanged, next_cursor)


@dataclass(frozen=True)
class ScannedFolder:
    batches: dict[str, Path]  # batch id -> file, in name order
    skipped: dict[str, str]  # file name -> why it is not a batch (yet)


def scan_incoming(incoming_dir: Path, file_format: str) -> ScannedFolder:
    """The batch files in the folder and, for every other file, why it is not one.

    The sensor's rules for names, temporary and empty files, without its settle time: a person who
    runs `ml-platform batches scan` has finished writing the files.
    """
    batches: dict[str, Path] = {}
    skipped: dict[str, str] = {}
    suffix = f".{file_format}"
    for file in list_incoming(incoming_dir):
        if is_folder_file(file.name, suffix):
            continue
        if reason := TEMPORARY if is_temporary(file.name) else _refusal(file.name, suffix):
            skipped[file.name] = reason
        elif file.size == 0:
            skipped[file.name] = EMPTY
        else:
            batches[file.name[: -len(suffix)]] = incoming_dir / file.name
    return ScannedFolder(batches, skipped)


def is_folder_file(name: str, suffix: str) -> bool:
    """A hidden file that is no batch in the making (`.gitkeep`, `.DS_Store`): not data, not mentioned.
    A hidden name with the batch extension in it (`.batch_0003.csv.partial`) is a writer's temporary."""
    return name.startswith(".") and suffix not in name.lower()


def is_temporary(name: str) -> bool:
    """A hidden name or a writer's temporary suffix: the file is not complete yet."""
    return name.startswith(".") or name.lower().endswith(TEMPORARY_SUFFIXES)


def _refusal(name: str, suffix: str) -> str | None:
    """Why a file name cannot be a batch, or None when it can."""
    if not name.endswith(suffix):
        return f"not a {suffix} file: batch files are named <batch id>{suffix}"
    try:
        validate_batch_id(name[: -len(suffix)])
    except InvalidBatchIdError as error:
        return str(error)
    return None
