"""`ml-platform init-config`: a contract drafted from an export loads and ingests that export."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from ml_platform.cli import app
from ml_platform.lib.config import load_config
from ml_platform.lib.ingestion import ingest_batch

ROWS = 120


@pytest.fixture(scope="module")
def telco_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Telco-churn-like export as Excel's "CSV UTF-8" writes it: BOM, CRLF, `" "` for a missing
    TotalCharges, padded Yes/No, a customer code beside the id and more text columns."""
    rng = np.random.default_rng(11)
    total = rng.uniform(18, 8000, ROWS).round(2).astype(str).astype(object)
    total[[5, 50, 99]] = " "
    frame = pd.DataFrame(
        {
            "customerID": [f"{1000 + i}-{'ABCDEFGH'[i % 8]}XQZ" for i in range(ROWS)],
            "AccountCode": [f"AC{i * 7919 % 100_000:05d}" for i in range(ROWS)],
            "gender": rng.choice(["Female", "Male"], ROWS),
            "SeniorCitizen": rng.integers(0, 2, ROWS),
            "Partner": rng.choice([" Yes ", "No", "Yes"], ROWS),
            "OnlineSecurity": rng.choice(["No", "Yes", "No internet service"], ROWS),
            "tenure": rng.integers(0, 73, ROWS),
            "MonthlyCharges": rng.uniform(18, 120, ROWS).round(2),
            "TotalCharges": total,
            "Churn": rng.choice(["No", "Yes"], ROWS),
        }
    )
    path = tmp_path_factory.mktemp("export") / "telco_export.csv"
    frame.to_csv(path, index=False, encoding="utf-8-sig", lineterminator="\r\n")
    return path


def init_config(*args: str):
    return CliRunner().invoke(app, ["init-config", *args])


def test_the_drafted_config_loads_and_ingests_the_sample_it_was_drafted_from(telco_export, tmp_path):
    out = tmp_path / "telco.yaml"

    result = init_config(str(telco_export), "--target", "Churn", "--out", str(out))

    assert result.exit_code == 0, result.output
    assert "id column 'customerID' (guessed)" in " ".join(result.output.split())
    config = load_config(out)
    with duckdb.connect() as con:
        summary = ingest_batch(telco_export, config.data, con, training=config.training)
    columns = config.data.columns
    assert summary.rows == ROWS and summary.blank_counts["TotalCharges"] == 3
    assert config.data.id_column == "customerID"
    assert columns["AccountCode"].role == "identifier"
    assert (columns["TotalCharges"].type, columns["TotalCharges"].nullable) == ("float", True)
    assert (columns["tenure"].type, columns["tenure"].nullable) == ("integer", False)
    assert columns["OnlineSecurity"].allowed == ["No", "No internet service", "Yes"]
    assert columns["Churn"].type == "boolean" and columns["Churn"].nullable is False
    assert set(config.models) == {"random_forest", "gradient_boosting", "logistic_regression"}
    assert 'allowed: ["No", "No internet service", "Yes"]' in out.read_text()


def test_a_0_1_integer_target_is_drafted_as_a_binary_target(telco_export, tmp_path):
    out = tmp_path / "senior.yaml"

    assert init_config(str(telco_export), "--target", "SeniorCitizen", "--out", str(out)).exit_code == 0

    target = yaml.safe_load(out.read_text())["data"]["columns"]["SeniorCitizen"]
    assert target == {"type": "integer", "nullable": False, "min": 0, "max": 1}
    assert load_config(out).data.target == "SeniorCitizen"


def test_a_target_that_is_not_a_column_is_refused_listing_the_columns(telco_export, tmp_path):
    result = init_config(str(telco_export), "--target", "churn", "--out", str(tmp_path / "x.yaml"))

    assert result.exit_code == 2
    assert "--target 'churn' is not a column; the columns are customerID, AccountCode" in " ".join(
        result.output.split()
    )
    assert not (tmp_path / "x.yaml").exists()


def test_an_existing_out_file_is_kept_unless_forced(telco_export, tmp_path):
    out = tmp_path / "mine.yaml"
    out.write_text("# my edits\n")

    refused = init_config(str(telco_export), "--target", "Churn", "--out", str(out))
    forced = init_config(str(telco_export), "--target", "Churn", "--out", str(out), "--force")

    assert refused.exit_code == 2 and "exists" in refused.output
    assert forced.exit_code == 0 and out.read_text().startswith("# A starting config")


def test_a_draft_the_loader_refuses_is_written_with_the_loaders_reason(telco_export, tmp_path):
    out = tmp_path / "gender.yaml"

    result = init_config(str(telco_export), "--target", "gender", "--task", "regression", "--out", str(out))

    assert result.exit_code == 0 and out.exists()
    assert "the draft does not load as it is" in result.output
    assert "a regression target must be integer or float, 'gender' is category" in " ".join(result.output.split())
