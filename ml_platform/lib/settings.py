"""Where the platform keeps things, from the environment, with project-local defaults.

`ML_PLATFORM_HOME` holds the incoming batches, the warehouse, the MLflow store and the reports
(the project root by default); `ML_PLATFORM_CONFIG` names the config file. `ML_PLATFORM_DATA_DIR`
moves what the pipeline writes (warehouse, reports, step outputs) elsewhere, such as a mount every
worker shares; `ML_PLATFORM_DEPLOYMENT` is `embedded` (the default) or `cluster` (`lib/cluster.py`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ml_platform.lib.config import PlatformConfig

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG_PATH = PROJECT_ROOT / "configs" / "platform.yaml"
DEFAULT_EXPERIMENT_CONFIG_PATH = PROJECT_ROOT / "configs" / "experiment.yaml"


DEPLOYMENTS = ("embedded", "cluster")


@dataclass(frozen=True)
class Settings:
    home: Path
    config_path: Path
    data_dir: Path | None = None  # None: the home
    deployment: str = "embedded"

    @classmethod
    def from_env(cls) -> Settings:
        deployment = os.environ.get("ML_PLATFORM_DEPLOYMENT") or "embedded"
        if deployment not in DEPLOYMENTS:
            raise ValueError(f"ML_PLATFORM_DEPLOYMENT={deployment!r}: expected one of {', '.join(DEPLOYMENTS)}")
        data_dir = os.environ.get("ML_PLATFORM_DATA_DIR")
        return cls(
            home=Path(os.environ.get("ML_PLATFORM_HOME", PROJECT_ROOT)).resolve(),
            config_path=Path(os.environ.get("ML_PLATFORM_CONFIG", DEFAULT_CONFIG_PATH)).resolve(),
            data_dir=Path(data_dir).resolve() if data_dir else None,
            deployment=deployment,
        )

    @property
    def output_root(self) -> Path:
        """Where the pipeline writes: ML_PLATFORM_DATA_DIR when set, else the home."""
        return self.data_dir or self.home

    @property
    def dagster_home(self) -> Path:
        """DAGSTER_HOME when set, else `.dagster_home/` under the platform's home."""
        return Path(os.environ.get("DAGSTER_HOME", self.home / ".dagster_home")).resolve()

    def incoming_dir(self, config: PlatformConfig) -> Path:
        return self.home / config.data.incoming_dir

    @property
    def warehouse_dir(self) -> Path:
        return self.output_root / "data" / "warehouse"

    @property
    def dbt_runs_dir(self) -> Path:
        """Run artifacts of failed dbt builds (successful ones are removed)."""
        return self.output_root / "data" / "dbt_runs"

    @property
    def step_outputs_dir(self) -> Path:
        """What one step hands to the next (Dagster's IO manager): every worker must reach it."""
        return self.output_root / "data" / "step_outputs"

    @property
    def reports_dir(self) -> Path:
        return self.output_root / "reports"

    @property
    def clearml_dir(self) -> Path:
        """ClearML's cache, holding its offline sessions (`offline/*.zip`) when no server is configured."""
        return self.output_root / "clearml"

    @property
    def mlflow_dir(self) -> Path:
        return self.home / "mlflow"

    @property
    def local_tracking_uri(self) -> str:
        """The embedded MLflow store, used unless the config or MLFLOW_TRACKING_URI names another."""
        return f"sqlite:///{self.mlflow_dir / 'mlflow.db'}"

    @property
    def tracking_uri(self) -> str:
        """MLFLOW_TRACKING_URI when set, else the embedded store."""
        return os.environ.get("MLFLOW_TRACKING_URI") or self.local_tracking_uri

    def tracking_uri_for(self, config: PlatformConfig) -> str:
        """The store `config` tracks to: its own tracking URI, else MLFLOW_TRACKING_URI, else the embedded one."""
        return config.tracking.tracking_uri or self.tracking_uri

    def artifact_location_for(self, config: PlatformConfig) -> str | None:
        """Where `config`'s new experiments keep artifacts: its own location, else the default for its store."""
        return config.tracking.artifact_location or self.artifact_location(self.tracking_uri_for(config))

    def artifact_location(self, tracking_uri: str) -> str | None:
        """Where new experiments keep artifacts: a tracking server's own default, and the project's
        `mlflow/artifacts/` for a database store (MLflow would otherwise use `./mlruns`)."""
        if tracking_uri.startswith(("http://", "https://")):
            return None
        return (self.mlflow_dir / "artifacts").as_uri()
