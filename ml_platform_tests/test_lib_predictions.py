"""Scoring: which model a reference names, the predictions table's rows, and a file to score that has no labels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml_platform.lib.config import DataConfig
from ml_platform.lib.demo_data import write_demo_batches
from ml_platform.lib.ingestion import BatchValidationError, ingest_batch
from ml_platform.lib.predictions import (
    ModelOutputs,
    ModelReference,
    ModelReferenceError,
    ScoringModel,
    class_shares,
    model_inputs,
    parse_model_reference,
    prediction_frame,
    score_quantiles,
)

MODEL = ScoringModel("churn_classifier", "7", "0123abcd")
IDS = pd.Series(["a", "b", "c", "d"], name="customer_id")


# ---------------------------------------------------------------- model references


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, ModelReference("churn_classifier", alias="champion")),
        ("churn_classifier@champion", ModelReference("churn_classifier", alias="champion")),
        ("other@challenger", ModelReference("other", alias="challenger")),
        ("churn_classifier/3", ModelReference("churn_classifier", version="3")),
        ("models:/churn_classifier/3", ModelReference("churn_classifier", version="3")),
        ("churn_classifier", ModelReference("churn_classifier", alias="champion")),
    ],
)
def test_a_model_reference_names_an_alias_or_a_version_and_defaults_to_the_champion(text, expected):
    assert parse_model_reference(text, "churn_classifier") == expected


@pytest.mark.parametrize("text", ["churn_classifier/v3", "churn_classifier@", "a b", "churn_classifier/3/4"])
def test_a_malformed_model_reference_says_what_is_expected(text):
    with pytest.raises(ModelReferenceError, match=r"expected NAME@ALIAS .* or NAME/VERSION"):
        parse_model_reference(text, "churn_classifier")


# ---------------------------------------------------------------- the predictions frame


def test_every_row_has_its_id_the_prediction_both_probabilities_and_the_model_version():
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.5, 0.5]])
    frame = prediction_frame(IDS, ModelOutputs(np.array([0, 1, 0, 0]), probabilities, (0, 1)), MODEL)

    assert list(frame.columns) == [
        "customer_id",
        "prediction",
        "probability_0",
        "probability_1",
        "score",
        "model_name",
        "model_version",
        "model_run_id",
    ]
    assert frame["customer_id"].tolist() == IDS.tolist()
    assert set(frame["model_version"]) == {"7"} and set(frame["model_name"]) == {"churn_classifier"}
    assert set(frame["model_run_id"]) == {"0123abcd"}
    # Two classes: the score is the positive class's probability, as ROC AUC ranks it.
    assert frame["score"].tolist() == [0.1, 0.8, 0.4, 0.5]
    assert class_shares(frame) == {"0": 0.75, "1": 0.25}


def test_three_classes_give_a_probability_column_each_and_score_the_predicted_class_probability():
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.2, 0.5, 0.3], [0.3, 0.3, 0.4]])
    outputs = ModelOutputs(
        np.array(["setosa", "virginica", "versicolor", "virginica"]),
        probabilities,
        ("setosa", "versicolor", "virginica"),
    )
    frame = prediction_frame(IDS, outputs, MODEL)

    assert [c for c in frame.columns if c.startswith("probability_")] == [
        "probability_setosa",
        "probability_versicolor",
        "probability_virginica",
    ]
    assert np.allclose(frame.filter(like="probability_").sum(axis=1), 1.0)
    assert frame["score"].tolist() == [0.7, 0.6, 0.5, 0.4]
    assert class_shares(frame) == {"virginica": 0.5, "setosa": 0.25, "versicolor": 0.25}


def test_a_regressor_has_a_predicted_value_no_probabilities_and_its_values_as_the_distribution():
    frame = prediction_frame(IDS, ModelOutputs(np.array([1.0, 2.0, 3.0, 4.0])), MODEL)

    assert list(frame.columns) == ["customer_id", "prediction", "model_name", "model_version", "model_run_id"]
    assert class_shares(frame) == {}
    quantiles = score_quantiles(frame)
    assert quantiles.set_index("quantile")["value"].loc[[0.0, 0.5, 1.0]].tolist() == [1.0, 2.5, 4.0]


def test_the_signature_picks_the_model_inputs_and_whole_numbers_go_in_as_floats():
    signature = {"tenure_months": "double", "region": "string"}
    features = pd.DataFrame({"batch_id": ["b"], "customer_id": ["a"], "tenure_months": [3], "region": ["east"]})

    inputs = model_inputs(features, signature)
    assert list(inputs.columns) == ["tenure_months", "region"]
    assert inputs["tenure_months"].dtype == "float64"
    with pytest.raises(ValueError, match="lack column.*: region"):
        model_inputs(features.drop(columns=["region"]), signature)


# ---------------------------------------------------------------- a file to score has no labels


def unlabelled_file(tmp_path, data: DataConfig, edit=None):
    [path] = write_demo_batches(tmp_path, 1, 30)
    frame = pd.read_csv(path, dtype=str, keep_default_na=False).drop(columns=[data.target])
    if edit:
        edit(frame)
    frame.to_csv(path, index=False)
    return path


def test_a_file_to_score_may_lack_the_target_column_which_is_then_all_missing(tmp_path, data, con):
    path = unlabelled_file(tmp_path, data)

    summary = ingest_batch(path, data, con, require_target=False)

    assert summary.rows == 30
    assert summary.null_counts[data.target] == 30
    assert con.execute(f'SELECT count(*) FROM raw_batch WHERE "{data.target}" IS NULL').fetchone()[0] == 30


def test_a_batch_to_train_on_without_the_target_is_still_refused(tmp_path, data, con):
    with pytest.raises(BatchValidationError, match=f"missing column\\(s\\): {data.target}"):
        ingest_batch(unlabelled_file(tmp_path, data), data, con)


def test_a_file_to_score_with_a_bad_value_is_refused_naming_the_column_and_row(tmp_path, data, con):
    def bad_contract(frame: pd.DataFrame) -> None:
        frame.loc[4, "contract_type"] = "weekly"

    with pytest.raises(BatchValidationError) as error:
        ingest_batch(unlabelled_file(tmp_path, data, bad_contract), data, con, require_target=False)

    assert "column 'contract_type': expected one of" in str(error.value)
    assert "data row 5 has 'weekly'" in str(error.value)
    assert (
        con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'raw_batch'").fetchone()[0] == 0
    )
