"""The tracking API for code: runs as context managers and decorators, run queries, models and aliases.

Every test works against a real SQLite MLflow store in its own temporary ML_PLATFORM_HOME.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from ml_platform.lib.settings import Settings
from ml_platform.tracking import (
    DEFAULT_EXPERIMENT,
    ExperimentTracker,
    MLflowManager,
    TrackingError,
    compare_runs,
    get_best_run,
    mlflow_run,
    search_runs,
    store_for,
)

MLFLOW_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID")


@pytest.fixture(scope="module")
def features() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    return pd.DataFrame({"tenure": rng.normal(size=60), "charges": rng.normal(size=60)})


@pytest.fixture(scope="module")
def fitted(features: pd.DataFrame) -> Pipeline:
    target = (features["tenure"] + 0.5 * features["charges"] > 0).astype(int)
    return Pipeline([("scale", StandardScaler()), ("model", LogisticRegression())]).fit(features, target)


@pytest.fixture
def tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, empty_mlflow_store: Path) -> Iterator[str]:
    """The platform's default store, under a temporary ML_PLATFORM_HOME; no MLflow state leaks out."""
    (tmp_path / "mlflow").mkdir()
    shutil.copy(empty_mlflow_store, tmp_path / "mlflow" / "mlflow.db")
    monkeypatch.setenv("ML_PLATFORM_HOME", str(tmp_path))
    for name in MLFLOW_ENV:
        # setenv first, so teardown restores the original even though MLflow itself writes these variables
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # MLflow's own "Default" experiment keeps artifacts under ./mlruns
    yield Settings.from_env().local_tracking_uri
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


