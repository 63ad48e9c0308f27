"""Batch ids and batch discovery: only plain names become partitions, in name order."""

from __future__ import annotations

import pytest

from ml_platform.lib.batches import (
    InvalidBatchIdError,
    batch_file,
    batches_up_to,
    validate_batch_id,
)


@pytest.mark.parametrize("batch_id", ["batch_0001", "2024-01-05", "a.b", "B", "x" * 64])
def test_plain_batch_ids_are_accepted_unchanged(batch_id):
    assert validate_batch_id(batch_id) == batch_id


@pytest.mark.parametrize(
    "batch_id",
    [
        pytest.param("", id="empty"),
        pytest.param("../x", id="parent-path"),
        pytest.param("a/b", id="slash"),
        pytest.param("a\\b", id="backslash"),
        pytest.param("a,b", id="comma"),
        pytest.param("..", id="dot-dot"),
        pytest.param("a..b", id="dot-dot-inside"),
        pytest.param(".hidden", id="leading-dot"),
        pytest.param("_x", id="leading-underscore"),
        pytest.param("x" * 65, id="65-chars"),
        pytest.param("a b", id="space"),
        pytest.param("batch\n", id="trailing-newline"),
    ],
)
def test_unsafe_batch_ids_are_refused_saying_what_is_allowed(batch_id):
    with pytest.raises(InvalidBatchIdError) as error:
        validate_batch_id(batch_id)

    assert repr(batch_id) in str(error.value)
    assert "1-64 letters, digits" in str(error.value)


def test_batch_file_is_the_id_with_the_format_extension(tmp_path):
    assert batch_file(tmp_path, "batch_0001", "parquet") == tmp_path / "batch_0001.parquet"


def test_batch_file_refuses_an_id_that_escapes_the_directory(tmp_path):
    with pytest.raises(InvalidBatchIdError):
        batch_file(tmp_path, "../outside", "csv")


def test_cumulative_window_takes_earlier_ready_batches_in_order_then_the_current_one():
    ordered = ["b1", "b2", "bad", "b3", "b4"]
    assert batches_up_to(ordered, "b3", ready={"b1", "b2", "b4"}) == ["b1", "b2", "b3"]
    assert batches_up_to(ordered, "b1", ready={"b1", "b2"}) == ["b1"]
