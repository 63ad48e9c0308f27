"""The pipeline against a real MLflow tracking server (`mlflow server` on 127.0.0.1, served artifacts):
MLFLOW_TRACKING_URI names it, and runs, models, artifacts and the registry all live there.

One server and one platform for the module: two demo batches through the whole pipeline, then a
retried decision step of the second.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from ml_platform.lib.provenance import TRAINING_IDS_ARTIFACT
from ml_platform_tests.conftest import Cli, PlatformUnderTest, _platform, small_config
from ml_platform_tests.servers import mlflow_server

MODEL_ASSETS = ("random_forest_model", "gradient_boosting_model", "logistic_regression_model")
LOCAL_STORES = ("mlflow.db", "mlruns", "mlartifacts")


@dataclass(frozen=True)
class Served:
    platform: PlatformUnderTest
    url: str
    server_dir: Path
    cwd: Path
    batches: list[str]
    results: dict[str, dg.ExecuteInProcessResult]

    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.url, registry_uri=self.url)

    @property
    def model_name(self) -> str:
        return self.platform.config.promotion.registered_model_name

    def versions(self) -> list:
        versions = self.client().search_model_versions(f"name = '{self.model_name}'")
        return sorted(versions, key=lambda version: int(version.version))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """Two batches through the pipeline with MLFLOW_TRACKING_URI naming a fresh server, from a working
    folder of its own (where a fallback `mlflow.db` would appear), and batch 2's decision retried."""
    root = tmp_path_factory.mktemp("mlflow-server")
    cwd = root / "cwd"
    cwd.mkdir()
    with mlflow_server(root / "server") as url, pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(cwd)
        for platform in _platform(root / "home", monkeypatch, small_config()):  # no local store copied in
            monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
            batches = platform.write_batches(2, rows=2000, drift=0.03)
            # A failed step fails the tests that read it, with its error, instead of every test's set-up.
            results = {batch: platform.materialize(batch, raise_on_error=False) for batch in batches}
            results["retry"] = platform.materialize(batches[1], selection=["champion_model"], raise_on_error=False)
            yield Served(platform, url, root / "server", cwd, batches, results)


def step_failures(result: dg.ExecuteInProcessResult) -> list[str]:
    return [
        f"{event.step_key}: {event.step_failure_data.error.message.strip()}"
        for event in result.all_events
        if event.is_step_failure
    ]


