"""Ingestion: `raw_batch`, one validated batch file stored in its own DuckDB database."""

from pathlib import Path

import dagster as dg

from ml_platform.defs.partitions import batch_partitions
from ml_platform.lib.batches import batch_file
from ml_platform.lib.config import PlatformConfig, code_version
from ml_platform.lib.ingestion import ingest_batch
from ml_platform.resources.warehouse import WarehouseResource


def build_ingestion_assets(config: PlatformConfig) -> list[dg.AssetsDefinition]:
    """`raw_batch` for the config's data set and contract."""
    data = config.data

    @dg.asset(
        partitions_def=batch_partitions,
        group_name="ingestion",
        kinds={"duckdb"},
        code_version=code_version(data),
        description=f"One batch file of the {data.name!r} data set, checked against its data contract "
        "and stored in the batch's DuckDB database (re-ingesting replaces it).",
    )
    def raw_batch(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
        source = batch_file(Path(warehouse.incoming_dir), context.partition_key, data.file_format)
        summary = warehouse.warehouse.replace_batch(context.partition_key, lambda con: ingest_batch(source, data, con))
        context.log.info(f"Ingested {summary.rows} rows of {source} (sha256 {summary.content_hash[:12]})")
        null_rows = "\n".join(
            f"| {column} | {count} | {count / summary.rows:.2%} |" for column, count in summary.null_counts.items()
        )
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": summary.rows,
                "columns": len(summary.columns),
                "content_hash": summary.content_hash,
                "source_file": dg.MetadataValue.path(str(source)),
                "warehouse_database": dg.MetadataValue.path(
                    str(warehouse.warehouse.batch_database(context.partition_key))
                ),
                "null_counts": dg.MetadataValue.md("| column | nulls | rate |\n|---|---|---|\n" + null_rows),
            },
            data_version=dg.DataVersion(summary.content_hash),
        )

    return [raw_batch]
