"""The platform's MLflow store: runs, logged models and the Model Registry with aliases.

Dagster-free, so plain scripts (the benchmark's floor, notebooks) log exactly as the assets do;
`ml_platform.resources.mlflow_tracking` hands it to the assets as a resource.

SQLite, the default store, allows one writer at a time. Writes are serialised through a file
lock next to the database, so parallel steps and runs queue for a moment instead of failing
with "database is locked". With a tracking server (an http URI) no lock is taken.
"""

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from filelock import FileLock

from ml_platform.lib.provenance import TRAINING_IDS_ARTIFACT, ModelRunRecord, param_text
from ml_platform.lib.registry import set_alias


class _DropUnpinnedPipWarning(logging.Filter):
    """uv-managed environments have no pip, so MLflow warns on every model that its conda.yaml
    lists pip unpinned. The model's own requirements are pinned; the warning only buries real ones."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Failed to resolve installed pip version" not in record.getMessage()


logging.getLogger("mlflow.utils.environment").addFilter(_DropUnpinnedPipWarning())
# MLflow draws a progress bar on stderr for every artifact it downloads (a champion's training ids,
# at every decision): noise in run logs and in the CLI's one-line output. Set it to "true" to see them.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

FLUENT_URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
# MLflow refuses run tags longer than this.
MAX_TAG_CHARS = 8000


@dataclass
class MlflowStore:
    tracking_uri: str
    experiment_name: str
    artifact_location: str | None = None  # None: the tracking server's default
    # Where people open MLflow's UI; with a SQLite store that is `mlflow ui` started locally.
    ui_url: str = "http://127.0.0.1:5000"

    _experiment_id: str | None = field(default=None, init=False, repr=False)
    _client: Any = field(default=None, init=False, repr=False)

    @contextlib.contextmanager
    def write_lock(self) -> Iterator[None]:
        if self.tracking_uri.startswith("sqlite:///"):
            database = Path(self.tracking_uri.removeprefix("sqlite:///"))
            database.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(f"{database}.lock", timeout=600):
                yield
        else:
            yield

    def client(self):
        """One client per store: each new one connects its tracking and registry stores and checks their
        schema, a few tenths of a second that a read-only command would otherwise pay per query."""
        from mlflow import MlflowClient

        if self._client is None:
            self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        return self._client

    def experiment_id(self) -> str:
        """The experiment's id, created on first use (by whichever parallel step gets there first)."""
        from mlflow.exceptions import MlflowException

        if self._experiment_id is None:
            with self.write_lock():
                client = self.client()
                experiment = client.get_experiment_by_name(self.experiment_name)
                if experiment is None:
                    try:
                        client.create_experiment(self.experiment_name, artifact_location=self.artifact_location)
                    except MlflowException as error:
                        # A tracking server takes no file lock: another step may have created it.
                        if error.error_code != "RESOURCE_ALREADY_EXISTS":
                            raise
                    experiment = client.get_experiment_by_name(self.experiment_name)
                self._experiment_id = experiment.experiment_id
        return self._experiment_id

    def log_model_run(
        self,
        run_name: str,
        params: dict[str, Any],
        metrics: dict[str, float],
        tags: dict[str, str],
        model,
        input_example=None,
        artifacts: dict[str, Any] | None = None,
        study=None,
    ) -> tuple[str, str]:
        """One finished run: params, metrics and tags in batched writes, the fitted model (with its
        signature when an input example is given) and artifacts: a dict or list is written as JSON,
        a path is copied; the trials of `study` (a `lib.tuning.StudyResult`) as its nested runs.
        Returns (run_id, model_uri)."""
        import mlflow.sklearn

        experiment_id = self.experiment_id()
        if study is not None:
            tags = {**tags, **study_tags(study)}
            metrics = {**metrics, **study_metrics(study)}
        # Slow (it serialises the model): done before taking the writer lock.
        model_args = sklearn_model_args(model, input_example)
        with (
            self.write_lock(),
            tracking_uri_in_use(self.tracking_uri),
            mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags) as run,
        ):
            mlflow.log_params({key: param_text(value) for key, value in params.items()})
            mlflow.log_metrics(metrics)
            if study is not None:
                self._log_trials(experiment_id, run.info.run_id, study)
            for name, content in (artifacts or {}).items():
                if isinstance(content, dict | list):
                    mlflow.log_dict(content, name)
                else:
                    mlflow.log_artifact(str(content), artifact_path=name)
            info = mlflow.sklearn.log_model(model, name="model", **model_args)
        return run.info.run_id, info.model_uri

    def log_fitted_model(self, run_name: str, record: ModelRunRecord, fitted, split, study=None) -> tuple[str, str]:
        """One run for a model fitted on `split` (`lib.training`) with its provenance `record`
        (`model_run_record`), the fitted pipeline with an input example, and the trials of `study`,
        when the params were tuned, as nested runs. Returns (run_id, model_uri)."""
        return self.log_model_run(
            run_name=run_name,
            params=record.params,
            metrics=record.metrics,
            tags=record.tags,
            model=fitted.pipeline,
            input_example=split.x_train.head(5),
            artifacts=record.artifacts,
            study=study,
        )

    def log_study(self, run_name: str, study, params: dict[str, Any], tags: dict[str, str]) -> str:
        """A study on its own (`ml-platform tune`): one finished run with `params`, the best value and
        `tags`, its trials as nested runs; no model is logged or registered. Returns the run id."""
        from mlflow.entities import Metric, Param, RunTag

        experiment_id = self.experiment_id()
        best = study.best  # its end time stamps the best value
        with self.write_lock():
            client = self.client()
            run = client.create_run(experiment_id, run_name=run_name, tags=tags)
            ended = _milliseconds(best.started) + round(best.seconds * 1000)
            client.log_batch(
                run.info.run_id,
                metrics=[Metric(name, value, ended, 0) for name, value in study_metrics(study).items()],
                params=[Param(key, param_text(value)) for key, value in params.items()],
                tags=[RunTag(key, value) for key, value in study_tags(study).items()],
            )
            self._log_trials(experiment_id, run.info.run_id, study)
            client.set_terminated(run.info.run_id, "FINISHED")
        return run.info.run_id

    def _log_trials(self, experiment_id: str, parent_run_id: str, study) -> None:
        """Each trial as a run nested under `parent_run_id`, in three writes (create, one batch of
        params, value and tags, terminate). Nesting is the `mlflow.parentRunId` tag, the one
        `mlflow.start_run(nested=True)` sets; the client is used so that each run keeps its trial's
        own start and end times (a study runs before the lock is taken, its runs are logged after)."""
        from mlflow.entities import Metric, Param, RunTag

        client = self.client()
        for trial in study.trials:
            started = _milliseconds(trial.started)
            ended = started + round(trial.seconds * 1000)
            child = client.create_run(
                experiment_id,
                start_time=started,
                run_name=f"trial-{trial.number}",
                tags={"mlflow.parentRunId": parent_run_id},
            )
            trial_tags = {"optuna.trial": str(trial.number), "optuna.state": trial.state}
            if trial.error:
                trial_tags["optuna.error"] = trial.error[:MAX_TAG_CHARS]
            client.log_batch(
                child.info.run_id,
                metrics=[Metric(name, value, ended, 0) for name, value in trial_metrics(study, trial).items()],
                params=[Param(key, param_text(value)) for key, value in trial.params.items()],
                tags=[RunTag(key, value) for key, value in trial_tags.items()],
            )
            client.set_terminated(child.info.run_id, "FINISHED" if trial.value is not None else "FAILED", ended)

    def rows_trained_on(self, run_id: str, ids: list[str]) -> int | None:
        """How many of `ids` the run's model was fitted on, or None when the run did not record its rows."""
        trained = self.training_ids(run_id)
        return None if trained is None else len(trained.intersection(ids))

    def training_ids(self, run_id: str) -> set[str] | None:
        """The ids (as text) of the rows the run's model was fitted on, or None when it did not record them."""
        import mlflow.artifacts
        from mlflow.exceptions import MlflowException

        with tracking_uri_in_use(self.tracking_uri):
            try:
                recorded = mlflow.artifacts.load_dict(f"runs:/{run_id}/{TRAINING_IDS_ARTIFACT}")
            except (MlflowException, OSError):
                return None
        return set(recorded["ids"])

    def log_artifacts(self, run_id: str, files: list[Path], artifact_path: str = "evaluation") -> None:
        """Add `files` to an existing (even finished) run, under `artifact_path`."""
        with self.write_lock():
            client = self.client()
            for file in files:
                client.log_artifact(run_id, str(file), artifact_path=artifact_path)

    def run_url(self, run_id: str) -> str:
        """The run's page in MLflow's UI: the tracking server's own, or `ui_url` for a local store."""
        server = self.tracking_uri if self.tracking_uri.startswith(("http://", "https://")) else self.ui_url
        # Credentials in a tracking URI (https://user:token@host) must not reach asset metadata.
        parts = urlsplit(server)
        public = urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")))
        return f"{public.rstrip('/')}/#/experiments/{self.experiment_id()}/runs/{run_id}"

    def champion_version(self, model_name: str, alias: str = "champion"):
        """The model version holding `alias`, or None when the model or the alias does not exist yet.

        Any other failure (a locked database, a server error) raises: reading it as "no champion"
        would crown the next winner without a comparison.
        """
        from mlflow.exceptions import MlflowException

        try:
            return self.client().get_model_version_by_alias(model_name, alias)
        except MlflowException as error:
            if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise

    def load_model(self, model_uri: str):
        import mlflow.sklearn

        with tracking_uri_in_use(self.tracking_uri):
            return mlflow.sklearn.load_model(model_uri)

    def load_pyfunc(self, model_uri: str):
        """The model as `mlflow.pyfunc` serves it: its `predict` checks the input against the signature."""
        import mlflow.pyfunc

        with tracking_uri_in_use(self.tracking_uri):
            return mlflow.pyfunc.load_model(model_uri)

    def version_for_run(self, model_name: str, run_id: str):
        """The version of `model_name` registered from `run_id`, or None: what a retried step registered."""
        versions = self.client().search_model_versions(f"name = '{model_name}' and run_id = '{run_id}'")
        return min(versions, key=lambda version: int(version.version)) if versions else None

    def register(self, model_name: str, model_uri: str, run_id: str, alias: str, tags: dict[str, str]) -> str:
        """Register `model_uri` as a version of `model_name` with `tags`, then give it `alias`.
        Returns the version.

        Retry-safe: a version already registered from `run_id` (by an attempt that failed later) is
        reused, its tags updated, instead of registering the same model again; the alias moves only
        after the tags (the decision) are written, and `set_alias` records each move once.
        """
        from mlflow.exceptions import MlflowException

        # MLflow resolves a `models:/<id>` source through the fluent API's tracking URI.
        with self.write_lock(), tracking_uri_in_use(self.tracking_uri):
            client = self.client()
            try:
                client.get_registered_model(model_name)
            except MlflowException as error:
                if error.error_code != "RESOURCE_DOES_NOT_EXIST":  # as in champion_version
                    raise
                client.create_registered_model(model_name, description="Best model per batch, promoted by ml_platform.")
            existing = self.version_for_run(model_name, run_id)
            if existing is None:
                # A tracking server refuses a `models:/<id>` source without the logged model's id.
                model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
                version = str(
                    client.create_model_version(
                        model_name, source=model_uri, run_id=run_id, tags=tags, model_id=model_id
                    ).version
                )
            else:
                version = str(existing.version)
                for key, value in tags.items():
                    client.set_model_version_tag(model_name, version, key, value)
            set_alias(client, model_name, alias, version, reason=tags.get("promotion_reason", ""))
        return version


