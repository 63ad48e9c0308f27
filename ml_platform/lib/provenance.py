"""Provenance recorded with every model: data hash, code version, library versions, and the hashes
`ml-platform reproduce` compares a rebuilt model with (its params, predictions and serialised bytes)."""

from __future__ import annotations

import hashlib
import json
import pickle
import subprocess
from dataclasses import dataclass
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from ml_platform.lib.config import ExperimentConfig, PlatformConfig, TrainingConfig
    from ml_platform.lib.evaluation import Predictions
    from ml_platform.lib.training import FittedModel, TrainTestSplit

PARAMS_TAG = "model.params"
PREDICTIONS_HASH_TAG = "model.held_out_predictions_sha256"
MODEL_HASH_TAG = "model.pickle_sha256"
# Pinned, not pickle.DEFAULT_PROTOCOL: a Python whose default changed would hash the same model differently.
PICKLE_PROTOCOL = 5
# The ids a model was fitted on, so a later comparison can prove it never saw the rows it is scored on.
TRAINING_IDS_ARTIFACT = "split/training_ids.json"
# The content hash of each batch file the model was trained on (a file, not a tag: a window grows).
BATCH_HASHES_ARTIFACT = "provenance/batch_hashes.json"

TRACKED_LIBRARIES = ("scikit-learn", "pandas", "numpy", "duckdb", "dbt-core", "dbt-duckdb", "mlflow", "dagster")


def frame_hash(frame: pd.DataFrame) -> str:
    """sha256 over a DataFrame's values and column names: the same data gives the same hash."""
    digest = hashlib.sha256(",".join(map(str, frame.columns)).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).values.tobytes())
    return digest.hexdigest()


REPO_DIR = Path(__file__).resolve().parents[2]


@cache
def code_version(repo_dir: Path = REPO_DIR) -> str:
    """The git commit the code runs from, with `-dirty` when the work tree has changes."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo_dir, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo_dir,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


@cache
def library_versions() -> dict[str, str]:
    versions = {}
    for name in TRACKED_LIBRARIES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def reproduction_tags(fitted: FittedModel, held_out: Predictions) -> dict[str, str]:
    """What a rebuilt model is compared with: the params it was fitted with (a tuned model's best, or
    a launch-time override, neither of which the config shows), its held-out predictions, its bytes."""
    return {
        PARAMS_TAG: json.dumps(fitted.params, sort_keys=True),
        PREDICTIONS_HASH_TAG: predictions_hash(held_out),
        MODEL_HASH_TAG: model_hash(fitted.pipeline),
    }


def predictions_hash(predictions: Predictions) -> str:
    """sha256 over the predicted labels and scores, with their dtypes and shapes: equal only when every
    prediction is bit for bit the same."""
    digest = hashlib.sha256()
    for array in (predictions.labels, predictions.scores):
        if array is not None:
            array = np.ascontiguousarray(array)
            digest.update(f"{array.dtype.str}{array.shape}".encode())
            digest.update(array.tobytes() if array.dtype != object else pickle.dumps(array, PICKLE_PROTOCOL))
    return digest.hexdigest()


def model_hash(model) -> str:
    """sha256 of the fitted model's pickle. scikit-learn estimators pickle their fitted arrays and
    params and nothing of the process (no timestamps, no addresses), so the same fit on the same data
    gives the same bytes, in another process too (`test_lib_provenance.py` pins it)."""
    return hashlib.sha256(pickle.dumps(model, protocol=PICKLE_PROTOCOL)).hexdigest()


def param_text(value: Any) -> str:
    """A param as every tracker records it: strings as they are, anything else as JSON (`null`, `0.5`)."""
    return value if isinstance(value, str) else json.dumps(value)


def provenance_tags(data_hash: str, config: PlatformConfig | ExperimentConfig) -> dict[str, str]:
    """What ties a tracked run to what made it: the data, the code and the config."""
    return {"data_hash": data_hash, "code_version": code_version(), "config_hash": config.config_hash()}


@dataclass(frozen=True)
class ModelRunRecord:
    """What every tracker records of one fitted model (MLflow, and ClearML beside it): `artifacts`
    maps a path in the run to a dict or list written as JSON."""

    params: dict[str, Any]
    metrics: dict[str, float]
    tags: dict[str, str]
    artifacts: dict[str, Any]


def model_run_record(
    model_type: str,
    fitted: FittedModel,
    metrics: dict[str, float],
    split: TrainTestSplit,
    training: TrainingConfig,
    data_hash: str,
    config: PlatformConfig | ExperimentConfig,
    tags: dict[str, str],
    batch_hashes: dict[str, str | None] | None = None,
) -> ModelRunRecord:
    """A model's provenance: its params, held-out metrics, the data hash, code and library versions,
    the resolved config and its hash, the ids it was fitted on, and the content hash of each batch
    file it was trained on when `batch_hashes` are given. `tags` are the caller's, added last."""
    return ModelRunRecord(
        params={
            "model_type": model_type,
            **fitted.params,
            "test_size": training.test_size,
            "window": training.window,
            "random_state": training.random_state,
            "train_rows": len(split.train),
            "validation_rows": len(split.validation),
        },
        metrics={**metrics, "fit_seconds": fitted.fit_seconds},
        tags={
            **provenance_tags(data_hash, config),
            **{f"lib.{lib}": version for lib, version in library_versions().items()},
            **split.provenance.as_tags(),
            **tags,
        },
        artifacts={
            "config.json": config.loggable(),
            TRAINING_IDS_ARTIFACT: {"id_column": split.id_column, "ids": split.training_ids()},
            **({BATCH_HASHES_ARTIFACT: batch_hashes} if batch_hashes is not None else {}),
        },
    )
