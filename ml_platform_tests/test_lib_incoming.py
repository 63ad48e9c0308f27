"""What the new-batch sensor makes of the incoming folder on each tick."""

import os

from ml_platform.lib.incoming import (
    IncomingCursor,
    IncomingFile,
    ScannedFolder,
    list_incoming,
    plan_incoming,
    scan_incoming,
)

NOW = 1_000_000 * 10**9
SETTLED = NOW - 60 * 10**9


def plan(files, cursor=None, *, through_pipeline=frozenset(), max_batches=10, settle_seconds=2.0):
    return plan_incoming(
        files,
        cursor or IncomingCursor(),
        file_format="csv",
        now_ns=NOW,
        settle_seconds=settle_seconds,
        max_batches=max_batches,
        through_pipeline=set(through_pipeline),
    )


def settled(name, size=100):
    return IncomingFile(name, size, SETTLED)


def test_a_complete_new_file_is_ready_and_recorded_in_the_cursor():
    result = plan([settled("batch_0001.csv")])
    assert [batch.batch_id for batch in result.ready] == ["batch_0001"]
    assert result.ready[0].rewritten is False
    assert result.cursor.processed == {"batch_0001.csv": f"100:{SETTLED}"}


def test_a_file_is_processed_once_across_ticks_and_restarts():
    first = plan([settled("batch_0001.csv")])
    # The daemon stores the cursor as text; a restarted daemon reads it back.
    restored = IncomingCursor.from_json(first.cursor.to_json())
    second = plan([settled("batch_0001.csv"), settled("batch_0002.csv")], restored)
    assert [batch.batch_id for batch in second.ready] == ["batch_0002"]
    assert second.unchanged == 1
    assert "1 already processed" in plan([settled("batch_0001.csv")], first.cursor).skip_reason("in")


def test_a_rewritten_file_is_ready_again_as_a_new_version_of_its_batch():
    first = plan([settled("batch_0001.csv", size=100)])
    second = plan([IncomingFile("batch_0001.csv", 120, SETTLED + 5)], first.cursor)
    assert [(batch.batch_id, batch.rewritten) for batch in second.ready] == [("batch_0001", True)]


def test_files_still_being_written_wait_for_a_later_tick():
    files = [
        IncomingFile("batch_0001.csv", 100, NOW - 10**9),  # modified a second ago
        IncomingFile("batch_0002.csv", 0, SETTLED),  # created, nothing written yet
        settled(".batch_0003.csv"),  # a writer's hidden temporary name
        settled(".gitkeep"),  # the folder's own hidden files are no batches, and not waiting
        settled(".DS_Store"),
        settled("batch_0004.csv.part"),
    ]
    result = plan(files)
    assert result.ready == []
    assert set(result.waiting) == {"batch_0001.csv", "batch_0002.csv", ".batch_0003.csv", "batch_0004.csv.part"}
    assert "modified 1.0 s ago" in result.waiting["batch_0001.csv"]
    assert result.cursor.processed == {}  # nothing recorded: the next tick looks again
    later = plan([settled("batch_0001.csv")], result.cursor)
    assert [batch.batch_id for batch in later.ready] == ["batch_0001"]


def test_names_that_are_not_batch_ids_are_refused_once_with_the_reason():
    files = [
        settled("bad..name.csv"),
        settled("a,b.csv"),
        settled("back\\slash.csv"),
        settled("x" * 65 + ".csv"),
        settled("notes.txt"),
        settled("-starts-with-dash.csv"),
    ]
    result = plan(files)
    assert result.ready == []
    assert set(result.refused) == {file.name for file in files}
    assert "without '..'" in result.refused["bad..name.csv"]
    assert "1-64" in result.refused["x" * 65 + ".csv"]
    assert "not a .csv file" in result.refused["notes.txt"]
    again = plan(files, result.cursor)
    assert again.refused == {}  # reported on the first tick, not on every tick


