"""ClearML as a Dagster resource, for a pipeline whose `tracking.backends` lists it beside MLflow.

Where tasks go is read from the run's environment when a step uses it (`CLEARML_API_HOST` and the
keys, which ClearML itself reads too), so no secret is ever part of the resource's config.
"""

from pathlib import Path

import dagster as dg

from ml_platform.lib.clearml_store import ClearMLStore, ClearMLTarget


class ClearMLTrackingResource(dg.ConfigurableResource):
    cache_dir: str  # ClearML's cache, and its offline sessions when no server is configured
    project_name: str

    @property
    def store(self) -> ClearMLStore:
        return ClearMLStore(ClearMLTarget.from_environment(Path(self.cache_dir)), self.project_name)
