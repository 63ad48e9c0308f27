"""The notification outbox: messages a channel could not take, kept until it answers.

One JSON file (`notifications/outbox.json` where the pipeline writes: the home, or ML_PLATFORM_DATA_DIR),
read and rewritten whole under a file lock beside it (`outbox.json.lock`) and replaced atomically, so
the daemon's sensors and an `ml-platform run` never lose each other's writes and a reader never sees
half a file.

An entry is a message and the channels that still owe it, by name (`slack`, `webhook`, `email`):
never a URL, a token or a password. Whoever sends it builds the channels from the environment then.

At most once per channel. An entry is claimed (the time is written to the file) before its channels
are tried, and the channels that took it are removed right after. A process that dies in between
leaves the claim behind; a claim older than `CLAIM_TIMEOUT_SECONDS` is dropped with a warning and
never sent again, because the message may have reached the channel just before the crash.

Bounded: at most `max_messages` entries and none older than `max_age_seconds`; the oldest go first,
each with a warning naming its title and the channels that never got it.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from filelock import FileLock

from ml_platform.lib.notifications import Notification

# Far beyond one entry's sends (three channels, each a 10 s timeout and 1.5 s of quick retries).
CLAIM_TIMEOUT_SECONDS = 15 * 60
# A writer holds the lock for a read and a rewrite of a small file, never across a send.
LOCK_TIMEOUT_SECONDS = 30
FORMAT_VERSION = 1


@dataclass(frozen=True)
class OutboxEntry:
    id: str
    created: float  # Unix time the message was first refused
    notification: dict[str, Any]  # Notification.as_json()
    pending: list[str]  # the channels (by key: `webhook`, `webhook#2`…) that have not taken it
    attempts: int = 1
    last_error: dict[str, str] = field(default_factory=dict)  # channel: reason, safe to log
    claimed_at: float | None = None  # set while a process is sending it

    @property
    def title(self) -> str:
        return str(self.notification.get("title", "?"))


class Outbox:
    def __init__(
        self,
        path: Path,
        max_messages: int = 100,
        max_age_seconds: float = 72 * 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.max_messages = max_messages
        self.max_age_seconds = max_age_seconds
        self._clock = clock
        self._lock = FileLock(str(self.path) + ".lock", timeout=LOCK_TIMEOUT_SECONDS)

    def entries(self) -> list[OutboxEntry]:
        """What the outbox holds now, oldest first (a snapshot, for reports and tests)."""
        with self._lock:
            return self._read(logging.getLogger(__name__))

    def add(self, notification: Notification, failed: Mapping[str, str], logger: logging.Logger) -> None:
        """Keep `notification` for the channels in `failed` (channel key: why it failed)."""
        entry = OutboxEntry(
            id=uuid.uuid4().hex,
            created=self._clock(),
            notification=notification.as_json(),
            pending=sorted(failed),
            last_error=dict(failed),
        )
        with self._transaction(logger) as entries:
            entries.append(entry)

    def claim_next(
        self, configured: set[str], skip: set[str], tried: set[str], logger: logging.Logger
    ) -> OutboxEntry | None:
        """Claim the oldest unclaimed entry not in `tried` that owes a channel in `configured` and not
        in `skip`, and return it; None when there is none.

        Channels that are no longer configured are struck from every entry (with a warning): the
        message cannot reach them, and the entry must not wait for ever.
        """
        with self._transaction(logger) as entries:
            for index, entry in enumerate(entries):
                gone = [key for key in entry.pending if key not in configured]
                if gone:
                    logger.warning(
                        f"Notification {entry.title!r} is no longer kept for {', '.join(gone)}: not configured any more"
                    )
                    entry = entries[index] = replace(entry, pending=[k for k in entry.pending if k in configured])
            entries[:] = [entry for entry in entries if entry.pending]
            for index, entry in enumerate(entries):
                if entry.claimed_at is None and entry.id not in tried and set(entry.pending) - skip:
                    claimed = entries[index] = replace(entry, claimed_at=self._clock())
                    return claimed
        return None

    def settle(
        self,
        entry_id: str,
        sent: set[str],
        dropped: Mapping[str, str],
        failed: Mapping[str, str],
        logger: logging.Logger,
    ) -> None:
        """Record what one send of a claimed entry did: `sent` and `dropped` channels leave it (a
        dropped one failed in a way no retry fixes), `failed` ones keep it; the claim is released."""
        for key, reason in dropped.items():
            logger.warning(f"Kept notification {self._title(entry_id)!r} dropped for {key!r}: {reason}")
        with self._transaction(logger) as entries:
            for index, entry in enumerate(entries):
                if entry.id == entry_id:
                    pending = [key for key in entry.pending if key not in sent and key not in dropped]
                    entries[index] = replace(
                        entry,
                        pending=pending,
                        attempts=entry.attempts + (1 if failed else 0),
                        last_error={**entry.last_error, **failed},
                        claimed_at=None,
                    )
            entries[:] = [entry for entry in entries if entry.pending]

    def _title(self, entry_id: str) -> str:
        return next((entry.title for entry in self.entries() if entry.id == entry_id), entry_id)

    @contextmanager
    def _transaction(self, logger: logging.Logger) -> Iterator[list[OutboxEntry]]:
        """The entries, under the lock, bounded; written back (atomically) when the block ends."""
        with self._lock:
            entries = self._read(logger)
            yield entries
            self._write(self._bounded(entries, logger))

    def _bounded(self, entries: list[OutboxEntry], logger: logging.Logger) -> list[OutboxEntry]:
        """Without abandoned claims, entries past the maximum age, and the oldest beyond the maximum count."""
        now = self._clock()
        kept = []
        for entry in sorted(entries, key=lambda entry: entry.created):
            if entry.claimed_at is not None and now - entry.claimed_at > CLAIM_TIMEOUT_SECONDS:
                logger.warning(
                    f"Kept notification {entry.title!r} dropped: the process sending it to {', '.join(entry.pending)} "
                    "stopped mid-send, so it may have arrived; not sent again (at most once)"
                )
            elif now - entry.created > self.max_age_seconds:
                logger.warning(
                    f"Kept notification {entry.title!r} dropped: older than {self.max_age_seconds / 3600:g} h, "
                    f"never delivered to {', '.join(entry.pending)}"
                )
            else:
                kept.append(entry)
        overflow = max(0, len(kept) - self.max_messages)
        for entry in kept[:overflow]:
            logger.warning(
                f"Kept notification {entry.title!r} dropped: the outbox holds at most {self.max_messages} messages; "
                f"never delivered to {', '.join(entry.pending)}"
            )
        return kept[overflow:]

    def _read(self, logger: logging.Logger) -> list[OutboxEntry]:
        try:
            raw = json.loads(self.path.read_text())
            return [OutboxEntry(**entry) for entry in raw["entries"]]
        except FileNotFoundError:
            return []
        except (ValueError, KeyError, TypeError) as error:
            # Never stop notifying for an unreadable file: keep it aside for a person, start empty.
            aside = self.path.with_name(self.path.name + ".unreadable")
            os.replace(self.path, aside)
            logger.warning(f"Notification outbox {self.path} was unreadable ({type(error).__name__}); moved to {aside}")
            return []

    def _write(self, entries: list[OutboxEntry]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not entries and not self.path.exists():
            return
        content = json.dumps({"version": FORMAT_VERSION, "entries": [asdict(entry) for entry in entries]}, indent=1)
        descriptor, partial = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".partial")
        try:
            with os.fdopen(descriptor, "w") as file:
                file.write(content)
                file.flush()
                os.fsync(file.fileno())
            os.replace(partial, self.path)
        except BaseException:
            Path(partial).unlink(missing_ok=True)
            raise
