"""Provenance: a content hash of the data, the git commit of the code, the library versions, and the
hashes of a fitted model and its predictions that a rebuild is compared with."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from ml_platform.lib.config import TrainingConfig, load_config
from ml_platform.lib.demo_data import generate_churn_batch
from ml_platform.lib.evaluation import Predictions, predict
from ml_platform.lib.provenance import (
    code_version,
    frame_hash,
    library_versions,
    model_hash,
    predictions_hash,
    reproduction_tags,
)
from ml_platform.lib.settings import DEFAULT_CONFIG_PATH
from ml_platform.lib.training import fit_model, split_train_test


def sample_frame() -> pd.DataFrame:
    return pd.DataFrame({"id": ["a", "b", "c"], "x": [1.0, 2.0, None], "y": [0, 1, 0]})


def test_equal_frames_have_equal_hashes():
    digest = frame_hash(sample_frame())

    assert digest == frame_hash(sample_frame())
    assert re.fullmatch(r"[0-9a-f]{64}", digest)


def test_hash_ignores_the_index():
    assert frame_hash(sample_frame().set_axis([10, 11, 12])) == frame_hash(sample_frame())


def test_changing_one_value_changes_the_hash():
    changed = sample_frame()
    changed.loc[1, "x"] = 2.5

    assert frame_hash(changed) != frame_hash(sample_frame())


def test_renaming_a_column_changes_the_hash():
    assert frame_hash(sample_frame().rename(columns={"y": "z"})) != frame_hash(sample_frame())


def test_reordering_rows_changes_the_hash():
    assert frame_hash(sample_frame().iloc[::-1]) != frame_hash(sample_frame())


def test_code_version_is_the_git_commit_of_this_repository():
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", code_version())


def test_code_version_outside_a_git_repository_is_unknown(tmp_path):
    assert code_version(tmp_path) == "unknown"


def test_library_versions_include_the_modelling_libraries():
    versions = library_versions()

    for name in ("scikit-learn", "mlflow", "pandas", "duckdb"):
        assert re.match(r"\d+\.\d+", versions[name]), name


@pytest.fixture(scope="module")
def demo_split():
    data = load_config(DEFAULT_CONFIG_PATH).data
    features = generate_churn_batch(1, 400).assign(batch_id="batch_0001")
    return split_train_test(features, data, TrainingConfig(), "batch_0001")


@pytest.mark.parametrize(
    ("model_type", "params"),
    [("random_forest", {"n_estimators": 10, "max_depth": 4}), ("logistic_regression", {})],
)
def test_the_same_fit_twice_pickles_to_the_same_bytes_and_predictions(demo_split, model_type, params):
    first, second = (fit_model("classification", model_type, params, demo_split, 42) for _ in range(2))

    assert model_hash(first.pipeline) == model_hash(second.pipeline)
    assert reproduction_tags(first, predict("classification", first.pipeline, demo_split.x_test)) == reproduction_tags(
        second, predict("classification", second.pipeline, demo_split.x_test)
    )


def test_another_seed_gives_another_model_hash(demo_split):
    params = {"n_estimators": 10, "max_depth": 4}
    first = fit_model("classification", "random_forest", params, demo_split, 42)
    second = fit_model("classification", "random_forest", params, demo_split, 43)

    assert model_hash(first.pipeline) != model_hash(second.pipeline)


def test_one_score_off_in_the_last_bit_changes_the_predictions_hash():
    scores = np.array([0.25, 0.5, 0.75])
    nudged = scores.copy()
    nudged[1] = np.nextafter(nudged[1], 1.0)

    assert predictions_hash(Predictions(np.array([0, 1, 1]), scores)) != predictions_hash(
        Predictions(np.array([0, 1, 1]), nudged)
    )


def test_labels_of_another_dtype_change_the_predictions_hash():
    assert predictions_hash(Predictions(np.array([0, 1]))) != predictions_hash(Predictions(np.array([0.0, 1.0])))
