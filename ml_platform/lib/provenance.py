"""Provenance recorded with every model: data hash, code version, library versions."""

from __future__ import annotations

import hashlib
import subprocess
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pandas as pd

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