@contextlib.contextmanager
def tracking_uri_in_use(tracking_uri: str) -> Iterator[None]:
    """MLflow's fluent API, tracking and registry, pointed at `tracking_uri` for the block, then put back.

    MLflow keeps both URIs process-wide and also writes them into this process's environment
    (MLFLOW_TRACKING_URI, MLFLOW_REGISTRY_URI), and `set_registry_uri(None)` clears neither: left
    set, one call's store would be the default of every later call, and an `MlflowClient` built with
    only a tracking URI would read another store's registry.
    """
    import mlflow

    saved = {name: os.environ.get(name) for name in FLUENT_URI_VARIABLES}
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)  # back to "from the environment"
        mlflow.set_registry_uri(None)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def sklearn_model_args(model, input_example=None) -> dict[str, Any]:
    """What `mlflow.sklearn.log_model` needs besides the model: the signature (from the input example),
    requirements pinned from what runs now (inferring them costs seconds per model), and the
    library types its skops file may load."""
    from mlflow.models import infer_signature

    return {
        "signature": None if input_example is None else infer_signature(input_example, model.predict(input_example)),
        "input_example": input_example,
        "pip_requirements": _pip_requirements(),
        "skops_trusted_types": library_types_in(model),
    }


def study_tags(study) -> dict[str, str]:
    """What a tuned model's run records of its study, besides the trials themselves."""
    return {
        "tuning.metric": study.metric,
        "tuning.scoring": study.scoring,
        "tuning.trials": str(len(study.trials)),
        "tuning.best_trial": str(study.best.number),
    }


def study_metrics(study) -> dict[str, float]:
    return {f"tuning_best_{study.metric}": study.best.value}


def trial_metrics(study, trial) -> dict[str, float]:
    """A trial's value is named `tuning_<metric>`, not `<metric>`: it is a score on the training rows
    and must not rank with (or be mistaken for) the models' held-out metrics in run searches."""
    value = {f"tuning_{study.metric}": trial.value} if trial.value is not None else {}
    return {"trial_seconds": trial.seconds, **value}


def _milliseconds(moment) -> int:
    return round(moment.timestamp() * 1000)


def library_types_in(model) -> list[str]:
    """The scikit-learn, NumPy and SciPy types a model's skops file holds, which MLflow asks us to
    name before it will load them. Anything from another package stays untrusted, so loading fails."""
    import skops.io

    return [
        name
        for name in skops.io.get_untrusted_types(data=skops.io.dumps(model))
        if name.split(".")[0] in ("sklearn", "numpy", "scipy")
    ]


def _pip_requirements() -> list[str]:
    from ml_platform.lib.provenance import library_versions

    versions = library_versions()
    return [f"{name}=={versions[name]}" for name in ("scikit-learn", "pandas", "numpy", "mlflow")]
