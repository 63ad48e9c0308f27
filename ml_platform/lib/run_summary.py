"""What a pipeline run did, in a form people and scripts read: stages, metrics, the champion decision.

Pure data and formatting, no Dagster: `ml_platform.defs.monitoring.run_summary` fills these from
Dagster's event log, `ml-platform status` prints them, and the JSON under `reports/runs/` is their
`to_dict()`. Times are timezone-aware UTC datetimes, ISO 8601 strings in JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

# The run tags that say why a run happened; whichever are present end up in `RunSummary.trigger`.
TRIGGER_TAGS = (
    "dagster/sensor_name",
    "dagster/schedule_name",
    "dagster/backfill",
    "ml_platform/trigger",
    "ml_platform/stale_reason",
    "ml_platform/drift_reason",
    "ml_platform/source_file",
)

# How many lines of an error a summary keeps: the message, not the whole traceback.
ERROR_LINES = 5


@dataclass(frozen=True)
class StageSummary:
    """One step of a run (an asset, or an op), as Dagster's step stats report it."""

    step_key: str
    status: str
    start: datetime | None = None
    end: datetime | None = None
    duration_seconds: float | None = None

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> StageSummary:
        return cls(
            step_key=raw["step_key"],
            status=raw["status"],
            start=parse_time(raw.get("start")),
            end=parse_time(raw.get("end")),
            duration_seconds=raw.get("duration_seconds"),
        )


@dataclass(frozen=True)
class ChampionDecision:
    """What `champion_model` did: the version it registered, its alias and why, and the champion after it."""

    version: str | None
    alias: str | None
    reason: str | None
    champion_version: str | None = None


@dataclass(frozen=True)
class RunSummary:
    """One Dagster run of the pipeline: when, how long each stage took, what it trained and decided."""

    run_id: str
    job_name: str
    partition: str | None
    status: str
    start: datetime | None = None
    end: datetime | None = None
    duration_seconds: float | None = None
    stages: list[StageSummary] = field(default_factory=list)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    winner: str | None = None
    champion: ChampionDecision | None = None
    trigger: dict[str, str] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types: times as ISO 8601 strings."""
        return _jsonable(asdict(self))

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> RunSummary:
        """The inverse of `to_dict`, for summaries read back from `reports/runs/<run_id>.json`."""
        champion = raw.get("champion")
        return cls(
            run_id=raw["run_id"],
            job_name=raw["job_name"],
            partition=raw.get("partition"),
            status=raw["status"],
            start=parse_time(raw.get("start")),
            end=parse_time(raw.get("end")),
            duration_seconds=raw.get("duration_seconds"),
            stages=[StageSummary.from_dict(stage) for stage in raw.get("stages", [])],
            metrics={model: dict(values) for model, values in raw.get("metrics", {}).items()},
            winner=raw.get("winner"),
            champion=ChampionDecision(**champion) if champion else None,
            trigger=dict(raw.get("trigger", {})),
            error=raw.get("error"),
        )


@dataclass(frozen=True)
class BatchStatus:
    """One batch partition in the history: its last pipeline run and the latest decision made for it."""

    batch: str
    last_run_id: str | None = None
    last_run_status: str | None = None
    last_run_time: datetime | None = None
    through_pipeline: bool = False
    winner: str | None = None
    primary_metric: str | None = None
    winner_metric: float | None = None
    champion: ChampionDecision | None = None

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))


def timestamp_to_datetime(timestamp: float | None) -> datetime | None:
    """A Unix timestamp (what Dagster stores) as an aware UTC datetime."""
    return None if timestamp is None else datetime.fromtimestamp(timestamp, tz=UTC)


def parse_time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def duration_between(start: float | None, end: float | None) -> float | None:
    """Seconds from start to end, or None while either is unknown (a step never ran, a run still going)."""
    if start is None or end is None:
        return None
    return round(end - start, 3)


def trigger_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """The run tags that say what launched a run (a sensor, a schedule, a backfill, the platform's own)."""
    return {key: tags[key] for key in TRIGGER_TAGS if key in tags}


def decision_text(champion: ChampionDecision | None) -> str | None:
    """One line for a table: 'v3 champion' or 'v4 challenger (champion v3)'."""
    if champion is None or champion.version is None:
        return None
    text = f"v{champion.version} {champion.alias}"
    if champion.champion_version and champion.champion_version != champion.version:
        text += f" (champion v{champion.champion_version})"
    return text


def history_table(history: list[Mapping[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows of the batch history (`BatchStatus.to_dict()` per batch) for a table."""
    columns = ["batch", "last run", "status", "when", "winner", "metric", "champion decision"]
    rows = []
    for entry in history:
        champion = entry.get("champion")
        metric = entry.get("primary_metric")
        value = entry.get("winner_metric")
        rows.append(
            [
                entry["batch"],
                short_id(entry.get("last_run_id")),
                entry.get("last_run_status"),
                _when(entry.get("last_run_time")),
                entry.get("winner"),
                f"{metric} {value:.4f}" if metric and value is not None else None,
                decision_text(ChampionDecision(**champion) if champion else None),
            ]
        )
    return columns, rows


def stages_table(summary: RunSummary) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows of a run's stages, in the order they started."""
    return ["stage", "status", "seconds"], [
        [stage.step_key, stage.status, stage.duration_seconds] for stage in summary.stages
    ]


def metrics_table(summary: RunSummary) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows of a run's model metrics, one row per model, the winner marked."""
    names = sorted({metric for values in summary.metrics.values() for metric in values})
    rows = [
        [f"{model} (winner)" if model == summary.winner else model, *(values.get(name) for name in names)]
        for model, values in sorted(summary.metrics.items())
    ]
    return ["model", *names], rows


def run_headline(summary: RunSummary) -> str:
    """A line about a run (id, job, batch, status, start, duration, what launched it), then its decision or error."""
    parts = [f"run {short_id(summary.run_id)}", summary.job_name]
    if summary.partition:
        parts.append(summary.partition)
    parts.append(summary.status)
    if summary.start is not None:
        parts.append(_when(summary.start.isoformat()))
    if summary.duration_seconds is not None:
        parts.append(f"{summary.duration_seconds:.1f}s")
    if summary.trigger:
        parts.append("(" + ", ".join(f"{key.split('/')[-1]}: {value}" for key, value in summary.trigger.items()) + ")")
    line = "  ".join(parts)
    if decision := decision_text(summary.champion):
        line += f"\n  decision: {decision}: {summary.champion.reason}"
    if summary.error:
        line += "\n  error: " + summary.error.replace("\n", "\n    ")
    return line


def short_id(run_id: str | None) -> str | None:
    """The first 8 characters of a run id, as Dagster's UI shows it."""
    return run_id[:8] if run_id else None


def _when(iso_time: str | None) -> str | None:
    """An ISO time as 'YYYY-MM-DD HH:MM:SS UTC' for a table."""
    if iso_time is None:
        return None
    return datetime.fromisoformat(iso_time).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    return value
