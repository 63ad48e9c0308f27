"""dbt run in the step's process: subsets build only what was selected, failed dbt tests fail the step."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
from dagster_dbt import DbtProject

from ml_platform.defs.definitions import build_resources
from ml_platform.defs.features.assets import DBT_PROJECT_DIR, build_feature_assets
from ml_platform.defs.ingestion.assets import build_ingestion_assets
from ml_platform.resources.dbt_runner import DbtRunnerResource
from ml_platform_tests.conftest import PlatformUnderTest


def check_results(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {
        event.event_specific_data.check_name: event.event_specific_data.passed
        for event in result.all_events
        if event.event_type_value == "ASSET_CHECK_EVALUATION"
    }


def test_a_subset_builds_only_the_selected_model_and_runs_only_its_tests(platform: PlatformUnderTest):
    [batch] = platform.write_batches(1)

    result = platform.materialize(batch, selection=["raw_batch", "stg_batch"])

    assert result.success
    built = {event.asset_key.to_user_string() for event in result.get_asset_materialization_events()}
    assert built == {"raw_batch", "stg_batch"}
    assert check_results(result) == {"not_null_stg_batch_batch_id": True}
    with duckdb.connect(str(platform.settings.warehouse_dir / f"{batch}.duckdb"), read_only=True) as con:
        tables = {row[0] for row in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert tables == {"raw_batch", "batch_delivery", "stg_batch"}  # no `features`: it was not selected


def test_a_failing_dbt_test_fails_the_step_names_the_test_and_keeps_the_run_artifacts(
    platform: PlatformUnderTest, tmp_path: Path
):
    project_dir = tmp_path / "dbt_project"
    shutil.copytree(DBT_PROJECT_DIR, project_dir, ignore=shutil.ignore_patterns("target", "logs"))
    (project_dir / "tests" / "no_customer_may_churn.sql").write_text(
        "select * from {{ ref('features') }} where churned = 1\n"
    )
    dbt = str(Path(sys.executable).parent / "dbt")
    subprocess.run([dbt, "parse", "--quiet", "--project-dir", project_dir, "--profiles-dir", project_dir], check=True)
    project = DbtProject(project_dir=project_dir, profiles_dir=project_dir)
    runs_dir = tmp_path / "dbt_runs"
    [batch] = platform.write_batches(1)

    result = dg.materialize(
        [*build_ingestion_assets(platform.config), *build_feature_assets(platform.config, project)],
        resources={
            **build_resources(platform.config, platform.settings),
            "dbt": DbtRunnerResource(
                project_dir=str(project_dir), profiles_dir=str(project_dir), runs_dir=str(runs_dir)
            ),
        },
        partition_key=batch,
        instance=platform.instance,
        raise_on_error=False,
    )

    assert not result.success
    [failure] = [event for event in result.all_events if event.is_step_failure]
    assert "test no_customer_may_churn" in failure.step_failure_data.error.message
    checks = check_results(result)
    assert checks["no_customer_may_churn"] is False
    assert checks["features_have_unique_ids"] is True
    [kept] = [path for path in runs_dir.iterdir() if (path / "run_results.json").exists()]
    assert str(kept) in failure.step_failure_data.error.message
