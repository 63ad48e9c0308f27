"""Run summaries as data: JSON round trips, trigger tags, error trimming and the tables people read."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from ml_platform.lib.run_summary import (
    BatchStatus,
    ChampionDecision,
    RunSummary,
    StageSummary,
    decision_text,
    duration_between,
    history_table,
    metrics_table,
    run_headline,
    stages_table,
    trigger_tags,
)

START = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


def summary(**changes) -> RunSummary:
    fields = {
        "run_id": "5c0b1234-aaaa-bbbb-cccc-000000000000",
        "job_name": "batch_pipeline",
        "partition": "batch_0003",
        "status": "SUCCESS",
        "start": START,
        "end": datetime(2025, 3, 1, 12, 0, 35, tzinfo=UTC),
        "duration_seconds": 35.0,
        "stages": [
            StageSummary("raw_batch", "SUCCESS", START, datetime(2025, 3, 1, 12, 0, 2, tzinfo=UTC), 2.0),
            StageSummary("champion_model", "SUCCESS", None, None, None),
        ],
        "metrics": {"random_forest": {"roc_auc": 0.81, "f1": 0.5}, "logistic_regression": {"roc_auc": 0.8}},
        "winner": "random_forest",
        "champion": ChampionDecision("4", "challenger", "does not beat the champion", "3"),
        "trigger": {"dagster/sensor_name": "incoming_batches"},
    }
    return RunSummary(**{**fields, **changes})


def test_summary_survives_a_json_round_trip():
    original = summary(error="step raw_batch: batch rejected")

    text = json.dumps(original.to_dict())

    assert RunSummary.from_dict(json.loads(text)) == original
    assert json.loads(text)["start"] == "2025-03-01T12:00:00+00:00"


def test_summary_without_champion_or_times_round_trips():
    original = summary(champion=None, start=None, end=None, duration_seconds=None, stages=[], metrics={})

    assert RunSummary.from_dict(json.loads(json.dumps(original.to_dict()))) == original


def test_batch_status_to_dict_is_plain_json():
    status = BatchStatus("batch_0001", "abc", "SUCCESS", START, True, "random_forest", "roc_auc", 0.8)

    assert json.loads(json.dumps(status.to_dict()))["last_run_time"] == "2025-03-01T12:00:00+00:00"


def test_trigger_tags_keep_only_what_says_why_a_run_happened():
    tags = {
        "dagster/partition": "batch_0001",
        "dagster/schedule_name": "nightly",
        "ml_platform/stale_reason": "code version changed",
        ".dagster/grpc_info": "{}",
    }

    assert trigger_tags(tags) == {
        "dagster/schedule_name": "nightly",
        "ml_platform/stale_reason": "code version changed",
    }


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [(10.0, 12.5, 2.5), (10.0, None, None), (None, 12.0, None)],
)
def test_duration_is_unknown_until_both_ends_are(start, end, expected):
    assert duration_between(start, end) == expected


@pytest.mark.parametrize(
    ("decision", "expected"),
    [
        (ChampionDecision("3", "champion", "first", "3"), "v3 champion"),
        (ChampionDecision("4", "challenger", "worse", "3"), "v4 challenger (champion v3)"),
        (None, None),
    ],
)
def test_decision_text_names_the_champion_a_challenger_leaves_in_place(decision, expected):
    assert decision_text(decision) == expected


def test_history_table_has_a_row_per_batch_with_blanks_for_batches_never_run():
    history = [
        BatchStatus(
            "batch_0001",
            "fe5a3ee1-b43c",
            "SUCCESS",
            START,
            True,
            "logistic_regression",
            "roc_auc",
            0.77908,
            ChampionDecision("1", "champion", "no current champion", "1"),
        ).to_dict(),
        BatchStatus("batch_0002").to_dict(),
    ]

    columns, rows = history_table(history)

    assert columns == ["batch", "last run", "status", "when", "winner", "metric", "champion decision"]
    assert rows[0] == [
        "batch_0001",
        "fe5a3ee1",
        "SUCCESS",
        "2025-03-01 12:00:00 UTC",
        "logistic_regression",
        "roc_auc 0.7791",
        "v1 champion",
    ]
    assert rows[1] == ["batch_0002", None, None, None, None, None, None]


def test_stage_and_metric_tables_follow_the_summary():
    run = summary()

    assert stages_table(run) == (
        ["stage", "status", "seconds"],
        [["raw_batch", "SUCCESS", 2.0], ["champion_model", "SUCCESS", None]],
    )
    assert metrics_table(run) == (
        ["model", "f1", "roc_auc"],
        [["logistic_regression", None, 0.8], ["random_forest (winner)", 0.5, 0.81]],
    )


def test_headline_says_what_ran_why_and_what_was_decided():
    line = run_headline(summary())

    assert line.splitlines()[0] == (
        "run 5c0b1234  batch_pipeline  batch_0003  SUCCESS  2025-03-01 12:00:00 UTC  35.0s  "
        "(sensor_name: incoming_batches)"
    )
    assert "decision: v4 challenger (champion v3): does not beat the champion" in line


def test_headline_of_a_failed_run_shows_the_error_indented():
    line = run_headline(summary(status="FAILURE", champion=None, error="step raw_batch: rejected\n  - detail"))

    assert line.splitlines()[1:] == ["  error: step raw_batch: rejected", "      - detail"]
