"""The quarantine rule: a refused batch is held back while its file and its ingestion's code and config
are what it was refused with, and released by a correction, a config change or a run that stored it."""

from __future__ import annotations

from ml_platform.lib.quarantine import Rejection, error_headline, quarantine_of

REFUSED = Rejection(content_hash="bad", code_version="2-abc", error="batch rejected", run_id="run-1", order=10)


def quarantined(rejection=REFUSED, accepted_order=None, content_hash="bad", code_version="2-abc"):
    return quarantine_of(
        "batch_0004", rejection, accepted_order=accepted_order, content_hash=content_hash, code_version=code_version
    )


def test_a_batch_never_refused_is_not_quarantined():
    assert quarantined(rejection=None) is None


def test_a_refused_batch_whose_file_and_config_are_unchanged_is_quarantined_with_its_error():
    quarantine = quarantined()
    assert quarantine.batch == "batch_0004" and quarantine.error == "batch rejected" and quarantine.run_id == "run-1"
    assert quarantine.describe() == (
        "batch_0004: quarantined since run run-1 (file and config unchanged): batch rejected"
    )


def test_a_rerun_with_the_same_content_that_was_refused_again_stays_one_quarantine_with_the_latest_error():
    # A forced `ml-platform run` refused again records a newer refusal of the same inputs.
    again = Rejection("bad", "2-abc", "batch rejected again", "run-2", order=20)
    assert quarantined(again, accepted_order=5).error == "batch rejected again"


def test_a_corrected_file_is_released():
    assert quarantined(content_hash="corrected") is None


def test_a_missing_file_refused_is_released_when_the_file_arrives():
    missing = Rejection(None, "2-abc", "file not found", "run-1", order=10)
    assert quarantined(missing, content_hash=None) is not None
    assert quarantined(missing, content_hash="arrived") is None


def test_a_changed_contract_config_or_ingestion_code_is_released():
    assert quarantined(code_version="2-def") is None
    assert quarantined(code_version="3-abc") is None


def test_a_batch_stored_after_its_refusal_is_released():
    # A retry that got through, or a forced run that stored it (the refusal depended on other batches).
    assert quarantined(accepted_order=11) is None


def test_a_batch_stored_before_its_refusal_is_quarantined():
    # A good batch whose file was replaced with a bad one: the stored version stays, the new file waits.
    assert quarantined(accepted_order=3) is not None


def test_the_error_headline_is_the_first_line_with_the_first_problem_of_a_list():
    assert error_headline("x.csv: file not found\n") == "x.csv: file not found"
    message = "x.csv: batch rejected, it does not match the data contract:\n  - column 'a': bad\n  - column 'b': bad"
    assert error_headline(message) == (
        "x.csv: batch rejected, it does not match the data contract: column 'a': bad (and more)"
    )
    assert error_headline("") == "no error message"
