"""Training: the seeded train/test split and one scikit-learn Pipeline per model type.

Imputation and encoding live inside each Pipeline, so a registered model takes the raw
feature columns and nothing has to be re-implemented at serving time.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import time
from dataclasses import dataclass, field, replace

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


class SplitLeakError(ValueError):
    """Rows of one part of a split are also in another: a model would be judged on rows it saw."""


@dataclass(frozen=True)
class SplitProvenance:
    """How a model's held-out rows were chosen, recorded with every model so a later comparison can
    tell whether two models were scored on the same rows, and whether either trained on them."""

    batch: str
    seed: int
    test_size: float
    validation_size: float
    stratified: bool
    strategy: str
    held_out_rows: int
    held_out_ids_sha256: str

    TAG_PREFIX = "split."

    def as_tags(self) -> dict[str, str]:
        return {f"{self.TAG_PREFIX}{name}": str(value) for name, value in self.__dict__.items()}


@dataclass
class TrainTestSplit:
    """`train` is what models fit on, `validation` (rows of the current batch, possibly none) what
    the candidates are compared on to pick a winner, `test` the held-out rows the promotion gate uses."""

    train: pd.DataFrame
    test: pd.DataFrame
    target: str
    feature_columns: list[str]
    id_column: str
    provenance: SplitProvenance
    validation: pd.DataFrame = field(default_factory=pd.DataFrame)

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

    @property
    def x_validation(self) -> pd.DataFrame:
        return self.validation[self.feature_columns]

    @property
    def y_validation(self) -> pd.Series:
        return self.validation[self.target]

    def training_ids(self) -> list[str]:
        """The ids of every row a model fitted on this split has seen, as text."""
        return self.train[self.id_column].astype(str).tolist()

    def held_out_ids(self) -> list[str]:
        return self.test[self.id_column].astype(str).tolist()


def model_feature_columns(columns, data: DataConfig) -> list[str]:
    """The columns a model reads: every column but the target, the id, the bookkeeping ones and those
    the contract's `role` keeps out."""
    excluded = {data.target, data.id_column, *NON_FEATURE_COLUMNS, *role_excluded_columns(data)}
    return [column for column in columns if column not in excluded]


def numbers_as_floats(x: pd.DataFrame) -> pd.DataFrame:
    """`x` with its numbers as float64: so scikit-learn and the MLflow signature see one type whatever DuckDB typed."""
    x = x.copy()
    numeric = [column for column in x.columns if pd.api.types.is_numeric_dtype(x[column])]
    x[numeric] = x[numeric].astype("float64")
    return x


def split_train_test(
    features: pd.DataFrame, data: DataConfig, training: TrainingConfig, current_batch: str
) -> TrainTestSplit:
    """Split of `current_batch`'s rows by `training.split`: seeded and stratified by the target
    (classification, the default), seeded at random, or by time (the newest rows held out); rows of
    earlier batches in a cumulative window all go to training.

    The held-out rows are therefore always new data from this batch: no candidate has trained on
    them, and neither has a champion trained on earlier batches, so comparing them is fair.
    Rows are sorted by id first so the split depends on the data, not on the order it was read in.
    Columns with `role: identifier` or `ignore` in the contract are kept in the rows, not in the features.
    """
    ordered = features.sort_values([*NON_FEATURE_COLUMNS, data.id_column], kind="stable").reset_index(drop=True)
    feature_columns = model_feature_columns(ordered.columns, data)
    # Numbers go to the model as floats: an integer column with a null in one batch and none in
    # the next would otherwise change the registered model's input schema between batches.
    ordered[feature_columns] = numbers_as_floats(ordered[feature_columns])
    is_current = ordered["batch_id"] == current_batch
    if not is_current.any():
        raise ValueError(f"no rows of batch {current_batch!r} among the features to split")
    train, test, stratified = _divide(ordered[is_current], training.test_size, data, training)
    train = pd.concat([ordered[~is_current], train]).reset_index(drop=True)
    test = test.reset_index(drop=True)
    provenance = SplitProvenance(
        batch=current_batch,
        seed=training.random_state,
        test_size=training.test_size,
        validation_size=0.0,
        stratified=stratified,
        strategy=training.split.strategy,
        held_out_rows=len(test),
        held_out_ids_sha256=ids_hash(test[data.id_column]),
    )
    split = TrainTestSplit(train, test, data.target, feature_columns, data.id_column, provenance)
    assert_no_leak(split)
    return split


