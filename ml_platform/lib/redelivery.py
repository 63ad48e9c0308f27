"""Re-delivered rows: what to do with a batch whose content or ids were delivered by other batches.

No row may be counted twice, in training or in the promotion gate. The warehouse knows what every
stored batch delivered (its content hash and its ids, per data set); this module is the rule that
decides, from that, whether an incoming batch is stored, and with which rows. Pure: the caller reads
the stored batches (`Warehouse.stored_deliveries`) and applies the decision (`lib/ingestion.py`).

The policy (`data.redelivered_ids`) for ids that another batch of the same data set delivered:

- `reject` (the default): the batch is refused, naming how many ids and which batches hold them;
- `drop`: those rows are left out of the batch, with a warning and their count;
- `update`: the batch is stored whole and its rows replace the other batches' rows with the same ids
  wherever batches are read together (`Warehouse.read_table`: the later batch in the window wins).

A batch whose content equals another batch's (the same sha256) is refused under every policy: it is a
re-delivery of that batch, not new data and not an update.

The batch's own earlier version never counts: re-running a batch, or re-ingesting a corrected file of
it, compares it with the other batches only.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Literal

RedeliveryPolicy = Literal["reject", "drop", "update"]
# How many batch names and ids an error or warning shows before "and N more".
SHOWN = 5


@dataclass(frozen=True)
class StoredDelivery:
    """What one stored batch delivered, as far as an incoming batch is concerned.

    `ids` holds only the ids the incoming batch also has (the warehouse computes the overlap, so a
    million-row batch is not held in memory for each stored one). `dataset` and `content_hash` are
    None for a batch stored before the warehouse recorded them: it is taken to be of the same data set.
    """

    batch_id: str
    dataset: str | None
    content_hash: str | None
    ids: frozenset = field(default_factory=frozenset)


@dataclass(frozen=True)
class RedeliveryDecision:
    """Whether the incoming batch is stored and which of its ids are left out.

    `refused` is the error when it is not stored. `drop_ids` are the ids whose rows are left out
    (policy drop); `replaced_ids` the ids whose rows replace other batches' (policy update);
    `from_batches` names, for either, the batches that delivered them before.
    """

    refused: str | None = None
    drop_ids: frozenset = field(default_factory=frozenset)
    replaced_ids: frozenset = field(default_factory=frozenset)
    from_batches: tuple[str, ...] = ()

    @property
    def warning(self) -> str | None:
        """What a person should see in the run's log and the asset's metadata, if anything."""
        if self.drop_ids:
            return (
                f"dropped {len(self.drop_ids)} row(s) whose ids were delivered before by "
                f"{_names(self.from_batches)} (data.redelivered_ids: drop): {_sample(self.drop_ids)}"
            )
        if self.replaced_ids:
            return (
                f"{len(self.replaced_ids)} row(s) replace the rows with the same ids in "
                f"{_names(self.from_batches)} (data.redelivered_ids: update): {_sample(self.replaced_ids)}"
            )
        return None


def decide_redelivery(
    *,
    source: str,
    batch_id: str,
    dataset: str,
    content_hash: str,
    rows: int,
    stored: Sequence[StoredDelivery],
    policy: RedeliveryPolicy,
) -> RedeliveryDecision:
    """The decision for an incoming batch (`source` is its file, named in errors) of `rows` rows.

    `stored` is every batch in the warehouse, the incoming batch's own earlier version included (it is
    left out here), each with the incoming ids it also holds. An id held by several other batches is
    counted once and all of them are named, in batch id order.
    """
    others = sorted(
        (delivery for delivery in stored if delivery.batch_id != batch_id and delivery.dataset in (dataset, None)),
        key=lambda delivery: delivery.batch_id,
    )
    same_content = [delivery.batch_id for delivery in others if delivery.content_hash == content_hash]
    if same_content:
        return RedeliveryDecision(
            refused=f"{source}: batch rejected, it is a re-delivery: its content (sha256 {content_hash[:12]}) "
            f"equals that of {_names(same_content)}, already stored"
        )
    holders = [delivery for delivery in others if delivery.ids]
    if not holders:
        return RedeliveryDecision()
    repeated = frozenset().union(*(delivery.ids for delivery in holders))
    names = tuple(delivery.batch_id for delivery in holders)
    counts = ", ".join(f"{len(delivery.ids)} in {delivery.batch_id}" for delivery in holders[:SHOWN])
    if len(holders) > SHOWN:
        counts += f", and {len(holders) - SHOWN} more batch(es)"
    if policy == "reject":
        return RedeliveryDecision(
            refused=f"{source}: batch rejected, {len(repeated)} of its {rows} ids were delivered before ({counts}): "
            f"{_sample(repeated)}. Set data.redelivered_ids to drop (leave those rows out) or update (they "
            "replace the earlier rows) to accept it",
            from_batches=names,
        )
    if policy == "drop":
        if len(repeated) >= rows:
            return RedeliveryDecision(
                refused=f"{source}: batch rejected, every one of its {rows} ids was delivered before ({counts}); "
                "nothing new is left to store (data.redelivered_ids: drop)",
                from_batches=names,
            )
        return RedeliveryDecision(drop_ids=repeated, from_batches=names)
    return RedeliveryDecision(replaced_ids=repeated, from_batches=names)


def _names(batch_ids: Collection[str]) -> str:
    shown = list(batch_ids)[:SHOWN]
    more = f" and {len(batch_ids) - SHOWN} more" if len(batch_ids) > SHOWN else ""
    return ("batch " if len(batch_ids) == 1 else "batches ") + ", ".join(shown) + more


def _sample(ids: Collection) -> str:
    shown = sorted(ids, key=str)[:SHOWN]
    more = f", ... ({len(ids) - SHOWN} more)" if len(ids) > SHOWN else ""
    return ", ".join(repr(value) for value in shown) + more
