"""Model Registry aliases with their history: promote, roll back, and which version held an alias when.

MLflow keeps only an alias's current holder. Every move made through the platform (the pipeline's
champion decision, `ml-platform models promote/rollback`, `MLflowManager`) is also recorded as an
event, so a rollback knows the champion before the current one and `history` answers "which version
was champion on that day". Each event is a tag of its own on the registered model
(`ml_platform.alias_event.00000042`) and only the newest `MAX_EVENTS` are kept: one growing tag would
reach MLflow's 100,000-character limit after about 300 decisions and fail every later one.
Dagster-free; callers pass an `MlflowClient` and, for the SQLite store, hold the store's writer lock.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

EVENT_TAG_PREFIX = "ml_platform.alias_event."
# Before one tag per event, the whole history was one JSON list in this tag; it is read, and moved
# into event tags on the next move.
LEGACY_HISTORY_TAG = "ml_platform.alias_history"
# The oldest events go first beyond this many.
MAX_EVENTS = 500
# A reason longer than this is cut: an event must fit a tag whatever a person types.
MAX_REASON_CHARS = 2000


class RegistryError(ValueError):
    """A registry request that cannot be carried out; the message says why."""


@dataclass(frozen=True)
class AliasEvent:
    alias: str
    version: str
    action: str  # "promote" or "rollback"
    previous: str | None  # the version that held the alias before, if any
    at: str  # ISO 8601, UTC
    reason: str = ""


def alias_history(client, model_name: str, alias: str | None = None) -> list[AliasEvent]:
    """Every recorded move of `alias` (or of every alias), oldest first."""
    events = [event for _, event in _recorded_events(_registered_model(client, model_name))]
    return [event for event in events if alias is None or event.alias == alias]


def _recorded_events(model) -> list[tuple[int, AliasEvent]]:
    """(sequence number, event) for every event tag, oldest first; a legacy history comes before them."""
    legacy = [(0, AliasEvent(**event)) for event in json.loads(model.tags.get(LEGACY_HISTORY_TAG, "[]"))]
    tagged = sorted(
        (int(key.removeprefix(EVENT_TAG_PREFIX)), AliasEvent(**json.loads(value)))
        for key, value in model.tags.items()
        if key.startswith(EVENT_TAG_PREFIX)
    )
    return legacy + tagged


def _event_tag(sequence: int) -> str:
    return f"{EVENT_TAG_PREFIX}{sequence:08d}"


def _record(client, model, event: AliasEvent) -> None:
    """Add `event` as the newest event tag and drop the oldest beyond `MAX_EVENTS`."""
    recorded = _recorded_events(model)
    if LEGACY_HISTORY_TAG in model.tags:  # rewritten as event tags numbered from 1, the newest kept
        recorded = list(enumerate((old for _, old in recorded), start=1))[-(MAX_EVENTS - 1) :]
        for key in [key for key in model.tags if key.startswith(EVENT_TAG_PREFIX)]:
            client.delete_registered_model_tag(model.name, key)
        for sequence, old in recorded:
            client.set_registered_model_tag(model.name, _event_tag(sequence), json.dumps(asdict(old)))
        client.delete_registered_model_tag(model.name, LEGACY_HISTORY_TAG)
    newest = (recorded[-1][0] if recorded else 0) + 1
    client.set_registered_model_tag(model.name, _event_tag(newest), json.dumps(asdict(event)))
    for sequence, _ in recorded:
        if sequence <= newest - MAX_EVENTS:
            client.delete_registered_model_tag(model.name, _event_tag(sequence))


def current_holder(client, model_name: str, alias: str) -> str | None:
    """The version holding `alias`, or None."""
    holder = _registered_model(client, model_name).aliases.get(alias)
    return None if holder is None else str(holder)  # the SQL store gives ints, a server strings


def set_alias(client, model_name: str, alias: str, version: str, reason: str = "", action: str = "promote"):
    """Give `alias` to `version` and record the move. Returns the event.

    Safe to repeat: when `version` already holds the alias and the newest event says so, nothing is
    written and that event is returned; when it holds it but the event is missing (a step that died
    between the two writes), only the event is written. So a retried step records each move once.
    """
    model = _registered_model(client, model_name)
    _existing_version(client, model_name, version)
    holder = model.aliases.get(alias)
    moves = [event for _, event in _recorded_events(model) if event.alias == alias]
    last = moves[-1] if moves else None
    if holder is not None and str(holder) == str(version):
        if last is not None and last.version == str(version):
            return last
        previous = last.version if last else None
    else:
        previous = None if holder is None else str(holder)
    event = AliasEvent(
        alias=alias,
        version=str(version),
        action=action,
        previous=previous,
        at=datetime.now(UTC).isoformat(timespec="seconds"),
        reason=reason[:MAX_REASON_CHARS],
    )
    client.set_registered_model_alias(model_name, alias, str(version))
    _record(client, model, event)
    return event


def rollback_target(events: list[AliasEvent]) -> str | None:
    """The version a rollback returns to: replaying the history, a promotion stacks its version and a
    rollback pops one, so rolling back twice goes two champions back, not back and forth."""
    stack: list[str] = []
    for event in events:
        if event.action == "rollback":
            if stack:
                stack.pop()
        elif not stack or stack[-1] != event.version:
            stack.append(event.version)
    return stack[-2] if len(stack) >= 2 else None


def rollback(client, model_name: str, alias: str = "champion") -> AliasEvent:
    """Return `alias` to the version that held it before the current holder."""
    current = current_holder(client, model_name, alias)
    if current is None:
        raise RegistryError(f"{model_name!r} has no {alias!r} alias to roll back")
    target = rollback_target(alias_history(client, model_name, alias))
    if target is None:
        raise RegistryError(f"{model_name!r}: no earlier holder of {alias!r} is recorded; nothing to roll back to")
    return set_alias(client, model_name, alias, target, reason=f"rolled back from v{current}", action="rollback")


def _registered_model(client, model_name: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(model_name)
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise RegistryError(f"no registered model named {model_name!r}") from None
        raise


def _existing_version(client, model_name: str, version: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(model_name, str(version))
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise RegistryError(f"{model_name!r} has no version {version!r}") from None
        raise
