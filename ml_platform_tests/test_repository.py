"""The repository itself: state a run builds (databases, stores) is never committed."""

from __future__ import annotations

import subprocess

from ml_platform.lib.settings import PROJECT_ROOT

DATABASE_SUFFIXES = (".db", ".duckdb", ".sqlite", ".sqlite3", ".wal")


def tracked_files() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=PROJECT_ROOT, capture_output=True, check=True, text=True)
    return [path for path in listed.stdout.split("\0") if path]


def test_no_database_file_is_tracked_by_git():
    databases = [path for path in tracked_files() if path.endswith(DATABASE_SUFFIXES)]
    assert databases == [], f"database files are committed (built state, not source): {databases}"


def test_the_places_runs_write_to_are_ignored_by_git():
    places = [
        "mlflow.db",
        "mlruns/0/meta.yaml",
        "mlflow/mlflow.db",
        "data/warehouse/batch_0001.duckdb",
        "ml_platform_tests/batch.duckdb",
        ".dagster_home/runs.db",
        "reports/batch_0001/report.json",
    ]
    checked = subprocess.run(
        ["git", "check-ignore", "--no-index", *places], cwd=PROJECT_ROOT, capture_output=True, text=True
    )
    assert sorted(checked.stdout.split()) == sorted(places)
