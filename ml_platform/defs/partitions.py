"""Every batch of incoming data is one partition; `ml-platform batches scan/add` adds them."""

import dagster as dg

batch_partitions = dg.DynamicPartitionsDefinition(name="batches")
