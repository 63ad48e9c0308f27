"""The DuckDB warehouse and the incoming folder, as a Dagster resource."""

from pathlib import Path

import dagster as dg

from ml_platform.lib.warehouse import Warehouse


class WarehouseResource(dg.ConfigurableResource):
    """Where batches arrive (`incoming_dir`) and where their per-batch DuckDB files live."""

    incoming_dir: str
    warehouse_dir: str

    @property
    def warehouse(self) -> Warehouse:
        return Warehouse(Path(self.warehouse_dir))
