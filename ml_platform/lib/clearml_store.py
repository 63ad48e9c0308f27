"""ClearML as a second tracking backend: where its tasks go, opening and closing them, and reading
back what was logged.

With `CLEARML_API_HOST` and keys in the environment, tasks go to that ClearML server. Without them
they are ClearML offline sessions: one zip per task under `<data dir>/clearml/offline/` (and the
folder it was made from), which `Task.import_offline_session(zip)` later uploads to a server as it
is. Offline sessions are read back here from the zips, so people without a server can still compare
what they logged.

Dagster-free, like `mlflow_store`: `ml_platform.tracking.ClearMLTracker` and the pipeline's model
steps both open tasks through `open_task`.

How ClearML is held to the platform's rules:
- A configured server that does not answer fails within seconds, before any task is opened:
  ClearML's own client retries 240 times with backoff up to 120 s, minutes of silence. The server is
  pinged once with a short timeout, and the session ClearML then uses retries a bounded number of times.
- Reports go through a thread, not the subprocess ClearML forks by default: a fork inside a Dagster
  step process is unsafe, and closing a task waited 11 s for the subprocess's 5 s flush period.
- No repository or requirements detection: the entry point of a pipeline step is Dagster's, and
  the platform records the code version and library versions itself, as it does in MLflow.
"""

from __future__ import annotations

import contextlib
import json
import os
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from ml_platform.lib.provenance import ModelRunRecord

HOST_VARIABLE = "CLEARML_API_HOST"
KEY_VARIABLES = ("CLEARML_API_ACCESS_KEY", "CLEARML_API_SECRET_KEY")
# Connect and read timeouts of the one ping that decides whether a configured server answers.
PING_TIMEOUT_SECONDS = (3.0, 5.0)
# What ClearML's session may retry once the server has answered (its default: 240 of each).
BOUNDED_RETRIES = {"total": 3, "connect": 3, "read": 3, "redirect": 3, "status": 3, "backoff_factor": 0.5}
# ClearML's own read timeout for a request is 300 s; one that takes longer than this is a dead server.
REQUEST_TIMEOUT_SECONDS = (5.0, 60.0)
# Offline sessions kept; the oldest beyond it are deleted (a pipeline writes one per model per batch,
# each with its model's pickle: months of batches would fill a disk). Import them to a server first.
MAX_OFFLINE_SESSIONS = 500
# ClearML caps a task's status reason; the platform keeps it to one readable line.
MAX_STATUS_REASON_CHARS = 200
SESSION_TASK_FILE = "task.json"
# Nothing patched, nothing detected (ClearML hooks every listed framework and the repository unless
# told not to, key by key; a key left out means yes).
NO_AUTO_CONNECT = dict.fromkeys(
    (
        "matplotlib", "tensorflow", "tensorboard", "pytorch", "xgboost", "scikit", "fastai", "lightgbm",
        "hydra", "detect_repository", "tfdefines", "joblib", "megengine", "catboost", "gradio",
    ),
    False,
)  # fmt: skip


class ClearMLUnavailable(RuntimeError):
    """A configured ClearML server that cannot be used (not answering, refusing the credentials), or
    a half-configured environment. The message names the host and the variables, never a key."""


@dataclass(frozen=True)
class ClearMLTarget:
    """Where tasks go: the server at `api_host`, or offline sessions under `cache_dir` when it is None."""

    cache_dir: Path
    api_host: str | None = None

    @property
    def offline(self) -> bool:
        return self.api_host is None

    @property
    def offline_dir(self) -> Path:
        """Where ClearML keeps offline sessions: `offline/` under its cache folder."""
        return self.cache_dir / "offline"

    @classmethod
    def from_environment(cls, cache_dir: Path, environ: Mapping[str, str] | None = None) -> ClearMLTarget:
        """A server when `CLEARML_API_HOST` and both keys are set, offline when none is. Some set
        and some not is refused: a user who meant a server would otherwise log offline unawares."""
        environ = os.environ if environ is None else environ
        host = environ.get(HOST_VARIABLE, "").strip()
        missing = [name for name in KEY_VARIABLES if not environ.get(name, "").strip()]
        if not host and len(missing) == len(KEY_VARIABLES):
            return cls(cache_dir=Path(cache_dir))
        if not host or missing:
            unset = ([] if host else [HOST_VARIABLE]) + missing
            raise ClearMLUnavailable(
                f"ClearML is half configured: {', '.join(unset)} not set. Set {HOST_VARIABLE} and "
                f"{' and '.join(KEY_VARIABLES)} to log to a server, or none of them to log offline"
            )
        return cls(cache_dir=Path(cache_dir), api_host=host.rstrip("/"))


