"""Ingestion: `raw_batch`, one validated batch file stored in its own DuckDB database."""

from pathlib import Path

import dagster as dg

from ml_platform.defs.ingestion.quarantine import content_hash_of, rejection_observation
from ml_platform.defs.partitions import batch_partitions
from ml_platform.lib.batches import batch_file
from ml_platform.lib.config import PlatformConfig
from ml_platform.lib.ingestion import BatchRejected, identifier_like_warning, ingest_delivery, ingestion_code_version
from ml_platform.resources.warehouse import WarehouseResource


def build_ingestion_assets(config: PlatformConfig) -> list[dg.AssetsDefinition]:
    """`raw_batch` for the config's data set and contract."""
    data = config.data
    code_version = ingestion_code_version(data, config.training)

    @dg.asset(
        partitions_def=batch_partitions,
        group_name="ingestion",
        kinds={"duckdb"},
        code_version=code_version,
        description=f"One batch file of the {data.name!r} data set, checked against its data contract and "
        f"against what other batches delivered (re-delivered ids: {data.redelivered_ids}), and stored in the "
        "batch's DuckDB database (re-ingesting replaces it). A refused batch is quarantined until its file "
        "or the config changes.",
    )
    def raw_batch(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
        batch, store = context.partition_key, warehouse.warehouse
        source = batch_file(Path(warehouse.incoming_dir), batch, data.file_format)
        refused_hash = content_hash_of(source)  # before reading: a file rewritten meanwhile is not quarantined
        try:
            with store.delivering():
                summary = store.replace_batch(
                    batch,
                    lambda con: ingest_delivery(
                        source,
                        data,
                        con,
                        batch,
                        lambda ids: store.stored_deliveries(ids, data.id_column, batch),
                        training=config.training,
                    ),
                )
        except BatchRejected as error:
            context.log_event(rejection_observation(batch, source, refused_hash, code_version, error))
            raise
        context.log.info(f"Ingested {summary.rows} rows of {source} (sha256 {summary.content_hash[:12]})")
        if summary.redelivery_warning:
            context.log.warning(f"{source}: {summary.redelivery_warning}")
        if summary.identifier_like_columns:
            context.log.warning(f"{source}: {identifier_like_warning(summary.identifier_like_columns)}")
        null_rows = "\n".join(
            f"| {column} | {count} | {count / summary.rows:.2%} | {summary.blank_counts.get(column, '')} |"
            for column, count in summary.null_counts.items()
        )
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": summary.rows,
                "columns": len(summary.columns),
                "content_hash": summary.content_hash,
                "source_file": dg.MetadataValue.path(str(source)),
                "warehouse_database": dg.MetadataValue.path(str(store.batch_database(batch))),
                "null_counts": dg.MetadataValue.md(
                    "| column | nulls | rate | of them blank numbers |\n|---|---|---|---|\n" + null_rows
                ),
                "blank_numbers_read_as_missing": sum(summary.blank_counts.values()),
                "redelivered_ids": data.redelivered_ids,
                "dropped_redelivered_rows": summary.dropped_rows,
                "replacing_rows": summary.replacing_rows,
                **({"redelivered_from": ", ".join(summary.redelivered_from)} if summary.redelivered_from else {}),
                **({"redelivery_warning": summary.redelivery_warning} if summary.redelivery_warning else {}),
                **(
                    {"identifier_like_columns": identifier_like_warning(summary.identifier_like_columns)}
                    if summary.identifier_like_columns
                    else {}
                ),
            },
            data_version=dg.DataVersion(summary.content_hash),
        )

    return [raw_batch]
