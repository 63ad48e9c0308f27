"""The champion backtest materialized in-process: the champion of batch 1 scored on the later
batches, with a real Dagster instance, dbt-built features and a SQLite MLflow store."""

from __future__ import annotations

import json

import dagster as dg
import pytest

from ml_platform.defs.definitions import build_resources
from ml_platform.defs.evaluation.backtest import (
    BACKTEST_KEY,
    backtest_job,
    build_backtest_assets,
    plan_backtest,
)
from ml_platform.lib.backtest import model_inputs
from ml_platform.lib.demo_data import generate_churn_batch
from ml_platform.lib.evaluation import score
from ml_platform.lib.mlflow_store import tracking_uri_in_use
from ml_platform.lib.warehouse import Warehouse
from ml_platform_tests.conftest import PlatformUnderTest

DRIFT = 0.05


@pytest.fixture(scope="module")
def backtested(module_platform: PlatformUnderTest):
    """Five batches: 1 trains the champion; 2 and 3 have dbt's features; 4's features lost columns
    (the data set changed shape); 5 has arrived but has no features yet. Extra versions of the
    registered model, each under an alias of its own, stand for champions of later batches."""
    platform = module_platform
    batches = platform.write_batches(5, rows=2000, drift=DRIFT)
    assert platform.materialize(batches[0]).success
    for batch_id in batches[1:3]:
        assert platform.materialize(batch_id, selection=["raw_batch", "stg_batch", "features"]).success
    reshaped = generate_churn_batch(4, 2000, drift=DRIFT).drop(columns=["region"]).assign(batch_id="batch_0004")

    def build(con) -> None:
        con.register("reshaped", reshaped)
        con.execute("CREATE TABLE features AS SELECT * FROM reshaped")

    Warehouse(platform.settings.warehouse_dir).replace_batch("batch_0004", build)

    store = platform.mlflow()
    client = store.client()
    name = platform.config.promotion.registered_model_name
    champion = store.champion_version(name)
    for alias, tags in {
        "from_batch_0002": {"batch": "batch_0002"},
        "from_batch_0004": {"batch": "batch_0004"},
        "from_batch_0005": {"batch": "batch_0005"},
        "from_a_lost_batch": {"batch": "batch_0099"},
        "untagged": {},
    }.items():
        with tracking_uri_in_use(store.tracking_uri):  # the source is a `models:/` URI of the fluent store
            version = client.create_model_version(name, champion.source, champion.run_id, tags=tags)
        client.set_registered_model_alias(name, alias, version.version)
    return platform, run_backtest_asset(platform)


def run_backtest_asset(platform: PlatformUnderTest, **config) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        build_backtest_assets(platform.config),
        resources=build_resources(platform.config, platform.settings),
        instance=platform.instance,
        run_config={"ops": {"champion_backtest": {"config": config}}} if config else None,
    )


def metadata_of(result: dg.ExecuteInProcessResult) -> dict:
    (event,) = result.get_asset_materialization_events()
    assert event.asset_key == BACKTEST_KEY
    return {key: value.value for key, value in event.materialization.metadata.items()}


def model_name(platform: PlatformUnderTest) -> str:
    return platform.config.promotion.registered_model_name


def report_path(platform: PlatformUnderTest, version: str = "1"):
    return platform.settings.reports_dir / "backtest" / f"{model_name(platform)}-v{version}.json"


def report_of(platform: PlatformUnderTest) -> dict:
    return json.loads(report_path(platform).read_text())


def test_the_champion_is_scored_on_every_later_batch_that_has_features(backtested):
    platform, result = backtested
    metadata = metadata_of(result)

    assert result.success
    assert metadata["status"] == "scored"
    assert metadata["registered_model"] == model_name(platform) and metadata["version"] == "1"
    assert metadata["alias"] == "champion" and metadata["trained_on_batch"] == "batch_0001"
    assert metadata["batches_scored"] == "batch_0002, batch_0003"
    assert metadata["batches_failed"] == 1
    assert metadata["dagster/row_count"] == 4000  # whole batches, not a held-out split
    report = report_of(platform)
    assert [row["batch"] for row in report["batches"]] == ["batch_0002", "batch_0003", "batch_0004"]
    assert report["batches_without_features"] == ["batch_0005"]


def test_each_batch_holds_the_champions_metrics_on_all_of_its_rows(backtested):
    platform, result = backtested
    report = report_of(platform)
    store = platform.mlflow()
    champion = store.load_model(f"models:/{model_name(platform)}/1")
    features = Warehouse(platform.settings.warehouse_dir).read_table(["batch_0003"], "features")

    expected = score("classification", champion, *model_inputs(features, platform.config.data))

    row = report["batches"][1]
    assert row["batch"] == "batch_0003" and row["rows"] == 2000
    assert row["metrics"] == pytest.approx(expected)
    for row in report["batches"][:2]:
        assert set(row["metrics"]) == {"f1", "roc_auc", "precision", "recall", "accuracy"}
        assert all(0.0 <= value <= 1.0 for value in row["metrics"].values())


