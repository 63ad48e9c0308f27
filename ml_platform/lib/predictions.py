"""Scoring rows with a registered model: which version a reference names, and the predictions table.

Used by the `predictions` asset (each batch scored by its champion) and by `ml-platform predict` (a
file scored outside the pipeline). A reference is resolved to one version before anything is loaded,
and that version is what every output row names: an alias can move while a batch is scored, a
version number cannot.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ml_platform.lib.config import DataConfig
from ml_platform.lib.evaluation import class_probabilities
from ml_platform.lib.ingestion import ingest_batch
from ml_platform.lib.warehouse import RAW_TABLE, Warehouse

CHAMPION_ALIAS = "champion"
PREDICTIONS_TABLE = "predictions"
# The batch id a file scored outside the pipeline gets in its scratch warehouse.
SCORING_BATCH = "scoring"
# The quantiles of the score distribution shown in the asset's metadata and by `ml-platform predict`.
SCORE_QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)
_REFERENCE = re.compile(r"(?:models:/)?(?P<name>[^@/\s]+)(?:@(?P<alias>[\w-]+)|/(?P<version>\d+))?")


class ModelReferenceError(ValueError):
    """A model reference that is malformed or names nothing in the registry."""


@dataclass(frozen=True)
class ModelReference:
    """`NAME@ALIAS` or `NAME/VERSION`, as a person writes it."""

    name: str
    alias: str | None = None
    version: str | None = None

    def __str__(self) -> str:
        return f"{self.name}/{self.version}" if self.version else f"{self.name}@{self.alias}"


@dataclass(frozen=True)
class ScoringModel:
    """The one registered model version that scores the rows."""

    name: str
    version: str
    run_id: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def parse_model_reference(text: str | None, default_name: str) -> ModelReference:
    """`NAME@ALIAS`, `NAME/VERSION` or a bare `NAME` (its champion); nothing means the config's model's champion."""
    if not text:
        return ModelReference(default_name, alias=CHAMPION_ALIAS)
    match = _REFERENCE.fullmatch(text.strip())
    if match is None:
        raise ModelReferenceError(
            f"model {text!r}: expected NAME@ALIAS (e.g. {default_name}@champion) "
            f"or NAME/VERSION (e.g. {default_name}/3)"
        )
    if match["version"]:
        return ModelReference(match["name"], version=match["version"])
    return ModelReference(match["name"], alias=match["alias"] or CHAMPION_ALIAS)


def resolve_model(client, reference: ModelReference) -> ScoringModel:
    """The version `reference` names now, read once from the registry (an `MlflowClient`).

    Raises ModelReferenceError saying what exists instead when the model, version or alias does not.
    """
    from mlflow.exceptions import MlflowException

    try:
        registered = client.get_registered_model(reference.name)
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        known = sorted(model.name for model in client.search_registered_models(max_results=20))
        raise ModelReferenceError(
            f"no registered model {reference.name!r} (registered: {', '.join(known) or 'none yet'})"
        ) from None
    if reference.alias:
        version = registered.aliases.get(reference.alias)
        if version is None:
            aliases = ", ".join(f"@{alias}" for alias in sorted(registered.aliases)) or "none"
            raise ModelReferenceError(
                f"registered model {reference.name!r} has no alias @{reference.alias} (its aliases: {aliases}); "
                "run the pipeline or `ml-platform models promote` first"
            )
    else:
        version = reference.version
    try:
        found = client.get_model_version(reference.name, str(version))
    except MlflowException as error:
        if error.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
        latest = registered.latest_versions[0].version if registered.latest_versions else "none"
        raise ModelReferenceError(
            f"registered model {reference.name!r} has no version {version} (latest: {latest})"
        ) from None
    return ScoringModel(reference.name, str(found.version), found.run_id)


@dataclass(frozen=True)
class ModelOutputs:
    """What a model said about each row: the label or value, and for a classifier the probability of
    each class, in the order of `classes`."""

    labels: np.ndarray
    probabilities: np.ndarray | None = None
    classes: tuple = ()


def model_inputs(features: pd.DataFrame, signature_types: dict[str, str]) -> pd.DataFrame:
    """The columns the model's signature takes (`signature_types`: column to MLflow type name), with its
    numbers as floats: training feeds numbers as floats, so a whole-number column still has the type the
    signature recorded.

    Raises ValueError naming the columns the features lack.
    """
    missing = [name for name in signature_types if name not in features.columns]
    if missing:
        raise ValueError(f"the features lack column(s) the model's signature takes: {', '.join(missing)}")
    inputs = features[list(signature_types)].copy()
    for name, type_name in signature_types.items():
        if type_name in ("double", "float"):
            inputs[name] = inputs[name].astype("float64")
    return inputs


def model_outputs(model, features: pd.DataFrame, classes: Sequence | None = None) -> ModelOutputs:
    """Score `features` with a loaded `mlflow.pyfunc` model: labels through pyfunc, which checks the
    rows against the signature; a classifier's probabilities from the same loaded scikit-learn model
    (pyfunc's `predict` of a classifier returns labels only), a column per label of `classes` (the
    contract's, so the positive class is the contract's last label; by default the model's own)."""
    schema = model.metadata.get_input_schema()
    inputs = model_inputs(features, {spec.name: spec.type.name for spec in schema.inputs})
    labels = np.asarray(model.predict(inputs))
    estimator = model.get_raw_model()
    if not hasattr(estimator, "predict_proba"):
        return ModelOutputs(labels)
    classes = tuple(estimator.classes_ if classes is None else classes)
    return ModelOutputs(labels, class_probabilities(estimator, inputs, classes), classes)


def prediction_frame(ids: pd.Series, outputs: ModelOutputs, model: ScoringModel) -> pd.DataFrame:
    """One row per scored row: its id, `prediction`, for a classifier `probability_<class>` per class
    and `score`, then the model's name, version and run on every row (so a row copied anywhere still
    says which model made it).

    `score` is what a threshold or a ranking reads: with two classes the probability of the positive
    class (the second: the contract's last label), as ROC AUC ranks it; with more, the probability of
    the predicted class.
    """
    frame = pd.DataFrame({ids.name: ids.to_numpy(), "prediction": outputs.labels})
    if outputs.probabilities is not None:
        for index, label in enumerate(outputs.classes):
            frame[f"probability_{label}"] = outputs.probabilities[:, index]
        frame["score"] = outputs.probabilities[:, 1] if len(outputs.classes) == 2 else outputs.probabilities.max(axis=1)
    frame["model_name"] = model.name
    frame["model_version"] = model.version
    frame["model_run_id"] = model.run_id
    return frame


def score_features(
    model, features: pd.DataFrame, id_column: str, scoring: ScoringModel, classes: Sequence | None = None
) -> pd.DataFrame:
    """`features` scored by `model` (loaded from `scoring.uri`), as `prediction_frame`."""
    return prediction_frame(features[id_column], model_outputs(model, features, classes), scoring)


def scored_column(predictions: pd.DataFrame) -> str:
    """The column whose distribution describes the predictions: a classifier's `score`, a regressor's value."""
    return "score" if "score" in predictions.columns else "prediction"


def score_quantiles(predictions: pd.DataFrame) -> pd.DataFrame:
    """The scored column's quantiles (`SCORE_QUANTILES`), one row each."""
    values = predictions[scored_column(predictions)].astype("float64")
    return pd.DataFrame({"quantile": SCORE_QUANTILES, "value": values.quantile(list(SCORE_QUANTILES)).to_numpy()})


def class_shares(predictions: pd.DataFrame) -> dict[str, float]:
    """The share of rows predicted as each class, most frequent first; empty for a regressor."""
    if "score" not in predictions.columns:
        return {}
    shares = predictions["prediction"].value_counts(normalize=True, sort=True)
    return {str(label): float(share) for label, share in shares.items()}


def quantiles_markdown(quantiles: pd.DataFrame, column: str) -> str:
    rows = "\n".join(f"| {q:.0%} | {value:.4f} |" for q, value in quantiles.itertuples(index=False))
    return f"| quantile | {column} |\n|---|---|\n{rows}"


def features_to_score(
    path: Path, data: DataConfig, scratch: Path, build_features: Callable[[Warehouse, str], None]
) -> pd.DataFrame:
    """The file at `path` as the pipeline would feed it to a model: checked against the data contract
    (the target may be absent: `ingest_batch(require_target=False)`), stored in a scratch warehouse
    under `scratch`, and turned into features by `build_features(warehouse, batch_id)` (the pipeline's
    own dbt project), so no feature is computed differently at scoring time.

    Raises BatchValidationError naming the file, column and row when the file breaks the contract.
    """
    warehouse = Warehouse(scratch)
    warehouse.replace_batch(SCORING_BATCH, lambda con: ingest_batch(path, data, con, RAW_TABLE, require_target=False))
    build_features(warehouse, SCORING_BATCH)
    return warehouse.read_table([SCORING_BATCH], "features")
