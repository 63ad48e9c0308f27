"""MLflow as a Dagster resource: configures the platform's `MlflowStore` for the assets.

dagster-mlflow's `mlflow_tracking` keeps one MLflow run per Dagster run, its hook can end that
run before other steps finish (dagster#21872), and it is not a ConfigurableResource
(dagster#15053). The platform logs one run per model per batch from steps that may run in
separate processes, so it talks to MLflow through this resource instead.
"""

import dagster as dg
from pydantic import PrivateAttr

from ml_platform.lib.mlflow_store import MlflowStore


class MlflowTrackingResource(dg.ConfigurableResource):
    tracking_uri: str
    artifact_location: str | None = None  # None: the tracking server's default
    experiment_name: str
    ui_url: str = "http://127.0.0.1:5000"

    _store: MlflowStore | None = PrivateAttr(default=None)

    @property
    def store(self) -> MlflowStore:
        """One store per resource instance, so the experiment id is looked up once per run."""
        if self._store is None:
            self._store = MlflowStore(self.tracking_uri, self.experiment_name, self.artifact_location, self.ui_url)
        return self._store