def test_at_most_max_batches_per_tick_the_rest_next_tick():
    files = [settled(f"batch_{n:04d}.csv") for n in range(1, 6)]
    first = plan(files, max_batches=2)
    assert [batch.batch_id for batch in first.ready] == ["batch_0001", "batch_0002"]
    assert first.deferred == ["batch_0003", "batch_0004", "batch_0005"]
    second = plan(files, first.cursor, max_batches=2)
    assert [batch.batch_id for batch in second.ready] == ["batch_0003", "batch_0004"]


def test_a_batch_already_through_the_pipeline_is_recorded_without_a_run():
    result = plan([settled("batch_0001.csv"), settled("batch_0002.csv")], through_pipeline={"batch_0001"})
    assert [batch.batch_id for batch in result.ready] == ["batch_0002"]
    assert result.already_run == ["batch_0001"]
    assert "batch_0001.csv" in result.cursor.processed


def test_the_skip_reason_says_what_was_seen():
    reason = plan([IncomingFile("batch_0009.csv", 5, NOW)]).skip_reason("data/incoming")
    assert reason.startswith("no new batch files in data/incoming")
    assert "1 still being written (batch_0009.csv)" in reason


def test_listing_reads_names_sizes_and_times_and_ignores_folders(tmp_path):
    (tmp_path / "batch_0001.csv").write_text("a,b\n1,2\n")
    (tmp_path / "archive").mkdir()
    os.utime(tmp_path / "batch_0001.csv", ns=(SETTLED, SETTLED))
    assert list_incoming(tmp_path) == [IncomingFile("batch_0001.csv", 8, SETTLED)]
    assert list_incoming(tmp_path / "missing") == []


# ---------------------------------------------------------------- `batches scan`


def test_a_scan_finds_batch_files_in_name_order_and_says_why_it_skipped_the_rest(tmp_path):
    for name in [
        "batch_0003.csv",
        "batch_0001.csv",
        "2024-01-05.csv",
        "batch_0002.csv",
        ".batch_0004.csv.partial",
        ".batch_0005.csv",
        ".gitkeep",
        "batch_0006.parquet",
        "notes.txt",
        "bad name.csv",
        "batch..7.csv",
        "upload.csv.part",
    ]:
        (tmp_path / name).write_text("x\n")
    (tmp_path / "batch_0008.csv").write_text("")

    scanned = scan_incoming(tmp_path, "csv")

    assert list(scanned.batches) == ["2024-01-05", "batch_0001", "batch_0002", "batch_0003"]
    assert scanned.batches["batch_0002"] == tmp_path / "batch_0002.csv"
    assert scanned.skipped == {
        ".batch_0004.csv.partial": "temporary name: still being written",
        ".batch_0005.csv": "temporary name: still being written",
        "bad name.csv": scanned.skipped["bad name.csv"],
        "batch..7.csv": scanned.skipped["batch..7.csv"],
        "batch_0006.parquet": "not a .csv file: batch files are named <batch id>.csv",
        "batch_0008.csv": "empty: still being written",
        "notes.txt": "not a .csv file: batch files are named <batch id>.csv",
        "upload.csv.part": "temporary name: still being written",
    }
    assert scanned.skipped["bad name.csv"].startswith("invalid batch id 'bad name'")
    assert "without '..'" in scanned.skipped["batch..7.csv"]


def test_a_scan_finds_only_the_configured_format(tmp_path):
    (tmp_path / "batch_0001.csv").write_text("x\n")
    (tmp_path / "batch_0002.parquet").write_bytes(b"PAR1")

    assert list(scan_incoming(tmp_path, "parquet").batches) == ["batch_0002"]


def test_a_scan_of_an_empty_or_missing_folder_finds_nothing(tmp_path):
    assert scan_incoming(tmp_path, "csv") == ScannedFolder({}, {})
    assert scan_incoming(tmp_path / "absent", "csv") == ScannedFolder({}, {})
