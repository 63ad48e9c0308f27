"""Features: the dbt project over each batch's DuckDB database, as partitioned assets.

dbt tests become asset checks. Each run passes the batch id and the warehouse folder as dbt
vars, and the dbt profile opens that batch's own database file.
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtProject, dbt_assets

from ml_platform.defs.partitions import batch_partitions
from ml_platform.lib.batches import validate_batch_id
from ml_platform.lib.config import PlatformConfig
from ml_platform.resources.dbt_runner import DbtRunnerResource
from ml_platform.resources.warehouse import WarehouseResource

DBT_PROJECT_DIR = Path(__file__).resolve().parents[2] / "dbt_project"
DBT_PROJECT = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)


class FeaturesTranslator(DagsterDbtTranslator):
    """Every dbt model goes in the `features` group of the asset graph."""

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str:
        return "features"


def dbt_vars(config: PlatformConfig, batch_id: str, warehouse_dir: str) -> dict[str, str]:
    """The vars that point one dbt invocation at one batch's database and data set."""
    return {
        # Checked here too: a key added through the UI or GraphQL skips the CLI's check, and this
        # one becomes a file path and a SQL literal in dbt.
        "batch_id": validate_batch_id(batch_id),
        "warehouse_dir": warehouse_dir,
        "dataset": config.data.name,
        "id_column": config.data.id_column,
        "target_column": config.data.target,
    }


def build_feature_assets(config: PlatformConfig, project: DbtProject = DBT_PROJECT) -> list[dg.AssetsDefinition]:
    """The dbt models as assets, run with the config's data set names as dbt vars."""
    if not project.manifest_path.exists():
        raise FileNotFoundError(
            f"dbt manifest not found at {project.manifest_path}; run `make prepare` "
            "(dbt parse) before loading the definitions"
        )

    translator = FeaturesTranslator()

    @dbt_assets(
        manifest=project.manifest_path,
        project=project,
        partitions_def=batch_partitions,
        dagster_dbt_translator=translator,
        name="dbt_features",
    )
    def dbt_features(context: dg.AssetExecutionContext, dbt: DbtRunnerResource, warehouse: WarehouseResource):
        variables = dbt_vars(config, context.partition_key, warehouse.warehouse_dir)
        # One `dbt build` per run builds every selected model and runs its tests.
        with warehouse.warehouse.writing(context.partition_key):
            yield from dbt.build(context, variables, translator)

    return [dbt_features]
