"""`ml-platform tune MODEL`: one study on a batch, in its own MLflow experiment, nothing of the pipeline changed."""

from __future__ import annotations

import ast
import re

import pytest

from ml_platform.lib.mlflow_store import MlflowStore
from ml_platform_tests.conftest import Cli, PreparedHome, copy_home, small_config

SEARCH = {"params": {"C": {"type": "float", "low": 0.01, "high": 10.0, "log": True}}, "n_trials": 5, "cv_folds": 2}


@pytest.fixture(scope="module")
def cli(prepared_home: PreparedHome, tmp_path_factory: pytest.TempPathFactory) -> Cli:
    """A copy of the prepared home (two batches with features, a champion), logistic regression searchable."""
    cli = Cli(tmp_path_factory.mktemp("cli_tune"), small_config(**{"models.logistic_regression.search": SEARCH}))
    copy_home(prepared_home.home, cli.home)
    cli.overrides["DAGSTER_HOME"] = str(cli.home / "dagster_home")
    return cli


def test_tune_runs_a_study_on_the_newest_batch_as_an_experiment_outside_the_pipeline(cli):
    store = MlflowStore(f"sqlite:///{cli.home / 'mlflow' / 'mlflow.db'}", "ml_platform/churn")
    champion = store.champion_version("churn_classifier").version
    versions = len(store.client().search_model_versions("name = 'churn_classifier'"))

    printed = cli("tune", "logistic_regression", "--trials", "2").stdout

    assert "tuned logistic_regression on batch_0002: 2 trials, 2-fold cross-validation of " in printed
    assert "best 2 trials by roc_auc (max)" in " ".join(printed.split())  # rich wraps a title to the table
    run_id = re.search(r"MLflow run (\w+): http", printed).group(1)
    best_params = ast.literal_eval(re.search(r"best params: (\{.*\})", printed).group(1))
    client = store.client()
    run = client.get_run(run_id)
    assert client.get_experiment(run.info.experiment_id).name == "ml_platform/churn/tuning"
    assert float(run.data.params["best.C"]) == pytest.approx(best_params["C"])
    nested = client.search_runs([run.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{run_id}'")
    assert len(nested) == 2
    assert len(client.search_model_versions("name = 'churn_classifier'")) == versions
    assert store.champion_version("churn_classifier").version == champion


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["xgboost"], "unknown model 'xgboost'; configured: gradient_boosting, logistic_regression, random_forest"),
        (["random_forest"], "models.random_forest has no search: block to tune"),
        (["logistic_regression", "--batch", "batch_0042"], "unknown batch 'batch_0042'"),
    ],
)
def test_a_mistake_is_one_clear_line_and_exit_2(cli, args, message):
    result = cli("tune", *args, exit_code=2)

    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_batch_without_features_is_refused(cli):
    incoming = cli.home / "data" / "incoming"
    (incoming / "batch_0003.csv").write_bytes((incoming / "batch_0001.csv").read_bytes())
    cli("batches", "add", "batch_0003")

    result = cli("tune", "logistic_regression", "--batch", "batch_0003", exit_code=2)

    assert "batch batch_0003 has no features yet: run the pipeline for it first" in result.stderr