@pytest.fixture
def client(tracking_uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def run_named(client: MlflowClient, experiment_name: str, run_name: str):
    experiment = client.get_experiment_by_name(experiment_name)
    (run,) = client.search_runs([experiment.experiment_id], f"attributes.run_name = '{run_name}'")
    return run


# ---------------------------------------------------------------- ExperimentTracker


def test_a_tracked_run_finishes_with_its_params_metrics_tags_artifacts_and_model(
    tracking_uri, client, fitted, features, tmp_path
):
    notes = tmp_path / "notes.txt"
    notes.write_text("tiny data")
    with ExperimentTracker("notebook", run_name="try-1", tags={"team": "churn"}, tracking_uri=tracking_uri) as run:
        run.log_param("C", 0.5)
        run.log_params({"solver": "lbfgs", "max_iter": 100})
        run.log_metric("f1", 0.61)
        run.log_metrics({"auc": 0.7, "loss": 0.4}, step=2)
        run.set_tag("stage", "explore")
        run.set_tags({"owner": "ana", "attempt": 1})
        model_uri = run.log_model(fitted, input_example=features.head(3))
        run.log_artifact(notes, artifact_path="docs")
        run_id = run.run_id
        assert mlflow.active_run().info.run_id == run_id

    assert mlflow.active_run() is None
    logged = client.get_run(run_id)
    assert logged.info.status == "FINISHED"
    assert logged.info.run_name == "try-1"
    assert logged.data.params == {"C": "0.5", "solver": "lbfgs", "max_iter": "100"}
    assert logged.data.metrics == {"f1": 0.61, "auc": 0.7, "loss": 0.4}
    assert [m.step for m in client.get_metric_history(run_id, "auc")] == [2]
    assert {"team": "churn", "stage": "explore", "owner": "ana", "attempt": "1"}.items() <= logged.data.tags.items()
    assert [a.path for a in client.list_artifacts(run_id, "docs")] == ["docs/notes.txt"]
    assert logged.info.artifact_uri.startswith((tmp_path / "mlflow" / "artifacts").as_uri())
    assert model_uri.startswith("models:/")

    loaded = MLflowManager("notebook", tracking_uri=tracking_uri).load_model(run_id)
    np.testing.assert_array_equal(loaded.predict(features), fitted.predict(features))


def test_an_exception_in_the_block_fails_the_run_and_propagates(tracking_uri, client):
    with pytest.raises(RuntimeError, match="diverged"), ExperimentTracker("notebook", tracking_uri=tracking_uri) as run:
        run_id = run.run_id
        run.log_metric("loss", float("nan"))
        raise RuntimeError("training diverged")

    assert client.get_run(run_id).info.status == "FAILED"
    assert mlflow.active_run() is None


def test_fluent_mlflow_calls_inside_the_block_land_in_the_same_run(tracking_uri, client):
    with ExperimentTracker("notebook", tracking_uri=tracking_uri) as run:
        mlflow.log_metric("fluent_metric", 3.0)
        mlflow.log_param("fluent_param", "yes")
        run_id = run.run_id

    data = client.get_run(run_id).data
    assert data.metrics == {"fluent_metric": 3.0}
    assert data.params == {"fluent_param": "yes"}


def test_a_tracker_inside_another_is_a_nested_run_and_the_outer_stays_active(tracking_uri, client):
    with ExperimentTracker("notebook", run_name="outer", tracking_uri=tracking_uri) as outer:
        with ExperimentTracker("notebook", run_name="inner", tracking_uri=tracking_uri) as inner:
            inner_id = inner.run_id
        assert mlflow.active_run().info.run_id == outer.run_id
        outer_id = outer.run_id

    assert client.get_run(inner_id).data.tags["mlflow.parentRunId"] == outer_id
    assert client.get_run(inner_id).info.status == "FINISHED"
    assert client.get_run(outer_id).info.status == "FINISHED"


def test_logging_outside_the_block_is_a_tracking_error(tracking_uri):
    tracker = ExperimentTracker("notebook", tracking_uri=tracking_uri)
    with pytest.raises(TrackingError, match="not started"):
        tracker.log_metric("f1", 0.5)
    with tracker:
        pass
    with pytest.raises(TrackingError, match="not started"):
        tracker.log_param("C", 1)
    tracker.end_run()  # ending it again is harmless


def test_an_explicit_tracking_uri_does_not_become_the_default_for_later_calls(
    tracking_uri, tmp_path, empty_mlflow_store
):
    shutil.copy(empty_mlflow_store, tmp_path / "elsewhere.db")
    other = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    with ExperimentTracker("notebook", tracking_uri=other):
        pass
    assert store_for("notebook").tracking_uri == tracking_uri


# ---------------------------------------------------------------- @mlflow_run


def test_the_decorator_runs_the_function_in_a_run_and_returns_its_result(tracking_uri, client):
    @mlflow_run(experiment_name="decorated", run_name="nightly", tags={"kind": "batch"}, tracking_uri=tracking_uri)
    def train(rate, tracker):
        tracker.log_metric("rate", rate)
        return tracker, mlflow.active_run().info.run_id

    tracker, active_id = train(0.25)

    assert isinstance(tracker, ExperimentTracker)
    run = run_named(client, "decorated", "nightly")
    assert run.info.run_id == active_id
    assert run.info.status == "FINISHED"
    assert run.data.metrics == {"rate": 0.25}
    assert run.data.tags["kind"] == "batch"


def test_the_decorator_fails_the_run_when_the_function_raises(tracking_uri, client):
    @mlflow_run("decorated", tracking_uri=tracking_uri)
    def broken():
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        broken()
    assert run_named(client, "decorated", "broken").info.status == "FAILED"


def test_a_bare_decorator_uses_the_experiment_from_the_environment_and_the_function_name(
    tracking_uri, client, monkeypatch
):
    @mlflow_run
    def score_batch():
        return "scored"

    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "from-env")  # read when called, not when decorated
    assert score_batch() == "scored"
    assert run_named(client, "from-env", "score_batch").info.status == "FINISHED"


def test_a_bare_decorator_without_an_experiment_name_logs_to_the_scratch_experiment(tracking_uri, client):
    @mlflow_run
    def explore(tracker):
        tracker.log_param("seed", 7)

    explore()
    assert run_named(client, DEFAULT_EXPERIMENT, "explore").data.params == {"seed": "7"}


