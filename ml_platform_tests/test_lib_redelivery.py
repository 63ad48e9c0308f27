"""The re-delivery rule: a batch's content or ids delivered by other batches of its data set are refused,
dropped or kept as updates, and a batch never counts its own earlier version."""

from __future__ import annotations

import pytest

from ml_platform.lib.redelivery import StoredDelivery, decide_redelivery

SOURCE = "data/incoming/batch_0004.csv"


def decide(stored, policy="reject", batch_id="batch_0004", content_hash="new", rows=1000, dataset="churn"):
    return decide_redelivery(
        source=SOURCE,
        batch_id=batch_id,
        dataset=dataset,
        content_hash=content_hash,
        rows=rows,
        stored=stored,
        policy=policy,
    )


def stored(batch_id, ids=(), content_hash=None, dataset="churn"):
    return StoredDelivery(batch_id, dataset, content_hash or f"hash-{batch_id}", frozenset(ids))


@pytest.mark.parametrize("policy", ["reject", "drop", "update"])
def test_a_batch_with_new_ids_and_content_is_stored_whole(policy):
    decision = decide([stored("batch_0001"), stored("batch_0002")], policy)
    assert decision.refused is None
    assert not decision.drop_ids and not decision.replaced_ids and decision.warning is None


@pytest.mark.parametrize("policy", ["reject", "drop", "update"])
def test_a_byte_identical_copy_of_an_earlier_batch_is_refused_as_a_re_delivery_naming_it(policy):
    decision = decide(
        [stored("batch_0001", ids=range(1000), content_hash="same"), stored("batch_0002")], policy, content_hash="same"
    )
    assert decision.refused.startswith(f"{SOURCE}: batch rejected, it is a re-delivery")
    assert "equals that of batch batch_0001, already stored" in decision.refused


def test_repeated_ids_are_rejected_by_default_naming_the_count_and_the_batches():
    decision = decide([stored("batch_0001", ids=range(880)), stored("batch_0002")])
    assert decision.refused.startswith(f"{SOURCE}: batch rejected, 880 of its 1000 ids were delivered before")
    assert "(880 in batch_0001)" in decision.refused
    assert "batch_0002" not in decision.refused
    assert "data.redelivered_ids" in decision.refused


def test_an_id_in_two_earlier_batches_is_counted_once_and_both_are_named():
    # Possible after an `update`: batch_0002 re-delivered ids of batch_0001.
    decision = decide([stored("batch_0002", ids={"a", "b"}), stored("batch_0001", ids={"a"})])
    assert "2 of its 1000 ids were delivered before (1 in batch_0001, 2 in batch_0002)" in decision.refused


def test_drop_leaves_out_the_repeated_rows_with_a_warning_and_their_count():
    decision = decide([stored("batch_0001", ids={"a", "b", "c"})], "drop")
    assert decision.refused is None
    assert decision.drop_ids == {"a", "b", "c"}
    assert decision.from_batches == ("batch_0001",)
    assert decision.warning.startswith("dropped 3 row(s) whose ids were delivered before by batch batch_0001")


def test_drop_refuses_a_batch_with_nothing_new():
    decision = decide([stored("batch_0001", ids=range(10))], "drop", rows=10)
    assert "every one of its 10 ids was delivered before (10 in batch_0001)" in decision.refused


def test_update_keeps_every_row_and_says_which_it_replaces():
    decision = decide([stored("batch_0001", ids={"a"}), stored("batch_0003", ids={"b"})], "update")
    assert decision.refused is None and not decision.drop_ids
    assert decision.replaced_ids == {"a", "b"}
    assert decision.warning.startswith("2 row(s) replace the rows with the same ids in batches batch_0001, batch_0003")


@pytest.mark.parametrize("policy", ["reject", "drop", "update"])
def test_a_re_run_of_the_same_batch_does_not_count_its_own_ids_or_content(policy):
    itself = stored("batch_0004", ids=range(1000), content_hash="same")
    decision = decide([stored("batch_0001"), itself], policy, content_hash="same")
    assert decision == decide([stored("batch_0001")], policy)
    assert decision.refused is None and not decision.drop_ids and not decision.replaced_ids


def test_a_corrected_re_ingestion_is_compared_with_the_other_batches_only():
    old_version = stored("batch_0004", ids=range(1000), content_hash="before correction")
    assert decide([old_version], content_hash="corrected").refused is None
    # ... and still meets the other batches' ids.
    assert "5 of its 1000 ids" in decide([old_version, stored("batch_0001", ids=range(5))], content_hash="x").refused


def test_other_data_sets_do_not_count_and_batches_stored_before_records_do():
    other_dataset = stored("charges_0001", ids=range(1000), content_hash="new", dataset="charges")
    assert decide([other_dataset]).refused is None
    legacy = StoredDelivery("batch_0001", dataset=None, content_hash=None, ids=frozenset({"a"}))
    assert "1 of its 1000 ids were delivered before (1 in batch_0001)" in decide([legacy]).refused


def test_many_batches_and_ids_are_cut_short_in_the_message():
    many = [stored(f"batch_{n:04d}", ids={f"id{n}"}) for n in range(5, 13)]
    message = decide(many).refused
    assert "8 of its 1000 ids" in message
    assert "and 3 more batch(es)" in message
    assert "(3 more)" in message