def displayed_host(api_host: str) -> str:
    """The host as an error may show it: without any user or password written into the URL."""
    parts = urlsplit(api_host)
    if parts.hostname is None:
        return api_host
    netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


def ping_server(api_host: str) -> None:
    """Raise ClearMLUnavailable unless the server at `api_host` answers one request in seconds.
    Any HTTP answer counts: whether the keys are right is the login's business, with its own error."""
    import requests

    try:
        requests.get(f"{api_host}/debug.ping", timeout=PING_TIMEOUT_SECONDS)
    except requests.RequestException as error:
        reason = type(error).__name__
        raise ClearMLUnavailable(
            f"ClearML server {displayed_host(api_host)} did not answer within "
            f"{sum(PING_TIMEOUT_SECONDS):.0f} s ({reason}): start it, correct {HOST_VARIABLE}, "
            f"or unset {HOST_VARIABLE} and the keys to log offline"
        ) from None


def connect_to_server(api_host: str) -> None:
    """Ping the server at `api_host`, then log in once with bounded retries and make that ClearML's
    session for every request after. Raises ClearMLUnavailable within seconds when it cannot."""
    from clearml import Task
    from clearml.backend_api import Session

    ping_server(api_host)
    if Task.is_offline():
        # Going online reconnects every session ClearML made so far, each with its default retries;
        # the offline ones have nothing to send, so they are forgotten first.
        Session._sessions_weakrefs.clear()
        Task.set_offline(offline_mode=False)
    _use_bounded_session(api_host)


def _use_bounded_session(api_host: str) -> None:
    from clearml.backend_api import Session
    from clearml.backend_interface.base import InterfaceBase
    from clearml.config import config_obj

    try:
        session = Session(
            initialize_logging=False, config=config_obj, host=api_host, http_retries_config=dict(BOUNDED_RETRIES)
        )
    except Exception as error:  # ClearML raises LoginError, MissingConfigError, ValueError...
        secrets = [os.environ.get(name, "") for name in KEY_VARIABLES]
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        for secret in filter(None, secrets):
            message = message.replace(secret, "***")
        raise ClearMLUnavailable(
            f"ClearML server {displayed_host(api_host)} answered, but logging in with "
            f"{' and '.join(KEY_VARIABLES)} failed: {message}"
        ) from None
    session._session_timeout = REQUEST_TIMEOUT_SECONDS
    InterfaceBase._set_default_session(session)


@contextlib.contextmanager
def _cache_dir(target: ClearMLTarget) -> Iterator[None]:
    """ClearML's cache (and so its offline sessions) under the platform's data folder, while a task is open."""
    previous = os.environ.get("CLEARML_CACHE_DIR")
    os.environ["CLEARML_CACHE_DIR"] = str(target.cache_dir)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("CLEARML_CACHE_DIR", None)
        else:
            os.environ["CLEARML_CACHE_DIR"] = previous