# ---------------------------------------------------------------- queries


@pytest.fixture
def three_runs(tracking_uri) -> dict[str, str]:
    """Runs of "sweep" by name: f1 0.4 / 0.7 / 0.6, loss 0.9 / 0.3 / 0.5, and a failed run with the best scores."""
    run_ids = {}
    for name, c, f1, loss in [("a", 0.1, 0.4, 0.9), ("b", 1.0, 0.7, 0.3), ("c", 10.0, 0.6, 0.5)]:
        with ExperimentTracker("sweep", run_name=name, tracking_uri=tracking_uri) as run:
            run.log_params({"C": c})
            run.log_metrics({"f1": f1, "loss": loss})
            run_ids[name] = run.run_id
    with (
        pytest.raises(KeyboardInterrupt),
        ExperimentTracker("sweep", run_name="crashed", tracking_uri=tracking_uri) as run,
    ):
        run.log_metrics({"f1": 0.99, "loss": 0.01})
        run_ids["crashed"] = run.run_id
        raise KeyboardInterrupt
    return run_ids


def test_compare_runs_has_one_row_per_run_indexed_by_run_id_with_params_and_metrics(tracking_uri, three_runs):
    table = compare_runs("sweep", tracking_uri=tracking_uri)

    assert table.index.name == "run_id"
    assert sorted(table.index) == sorted(three_runs.values())
    assert {"run_name", "status", "params.C", "metrics.f1", "metrics.loss"} <= set(table.columns)
    assert table.loc[three_runs["b"], "run_name"] == "b"
    assert table.loc[three_runs["b"], "params.C"] == "1.0"
    assert table.loc[three_runs["b"], "metrics.f1"] == 0.7
    assert table.loc[three_runs["crashed"], "status"] == "FAILED"


def test_compare_runs_of_an_experiment_without_runs_is_empty(tracking_uri):
    store_for("empty", tracking_uri).experiment_id()
    table = compare_runs("empty", tracking_uri=tracking_uri)
    assert table.empty
    assert table.index.name == "run_id"


def test_search_runs_filters_with_mlflow_filter_syntax(tracking_uri, three_runs):
    runs = search_runs("sweep", filter_string="metrics.f1 > 0.5", tracking_uri=tracking_uri)
    assert sorted(runs["run_id"]) == sorted([three_runs["b"], three_runs["c"], three_runs["crashed"]])


def test_the_best_run_is_the_finished_run_with_the_highest_or_lowest_metric(tracking_uri, three_runs):
    assert get_best_run("sweep", "f1", mode="max", tracking_uri=tracking_uri) == three_runs["b"]
    assert get_best_run("sweep", "f1", mode="min", tracking_uri=tracking_uri) == three_runs["a"]
    assert get_best_run("sweep", "loss", tracking_uri=tracking_uri) == three_runs["b"]  # "min" by default


def test_queries_on_an_unknown_experiment_are_tracking_errors(tracking_uri):
    with pytest.raises(TrackingError, match="no MLflow experiment named 'nope'"):
        search_runs("nope", tracking_uri=tracking_uri)
    with pytest.raises(TrackingError, match="no MLflow experiment named 'nope'"):
        compare_runs("nope", tracking_uri=tracking_uri)
    with pytest.raises(TrackingError, match="no MLflow experiment named 'nope'"):
        get_best_run("nope", "f1", mode="max", tracking_uri=tracking_uri)


def test_the_best_run_by_a_metric_no_run_has_is_a_tracking_error(tracking_uri, three_runs):
    with pytest.raises(TrackingError, match="no finished run of 'sweep' has the metric 'auc'"):
        get_best_run("sweep", "auc", mode="max", tracking_uri=tracking_uri)


def test_the_best_run_by_a_mode_other_than_min_or_max_is_a_tracking_error(tracking_uri, three_runs):
    with pytest.raises(TrackingError, match="mode must be 'min' or 'max', not 'median'"):
        get_best_run("sweep", "f1", mode="median", tracking_uri=tracking_uri)


