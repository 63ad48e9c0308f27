"""Provenance recorded with every model: data hash, code version, library versions, and the hashes
`ml-platform reproduce` compares a rebuilt model with (its params, predictions and serialised bytes)."""

from __future__ import annotations

import hashlib
import json
import pickle
import subprocess
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from ml_platform.lib.evaluation import Predictions
    from ml_platform.lib.training import FittedModel

PARAMS_TAG = "model.params"
PREDICTIONS_HASH_TAG = "model.held_out_predictions_sha256"
MODEL_HASH_TAG = "model.pickle_sha256"
# Pinned, not pickle.DEFAULT_PROTOCOL: a Python whose default changed would hash the same model differently.
PICKLE_PROTOCOL = 5

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
