"""The project's Dagster instance and run results, for commands and APIs that run outside `dagster dev`."""

import os

import dagster as dg

from ml_platform.lib.settings import PROJECT_ROOT, Settings


def project_instance(settings: Settings) -> dg.DagsterInstance:
    """The instance in DAGSTER_HOME (`.dagster_home/` by default); a new home links to the
    project's dagster.yaml, so run queue and pool limits are the same everywhere."""
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        (home / "dagster.yaml").symlink_to(PROJECT_ROOT / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    return dg.DagsterInstance.get()


def first_failure(result: dg.ExecuteInProcessResult) -> str:
    """The first failed step and its own error message, under Dagster's wrappers."""
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.error:
            error = event.step_failure_data.error
            while error.cause is not None:  # the asset's own exception, under Dagster's wrapper
                error = error.cause
            return f"step {event.step_key}: {error.message.strip()}"
    return "see the run's logs in the Dagster UI"