def role_excluded_columns(data: DataConfig) -> list[str]:
    """The contract's columns marked `role: identifier` or `ignore`: stored, never a model's input."""
    return [name for name, spec in data.columns.items() if spec.role != "feature"]


def carve_validation(split: TrainTestSplit, data: DataConfig, training: TrainingConfig) -> TrainTestSplit:
    """Move `training.validation_size` of the current batch's training rows into a validation part.

    The candidates are compared on these rows to pick a winner, so that the held-out rows stay
    untouched for the promotion gate: picking the best of several on the rows that then judge it
    against the champion would flatter the winner (the best of three noisy scores is biased up).
    Taken from the current batch only, the way the held-out rows were (under a time split, the
    newest training rows validate).
    """
    provenance = replace(split.provenance, validation_size=training.validation_size)
    is_current = split.train["batch_id"] == split.provenance.batch
    fit, validation, _ = _divide(split.train[is_current], training.validation_size, data, training)
    train = pd.concat([split.train[~is_current], fit]).reset_index(drop=True)
    carved = replace(split, train=train, validation=validation.reset_index(drop=True), provenance=provenance)
    assert_no_leak(carved)
    return carved


def _divide(
    rows: pd.DataFrame, share: float, data: DataConfig, training: TrainingConfig
) -> tuple[pd.DataFrame, pd.DataFrame, bool]:
    """`rows` as (the rest, `share` of them, whether stratified) by the configured strategy."""
    if training.split.strategy == "time":
        # Stable on the id order the rows arrive in, so rows of one time have a fixed order too.
        by_time = rows.sort_values(training.split.time_column, kind="stable")
        return (*train_test_split(by_time, test_size=share, shuffle=False), False)
    stratify = stratification(rows[data.target], share) if training.split.stratifies(data.task) else None
    return (
        *train_test_split(rows, test_size=share, random_state=training.random_state, stratify=stratify),
        stratify is not None,
    )


def stratification(y: pd.Series, test_size: float) -> pd.Series | None:
    """The labels to stratify a split of `y` by, or None for a plain seeded shuffle when they cannot be.

    Stratifying keeps each class's share in both parts, which matters most for a rare class; but
    scikit-learn refuses it for a class with a single row, or when the smaller part has fewer rows
    than there are classes. A rare class must not crash the batch: the split is then not
    stratified (recorded in `SplitProvenance.stratified`), and a class that lands only on one side
    is reported as unseen in training (`labels_unseen_in_training`).
    """
    counts = y.value_counts()
    smaller_part = min(math.ceil(test_size * len(y)), len(y) - math.ceil(test_size * len(y)))
    if counts.min() < 2 or smaller_part < len(counts):
        return None
    return y


def ids_hash(ids: pd.Series) -> str:
    """sha256 of a set of ids, whatever their order: equal when two splits hold out the same rows."""
    return hashlib.sha256("\n".join(sorted(ids.astype(str))).encode()).hexdigest()


def assert_no_leak(split: TrainTestSplit) -> None:
    """Raise SplitLeakError when an id is in two parts of the split.

    An id delivered twice (two batches, or twice in the window) could otherwise sit in the training
    rows and the held-out rows at once, and every score on those rows would be flattered.
    """
    parts = {"training": split.train, "validation": split.validation, "held-out": split.test}
    ids = {part: set(frame[split.id_column].astype(str)) for part, frame in parts.items() if not frame.empty}
    for (first, first_ids), (second, second_ids) in itertools.combinations(ids.items(), 2):
        if shared := first_ids & second_ids:
            raise SplitLeakError(
                f"{len(shared)} id(s) of {split.id_column!r} are in both the {first} and the {second} rows "
                f"(e.g. {min(shared)!r}): a model would be scored on rows it trained on"
            )


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
