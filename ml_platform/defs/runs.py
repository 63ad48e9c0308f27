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


def first_failure(events: list[dg.DagsterEvent]) -> str:
    """The first failed step among a run's events and its own error message, under Dagster's wrappers;
    else what failed the run itself (a lost worker, a monitoring timeout)."""
    for event in events:
        if event.is_step_failure and (message := step_error(event)):
            return f"step {event.step_key}: {message}"
    for event in events:
        if event.is_run_failure and event.message:
            return event.message.strip().splitlines()[0]
    return "see the run's logs in the Dagster UI"


def step_error(event: dg.DagsterEvent) -> str | None:
    """A step failure's own exception message (the asset's, not Dagster's wrapper around it)."""
    error = event.step_failure_data.error
    if error is None:
        return None
    while error.cause is not None:
        error = error.cause
    return error.message.strip()