def metadata_of(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    event = next(e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(asset))
    return event.materialization.metadata


def test_every_run_succeeds_and_links_to_the_server(served):
    for result in served.results.values():
        assert result.success, step_failures(result)
    for batch in served.batches:
        for asset in (*MODEL_ASSETS, "champion_model"):
            assert metadata_of(served.results[batch], asset)["mlflow_run"].value.startswith(f"{served.url}/#/")


def test_every_model_run_is_on_the_server_with_its_artifacts_served(served, tmp_path):
    client = served.client()
    experiment = client.get_experiment_by_name(served.platform.config.tracking.experiment_name)
    runs = client.search_runs([experiment.experiment_id])
    logged = {
        metadata_of(served.results[batch], asset)["mlflow_run_id"].value
        for batch in served.batches
        for asset in MODEL_ASSETS
    }
    assert {run.info.run_id for run in runs} == logged and len(logged) == 3 * 2
    for run in runs:
        assert run.info.artifact_uri.startswith("mlflow-artifacts:/"), run.info.artifact_uri
        downloaded = client.download_artifacts(run.info.run_id, TRAINING_IDS_ARTIFACT, str(tmp_path / run.info.run_id))
        ids = json.loads(Path(downloaded).read_text())
        assert ids["id_column"] == served.platform.config.data.id_column and ids["ids"]
    # Where the server keeps them: its --artifacts-destination, one folder per run.
    stored = served.server_dir / "artifacts" / experiment.experiment_id
    assert all((stored / run.info.run_id / "artifacts" / TRAINING_IDS_ARTIFACT).is_file() for run in runs)


def test_the_evaluation_plots_are_logged_on_each_winner_through_the_server(served, tmp_path):
    """Plots that fail to log are only a warning in the run: here they must be on the server."""
    client = served.client()
    winners = served.versions()
    assert [winner.tags["batch"] for winner in winners] == served.batches
    for winner in winners:
        names = {Path(artifact.path).name for artifact in client.list_artifacts(winner.run_id, "evaluation")}
        assert "evaluation_report.md" in names and len([n for n in names if n.endswith(".png")]) >= 2, names
        downloaded = client.download_artifacts(winner.run_id, "evaluation/evaluation_report.md", str(tmp_path))
        report = Path(downloaded).read_text()
        assert winner.tags["batch"] in report


def test_one_version_per_batch_even_after_a_retried_decision(served):
    versions = served.versions()
    assert [version.tags["batch"] for version in versions] == served.batches
    assert len({version.run_id for version in versions}) == 2
    assert metadata_of(served.results["retry"], "champion_model")["version"].value == versions[1].version
    # Batch 2 was compared with batch 1's champion on rows it never trained on (read back through runs:/).
    second = versions[1].tags["promotion_reason"]
    assert "the champion (v1)" in second and "no record of the rows" not in second, second


def test_the_champion_loads_from_the_server_and_predicts(served):
    import mlflow.sklearn

    champion = served.client().get_model_version_by_alias(served.model_name, "champion")
    assert champion.version in {version.version for version in served.versions()}
    model = mlflow.sklearn.load_model(f"models:/{served.model_name}@champion")  # MLFLOW_TRACKING_URI: the server
    database = served.platform.settings.warehouse_dir / f"{served.batches[-1]}.duckdb"
    with duckdb.connect(str(database), read_only=True) as connection:
        features = connection.execute("SELECT * FROM features").df()
    predictions = model.predict(features[list(model.feature_names_in_)])
    assert len(predictions) == len(features) == 2000 and set(predictions) <= {0, 1}


def test_the_cli_shows_the_champion_registered_on_the_server(served, tmp_path):
    champion = served.client().get_model_version_by_alias(served.model_name, "champion")
    cli = Cli(tmp_path)
    cli.overrides["MLFLOW_TRACKING_URI"] = served.url
    shown = cli("champion").stdout
    assert f"{served.model_name} v{champion.version} @champion" in shown
    assert f"run: {champion.run_id}" in shown and "roc_auc" in shown
    assert not [path for name in LOCAL_STORES for path in tmp_path.rglob(name)]


def test_the_tracking_api_logs_loads_by_run_and_registers_by_run_on_the_server(served, tmp_path):
    """ExperimentTracker and MLflowManager: a `runs:/` model URI and `mlflow.register_model` of a run,
    another path to the registry than the pipeline's."""
    from ml_platform.tracking import ExperimentTracker, MLflowManager

    x = pd.DataFrame({"a": range(20), "b": [i % 3 for i in range(20)]})
    model = LogisticRegression().fit(x, [i % 2 for i in range(20)])
    notes = tmp_path / "notes.txt"
    notes.write_text("by hand")
    with ExperimentTracker("by_hand", "probe", tracking_uri=served.url) as tracker:
        tracker.log_metrics({"accuracy": 1.0})
        tracker.log_model(model, input_example=x.head(2))
        tracker.log_artifact(notes, "extra")
        run_id = tracker.run_id
    manager = MLflowManager("by_hand", tracking_uri=served.url)
    assert list(manager.load_model(run_id).predict(x)) == list(model.predict(x))
    version = manager.register_model(run_id, "by_hand_model")
    assert list(manager.load_model(f"models:/by_hand_model/{version}").predict(x)) == list(model.predict(x))
    notes_copy = served.client().download_artifacts(run_id, "extra/notes.txt", str(tmp_path / "download"))
    assert Path(notes_copy).read_text() == "by hand"


def test_no_local_mlflow_store_was_used(served):
    home = served.platform.settings.home
    assert not served.platform.settings.mlflow_dir.exists()
    for folder in (home, served.cwd):
        assert not [path for name in LOCAL_STORES for path in folder.rglob(name)], folder
