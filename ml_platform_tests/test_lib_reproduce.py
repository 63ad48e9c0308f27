"""Reproducible by id: the reference forms, the checks before a rebuild, the comparison of two runs."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest

from ml_platform.lib.config import validate_model_params
from ml_platform.lib.provenance import MODEL_HASH_TAG, PARAMS_TAG, PREDICTIONS_HASH_TAG
from ml_platform.lib.reproduce import (
    CannotReproduce,
    ModelRun,
    compare_runs,
    identical_line,
    launch_params,
    parse_reference,
    recorded_config,
    recorded_model_run,
    verified_batch_files,
)
from ml_platform_tests.conftest import small_config

RUN_ID = "0123456789abcdef0123456789abcdef"


def model_run(**changes) -> ModelRun:
    tags = {
        "model_name": "random_forest",
        "dagster.partition": "batch_0002",
        "data_hash": "d" * 64,
        "config_hash": "c" * 16,
        "split.held_out_ids_sha256": "h" * 64,
        PARAMS_TAG: '{"max_depth": 6, "n_estimators": 25}',
        PREDICTIONS_HASH_TAG: "p" * 64,
        MODEL_HASH_TAG: "m" * 64,
        "code_version": "a1b2c3",
        "lib.scikit-learn": "1.9.0",
        "lib.pandas": "2.3.3",
    }
    metrics = {"roc_auc": 0.8112, "f1": 0.55, "fit_seconds": 0.41}
    for key, value in changes.items():
        (metrics if key in metrics else tags)[key] = value
    return ModelRun(RUN_ID, metrics, tags)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("churn_classifier/3", {"model": "churn_classifier", "version": "3"}),
        ("churn_classifier@champion", {"model": "churn_classifier", "alias": "champion"}),
        (RUN_ID, {"run_id": RUN_ID}),
    ],
)
def test_a_reference_is_a_version_an_alias_or_a_run_id(text, expected):
    reference = parse_reference(text)

    assert {key: getattr(reference, key) for key in expected} == expected


@pytest.mark.parametrize("text", ["churn_classifier", "churn_classifier/v3", RUN_ID[:-1]])
def test_anything_else_is_refused_naming_the_forms_accepted(text):
    with pytest.raises(CannotReproduce, match="expected NAME/VERSION .* NAME@alias .* run id"):
        parse_reference(text)


def test_a_rebuild_with_the_same_metrics_and_hashes_is_identical():
    comparison = compare_runs(model_run(), model_run(fit_seconds=0.93))

    assert comparison.identical
    assert comparison.environment == []


def test_a_metric_one_bit_off_is_a_difference_shown_with_both_values():
    comparison = compare_runs(model_run(), model_run(roc_auc=0.8112000000000001))

    assert not comparison.identical
    [difference] = comparison.results
    assert (difference.what, difference.recorded) == ("metric roc_auc", "0.8112")
    assert difference.rebuilt.startswith("0.8112000000000001 (+")


def test_a_metric_only_one_run_has_is_a_difference():
    recorded = model_run()
    rebuilt = replace(recorded, metrics={**recorded.metrics, "accuracy": 0.7})

    assert [(d.what, d.recorded, d.rebuilt) for d in compare_runs(recorded, rebuilt).results] == [
        ("metric accuracy", "-", "0.7")
    ]


@pytest.mark.parametrize(
    ("tag", "label"),
    [
        (MODEL_HASH_TAG, "serialised model (sha256)"),
        (PREDICTIONS_HASH_TAG, "held-out predictions (sha256)"),
        ("data_hash", "data hash"),
        ("config_hash", "config hash"),
        ("split.held_out_ids_sha256", "held-out rows (sha256 of their ids)"),
    ],
)
def test_another_model_predictions_data_config_or_held_out_rows_hash_is_a_difference(tag, label):
    comparison = compare_runs(model_run(), model_run(**{tag: "0" * 64}))

    assert [difference.what for difference in comparison.results] == [label]


def test_a_changed_library_version_is_named_without_making_an_identical_model_different():
    comparison = compare_runs(model_run(), model_run(**{"lib.scikit-learn": "1.9.1"}))

    assert comparison.identical
    assert [(d.what, d.recorded, d.rebuilt) for d in comparison.environment] == [
        ("library scikit-learn", "1.9.0", "1.9.1")
    ]


def test_another_code_version_is_named_beside_the_differences_it_may_explain():
    comparison = compare_runs(model_run(), model_run(code_version="d4e5f6-dirty", roc_auc=0.8))

    assert [d.what for d in comparison.results] == ["metric roc_auc"]
    assert [(d.what, d.recorded, d.rebuilt) for d in comparison.environment] == [
        ("code version", "a1b2c3", "d4e5f6-dirty")
    ]


def test_the_identical_line_names_the_model_run_and_each_batch_with_its_hash():
    line = identical_line("churn_classifier version 2", RUN_ID, {"batch_0002": "f" * 64})

    assert line == f"identical: churn_classifier version 2 (run {RUN_ID}) rebuilt from batch_0002 (sha256 {'f' * 64})"


def test_a_run_without_a_model_name_is_not_a_model_run():
    tags = model_run().tags
    del tags["model_name"]

    with pytest.raises(CannotReproduce, match=f"run {RUN_ID} is not a model run"):
        recorded_model_run(RUN_ID, {}, tags)


def test_a_model_run_trained_before_reproduction_was_recorded_says_to_train_it_again():
    tags = model_run().tags
    del tags[MODEL_HASH_TAG]

    with pytest.raises(CannotReproduce, match=f"did not record {MODEL_HASH_TAG}.*train it again"):
        recorded_model_run(RUN_ID, {}, tags)


def test_a_recorded_config_this_code_cannot_read_names_the_key():
    with pytest.raises(CannotReproduce, match=f"config run {RUN_ID} recorded is not valid.*models"):
        recorded_config({"data": {}}, RUN_ID)


def batch(folder: Path, name: str, content: bytes) -> str:
    (folder / f"{name}.csv").write_bytes(content)
    return hashlib.sha256(content).hexdigest()


def test_batch_files_with_their_recorded_hashes_are_accepted(tmp_path):
    hashes = {
        "batch_0001": batch(tmp_path, "batch_0001", b"id,x\n1,2\n"),
        "batch_0002": batch(tmp_path, "batch_0002", b"id,x\n3,4\n"),
    }

    assert verified_batch_files("batch_0002", hashes, tmp_path, "csv", "rf") == {
        "batch_0001": tmp_path / "batch_0001.csv",
        "batch_0002": tmp_path / "batch_0002.csv",
    }


def test_a_batch_file_whose_content_changed_is_refused_naming_the_file_and_both_hashes(tmp_path):
    recorded = batch(tmp_path, "batch_0002", b"id,x\n3,4\n")
    changed = batch(tmp_path, "batch_0002", b"id,x\n3,5\n")

    with pytest.raises(CannotReproduce) as refused:
        verified_batch_files("batch_0002", {"batch_0002": recorded}, tmp_path, "csv", "rf")

    assert str(refused.value) == (
        f"{tmp_path / 'batch_0002.csv'} is not the file rf was trained on: sha256 {changed} now, {recorded} recorded"
    )


def test_a_missing_batch_file_is_refused_naming_it_and_its_recorded_hash(tmp_path):
    with pytest.raises(CannotReproduce, match=f"{tmp_path / 'batch_0001.csv'} is missing: .* sha256 {'e' * 64}"):
        verified_batch_files("batch_0001", {"batch_0001": "e" * 64}, tmp_path, "csv", "rf")


def fitted_with(model_name: str, params: dict) -> ModelRun:
    return model_run(model_name=model_name, **{PARAMS_TAG: json.dumps(params)})


def test_a_model_fitted_with_its_config_params_is_launched_with_no_overrides():
    config = small_config()
    params = validate_model_params("gradient_boosting", {"max_iter": 40})  # max_depth is null

    assert launch_params(fitted_with("gradient_boosting", params), config) == {}


def test_params_given_at_launch_or_by_a_tuning_study_are_launched_again():
    config = small_config()
    params = validate_model_params("random_forest", {**config.models["random_forest"].params, "max_depth": 3})

    assert launch_params(fitted_with("random_forest", params), config) == {"max_depth": 3}


def test_a_null_param_the_config_does_not_give_is_refused_naming_it():
    params = validate_model_params("gradient_boosting", {"max_iter": 40, "max_leaf_nodes": None})

    with pytest.raises(CannotReproduce, match="fitted with max_leaf_nodes=null"):
        launch_params(fitted_with("gradient_boosting", params), small_config())


def test_a_window_without_the_hash_of_its_own_batch_is_refused(tmp_path):
    hashes = {"batch_0001": batch(tmp_path, "batch_0001", b"id,x\n1,2\n")}

    with pytest.raises(CannotReproduce, match="no hash of the file of batch_0002"):
        verified_batch_files("batch_0002", hashes, tmp_path, "csv", "rf")
