"""`ml-platform predict` on a copy of the prepared home: a file without labels scored by a registered
model, and every mistake one line with nothing written."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from ml_platform.lib.demo_data import write_demo_batches
from ml_platform_tests.conftest import Cli, PreparedHome, copy_home


@pytest.fixture(scope="module")
def cli(prepared_home: PreparedHome, tmp_path_factory: pytest.TempPathFactory) -> Cli:
    cli = Cli(tmp_path_factory.mktemp("predict"))
    copy_home(prepared_home.home, cli.home)
    return cli


def file_to_score(folder: Path, name: str, edit=None) -> Path:
    """300 new customers (batch 3 of the demo data set) as a user would export them: no `churned` column."""
    [written] = write_demo_batches(folder / "demo", 1, 300, first_batch=3)
    frame = pd.read_csv(written, dtype=str, keep_default_na=False).drop(columns=["churned"])
    if edit:
        edit(frame)
    path = folder / f"{name}.csv"
    frame.to_csv(path, index=False)
    return path


def test_predict_scores_a_file_without_labels_with_the_champion_or_the_version_asked_for(cli, tmp_path):
    path = file_to_score(tmp_path, "new_customers")
    registry = MlflowClient(tracking_uri=f"sqlite:///{cli.home / 'mlflow' / 'mlflow.db'}")
    champion = registry.get_model_version_by_alias("churn_classifier", "champion")

    result = cli("predict", str(path))

    assert f"scored 300 rows of {path} with churn_classifier v{champion.version}" in result.stdout
    assert "score distribution" in result.stdout and "predicted: " in result.stdout
    written = pd.read_csv(tmp_path / "new_customers.predictions.csv")
    assert list(written.columns) == [
        "customer_id",
        "prediction",
        "probability_0",
        "probability_1",
        "score",
        "model_name",
        "model_version",
        "model_run_id",
    ]
    assert len(written) == 300 and written["customer_id"].is_unique
    assert set(written["model_version"].astype(str)) == {str(champion.version)}
    assert set(written["model_run_id"]) == {champion.run_id}
    assert written["score"].between(0, 1).all()

    chosen = cli("predict", str(path), "--model", "churn_classifier/1", "--out", str(tmp_path / "v1.csv"))
    assert "with churn_classifier v1" in chosen.stdout
    assert set(pd.read_csv(tmp_path / "v1.csv")["model_version"].astype(str)) == {"1"}


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("churn_classifier/99", "registered model 'churn_classifier' has no version 99 (latest: "),
        ("churn_classifier@staging", "registered model 'churn_classifier' has no alias @staging"),
        ("no_such_model", "no registered model 'no_such_model' (registered: churn_classifier)"),
        ("churn_classifier/v2", "model 'churn_classifier/v2': expected NAME@ALIAS"),
    ],
)
def test_predict_with_a_model_the_registry_does_not_have_is_one_line_and_writes_nothing(cli, tmp_path, model, message):
    path = file_to_score(tmp_path, "new_customers")

    result = cli("predict", str(path), "--model", model, exit_code=2)

    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "new_customers.predictions.csv").exists()


def test_predict_refuses_a_file_breaking_the_contract_naming_file_column_and_row(cli, tmp_path):
    def unknown_contract(frame: pd.DataFrame) -> None:
        frame.loc[6, "contract_type"] = "weekly"

    path = file_to_score(tmp_path, "bad_customers", unknown_contract)

    result = cli("predict", str(path), exit_code=2)

    assert f"{path}: batch rejected" in result.stderr
    assert "column 'contract_type': expected one of" in result.stderr and "data row 7 has 'weekly'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "bad_customers.predictions.csv").exists()
