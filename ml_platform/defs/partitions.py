"""Every batch of incoming data is one partition; batch ids are added by the CLI or a sensor."""

import dagster as dg

batch_partitions = dg.DynamicPartitionsDefinition(name="batches")
