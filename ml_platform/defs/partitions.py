"""Every batch of incoming data is one partition; `ml-platform batches scan/add` adds them."""

import dagster as dg

batch_partitions = dg.DynamicPartitionsDefinition(name="batches")


def batches_with(instance: dg.DagsterInstance, asset_key: dg.AssetKey) -> list[str]:
    """The batch partitions, in the order they were added, for which `asset_key` is materialized."""
    done = instance.get_materialized_partitions(asset_key)
    return [key for key in instance.get_dynamic_partitions(batch_partitions.name) if key in done]
