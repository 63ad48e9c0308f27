"""The tracking API for people working from code: MLflow runs, comparisons and the Model Registry,
and ClearML tasks beside them (`ClearMLTracker`, `compare_clearml_experiments`, `compare_registered_models`).

    from ml_platform.tracking import ExperimentTracker, mlflow_run, compare_runs, get_best_run

    with ExperimentTracker("churn-notebook", run_name="try-1") as run:
        run.log_params({"C": 0.5})
        run.log_metrics({"f1": 0.61})
        run.log_model(pipeline)
    best = get_best_run("churn-notebook", "f1", mode="max")

Everything goes to the platform's MLflow store: `tracking_uri` when given, else MLFLOW_TRACKING_URI,
else the embedded SQLite store under ML_PLATFORM_HOME (what the pipeline uses). Writes to SQLite
take the store's writer lock, so a notebook and a running pipeline do not trip over each other.
"""

from __future__ import annotations

import functools
import inspect
import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ml_platform.lib.config import ExperimentConfig, PlatformConfig
from ml_platform.lib.mlflow_store import MlflowStore, sklearn_model_args, tracking_uri_in_use
from ml_platform.lib.registry import AliasEvent, alias_history, rollback, set_alias
from ml_platform.lib.settings import Settings

if TYPE_CHECKING:
    from ml_platform.lib.clearml_store import ClearMLTarget

MODES = ("min", "max")
# Where runs go when no experiment is named: one the platform creates, so its artifacts stay under
# ML_PLATFORM_HOME (MLflow's own "Default" experiment keeps them in ./mlruns of wherever it was made).
DEFAULT_EXPERIMENT = "ml_platform/scratch"


class TrackingError(ValueError):
    """A tracking request that cannot be answered (unknown experiment, no runs, bad argument)."""


def store_for(experiment_name: str, tracking_uri: str | None = None) -> MlflowStore:
    """The platform's MLflow store for one experiment, on the default tracking URI unless given."""
    settings = Settings.from_env()
    uri = tracking_uri or settings.tracking_uri
    return MlflowStore(uri, experiment_name, settings.artifact_location(uri))


# ---------------------------------------------------------------- runs


class ExperimentTracker:
    """One MLflow run as a context manager. The run is MLflow's active run inside the block, so
    `mlflow.log_*` calls land in it too. An exception ends it FAILED and propagates."""

    def __init__(
        self,
        experiment_name: str,
        run_name: str | None = None,
        tags: Mapping[str, str] | None = None,
        tracking_uri: str | None = None,
    ):
        self.store = store_for(experiment_name, tracking_uri)
        self.run_name = run_name
        self.tags = dict(tags or {})
        self.run_id: str | None = None

    def __enter__(self) -> ExperimentTracker:
        import mlflow

        experiment_id = self.store.experiment_id()
        self._uri_in_use = tracking_uri_in_use(self.store.tracking_uri)
        self._uri_in_use.__enter__()
        with self.store.write_lock():
            run = mlflow.start_run(
                experiment_id=experiment_id,
                run_name=self.run_name,
                tags=self.tags,
                nested=mlflow.active_run() is not None,
            )
        self.run_id = run.info.run_id
        return self

    def __exit__(self, exc_type, exc, traceback) -> bool:
        try:
            self.end_run("FAILED" if exc_type else "FINISHED")
        finally:
            self._uri_in_use.__exit__(None, None, None)
        return False

    def _active_run_id(self) -> str:
        if self.run_id is None:
            raise TrackingError("the run is not started: use ExperimentTracker(...) in a `with` block")
        return self.run_id

    def log_param(self, key: str, value: Any) -> None:
        self.log_params({key: value})

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        self._log_batch(params=[Param(key, str(value)) for key, value in params.items()])

    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        self.log_metrics({key: value}, step)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._log_batch(metrics=[Metric(key, float(value), now, step or 0) for key, value in metrics.items()])

    def set_tag(self, key: str, value: Any) -> None:
        self.set_tags({key: value})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        self._log_batch(tags=[RunTag(key, str(value)) for key, value in tags.items()])

    def _log_batch(self, **entities: Iterable) -> None:
        run_id = self._active_run_id()
        with self.store.write_lock():
            self.store.client().log_batch(run_id, **entities)

    def log_model(self, model, artifact_path: str = "model", input_example=None) -> str:
        """Log a scikit-learn model as the pipeline does (skops format, pinned requirements, a signature
        when given an input example). Returns its model URI."""
        import mlflow.sklearn

        self._active_run_id()
        model_args = sklearn_model_args(model, input_example)
        with self.store.write_lock():
            return mlflow.sklearn.log_model(model, name=artifact_path, **model_args).model_uri

    def log_artifact(self, local_path: str | os.PathLike, artifact_path: str | None = None) -> None:
        run_id = self._active_run_id()
        with self.store.write_lock():
            self.store.client().log_artifact(run_id, str(local_path), artifact_path)

    def end_run(self, status: str = "FINISHED") -> None:
        """End the run (FINISHED, FAILED or KILLED); ending it twice is harmless."""
        import mlflow

        if self.run_id is None:
            return
        active = mlflow.active_run()
        with self.store.write_lock():
            if active is not None and active.info.run_id == self.run_id:
                mlflow.end_run(status)
            else:
                self.store.client().set_terminated(self.run_id, status)
        self.run_id = None