def test_a_malformed_filter_is_a_tracking_error_naming_the_filter(tracking_uri, three_runs):
    with pytest.raises(TrackingError, match=r"filter 'metrics\.f1 >>> 0\.5'"):
        search_runs("sweep", filter_string="metrics.f1 >>> 0.5", tracking_uri=tracking_uri)


# ---------------------------------------------------------------- MLflowManager


@pytest.fixture
def manager(tracking_uri) -> MLflowManager:
    return MLflowManager("models", tracking_uri=tracking_uri)


def test_log_experiment_returns_a_finished_run_with_model_metrics_params_tags_and_artifacts(
    manager, client, fitted, features, tmp_path
):
    notes = tmp_path / "notes.md"
    notes.write_text("# why this model")

    run_id = manager.log_experiment(
        fitted,
        metrics={"f1": 0.8},
        params={"C": 0.5, "solver": "lbfgs"},
        artifacts={"report.json": {"rows": 60, "classes": [0, 1]}, "notes": notes},
        tags={"owner": "ana"},
        run_name="candidate",
        input_example=features.head(2),
    )

    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "candidate"
    assert run.data.metrics == {"f1": 0.8}
    assert run.data.params == {"C": "0.5", "solver": "lbfgs"}
    assert run.data.tags["owner"] == "ana"
    assert [a.path for a in client.list_artifacts(run_id, "notes")] == ["notes/notes.md"]
    report = client.download_artifacts(run_id, "report.json", str(tmp_path / "download"))
    assert json.loads(Path(report).read_text()) == {"rows": 60, "classes": [0, 1]}
    np.testing.assert_array_equal(manager.load_model(run_id).predict(features), fitted.predict(features))


@pytest.fixture
def registered(manager, fitted) -> str:
    """A run of "models" whose model is registered twice as "churn" (versions 1 and 2)."""
    run_id = manager.log_experiment(fitted, metrics={"f1": 0.8})
    assert manager.register_model(run_id, "churn") == "1"
    assert manager.register_model(run_id, "churn") == "2"
    return run_id


def test_registered_versions_are_numbered_and_load_by_version(manager, registered, fitted, features):
    model = manager.load_model("models:/churn/1")
    np.testing.assert_array_equal(model.predict(features), fitted.predict(features))


def test_registering_a_run_without_a_model_is_a_tracking_error(manager):
    with pytest.raises(TrackingError, match="cannot register run 'no-such-run' as 'churn'"):
        manager.register_model("no-such-run", "churn")


def test_promotion_moves_the_champion_alias_and_rollback_returns_it(manager, registered, fitted, features):
    manager.promote("churn", "1")
    champion = manager.load_model("models:/churn@champion")
    np.testing.assert_array_equal(champion.predict(features), fitted.predict(features))

    manager.promote("churn", "2", reason="better f1")
    assert str(manager.store.champion_version("churn").version) == "2"

    event = manager.rollback("churn")
    assert (event.version, event.previous, event.action) == ("1", "2", "rollback")
    assert str(manager.store.champion_version("churn").version) == "1"

    history = manager.alias_history("churn", "champion")
    assert [(e.version, e.previous, e.action) for e in history] == [
        ("1", None, "promote"),
        ("2", "1", "promote"),
        ("1", "2", "rollback"),
    ]
    assert history[1].reason == "better f1"


def test_list_models_shows_each_model_with_its_latest_version_and_aliases(manager, registered):
    manager.promote("churn", "2")
    manager.promote("churn", "1", alias="challenger")

    models = manager.list_models()

    assert models[["name", "latest_version", "aliases"]].to_dict("records") == [
        {"name": "churn", "latest_version": "2", "aliases": "challenger=v1, champion=v2"}
    ]


def test_loading_a_model_that_does_not_exist_is_a_tracking_error(manager):
    with pytest.raises(TrackingError, match="cannot load model 'nonexistent-run'"):
        manager.load_model("nonexistent-run")
    with pytest.raises(TrackingError, match="cannot load model 'models:/churn/7'"):
        manager.load_model("models:/churn/7")