def test_a_batch_whose_features_changed_shape_is_an_error_row_not_a_failed_run(backtested):
    platform, result = backtested
    error_row = report_of(platform)["batches"][2]

    assert result.success
    assert error_row["batch"] == "batch_0004" and error_row["metrics"] is None
    assert error_row["error"].startswith("ValueError: columns are missing") and "region" in error_row["error"]
    assert "| batch_0004 | 2000 | error: ValueError: columns are missing" in metadata_of(result)["backtest"]


def test_the_report_file_and_the_metadata_give_the_same_numbers(backtested):
    platform, result = backtested
    metadata = metadata_of(result)
    report = report_of(platform)

    assert metadata["report_file"] == str(report_path(platform))
    trend = report["trend"]
    assert trend["verdict"] == metadata["verdict"] in ("stable", "degrading", "improving")
    assert trend["slope_per_batch"] == pytest.approx(metadata["roc_auc_slope_per_batch"])
    first, second = (row["metrics"]["roc_auc"] for row in report["batches"][:2])
    assert trend["change_first_to_last"] == pytest.approx(metadata["roc_auc_change"]) == pytest.approx(second - first)
    assert trend["slope_per_batch"] == pytest.approx(second - first)  # two neighbouring batches
    for row in report["batches"][:2]:
        assert f"| {row['batch']} | 2000 | {row['metrics']['roc_auc']:.4f} |" in metadata["backtest"]


def test_a_version_under_another_alias_is_scored_from_its_own_batch_on(backtested):
    platform, _ = backtested

    result = run_backtest_asset(platform, alias="from_batch_0002")

    metadata = metadata_of(result)
    assert metadata["trained_on_batch"] == "batch_0002" and metadata["alias"] == "from_batch_0002"
    assert metadata["batches_scored"] == "batch_0003"
    assert metadata["verdict"] == "too few batches" and "roc_auc_slope_per_batch" not in metadata
    assert json.loads(report_path(platform, metadata["version"]).read_text())["alias"] == "from_batch_0002"


@pytest.mark.parametrize(
    ("run_config", "reason"),
    [
        ({"registered_model_name": "no_such_model"}, "'no_such_model' has no version with alias 'champion' yet"),
        ({"alias": "no_such_alias"}, "'{model}' has no version with alias 'no_such_alias' yet"),
        ({"alias": "from_batch_0005"}, "@from_batch_0005 was trained on batch_0005, the latest batch"),
        ({"alias": "from_batch_0004"}, "no batch after batch_0004 has features yet (batch_0005)"),
        ({"alias": "from_a_lost_batch"}, "was trained on batch_0099, which is no longer a batch partition"),
        ({"alias": "untagged"}, "has no 'batch' tag: which batches came after it is unknown"),
    ],
)
def test_nothing_to_backtest_still_materializes_and_says_why(backtested, run_config, reason):
    platform, _ = backtested
    reports_before = sorted((platform.settings.reports_dir / "backtest").iterdir())

    result = run_backtest_asset(platform, **run_config)

    assert result.success
    metadata = metadata_of(result)
    assert metadata["status"] == "nothing to backtest"
    assert reason.format(model=model_name(platform)) in metadata["reason"]
    assert sorted((platform.settings.reports_dir / "backtest").iterdir()) == reports_before
    # The schedule asks the same question before it launches a run.
    plan = plan_backtest(
        platform.instance,
        platform.mlflow(),
        run_config.get("registered_model_name", model_name(platform)),
        run_config.get("alias", "champion"),
        Warehouse(platform.settings.warehouse_dir),
    )
    assert plan.skip_reason == metadata["reason"]


def test_the_schedules_question_has_no_reason_to_skip_when_there_is_a_later_batch(backtested):
    platform, _ = backtested
    warehouse = Warehouse(platform.settings.warehouse_dir)
    store = platform.mlflow()

    plan = plan_backtest(platform.instance, store, model_name(platform), "champion", warehouse)

    assert plan.skip_reason is None
    assert plan.version == "1" and plan.trained_on == "batch_0001"
    assert plan.batches == ["batch_0002", "batch_0003", "batch_0004"]
    assert plan.without_features == ["batch_0005"]


def test_the_backtest_is_one_unpartitioned_asset_with_a_job_of_its_own(module_platform: PlatformUnderTest):
    (asset,) = build_backtest_assets(module_platform.config)

    assert asset.key == BACKTEST_KEY and asset.partitions_def is None
    assert asset.group_names_by_key[BACKTEST_KEY] == "evaluation"
    assert asset.specs_by_key[BACKTEST_KEY].kinds == {"mlflow"}
    assert "roc_auc" in asset.descriptions_by_key[BACKTEST_KEY]
    assert {dep.asset_key for dep in asset.specs_by_key[BACKTEST_KEY].deps} == {
        dg.AssetKey("features"),
        dg.AssetKey("champion_model"),
    }
    resources = build_resources(module_platform.config, module_platform.settings)
    job = dg.Definitions(assets=[asset], jobs=[backtest_job], resources=resources).resolve_job_def("backtest")
    assert job.asset_layer.executable_asset_keys == {BACKTEST_KEY}