@dataclass
class OpenTask:
    """A ClearML task opened by `open_task`, with what closing it needs."""

    task: Any
    target: ClearMLTarget

    @property
    def id(self) -> str:
        return self.task.id

    def connect(self, name: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """`payload` as the task's parameter section `name` (nested keys as `a/b`)."""
        return self.task.connect(dict(payload), name=name)

    def connect_configuration(self, name: str, configuration: Mapping[str, Any]) -> None:
        self.task.connect_configuration(dict(configuration), name=name)

    def log_scalars(self, metrics: Mapping[str, float], series: str, iteration: int) -> None:
        """Each metric as a scalar plot titled by its name, with `series` as the line (validation, test)."""
        logger = self.task.get_logger()
        for name, value in metrics.items():
            logger.report_scalar(title=name, series=series, value=float(value), iteration=iteration)

    def log_text(self, message: str) -> None:
        self.task.get_logger().report_text(message, print_console=False)

    def log_image(self, title: str, series: str, path: Path, iteration: int = 0) -> None:
        self.task.get_logger().report_image(title=title, series=series, iteration=iteration, local_path=str(path))

    def upload_artifact(self, name: str, artifact: Any) -> None:
        """A file (a `Path`, or a string naming an existing file) or an object (ClearML stores a dict as
        JSON, a DataFrame as CSV, other objects pickled)."""
        if isinstance(artifact, os.PathLike) and not Path(artifact).is_file():
            raise FileNotFoundError(f"artifact {name!r}: no file {artifact}")
        if isinstance(artifact, os.PathLike) or (isinstance(artifact, str) and Path(artifact).is_file()):
            artifact = Path(artifact)
        if not self.task.upload_artifact(name, artifact_object=artifact, wait_on_upload=True):
            raise RuntimeError(f"artifact {name!r}: ClearML did not store it")

    def register_model(
        self, model_path: Path, model_name: str, metadata: Mapping[str, Any], tags: Sequence[str] = ()
    ) -> str:
        """The file at `model_path` as an output model named `model_name` in ClearML's model registry,
        with `metadata`. Returns the model's id."""
        from clearml import OutputModel

        model_path = Path(model_path)
        if not model_path.is_file():
            raise FileNotFoundError(f"model {model_name!r}: no file {model_path}")
        metadata = {key: _plain(value) for key, value in metadata.items()}
        model = OutputModel(
            task=self.task, name=model_name, framework="scikit-learn", tags=list(tags), config_dict=metadata
        )
        if self.target.offline:
            # ClearML 2.1's public `update_weights` fails offline (its published check reads
            # `locked`, which the offline placeholder model lacks); this is the offline branch it
            # would take, recording the model in the session for `import_offline_session`.
            model._update_weights_offline(weights_filename=str(model_path))
        else:
            model.update_weights(weights_filename=str(model_path), auto_delete_file=False, async_enable=False)
            model.set_all_metadata({key: {"value": value} for key, value in metadata.items()})
        return model.id

    def close(self, failure: BaseException | None = None) -> None:
        """Close the task, completed, or failed with `failure`'s type and first line as the reason."""
        reason = None
        if failure is not None:
            first_line = (str(failure).splitlines() or [""])[0]
            reason = f"{type(failure).__name__}: {first_line}"[:MAX_STATUS_REASON_CHARS]
        if self.target.offline:
            # Offline, ClearML sends status changes nowhere; the session's task record keeps them.
            self.task._edit(status="failed" if reason else "completed", status_reason=reason or "", status_message="")
            self.task.close()
        else:
            self.task.close()  # marks it completed
            if reason:
                self.task.mark_failed(status_reason=reason, force=True)


def _plain(value: Any) -> Any:
    """A metadata value ClearML can store: numbers and strings as they are, anything else as JSON."""
    return value if isinstance(value, str | int | float | bool) else json.dumps(value, default=str)


@contextlib.contextmanager
def open_task(
    target: ClearMLTarget, project_name: str, task_name: str, task_type: str, tags: Sequence[str] = ()
) -> Iterator[OpenTask]:
    """A ClearML task for the block, closed on the way out: failed, with the reason, if the block
    raises (the exception propagates), completed otherwise. One task at a time per process: ClearML
    keeps a single current task."""
    from clearml import Task

    if (current := Task.current_task()) is not None:
        raise ValueError(f"a ClearML task is already open in this process ({current.id}): close it first")
    if task_type not in {member.value for member in Task.TaskTypes}:
        allowed = ", ".join(member.value for member in Task.TaskTypes)
        raise ValueError(f"task_type {task_type!r} is not a ClearML task type; allowed: {allowed}")
    with _cache_dir(target):
        # Offline is ClearML's process-wide mode: switched to as needed, never back by itself.
        if not target.offline:
            connect_to_server(target.api_host)
        elif not Task.is_offline():
            Task.set_offline(offline_mode=True)
        Task._report_subprocess_enabled = False  # see the module's docstring
        _forget_earlier_exits(Task)
        task = Task.init(
            project_name=project_name,
            task_name=task_name,
            task_type=task_type,
            tags=list(tags),
            reuse_last_task_id=False,
            auto_connect_arg_parser=False,
            auto_connect_frameworks=NO_AUTO_CONNECT,
            auto_resource_monitoring=False,
            auto_connect_streams=False,
        )
        opened = OpenTask(task, target)
        try:
            yield opened
        except BaseException as failure:
            opened.close(failure)
            raise
        else:
            opened.close()
        finally:
            if target.offline:
                keep_newest_sessions(target.offline_dir, MAX_OFFLINE_SESSIONS)


def _forget_earlier_exits(task_class) -> None:
    """ClearML wraps `sys.exit` once per process and keeps one record of the last exit code,
    exception and signal, which it reads when a task closes. A `sys.exit(2)` after an earlier task
    (click's, in a command run in-process) made the next task close as if the process were dying:
    failed, and without flushing its metrics. Each task starts with a clean record."""
    hooks = getattr(task_class, "_Task__exit_hook", None)
    if hooks is not None:
        hooks.exit_code = hooks.exception = hooks.signal = None


def keep_newest_sessions(offline_dir: Path, keep: int) -> list[Path]:
    """Delete all but the `keep` newest offline sessions (by modification time), each a zip and the
    folder beside it (ClearML's import reads a model's file from that folder); returns the zips deleted."""
    import shutil

    sessions = sorted(offline_dir.glob("*.zip"), key=lambda path: (path.stat().st_mtime, path.name))
    removed = sessions[: max(len(sessions) - keep, 0)]
    for path in removed:
        path.unlink(missing_ok=True)
        shutil.rmtree(path.with_suffix(""), ignore_errors=True)
    return removed


# ---------------------------------------------------------------- the pipeline's runs

# The tags a task is labelled with in ClearML, the ones people filter by (every tag of the MLflow run
# is also in the task's `tags` parameters): the batch, data hash, code version, config hash, model.
TASK_LABELS = {
    "dagster.partition": "batch",
    "data_hash": "data_hash",
    "code_version": "code_version",
    "config_hash": "config_hash",
    "model_name": "model",
    "mlflow_run_id": "mlflow_run",
}
VALIDATION_PREFIX = "validation_"


def task_labels(tags: Mapping[str, str]) -> list[str]:
    """The labels of a task whose MLflow run has `tags`: `batch:batch_0001`, `data_hash:...`."""
    return [f"{label}:{tags[key]}" for key, label in TASK_LABELS.items() if key in tags]


def metrics_by_series(metrics: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """A model run's metrics as ClearML series: `validation_<metric>` on the validation line, the
    others (held-out metrics, fit time) on the test line, so each metric's plot has both lines."""
    series: dict[str, dict[str, float]] = {}
    for name, value in metrics.items():
        if name.startswith(VALIDATION_PREFIX):
            series.setdefault("validation", {})[name.removeprefix(VALIDATION_PREFIX)] = value
        else:
            series.setdefault("test", {})[name] = value
    return series


@dataclass(frozen=True)
class ClearMLStore:
    """The pipeline's ClearML side: one task per model run, one per batch's evaluation, in `project_name`."""

    target: ClearMLTarget
    project_name: str

    def log_fitted_model(self, run_name: str, record: ModelRunRecord, fitted) -> tuple[str, str]:
        """A task named `run_name` holding what the model's MLflow run holds (`record`): params,
        metrics, every tag, the config and provenance files, and the fitted pipeline as an output
        model named after the model. Returns (task id, model id)."""
        import pickle
        import tempfile

        from ml_platform.lib.provenance import PICKLE_PROTOCOL, param_text

        model_type = record.params["model_type"]
        model_name = record.tags.get("model_name", model_type)
        labels = task_labels(record.tags)
        with open_task(self.target, self.project_name, run_name, "training", labels) as task:
            task.connect("params", {key: param_text(value) for key, value in record.params.items()})
            task.connect("tags", record.tags)
            for series, values in metrics_by_series(record.metrics).items():
                task.log_scalars(values, series, iteration=0)
            for name, content in record.artifacts.items():
                task.upload_artifact(Path(name).stem, content)
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / f"{model_name}.pkl"
                path.write_bytes(pickle.dumps(fitted.pipeline, protocol=PICKLE_PROTOCOL))
                model_id = task.register_model(path, model_name, {"model_type": model_type, **record.metrics}, labels)
        return task.id, model_id

    def log_evaluation(self, batch: str, winner: str, files: Sequence[Path], tags: Mapping[str, str]) -> str:
        """A task `evaluation-<batch>` with the batch's plots (`*.png`) as images and its other
        files as artifacts, labelled with the winner. Returns its id."""
        labels = [*task_labels(tags), f"winner:{winner}"]
        with open_task(self.target, self.project_name, f"evaluation-{batch}", "qc", labels) as task:
            task.connect("tags", tags)
            for path in files:
                if path.suffix == ".png":
                    task.log_image("evaluation", path.stem, path)
                else:
                    task.upload_artifact(path.stem, path)
        return task.id


# ---------------------------------------------------------------- reading offline sessions


@dataclass(frozen=True)
class Scalar:
    title: str
    series: str
    iteration: int
    value: float
    timestamp_ms: int


@dataclass(frozen=True)
class OfflineModel:
    model_id: str
    name: str
    framework: str | None
    tags: tuple[str, ...]
    metadata: dict[str, Any]
    weights_member: str | None  # the weights' path inside the session's zip


@dataclass(frozen=True)
class OfflineSession:
    """What one offline session (one task) holds, as ClearML wrote it."""

    path: Path
    task_id: str
    name: str
    project_name: str
    task_type: str
    status: str
    status_reason: str
    tags: tuple[str, ...]
    parameters: dict[str, str]  # "section/name" -> value, as ClearML shows them
    configuration: dict[str, str]  # name -> the configuration object's text
    artifacts: dict[str, dict[str, Any]]  # name -> {"type", "member" (a file in the zip), "preview"}
    scalars: tuple[Scalar, ...]
    images: tuple[str, ...]  # "title/series" of each reported image
    log_lines: tuple[str, ...]  # `log_text` messages and ClearML's own notes
    models: tuple[OfflineModel, ...]
    written: datetime = field(compare=False)

    def last_scalars(self) -> dict[str, float]:
        """The last value of each scalar, as "title/series"."""
        last: dict[str, Scalar] = {}
        for scalar in self.scalars:
            key = f"{scalar.title}/{scalar.series}"
            if key not in last or (scalar.iteration, scalar.timestamp_ms) >= (
                last[key].iteration,
                last[key].timestamp_ms,
            ):
                last[key] = scalar
        return {key: scalar.value for key, scalar in last.items()}

    def read_member(self, member: str) -> bytes:
        with zipfile.ZipFile(self.path) as archive:
            return archive.read(member)


def read_offline_session(path: Path) -> OfflineSession:
    """One offline session's zip as an `OfflineSession`. Raises ValueError naming the file when it
    is not a ClearML session (no task record, or a record that is not JSON)."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            record = json.loads(archive.read(SESSION_TASK_FILE))
            events = _json_lines(archive, "metrics.jsonl", names)
            logs = _json_lines(archive, "log.jsonl", names)
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a ClearML offline session ({error})") from None
    session_folder = record.get("offline_folder", "")
    return OfflineSession(
        path=path,
        task_id=record["id"],
        name=record.get("name", ""),
        project_name=record.get("project_name", ""),
        task_type=record.get("type", ""),
        status=record.get("status") or "closed",
        status_reason=record.get("status_reason") or "",
        tags=tuple(record.get("tags") or ()),
        parameters={
            f"{section}/{name}": entry.get("value", "")
            for section, entries in (record.get("hyperparams") or {}).items()
            for name, entry in entries.items()
        },
        configuration={name: entry.get("value", "") for name, entry in (record.get("configuration") or {}).items()},
        artifacts={
            artifact["key"]: {
                "type": artifact.get("type"),
                "member": _member(artifact.get("uri", ""), session_folder),
                "preview": (artifact.get("type_data") or {}).get("preview"),
            }
            for artifact in (record.get("execution") or {}).get("artifacts") or ()
        },
        scalars=tuple(
            Scalar(
                event["metric"], event["variant"], int(event.get("iter", 0)), float(event["value"]), event["timestamp"]
            )
            for event in events
            if event.get("type") == "training_stats_scalar"
        ),
        images=tuple(
            f"{event['metric']}/{event['variant']}" for event in events if event.get("type") == "training_debug_image"
        ),
        # ClearML batches log reports (one event may hold several lines), so lines are what is kept.
        log_lines=tuple(line for event in logs if event.get("type") == "log" for line in event["msg"].splitlines()),
        models=tuple(
            OfflineModel(
                model_id=model["id"],
                name=model["init"].get("name") or "",
                framework=model["init"].get("framework"),
                tags=tuple(model["init"].get("tags") or ()),
                metadata=model["init"].get("config_dict") or {},
                weights_member=_member(model["weights"].get("weights_filename") or "", session_folder),
            )
            for model in record.get("offline_output_models") or ()
        ),
        written=datetime.fromtimestamp(path.stat().st_mtime, UTC),
    )


def _json_lines(archive: zipfile.ZipFile, member: str, names: set[str]) -> list[dict]:
    """ClearML's event files: one JSON list of events per line."""
    if member not in names:
        return []
    events: list[dict] = []
    for line in archive.read(member).decode().splitlines():
        if line.strip():
            parsed = json.loads(line)
            events.extend(parsed if isinstance(parsed, list) else [parsed])
    return events


def _member(absolute: str, session_folder: str) -> str | None:
    """A path ClearML recorded inside the session folder, as the member of the zip it became."""
    prefix = session_folder.rstrip("/") + "/"
    return absolute[len(prefix) :] if session_folder and absolute.startswith(prefix) else None


def offline_sessions(offline_dir: Path, project_name: str | None = None) -> list[OfflineSession]:
    """Every offline session under `offline_dir` (of `project_name` when given), oldest first.
    A zip that is not a readable session is skipped: one broken file must not hide the others."""
    sessions = []
    for path in Path(offline_dir).glob("*.zip"):
        try:
            session = read_offline_session(path)
        except (ValueError, OSError):
            continue
        if project_name is None or session.project_name == project_name:
            sessions.append(session)
    return sorted(sessions, key=lambda session: (session.written, session.task_id))


def metric_value(last_scalars: Mapping[str, float], metric_name: str) -> float | None:
    """The last value of `metric_name` among a task's "title/series" scalars: the exact key, or a
    title logged under one series only. A title under several series is ambiguous and refused,
    naming them (`roc_auc/validation` or `roc_auc/test`); a metric the task never logged is None."""
    if metric_name in last_scalars:
        return last_scalars[metric_name]
    matching = {key: value for key, value in last_scalars.items() if key.rsplit("/", 1)[0] == metric_name}
    if len(matching) > 1:
        raise ValueError(f"metric {metric_name!r} has several series; name one of: {', '.join(sorted(matching))}")
    return next(iter(matching.values()), None)


def version_numbers(created: Sequence[Any]) -> list[int]:
    """Version numbers for models of one name, 1 for the oldest, in the order given by `created`
    (ties keep their order): ClearML has no versions, only models registered under the same name."""
    order = sorted(range(len(created)), key=lambda index: created[index])
    numbers = [0] * len(created)
    for rank, index in enumerate(order, start=1):
        numbers[index] = rank
    return numbers
