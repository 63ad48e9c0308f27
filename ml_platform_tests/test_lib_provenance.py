"""Provenance: a content hash of the data, the git commit of the code, the library versions."""

from __future__ import annotations

import re

import pandas as pd

from ml_platform.lib.provenance import code_version, frame_hash, library_versions


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
