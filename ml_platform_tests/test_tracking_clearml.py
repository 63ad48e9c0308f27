"""The ClearML side of the tracking API, through the real `clearml` package in offline mode: what a
task logs is read back from the session zip ClearML wrote, and a configured server that does not
answer fails in seconds with one clear error."""

from __future__ import annotations

import pickle
import signal
import socket
import sys
import threading
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ml_platform.lib.clearml_store import (
    BOUNDED_RETRIES,
    ClearMLTarget,
    ClearMLUnavailable,
    displayed_host,
    keep_newest_sessions,
    metric_value,
    metrics_by_series,
    offline_sessions,
    read_offline_session,
    task_labels,
    version_numbers,
)
from ml_platform.lib.config import compose_config, load_experiment_config
from ml_platform.lib.settings import DEFAULT_CONFIG_PATH, PROJECT_ROOT
from ml_platform.tracking import (
    ClearMLTracker,
    TrackingError,
    compare_clearml_experiments,
    compare_registered_models,
)
from ml_platform_tests.conftest import small_config

CLEARML_VARIABLES = ("CLEARML_API_HOST", "CLEARML_API_ACCESS_KEY", "CLEARML_API_SECRET_KEY", "CLEARML_CACHE_DIR")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A platform home with no ClearML server configured: tasks become offline sessions in it."""
    monkeypatch.setenv("ML_PLATFORM_HOME", str(tmp_path))
    monkeypatch.delenv("ML_PLATFORM_DATA_DIR", raising=False)
    for name in CLEARML_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def sessions(home: Path):
    return offline_sessions(home / "clearml" / "offline")


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    return path


def test_the_seed_example_writes_one_offline_session_holding_everything_it_logged(home: Path, model_file: Path):
    cfg = OmegaConf.create(compose_config(DEFAULT_CONFIG_PATH))  # the config as Hydra composes it
    report = home / "report.json"
    report.write_text('{"rows": 10}')
    handlers = [signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)]

    with ClearMLTracker(cfg, stage="train", task_type="training", extra_tags=["demo"]) as tracker:
        tracker.connect_dict("model", {"C": 0.5, "penalty": "l2", "nested": {"depth": 3}})
        tracker.log_metrics(metrics={"val_rmse": 0.31, "f1": 0.61}, series="validation", iteration=0)
        tracker.log_metrics(metrics={"val_rmse": 0.29}, series="validation", iteration=1)
        tracker.log_text("fitted on batch_0001")
        tracker.upload_artifact("report", report)
        tracker.upload_artifact("summary", {"winner": "logistic_regression"})
        model_id = tracker.register_model(model_file, "churn_classifier", {"f1": 0.61, "batch": "batch_0001"})

    # ClearML hooks exit, exceptions and signals while a task is open; closing it gives them back.
    assert [signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)] == handlers
    (session,) = sessions(home)
    assert (session.task_id, session.project_name) == (tracker.task_id, tracker.project_name)
    assert tracker.project_name == "ml_platform/churn"  # the pipeline's MLflow experiment name
    assert (session.name, session.task_type, session.status) == ("train", "training", "completed")
    assert {tag.split(":")[0] for tag in session.tags} == {"config_hash", "code_version", "demo"}
    assert {key: value for key, value in session.parameters.items() if key.startswith("model/")} == {
        "model/C": "0.5",
        "model/penalty": "l2",
        "model/nested/depth": "3",
    }
    assert session.parameters["libraries/scikit-learn"]
    assert 'primary_metric = "roc_auc"' in session.configuration["config"]  # ClearML keeps it as HOCON
    assert session.last_scalars() == {"val_rmse/validation": 0.29, "f1/validation": 0.61}
    assert "fitted on batch_0001" in session.log_lines
    assert session.read_member(session.artifacts["report"]["member"]) == b'{"rows": 10}'
    assert "logistic_regression" in session.artifacts["summary"]["preview"]
    (model,) = session.models
    assert (model.model_id, model.name, model.metadata) == (
        model_id,
        "churn_classifier",
        {"f1": 0.61, "batch": "batch_0001"},
    )
    assert pickle.loads(session.read_member(model.weights_member)) == {"weights": [1, 2, 3]}
    # The zip a server imports, and the folder ClearML's import reads the model's file from.
    assert sorted(path.name for path in (home / "clearml" / "offline").iterdir()) == [
        tracker.task_id,
        f"{tracker.task_id}.zip",
    ]


def test_an_exception_in_the_block_leaves_a_failed_task_and_propagates(home: Path):
    with (
        pytest.raises(ZeroDivisionError),
        ClearMLTracker(small_config(), stage="train") as tracker,
    ):
        tracker.log_metrics({"f1": 0.5}, series="validation", iteration=0)
        1 / 0  # noqa: B018

    (session,) = sessions(home)
    assert session.status == "failed"
    assert session.status_reason == "ZeroDivisionError: division by zero"
    assert session.last_scalars() == {"f1/validation": 0.5}  # what was logged before the failure is kept


def test_a_sys_exit_between_two_tasks_does_not_cost_the_second_its_metrics(home: Path):
    # ClearML keeps `sys.exit` wrapped after a task closes and remembers the last exit code; a
    # command that exits 2 (click does, under typer's CliRunner) made the next task close as failed,
    # without flushing its scalars.
    with ClearMLTracker(small_config(), stage="first"):
        pass
    with pytest.raises(SystemExit):
        sys.exit(2)
    with ClearMLTracker(small_config(), stage="second") as tracker:
        tracker.log_metrics({"f1": 0.5}, series="validation", iteration=0)

    second = next(session for session in sessions(home) if session.name == "second")
    assert (second.status, second.last_scalars()) == ("completed", {"f1/validation": 0.5})


def test_the_compare_functions_read_the_offline_sessions(home: Path, model_file: Path):
    experiment = load_experiment_config(PROJECT_ROOT / "configs" / "experiment.yaml")
    for stage, rmse in (("first", 0.4), ("second", 0.3)):
        with ClearMLTracker(experiment, stage=stage) as tracker:
            tracker.connect_dict("model", {"alpha": rmse})
            tracker.log_metrics({"val_rmse": rmse}, series="validation", iteration=0)
            tracker.register_model(model_file, "experiment_model", {"val_rmse": rmse})
    with pytest.raises(RuntimeError), ClearMLTracker(experiment, stage="broken"):
        raise RuntimeError("no data")

    compared = compare_clearml_experiments(experiment.name)
    assert list(compared["name"]) == ["first", "second", "broken"]
    assert list(compared["status"]) == ["completed", "completed", "failed"]
    assert compared["val_rmse"].tolist()[:2] == [0.4, 0.3]
    assert compared["val_rmse"].isna().tolist() == [False, False, True]
    assert compared.iloc[0]["parameters"]["model/alpha"] == "0.4"

    models = compare_registered_models("experiment_model", experiment.name)
    assert models["version"].tolist() == [2, 1]  # newest first
    assert [metadata["val_rmse"] for metadata in models["metadata"]] == [0.3, 0.4]
    assert compare_registered_models("experiment_model", experiment.name, max_results=1)["version"].tolist() == [2]

    with pytest.raises(TrackingError, match="no ClearML tasks in project 'elsewhere'"):
        compare_clearml_experiments("elsewhere")
    with pytest.raises(TrackingError, match="no ClearML model 'other'"):
        compare_registered_models("other", experiment.name)


def test_a_config_that_does_not_validate_is_refused_before_any_task_opens(home: Path):
    raw = compose_config(DEFAULT_CONFIG_PATH)
    raw["promotion"]["primary_metric"] = "speed"
    with pytest.raises(TrackingError, match="cfg: PlatformConfig: .*primary_metric 'speed'"):
        ClearMLTracker(OmegaConf.create(raw), stage="train")
    with pytest.raises(TrackingError, match="expected a PlatformConfig"):
        ClearMLTracker(["not", "a", "config"], stage="train")
    assert not (home / "clearml").exists()


def test_using_the_tracker_outside_its_block_is_an_error(home: Path):
    tracker = ClearMLTracker(small_config(), stage="train")
    with pytest.raises(TrackingError, match="in a `with` block"):
        tracker.log_text("too early")


def test_an_unknown_task_type_or_a_second_open_task_is_refused(home: Path):
    with pytest.raises(TrackingError, match="task_type 'fit' is not a ClearML task type; allowed: training, testing"):
        ClearMLTracker(small_config(), stage="train", task_type="fit").__enter__()
    with (
        ClearMLTracker(small_config(), stage="outer") as outer,
        pytest.raises(TrackingError, match=f"a ClearML task is already open in this process \\({outer.task_id}\\)"),
        ClearMLTracker(small_config(), stage="inner"),
    ):
        pass
    assert [session.name for session in sessions(home)] == ["outer"]


# ---------------------------------------------------------------- a configured server


@pytest.fixture
def server_environment(home: Path, monkeypatch: pytest.MonkeyPatch):
    def configure(host: str) -> None:
        monkeypatch.setenv("CLEARML_API_HOST", host)
        monkeypatch.setenv("CLEARML_API_ACCESS_KEY", "ACCESSKEY123")
        monkeypatch.setenv("CLEARML_API_SECRET_KEY", "s3cr3t-never-shown")

    return configure


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def silent_server():
    """A socket on 127.0.0.1 that accepts connections and never answers: a hung server."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}", accepted
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    listener.close()


