"""The reports folder: files land where people look for them, whole, and never outside it."""

from __future__ import annotations

import pytest

from ml_platform.lib.batches import InvalidBatchIdError
from ml_platform.resources.reports import ReportsResource


def test_files_go_in_the_batch_folder_or_beside_the_batch_folders(tmp_path):
    reports = ReportsResource(reports_dir=str(tmp_path))

    assert reports.write_bytes("batch_0001", "roc_curves.png", b"png") == tmp_path / "batch_0001" / "roc_curves.png"
    assert reports.write_bytes(None, "metrics_over_batches.png", b"all") == tmp_path / "metrics_over_batches.png"
    assert (tmp_path / "batch_0001" / "roc_curves.png").read_bytes() == b"png"
    assert sorted(path.name for path in tmp_path.rglob("*")) == [
        "batch_0001",
        "metrics_over_batches.png",
        "roc_curves.png",
    ]


def test_a_report_written_as_json_reads_back_and_a_missing_one_is_none(tmp_path):
    reports = ReportsResource(reports_dir=str(tmp_path))

    reports.write_json("batch_0001", "evaluation_report", {"winner": "forest"})

    assert reports.read_json("batch_0001", "evaluation_report") == {"winner": "forest"}
    assert reports.read_json("batch_0002", "evaluation_report") is None


@pytest.mark.parametrize("filename", ["../escape.png", "nested/plot.png", "", ".."])
def test_a_file_name_cannot_leave_its_folder(tmp_path, filename):
    with pytest.raises(ValueError, match="plain file name"):
        ReportsResource(reports_dir=str(tmp_path)).path_for("batch_0001", filename)


def test_a_batch_id_cannot_leave_the_reports_folder(tmp_path):
    with pytest.raises(InvalidBatchIdError):
        ReportsResource(reports_dir=str(tmp_path)).write_bytes("../outside", "plot.png", b"png")