def mlflow_run(
    experiment_name: str | Callable | None = None,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
    tracking_uri: str | None = None,
):
    """Run the decorated function inside an MLflow run (named after the function by default).

    A parameter named `tracker` receives the `ExperimentTracker`. The experiment is
    `experiment_name`, else MLFLOW_EXPERIMENT_NAME, else `ml_platform/scratch`. Works bare too: `@mlflow_run`.
    """
    if callable(experiment_name):  # used as @mlflow_run without arguments
        return mlflow_run()(experiment_name)

    def decorate(function: Callable) -> Callable:
        wants_tracker = "tracker" in inspect.signature(function).parameters

        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            name = experiment_name or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
            with ExperimentTracker(name, run_name or function.__name__, tags, tracking_uri) as tracker:
                if wants_tracker:
                    kwargs.setdefault("tracker", tracker)
                return function(*args, **kwargs)

        return wrapper

    return decorate


# ---------------------------------------------------------------- queries


def search_runs(
    experiment_name: str, filter_string: str = "", max_results: int = 100, tracking_uri: str | None = None
) -> pd.DataFrame:
    """MLflow's run table for the experiment (run_id, status, times, params.*, metrics.*, tags.*),
    newest first, filtered with MLflow's filter syntax (`metrics.f1 > 0.5`)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    store = store_for(experiment_name, tracking_uri)
    experiment = store.client().get_experiment_by_name(experiment_name)
    if experiment is None:
        raise TrackingError(f"no MLflow experiment named {experiment_name!r}")
    try:
        with tracking_uri_in_use(store.tracking_uri):
            return mlflow.search_runs(
                experiment_ids=[experiment.experiment_id],
                filter_string=filter_string,
                max_results=max_results,
                order_by=["attributes.start_time DESC"],
            )
    except MlflowException as error:
        raise TrackingError(f"filter {filter_string!r}: {error.message}") from None


def compare_runs(experiment_name: str, tracking_uri: str | None = None) -> pd.DataFrame:
    """The experiment's runs side by side: one row per run (index run_id) with its name, status,
    params and metrics, newest first."""
    runs = search_runs(experiment_name, max_results=10_000, tracking_uri=tracking_uri)
    if runs.empty:
        return pd.DataFrame(columns=["run_name", "status"]).rename_axis("run_id")
    runs = runs.rename(columns={"tags.mlflow.runName": "run_name"})
    columns = ["run_name", "status", *sorted(c for c in runs if c.startswith(("params.", "metrics.")))]
    return runs.set_index("run_id")[columns]


def get_best_run(experiment_name: str, metric_name: str, mode: str = "min", tracking_uri: str | None = None) -> str:
    """The id of the finished run with the lowest (`mode="min"`) or highest (`"max"`) `metric_name`."""
    if mode not in MODES:
        raise TrackingError(f"mode must be 'min' or 'max', not {mode!r}")
    runs = search_runs(
        experiment_name, filter_string="attributes.status = 'FINISHED'", max_results=50_000, tracking_uri=tracking_uri
    )
    best = best_row(runs, metric_name, mode)
    if best is None:
        raise TrackingError(f"no finished run of {experiment_name!r} has the metric {metric_name!r}")
    return str(best["run_id"])


def best_row(runs: pd.DataFrame, metric_name: str, mode: str) -> pd.Series | None:
    """The row of a run table (`metrics.*` columns) with the lowest (`mode="min"`) or highest
    `metric_name`, or None when no run has that metric. Runs without it are skipped."""
    column = f"metrics.{metric_name}"
    if column not in runs or runs[column].isna().all():
        return None
    return runs.loc[runs[column].idxmin() if mode == "min" else runs[column].idxmax()]


# ---------------------------------------------------------------- models and the registry


class MLflowManager:
    """Models in MLflow: log one with its metrics, load one, register it, and move aliases with history."""

    def __init__(self, experiment_name: str = DEFAULT_EXPERIMENT, tracking_uri: str | None = None):
        self.store = store_for(experiment_name, tracking_uri)

    def log_experiment(
        self,
        model,
        metrics: Mapping[str, float],
        params: Mapping[str, Any] | None = None,
        artifacts: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        run_name: str | None = None,
        input_example=None,
    ) -> str:
        """One finished run holding the model, its metrics, params, tags and artifacts (a dict or list
        is written as JSON under its name, a file path is copied into a folder of that name). Returns the run id."""
        run_id, _ = self.store.log_model_run(
            run_name=run_name,
            params=dict(params or {}),
            metrics=dict(metrics),
            tags=dict(tags or {}),
            model=model,
            input_example=input_example,
            artifacts=dict(artifacts or {}),
        )
        return run_id

    def load_model(self, reference: str):
        """A model by run id (its `model`), or by any MLflow model URI: `models:/name@champion`,
        `models:/name/3`, `runs:/<run id>/model`."""
        uri = reference if ":/" in reference else f"runs:/{reference}/model"
        from mlflow.exceptions import MlflowException

        try:
            return self.store.load_model(uri)
        except (MlflowException, OSError) as error:
            raise TrackingError(f"cannot load model {reference!r}: {str(error).splitlines()[0]}") from None

    def register_model(self, run_id: str, name: str) -> str:
        """Register the run's model as a new version of `name` (created if needed). Returns the version."""
        import mlflow
        from mlflow.exceptions import MlflowException

        with self.store.write_lock(), tracking_uri_in_use(self.store.tracking_uri):
            try:
                version = mlflow.register_model(f"runs:/{run_id}/model", name)
            except MlflowException as error:
                raise TrackingError(f"cannot register run {run_id!r} as {name!r}: {error.message}") from None
        return str(version.version)

    def promote(self, name: str, version: str, alias: str = "champion", reason: str = "promoted by hand") -> AliasEvent:
        """Give `alias` to `version` of `name`; the move is recorded in the alias history."""
        with self.store.write_lock():
            return set_alias(self.store.client(), name, alias, str(version), reason=reason)

    def rollback(self, name: str, alias: str = "champion") -> AliasEvent:
        """Return `alias` to the version that held it before the current one."""
        with self.store.write_lock():
            return rollback(self.store.client(), name, alias)

    def alias_history(self, name: str, alias: str | None = None) -> list[AliasEvent]:
        """Every recorded move of the alias (or of all aliases) of `name`, oldest first."""
        return alias_history(self.store.client(), name, alias)

    def list_models(self) -> pd.DataFrame:
        """Registered models: name, latest version, aliases, last update."""
        client = self.store.client()
        rows = []
        for model in client.search_registered_models(max_results=1000):
            versions = [int(v.version) for v in client.search_model_versions(f"name = '{model.name}'")]
            rows.append(
                {
                    "name": model.name,
                    "latest_version": str(max(versions)) if versions else "",
                    "aliases": ", ".join(f"{alias}=v{v}" for alias, v in sorted(model.aliases.items())),
                    "updated": pd.Timestamp(model.last_updated_timestamp, unit="ms", tz="UTC"),
                }
            )
        return pd.DataFrame(rows, columns=["name", "latest_version", "aliases", "updated"])


