"""The MLflow store's own rules: links without credentials, one writer for a SQLite store, no leaked URIs."""

from __future__ import annotations

import os

from ml_platform.lib.mlflow_store import MlflowStore, tracking_uri_in_use
from ml_platform_tests.conftest import overlapping_entries


def store(tracking_uri: str, tmp_path) -> MlflowStore:
    return MlflowStore(tracking_uri, experiment_name="e", artifact_location=(tmp_path / "artifacts").as_uri())


def test_run_links_never_carry_credentials_of_the_tracking_uri(tmp_path):
    tracking = store("https://bob:s3cret@mlflow.example.com:8443/", tmp_path)
    tracking._experiment_id = "3"
    url = tracking.run_url("abc")
    assert url == "https://mlflow.example.com:8443/#/experiments/3/runs/abc"
    assert "s3cret" not in url


def test_run_links_for_a_local_store_point_at_the_local_ui(tmp_path):
    tracking = store(f"sqlite:///{tmp_path}/mlflow.db", tmp_path)
    tracking._experiment_id = "1"
    assert tracking.run_url("r") == "http://127.0.0.1:5000/#/experiments/1/runs/r"


def test_sqlite_writes_are_serialised(tmp_path):
    tracking = store(f"sqlite:///{tmp_path}/mlflow.db", tmp_path)
    assert overlapping_entries(tracking.write_lock) == 0
    assert (tmp_path / "mlflow.db.lock").exists()


def test_the_fluent_api_points_at_the_store_only_inside_the_block(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", "sqlite:///elsewhere.db")  # the user's own stays theirs
    uri = f"sqlite:///{tmp_path}/mlflow.db"

    with tracking_uri_in_use(uri):
        assert mlflow.get_tracking_uri() == uri
        assert mlflow.get_registry_uri() == uri

    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert os.environ["MLFLOW_REGISTRY_URI"] == "sqlite:///elsewhere.db"
    assert mlflow.get_tracking_uri() != uri and mlflow.get_registry_uri() == "sqlite:///elsewhere.db"
