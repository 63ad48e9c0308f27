"""Where the platform keeps things: environment first, project-local defaults otherwise."""

from __future__ import annotations

from pathlib import Path

from ml_platform.lib.settings import DEFAULT_CONFIG_PATH, PROJECT_ROOT, Settings
from ml_platform_tests.conftest import small_config


def test_defaults_are_project_local(monkeypatch):
    for name in ("ML_PLATFORM_HOME", "ML_PLATFORM_CONFIG", "DAGSTER_HOME", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings.from_env()
    assert settings.home == PROJECT_ROOT
    assert settings.config_path == DEFAULT_CONFIG_PATH
    assert settings.dagster_home == PROJECT_ROOT / ".dagster_home"
    assert settings.warehouse_dir == PROJECT_ROOT / "data" / "warehouse"
    assert settings.local_tracking_uri == f"sqlite:///{PROJECT_ROOT / 'mlflow' / 'mlflow.db'}"


def test_environment_overrides_every_location(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("ML_PLATFORM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ML_PLATFORM_CONFIG", str(tmp_path / "mine.yaml"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dh"))
    settings = Settings.from_env()
    assert settings.home == tmp_path / "home"
    assert settings.config_path == tmp_path / "mine.yaml"
    assert settings.dagster_home == tmp_path / "dh"
    assert settings.incoming_dir(small_config()) == tmp_path / "home" / "data" / "incoming"
    assert settings.local_tracking_uri == f"sqlite:///{tmp_path / 'home' / 'mlflow' / 'mlflow.db'}"