# ---------------------------------------------------------------- ClearML


def clearml_target() -> ClearMLTarget:
    """Where ClearML tasks go for this environment: a server from CLEARML_API_HOST and keys, or
    offline sessions under the platform's data folder."""
    from ml_platform.lib.clearml_store import ClearMLTarget, ClearMLUnavailable

    try:
        return ClearMLTarget.from_environment(Settings.from_env().clearml_dir)
    except ClearMLUnavailable as error:
        raise TrackingError(str(error)) from None


def clearml_project(config: PlatformConfig | ExperimentConfig) -> str:
    """The ClearML project of a config: the name its MLflow experiment has, so both trackers file a
    run under the same name."""
    return config.tracking.experiment_name if isinstance(config, PlatformConfig) else config.name


class ClearMLTracker:
    """One ClearML task as a context manager, for a platform or experiment config (validated, or as
    Hydra composed it) and a stage, which names the task:

        with ClearMLTracker(cfg, stage="train", task_type="training") as tracker:
            tracker.connect_dict("model", {"C": 0.5})
            tracker.log_metrics(metrics={"f1": 0.61}, series="validation", iteration=0)
            tracker.upload_artifact("report", Path("report.json"))
            tracker.register_model(Path("model.pkl"), "churn_classifier", {"f1": 0.61})

    The task holds the resolved config (as its `config` configuration) and is tagged with the
    config hash, the code version and `extra_tags`; library versions are its `libraries` parameters.
    An exception inside the block leaves the task failed with the exception as the reason, and
    propagates. Without a ClearML server configured the task is an offline session under the
    platform's data folder (see the README to import it into a server later).
    """

    def __init__(self, cfg: Any, stage: str, task_type: str = "training", extra_tags: Iterable[str] | None = None):
        from ml_platform.lib.config import ConfigError, validated_config

        if not stage or not stage.strip():
            raise TrackingError("stage must name the task, e.g. 'train'")
        try:
            self.config = validated_config(cfg)
        except ConfigError as error:
            raise TrackingError(f"cfg: {error}") from None
        self.stage = stage
        self.task_type = task_type
        self.extra_tags = list(extra_tags or ())
        self.project_name = clearml_project(self.config)
        self.task_id: str | None = None
        self._task = None
        self._open = None

    def __enter__(self) -> ClearMLTracker:
        from ml_platform.lib.clearml_store import ClearMLUnavailable, open_task
        from ml_platform.lib.provenance import code_version, library_versions

        tags = [f"config_hash:{self.config.config_hash()}", f"code_version:{code_version()}", *self.extra_tags]
        self._open = open_task(clearml_target(), self.project_name, self.stage, self.task_type, tags)
        try:
            self._task = self._open.__enter__()
        except (ClearMLUnavailable, ValueError) as error:  # no server, or a task that cannot be opened
            raise TrackingError(str(error)) from None
        self.task_id = self._task.id
        self._task.connect_configuration("config", self.config.loggable())
        self._task.connect("libraries", library_versions())
        return self

    def __exit__(self, exc_type, exc, traceback) -> bool:
        self._open.__exit__(exc_type, exc, traceback)
        self._task = None
        return False

    def _active(self):
        if self._task is None:
            raise TrackingError("the task is not open: use ClearMLTracker(...) in a `with` block")
        return self._task

    def connect_dict(self, name: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """`payload` as the task's parameter section `name`; returns it as ClearML holds it."""
        return self._active().connect(name, payload)

    def log_metrics(self, metrics: Mapping[str, float], series: str, iteration: int) -> None:
        """Each metric as a scalar titled by its name, `series` the line (validation, test), at `iteration`."""
        self._active().log_scalars(metrics, series, iteration)

    def log_text(self, message: str) -> None:
        self._active().log_text(message)

    def upload_artifact(self, name: str, artifact: Any) -> None:
        """A file (a Path, or a string naming an existing file) or an object, stored as artifact `name`."""
        self._active().upload_artifact(name, artifact)

    def register_model(self, model_path: str | os.PathLike, model_name: str, metadata: Mapping[str, Any]) -> str:
        """The file at `model_path` as an output model `model_name` in ClearML's registry, with
        `metadata`; returns its id. The champion stays MLflow's: this registers, it promotes nothing."""
        return self._active().register_model(Path(model_path), model_name, metadata)


def compare_clearml_experiments(project_name: str, metric_name: str = "val_rmse") -> pd.DataFrame:
    """The project's ClearML tasks side by side, oldest first: one row per task (index task_id) with
    its name, status, tags, parameters and the last value of `metric_name` ("title", or
    "title/series" when the title has several series; NaN where a task did not log it). Reads the
    server when one is configured, else the platform's offline sessions."""
    from ml_platform.lib.clearml_store import metric_value, offline_sessions

    target = clearml_target()
    if target.offline:
        rows = [
            (s.task_id, s.name, s.status, s.tags, s.parameters, s.last_scalars(), s.written)
            for s in offline_sessions(target.offline_dir, project_name)
        ]
    else:
        rows = [
            (
                task.id,
                task.name,
                task.get_status(),
                tuple(task.get_tags()),
                task.get_parameters(),
                _last_scalars(task),
                None,
            )
            for task in _server_tasks(target, project_name)
        ]
    if not rows:
        raise TrackingError(f"no ClearML tasks in project {project_name!r} ({_where(target)})")
    try:
        table = [
            {
                "task_id": task_id,
                "name": name,
                "status": status,
                "tags": list(tags),
                "parameters": parameters,
                metric_name: metric_value(scalars, metric_name),
                "updated": updated,
            }
            for task_id, name, status, tags, parameters, scalars, updated in rows
        ]
    except ValueError as error:
        raise TrackingError(str(error)) from None
    return pd.DataFrame(table).set_index("task_id").astype({metric_name: "float64"})


def compare_registered_models(model_name: str, project_name: str, max_results: int = 50) -> pd.DataFrame:
    """Every model registered in ClearML as `model_name` in the project, newest first (at most
    `max_results`): its id, version (1 the oldest), the task that registered it, tags and metadata."""
    from ml_platform.lib.clearml_store import offline_sessions, version_numbers

    if max_results < 1:
        raise TrackingError(f"max_results must be at least 1, not {max_results}")
    target = clearml_target()
    if target.offline:
        rows = [
            {
                "model_id": m.model_id,
                "name": m.name,
                "task_id": s.task_id,
                "task_name": s.name,
                "task_status": s.status,
                "framework": m.framework,
                "tags": list(m.tags),
                "metadata": m.metadata,
                "registered": s.written,
            }
            for s in offline_sessions(target.offline_dir, project_name)
            for m in s.models
            if m.name == model_name
        ]
        order = [row["registered"] for row in rows]
    else:
        models = _server_models(target, project_name, model_name)
        rows = [
            {
                "model_id": m.id,
                "name": m.name,
                "task_id": m.task,
                "task_name": None,
                "task_status": None,
                "framework": m.framework,
                "tags": list(m.tags),
                "metadata": {key: entry.get("value") for key, entry in m.get_all_metadata().items()},
                "registered": None,
            }
            for m in models
        ]
        order = list(range(len(rows), 0, -1))  # the server lists the most recently updated first
    if not rows:
        raise TrackingError(f"no ClearML model {model_name!r} in project {project_name!r} ({_where(target)})")
    for row, version in zip(rows, version_numbers(order), strict=True):
        row["version"] = version
    table = pd.DataFrame(rows).sort_values("version", ascending=False).head(max_results)
    return table[["model_id", "version", *[c for c in table.columns if c not in ("model_id", "version")]]]


def _where(target: ClearMLTarget) -> str:
    return f"offline sessions under {target.offline_dir}" if target.offline else f"server {target.api_host}"


def _connect(target: ClearMLTarget) -> None:
    from ml_platform.lib.clearml_store import ClearMLUnavailable, connect_to_server

    try:
        connect_to_server(target.api_host)
    except ClearMLUnavailable as error:
        raise TrackingError(str(error)) from None


def _server_tasks(target: ClearMLTarget, project_name: str) -> list:
    from clearml import Task

    _connect(target)
    return Task.get_tasks(project_name=project_name)


def _server_models(target: ClearMLTarget, project_name: str, model_name: str) -> list:
    from clearml import Model

    _connect(target)
    return Model.query_models(project_name=project_name, model_name=model_name, include_archived=False)


def _last_scalars(task) -> dict[str, float]:
    """A server task's last scalar values as "title/series", as offline sessions give them."""
    return {
        f"{title}/{series}": values["last"]
        for title, by_series in task.get_last_scalar_metrics().items()
        for series, values in by_series.items()
    }
