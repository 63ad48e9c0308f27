"""Training: a seeded, stratified, order-independent split and a working Pipeline per model type."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from ml_platform.lib.config import DataConfig, TrainingConfig, load_config
from ml_platform.lib.demo_data import generate_churn_batch
from ml_platform.lib.settings import DEFAULT_CONFIG_PATH
from ml_platform.lib.training import (
    ESTIMATORS,
    SplitLeakError,
    build_pipeline,
    carve_validation,
    fit_model,
    split_train_test,
)

# Small models: the tests are about the wiring, not the accuracy.
SMALL_PARAMS = {"random_forest": {"n_estimators": 10, "max_depth": 4}, "gradient_boosting": {"n_estimators": 10}}


@pytest.fixture(scope="module")
def classification() -> DataConfig:
    return load_config(DEFAULT_CONFIG_PATH).data


@pytest.fixture(scope="module")
def regression(classification: DataConfig) -> DataConfig:
    return DataConfig.model_validate({**classification.model_dump(), "task": "regression", "target": "monthly_charges"})


@pytest.fixture(scope="module")
def features() -> pd.DataFrame:
    """Two batches of demo features as the warehouse returns them, holes included."""
    frames = [generate_churn_batch(number, 1000).assign(batch_id=f"batch_{number:04d}") for number in (1, 2)]
    return pd.concat(frames, ignore_index=True)


CURRENT = "batch_0002"


def ids(frame: pd.DataFrame) -> list[str]:
    return frame["customer_id"].tolist()


def test_split_is_deterministic_for_a_seed(features, classification):
    training = TrainingConfig(random_state=7)

    first = split_train_test(features, classification, training, CURRENT)
    second = split_train_test(features, classification, training, CURRENT)

    assert_frame_equal(first.train, second.train)
    assert_frame_equal(first.test, second.test)


def test_split_changes_with_the_seed(features, classification):
    first = split_train_test(features, classification, TrainingConfig(random_state=1), CURRENT)
    second = split_train_test(features, classification, TrainingConfig(random_state=2), CURRENT)

    assert ids(first.test) != ids(second.test)


def test_split_holds_out_test_size_of_the_rows_and_loses_none(features, classification):
    split = split_train_test(features, classification, TrainingConfig(test_size=0.25), CURRENT)

    assert len(split.test) == (features["batch_id"] == CURRENT).sum() // 4
    assert sorted(ids(split.train) + ids(split.test)) == sorted(ids(features))


def test_classification_split_is_stratified_by_the_target(features, classification):
    split = split_train_test(features, classification, TrainingConfig(), CURRENT)

    current = features[features["batch_id"] == CURRENT]
    overall = current["churned"].mean()
    assert 0.1 < overall < 0.4
    train_of_current = split.train[split.train["batch_id"] == CURRENT]
    assert train_of_current["churned"].mean() == pytest.approx(overall, abs=0.01)
    assert split.y_test.mean() == pytest.approx(overall, abs=0.01)


def test_split_does_not_depend_on_the_order_rows_were_read_in(features, classification):
    training = TrainingConfig(random_state=3)
    shuffled = features.sample(frac=1.0, random_state=99).reset_index(drop=True)

    original = split_train_test(features, classification, training, CURRENT)
    reordered = split_train_test(shuffled, classification, training, CURRENT)

    assert_frame_equal(original.train, reordered.train)
    assert_frame_equal(original.test, reordered.test)


def test_features_exclude_id_target_and_batch_id(features, classification):
    split = split_train_test(features, classification, TrainingConfig(), CURRENT)

    contract = [c for c in classification.columns if c not in ("customer_id", "churned")]
    assert split.feature_columns == contract
    for column in ("customer_id", "churned", "batch_id"):
        assert column not in split.x_train.columns
        assert column not in split.x_test.columns
    assert split.y_train.name == "churned"


def test_numeric_features_become_float64_and_text_stays_text(features, classification):
    assert features["age"].dtype == "Int64"

    split = split_train_test(features, classification, TrainingConfig(), CURRENT)

    dtypes = split.x_train.dtypes
    for column in ("tenure_months", "age", "monthly_charges", "support_tickets", "num_products"):
        assert dtypes[column] == np.float64, column
    assert split.x_train["age"].isna().any()
    for column in ("contract_type", "payment_method", "region"):
        assert not pd.api.types.is_numeric_dtype(dtypes[column]), column


@pytest.mark.parametrize(("task", "model_type"), sorted(ESTIMATORS))
def test_every_model_type_fits_missing_values_and_predicts_unseen_categories(
    features, classification, regression, task, model_type
):
    data = classification if task == "classification" else regression
    split = split_train_test(features, data, TrainingConfig(random_state=5), CURRENT)
    assert split.x_train.isna().any().any()

    fitted = fit_model(task, model_type, SMALL_PARAMS.get(model_type, {}), split, random_state=5)

    assert isinstance(fitted.pipeline.named_steps["model"], ESTIMATORS[(task, model_type)])
    unseen = split.x_test.assign(region="atlantis", contract_type="weekly")
    predictions = fitted.pipeline.predict(unseen)
    assert predictions.shape == (len(unseen),)
    assert not np.isnan(predictions.astype(float)).any()
    if task == "classification":
        assert set(predictions) <= {0, 1}
        assert fitted.pipeline.predict_proba(unseen).sum(axis=1) == pytest.approx(1.0)
    assert fitted.fit_seconds > 0


def test_fit_model_returns_the_params_with_defaults_and_the_seed_reaches_the_estimator(features, classification):
    split = split_train_test(features, classification, TrainingConfig(), CURRENT)

    fitted = fit_model("classification", "gradient_boosting", {"n_estimators": 10}, split, random_state=11)

    assert fitted.params["max_iter"] == 10
    assert fitted.params["learning_rate"] == 0.1
    model = fitted.pipeline.named_steps["model"]
    assert model.max_iter == 10
    assert model.random_state == 11


def test_same_seed_gives_the_same_model(features, classification):
    split = split_train_test(features, classification, TrainingConfig(), CURRENT)

    first = fit_model("classification", "random_forest", SMALL_PARAMS["random_forest"], split, random_state=4)
    second = fit_model("classification", "random_forest", SMALL_PARAMS["random_forest"], split, random_state=4)

    np.testing.assert_array_equal(
        first.pipeline.predict_proba(split.x_test), second.pipeline.predict_proba(split.x_test)
    )


def test_unknown_model_type_lists_the_allowed_ones(features):
    with pytest.raises(ValueError) as error:
        build_pipeline("classification", "ridge", {}, features, random_state=0)

    assert str(error.value) == (
        "unknown classification model type 'ridge'; allowed: gradient_boosting, logistic_regression, random_forest"
    )


def test_bad_params_are_refused_before_fitting(features, classification):
    split = split_train_test(features, classification, TrainingConfig(), CURRENT)
    with pytest.raises(ValueError, match="n_estimators"):
        fit_model("classification", "random_forest", {"n_estimators": -1}, split, random_state=0)


def test_earlier_batches_only_train_and_the_held_out_rows_are_all_from_the_current_batch(features, classification):
    split = split_train_test(features, classification, TrainingConfig(test_size=0.2), CURRENT)
    assert set(split.test["batch_id"]) == {CURRENT}
    assert len(split.test) == 200
    assert (split.train["batch_id"] == "batch_0001").sum() == 1000
    assert (split.train["batch_id"] == CURRENT).sum() == 800


def test_splitting_a_batch_without_rows_is_a_clear_error(features, classification):
    with pytest.raises(ValueError, match="no rows of batch 'batch_0009'"):
        split_train_test(features, classification, TrainingConfig(), "batch_0009")


def test_validation_rows_come_from_the_current_batchs_training_rows_only(features, classification):
    training = TrainingConfig(test_size=0.2, validation_size=0.25)
    split = split_train_test(features, classification, training, CURRENT)

    carved = carve_validation(split, classification, training)

    assert set(carved.validation["batch_id"]) == {CURRENT}
    assert len(carved.validation) == 200  # a quarter of the batch's 800 training rows
    assert (carved.train["batch_id"] == "batch_0001").sum() == 1000
    assert sorted(ids(carved.train) + ids(carved.validation)) == sorted(ids(split.train))
    assert_frame_equal(carved.test, split.test)  # the gate's rows are untouched
    assert carved.y_validation.mean() == pytest.approx(split.y_test.mean(), abs=0.02)  # stratified


def test_validation_rows_are_seeded(features, classification):
    training = TrainingConfig(random_state=3)
    split = split_train_test(features, classification, training, CURRENT)

    assert_frame_equal(
        carve_validation(split, classification, training).validation,
        carve_validation(split, classification, training).validation,
    )


def test_the_split_records_how_its_held_out_rows_were_chosen(features, classification):
    training = TrainingConfig(test_size=0.2, validation_size=0.25, random_state=7)

    provenance = carve_validation(
        split_train_test(features, classification, training, CURRENT), classification, training
    ).provenance

    assert provenance.as_tags() == {
        "split.batch": CURRENT,
        "split.seed": "7",
        "split.test_size": "0.2",
        "split.validation_size": "0.25",
        "split.stratified": "True",
        "split.strategy": "stratified",
        "split.held_out_rows": "200",
        "split.held_out_ids_sha256": provenance.held_out_ids_sha256,
    }


def test_the_held_out_ids_hash_depends_on_which_rows_not_their_order(features, classification):
    shuffled = features.sample(frac=1.0, random_state=1)
    same = split_train_test(features, classification, TrainingConfig(random_state=1), CURRENT).provenance
    reordered = split_train_test(shuffled, classification, TrainingConfig(random_state=1), CURRENT).provenance
    other_seed = split_train_test(features, classification, TrainingConfig(random_state=2), CURRENT).provenance

    assert same.held_out_ids_sha256 == reordered.held_out_ids_sha256
    assert same.held_out_ids_sha256 != other_seed.held_out_ids_sha256


def test_an_id_delivered_in_two_batches_of_the_window_is_refused_at_split_time(features, classification):
    """A replayed row of batch 1 in batch 2 could land in batch 2's held-out rows while batch 1's copy trains."""
    replayed = features.copy()
    replayed.loc[replayed["batch_id"] == CURRENT, "customer_id"] = features.loc[
        features["batch_id"] == "batch_0001", "customer_id"
    ].to_numpy()

    with pytest.raises(SplitLeakError, match=r"200 id\(s\) of 'customer_id' are in both the training and the held-out"):
        split_train_test(replayed, classification, TrainingConfig(), CURRENT)


def test_a_time_split_holds_out_the_newest_rows_and_validates_on_the_next_newest(features, classification):
    training = TrainingConfig(split={"strategy": "time", "time_column": "tenure_months"})

    split = carve_validation(split_train_test(features, classification, training, CURRENT), classification, training)

    current_train = split.train[split.train["batch_id"] == CURRENT]
    assert current_train["tenure_months"].max() <= split.validation["tenure_months"].min()
    assert split.validation["tenure_months"].max() <= split.test["tenure_months"].min()
    assert len(split.test) == 200
    assert split.provenance.strategy == "time"
    assert split.provenance.stratified is False


def test_a_random_split_ignores_the_classes_and_says_so(features, classification):
    random = split_train_test(features, classification, TrainingConfig(split={"strategy": "random"}), CURRENT)
    stratified = split_train_test(features, classification, TrainingConfig(), CURRENT)

    assert ids(random.test) != ids(stratified.test)
    assert (random.provenance.strategy, random.provenance.stratified) == ("random", False)


def test_identifier_and_ignored_columns_are_kept_in_the_rows_but_not_in_the_features(features, classification):
    columns = {
        **classification.columns,
        "region": classification.columns["region"].model_copy(update={"role": "identifier"}),
        "age": classification.columns["age"].model_copy(update={"role": "ignore"}),
    }
    data = classification.model_copy(update={"columns": columns})

    split = split_train_test(features, data, TrainingConfig(), CURRENT)

    assert {"region", "age"}.isdisjoint(split.feature_columns)
    assert {"region", "age"} <= set(split.train.columns)
    assert "tenure_months" in split.feature_columns