@pytest.mark.timeout(60)  # ClearML's own client would retry for minutes
def test_a_server_that_refuses_connections_fails_fast_with_one_clear_error(home: Path, server_environment):
    server_environment(f"http://user:pw@127.0.0.1:{closed_port()}")
    with pytest.raises(TrackingError) as raised, ClearMLTracker(small_config(), stage="train"):
        pytest.fail("the block must not run")
    message = str(raised.value)
    assert "did not answer within 8 s (ConnectionError)" in message
    assert "http://127.0.0.1:" in message and "user:pw" not in message and "s3cr3t" not in message
    assert "unset CLEARML_API_HOST and the keys to log offline" in message
    assert not (home / "clearml" / "offline").exists()


@pytest.mark.timeout(60)
def test_a_server_that_accepts_and_never_answers_fails_within_the_ping_timeout(
    home: Path, server_environment, silent_server
):
    url, accepted = silent_server
    server_environment(url)
    with pytest.raises(TrackingError, match=r"did not answer within 8 s \(ReadTimeout\)"):
        compare_clearml_experiments("ml_platform/churn")
    assert len(accepted) == 1  # one ping, given up on after its read timeout: no retries


def test_a_server_that_refuses_the_keys_fails_at_login_naming_the_variables_never_the_secret(
    home: Path, server_environment, start_http_server
):
    server = start_http_server(401)
    server_environment(server.url(""))
    with pytest.raises(TrackingError) as raised, ClearMLTracker(small_config(), stage="train"):
        pytest.fail("the block must not run")
    assert "logging in with CLEARML_API_ACCESS_KEY and CLEARML_API_SECRET_KEY failed" in str(raised.value)
    assert "error 401" in str(raised.value) and "s3cr3t" not in str(raised.value)
    assert [request["path"] for request in server.received] == ["/debug.ping", "/auth.login"]


