"""The batch pipeline: every asset, for one batch partition."""

import dagster as dg

from ml_platform.defs.partitions import batch_partitions

batch_pipeline_job = dg.define_asset_job(
    "batch_pipeline",
    selection=dg.AssetSelection.all(),
    partitions_def=batch_partitions,
    description="Ingest one batch, build its features with dbt, train every candidate, evaluate, promote.",
)
