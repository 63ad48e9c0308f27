"""Training: the seeded train/test split and one scikit-learn Pipeline per model type.

Imputation and encoding live inside each Pipeline, so a registered model takes the raw
feature columns and nothing has to be re-implemented at serving time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from ml_platform.lib.config import DataConfig, TrainingConfig, validate_model_params

ESTIMATORS = {
    ("classification", "random_forest"): RandomForestClassifier,
    ("classification", "gradient_boosting"): HistGradientBoostingClassifier,
    ("classification", "logistic_regression"): LogisticRegression,
    ("regression", "random_forest"): RandomForestRegressor,
    ("regression", "gradient_boosting"): HistGradientBoostingRegressor,
    ("regression", "ridge"): Ridge,
}
# Columns the features carry for bookkeeping, never as inputs to a model.
NON_FEATURE_COLUMNS = ("batch_id",)


@dataclass
class TrainTestSplit:
    train: pd.DataFrame
    test: pd.DataFrame
    target: str
    feature_columns: list[str]

    @property
    def x_train(self) -> pd.DataFrame:
        return self.train[self.feature_columns]

    @property
    def y_train(self) -> pd.Series:
        return self.train[self.target]

    @property
    def x_test(self) -> pd.DataFrame:
        return self.test[self.feature_columns]

    @property
    def y_test(self) -> pd.Series:
        return self.test[self.target]


def split_train_test(
    features: pd.DataFrame, data: DataConfig, training: TrainingConfig, current_batch: str
) -> TrainTestSplit:
    """Seeded split of `current_batch`'s rows (stratified by the target for classification); rows
    of earlier batches in a cumulative window all go to training.

    The held-out rows are therefore always new data from this batch: no candidate has trained on
    them, and neither has a champion trained on earlier batches, so comparing them is fair.
    Rows are sorted by id first so the split depends on the data, not on the order it was read in.
    """
    ordered = features.sort_values([*NON_FEATURE_COLUMNS, data.id_column], kind="stable").reset_index(drop=True)
    excluded = {data.target, data.id_column, *NON_FEATURE_COLUMNS}
    feature_columns = [column for column in ordered.columns if column not in excluded]
    # Numbers go to the model as floats: an integer column with a null in one batch and none in
    # the next would otherwise change the registered model's input schema between batches.
    numeric = [c for c in feature_columns if pd.api.types.is_numeric_dtype(ordered[c])]
    ordered[numeric] = ordered[numeric].astype("float64")
    is_current = ordered["batch_id"] == current_batch
    if not is_current.any():
        raise ValueError(f"no rows of batch {current_batch!r} among the features to split")
    current = ordered[is_current]
    stratify = current[data.target] if data.task == "classification" else None
    train, test = train_test_split(
        current, test_size=training.test_size, random_state=training.random_state, stratify=stratify
    )
    train = pd.concat([ordered[~is_current], train])
    return TrainTestSplit(train.reset_index(drop=True), test.reset_index(drop=True), data.target, feature_columns)


def build_pipeline(task: str, model_type: str, params: dict, x: pd.DataFrame, random_state: int) -> Pipeline:
    """A Pipeline of imputation, encoding and the estimator, for the columns of `x`.

    `params` are validated hyperparameters (`validate_model_params`); `fit_model` validates them.
    """
    estimator_class = ESTIMATORS.get((task, model_type))
    if estimator_class is None:
        allowed = sorted(kind for t, kind in ESTIMATORS if t == task)
        raise ValueError(f"unknown {task} model type {model_type!r}; allowed: {', '.join(allowed)}")
    estimator_params = dict(params)
    if "random_state" in estimator_class().get_params():
        estimator_params["random_state"] = random_state
    categorical = [c for c in x.columns if not pd.api.types.is_numeric_dtype(x[c])]
    numeric = [c for c in x.columns if c not in categorical]
    preprocess = ColumnTransformer(
        [
            ("numeric", Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]), numeric),
            (
                "categorical",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="constant", fill_value="missing")),
                        ("encode", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
                    ]
                ),
                categorical,
            ),
        ]
    )
    return Pipeline([("preprocess", preprocess), ("model", estimator_class(**estimator_params))])


@dataclass
class FittedModel:
    pipeline: Pipeline
    params: dict
    fit_seconds: float


def fit_model(task: str, model_type: str, params: dict, split: TrainTestSplit, random_state: int) -> FittedModel:
    """Validate `params` (a bad one raises before any work), build the Pipeline, fit it."""
    validated = validate_model_params(model_type, params)
    pipeline = build_pipeline(task, model_type, validated, split.x_train, random_state)
    started = time.perf_counter()
    pipeline.fit(split.x_train, split.y_train)
    return FittedModel(pipeline, validated, time.perf_counter() - started)