def test_a_server_that_fails_every_request_is_retried_a_bounded_number_of_times(
    home: Path, server_environment, start_http_server
):
    server = start_http_server(503)
    server_environment(server.url(""))
    with pytest.raises(TrackingError, match="too many 503 error responses"):
        compare_registered_models("churn_classifier", "ml_platform/churn")
    logins = [request for request in server.received if request["path"] == "/auth.login"]
    assert len(logins) == 1 + BOUNDED_RETRIES["status"]  # ClearML's default would be 240 retries


def test_a_half_configured_environment_is_refused_naming_what_is_missing(home: Path, monkeypatch):
    monkeypatch.setenv("CLEARML_API_HOST", "http://127.0.0.1:8008")
    with pytest.raises(TrackingError, match="CLEARML_API_ACCESS_KEY, CLEARML_API_SECRET_KEY not set"):
        compare_registered_models("churn_classifier", "ml_platform/churn")


# ---------------------------------------------------------------- the pure parts


def test_where_tasks_go_follows_the_environment(tmp_path: Path):
    assert ClearMLTarget.from_environment(tmp_path, {}).offline
    keys = {"CLEARML_API_ACCESS_KEY": "a", "CLEARML_API_SECRET_KEY": "b"}
    server = ClearMLTarget.from_environment(tmp_path, {"CLEARML_API_HOST": "http://h:8008/", **keys})
    assert (server.offline, server.api_host) == (False, "http://h:8008")
    with pytest.raises(ClearMLUnavailable, match="CLEARML_API_HOST not set"):
        ClearMLTarget.from_environment(tmp_path, keys)
    with pytest.raises(ClearMLUnavailable, match="CLEARML_API_SECRET_KEY not set"):
        ClearMLTarget.from_environment(tmp_path, {"CLEARML_API_HOST": "http://h", "CLEARML_API_ACCESS_KEY": "a"})


