"""Experiment management: record an experiment's config, run it through Dagster, compare, fetch the best.

An experiment is one validated `ExperimentConfig` (one model, one data set, one split). Its identity
and config live in MLflow: an MLflow experiment tagged `ml_platform.kind=experiment`, whose id is the
experiment's id and whose tags hold the resolved config and its hash, so any later command or process
finds it. Each run is a real Dagster run of the `experiment` job in the project's instance (it shows
in the Dagster UI, tagged with the experiment id), logging one MLflow run into that experiment.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from ml_platform.lib.config import METRIC_DIRECTIONS, ConfigError, ExperimentConfig, PlatformConfig, load_config
from ml_platform.lib.mlflow_store import MlflowStore
from ml_platform.lib.settings import Settings
from ml_platform.tracking import best_row

KIND_TAG = "ml_platform.kind"
CONFIG_TAG = "ml_platform.config"
HASH_TAG = "ml_platform.config_hash"
MODEL_TYPE_TAG = "ml_platform.model_type"
DESCRIPTION_TAG = "mlflow.note.content"
EXPERIMENT_FILTER = f"tags.`{KIND_TAG}` = 'experiment'"
KNOWN_DIRECTIONS = {metric: mode for directions in METRIC_DIRECTIONS.values() for metric, mode in directions.items()}


class ExperimentError(ValueError):
    """A request about experiments that cannot be carried out; the message says why and what to do."""


@dataclass(frozen=True)
class Experiment:
    experiment_id: str
    name: str
    config: ExperimentConfig
    created: datetime

    @property
    def config_hash(self) -> str:
        return self.config.config_hash()


@dataclass(frozen=True)
class ExperimentRun:
    """One finished launch of an experiment: its Dagster run and, when it succeeded, its MLflow run."""

    experiment_id: str
    batch: str
    dagster_run_id: str
    success: bool
    mlflow_run_id: str | None = None
    metrics: dict[str, float] | None = None
    error: str | None = None


class ExperimentManager:
    """Create, run, compare and rank experiments. `instance` defaults to the project's Dagster instance."""

    def __init__(self, settings: Settings | None = None, instance=None):
        self.settings = settings or Settings.from_env()
        self._instance = instance
        self._platform: PlatformConfig | None = None
        self._client = None

    # ------------------------------------------------------------ where things are

    @property
    def platform(self) -> PlatformConfig:
        """The code location's config: its data set, and the MLflow store the pipeline uses."""
        if self._platform is None:
            try:
                self._platform = load_config(self.settings.config_path)
            except ConfigError as error:
                raise ExperimentError(str(error)) from None
        return self._platform

    @property
    def tracking_uri(self) -> str:
        return self.settings.tracking_uri_for(self.platform)

    def store(self, experiment_name: str) -> MlflowStore:
        return MlflowStore(self.tracking_uri, experiment_name, self.settings.artifact_location_for(self.platform))

    def client(self):
        """The store's client, made once per manager (see `MlflowStore.client`)."""
        if self._client is None:
            self._client = self.store("").client()
        return self._client

    @property
    def instance(self):
        if self._instance is None:
            from ml_platform.defs.runs import project_instance

            self._instance = project_instance(self.settings)
        return self._instance

    # ------------------------------------------------------------ create, find, list

    def create_experiment(self, config: ExperimentConfig) -> str:
        """Record the experiment; returns its id. The same name with the same config returns the
        existing id; the same name with another config is refused."""
        existing = self.client().get_experiment_by_name(config.name)
        if existing is not None:
            if existing.tags.get(KIND_TAG) != "experiment":
                raise ExperimentError(
                    f"{config.name!r} names an MLflow experiment that is not an ml-platform experiment"
                )
            if existing.tags.get(HASH_TAG) != config.config_hash():
                raise ExperimentError(
                    f"experiment {config.name!r} (id {existing.experiment_id}) exists with another config; "
                    "choose another name (name=...)"
                )
            return existing.experiment_id
        store = self.store(config.name)
        experiment_id = store.experiment_id()
        tags = {
            KIND_TAG: "experiment",
            CONFIG_TAG: json.dumps(config.loggable(), sort_keys=True),
            HASH_TAG: config.config_hash(),
            MODEL_TYPE_TAG: config.model.type,
            DESCRIPTION_TAG: config.description,
        }
        with store.write_lock():
            client = store.client()
            for key, value in tags.items():
                client.set_experiment_tag(experiment_id, key, value)
        return experiment_id

    def get_experiment(self, experiment_id: str) -> Experiment:
        """The experiment by id (or by name)."""
        from mlflow.exceptions import MlflowException

        client = self.client()
        found = None
        if str(experiment_id).isdigit():
            try:
                found = client.get_experiment(str(experiment_id))
            except MlflowException:
                found = None
        found = found or client.get_experiment_by_name(str(experiment_id))
        if found is None or found.tags.get(KIND_TAG) != "experiment" or found.lifecycle_stage != "active":
            raise ExperimentError(f"no experiment {experiment_id!r}; see `ml-platform experiments list`")
        return _experiment(found)

    def list_experiments(self) -> list[Experiment]:
        experiments = self.client().search_experiments(filter_string=EXPERIMENT_FILTER, max_results=10_000)
        return sorted((_experiment(e) for e in experiments), key=lambda e: int(e.experiment_id))

    # ------------------------------------------------------------ run

    def run_experiment(self, experiment_id: str, batch: str | None = None, progress=None) -> ExperimentRun:
        """Launch the `experiment` job for one batch (default: the newest batch with features) in the
        project's Dagster instance and wait for it. `progress(job)`, when given, is a context manager
        around the run that yields its run id (the CLI's progress display)."""
        import dagster as dg
        from dagster._core.storage.defs_state.base import set_defs_state_storage

        from ml_platform.defs.definitions import build_definitions
        from ml_platform.defs.experiments.jobs import experiment_run_config
        from ml_platform.defs.partitions import batch_partitions, batches_with
        from ml_platform.defs.runs import first_failure
        from ml_platform.defs.tags import EXPERIMENT_ID_TAG

        experiment = self.get_experiment(experiment_id)
        known = self.instance.get_dynamic_partitions(batch_partitions.name)
        if batch is None:
            ready = batches_with(self.instance, dg.AssetKey("features"))
            if not ready:
                raise ExperimentError("no batch has features yet: run the pipeline first (`ml-platform run --all`)")
            batch = ready[-1]
        elif batch not in known:
            raise ExperimentError(f"unknown batch {batch!r}: add it with `ml-platform batches add` or `scan`")
        try:
            definitions = build_definitions(self.platform, self.settings)
        except FileNotFoundError as error:  # the dbt manifest has not been prepared
            raise ExperimentError(str(error)) from None
        # Definitions load against the "current" definitions-state storage, a context variable that the
        # last instance entered in this process leaves behind (dagster 1.13), even once it is disposed;
        # a long-lived process (a notebook, a test session) would then fail to load them. This one's own.
        with set_defs_state_storage(self.instance.defs_state_storage):
            job = definitions.resolve_job_def("experiment")
        with progress(job) if progress else contextlib.nullcontext() as run_id:
            result = job.execute_in_process(
                run_config={
                    **experiment_run_config(experiment.experiment_id, experiment.name, experiment.config),
                    "loggers": {"console": {"config": {"log_level": "WARNING"}}},
                },
                instance=self.instance,
                partition_key=batch,
                run_id=run_id,
                tags={EXPERIMENT_ID_TAG: experiment.experiment_id},
                raise_on_error=False,
            )
        if not result.success:
            error = first_failure(result.all_events)
            return ExperimentRun(experiment.experiment_id, batch, result.run_id, False, error=error)
        output = result.output_for_node("train_experiment")
        return ExperimentRun(
            experiment.experiment_id, batch, result.run_id, True, output["mlflow_run_id"], output["metrics"]
        )

    # ------------------------------------------------------------ look at results

    def runs(self, experiment_ids: list[str]) -> pd.DataFrame:
        """The finished MLflow runs of the experiments: one row each, with params and metrics."""
        experiments = [self.get_experiment(experiment_id) for experiment_id in experiment_ids]
        runs = self.client().search_runs(
            [e.experiment_id for e in experiments], filter_string="attributes.status = 'FINISHED'", max_results=50_000
        )
        names = {e.experiment_id: e.name for e in experiments}
        rows = [
            {
                "experiment_id": run.info.experiment_id,
                "experiment": names[run.info.experiment_id],
                "run_id": run.info.run_id,
                "batch": run.data.tags.get("batch", ""),
                "started": pd.Timestamp(run.info.start_time, unit="ms", tz="UTC"),
                **{f"params.{key}": value for key, value in sorted(run.data.params.items())},
                **{f"metrics.{key}": value for key, value in sorted(run.data.metrics.items())},
            }
            for run in runs
        ]
        return pd.DataFrame(rows)

    def compare_experiments(self, experiment_ids: list[str]) -> pd.DataFrame:
        """The experiments' runs side by side: one row per run, params and metrics as columns."""
        table = self.runs(experiment_ids)
        if table.empty:
            raise ExperimentError(
                f"no finished runs yet for experiment(s) {', '.join(map(str, experiment_ids))}: "
                "run them with `ml-platform experiment run ID`"
            )
        return table.sort_values(["experiment_id", "started"]).reset_index(drop=True)

    def best_run(self, metric: str, mode: str | None = None) -> pd.Series:
        """The finished run, over every experiment, with the best `metric` (max or min; by default
        the metric's usual direction)."""
        mode = mode or KNOWN_DIRECTIONS.get(metric)
        if mode not in ("min", "max"):
            raise ExperimentError(f"metric {metric!r} has no known direction: pass --mode min or --mode max")
        experiments = self.list_experiments()
        if not experiments:
            raise ExperimentError("no experiments yet: create one with `ml-platform experiment create`")
        best = best_row(self.runs([e.experiment_id for e in experiments]), metric, mode)
        if best is None:
            raise ExperimentError(f"no finished experiment run has the metric {metric!r} yet")
        return best.dropna()

    def get_best_model(self, metric: str, mode: str | None = None):
        """The fitted scikit-learn pipeline of the best run (see `best_run`)."""
        best = self.best_run(metric, mode)
        return self.store(best["experiment"]).load_model(f"runs:/{best['run_id']}/model")

    def status(self, experiment_id: str) -> dict[str, Any]:
        """The experiment, its config hash and every Dagster run of it with its status and metrics."""
        import dagster as dg

        from ml_platform.defs.tags import EXPERIMENT_ID_TAG, PARTITION_TAG

        experiment = self.get_experiment(experiment_id)
        records = self.instance.get_run_records(dg.RunsFilter(tags={EXPERIMENT_ID_TAG: experiment.experiment_id}))
        mlflow_runs = {
            run.data.tags.get("dagster.run_id"): run
            for run in self.client().search_runs([experiment.experiment_id], max_results=50_000)
        }
        runs = []
        for record in sorted(records, key=lambda r: r.create_timestamp):
            run = record.dagster_run
            logged = mlflow_runs.get(run.run_id)
            runs.append(
                {
                    "dagster_run_id": run.run_id,
                    "batch": run.tags.get(PARTITION_TAG, ""),
                    "status": run.status.value,
                    "started": _iso(record.start_time),
                    "ended": _iso(record.end_time),
                    "mlflow_run_id": logged.info.run_id if logged else None,
                    "metrics": dict(logged.data.metrics) if logged else {},
                }
            )
        return {
            "experiment_id": experiment.experiment_id,
            "name": experiment.name,
            "model_type": experiment.config.model.type,
            "params": experiment.config.model.params,
            "config_hash": experiment.config_hash,
            "created": experiment.created.isoformat(timespec="seconds"),
            "description": experiment.config.description,
            "runs": runs,
        }


def _experiment(mlflow_experiment) -> Experiment:
    config = ExperimentConfig.model_validate(json.loads(mlflow_experiment.tags[CONFIG_TAG]))
    created = datetime.fromtimestamp(mlflow_experiment.creation_time / 1000, tz=UTC)
    return Experiment(mlflow_experiment.experiment_id, mlflow_experiment.name, config, created)


def _iso(timestamp: float | None) -> str | None:
    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat(timespec="seconds") if timestamp else None