def test_a_host_is_shown_without_credentials_written_into_it():
    assert displayed_host("https://me:secret@clearml.example.com:8008/api") == "https://clearml.example.com:8008/api"
    assert displayed_host("http://127.0.0.1:8008") == "http://127.0.0.1:8008"


def test_a_metric_is_found_by_title_or_by_title_and_series():
    last = {"f1/validation": 0.6, "f1/test": 0.5, "rmse/validation": 0.3}
    assert metric_value(last, "f1/test") == 0.5
    assert metric_value(last, "rmse") == 0.3
    assert metric_value(last, "mae") is None
    with pytest.raises(ValueError, match="'f1' has several series; name one of: f1/test, f1/validation"):
        metric_value(last, "f1")


def test_versions_number_models_of_one_name_from_the_oldest_ties_in_order():
    assert version_numbers([30, 10, 20]) == [3, 1, 2]
    assert version_numbers([5, 5, 1]) == [2, 3, 1]
    assert version_numbers([]) == []


def test_pipeline_metrics_go_to_a_validation_and_a_test_series():
    assert metrics_by_series({"f1": 0.5, "validation_f1": 0.6, "fit_seconds": 1.0}) == {
        "test": {"f1": 0.5, "fit_seconds": 1.0},
        "validation": {"f1": 0.6},
    }


def test_tasks_are_labelled_with_the_tags_people_filter_by():
    tags = {"dagster.partition": "batch_0002", "data_hash": "abc", "lib.pandas": "2.3", "model_name": "rf"}
    assert task_labels(tags) == ["batch:batch_0002", "data_hash:abc", "model:rf"]


def test_only_the_newest_offline_sessions_are_kept(tmp_path: Path):
    import os

    for age, name in enumerate(["newest", "middle", "oldest"]):
        path = tmp_path / f"{name}.zip"
        path.write_bytes(b"")
        os.utime(path, (1_000_000 - age, 1_000_000 - age))
    (tmp_path / "oldest").mkdir()  # a working folder left beside its zip

    removed = keep_newest_sessions(tmp_path, keep=2)

    assert [path.name for path in removed] == ["oldest.zip"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["middle.zip", "newest.zip"]


def test_a_zip_that_is_not_a_session_is_named_and_skipped_by_the_listing(tmp_path: Path):
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"broken.zip: not a ClearML offline session"):
        read_offline_session(broken)
    assert offline_sessions(tmp_path) == []
