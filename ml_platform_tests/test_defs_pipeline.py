"""The batch pipeline end to end, materialized in-process against a real Dagster instance,
real dbt over DuckDB and a real SQLite MLflow store."""

from __future__ import annotations

import json

import dagster as dg
import duckdb
import pytest

from ml_platform.lib.config import PlatformConfig
from ml_platform.lib.demo_data import generate_churn_batch
from ml_platform.lib.provenance import code_version
from ml_platform_tests.conftest import PlatformUnderTest, small_config

PIPELINE_ASSETS = {
    "raw_batch",
    "stg_batch",
    "features",
    "training_data",
    "random_forest_model",
    "gradient_boosting_model",
    "logistic_regression_model",
    "evaluation_report",
    "champion_model",
    "predictions",
    "drift_report",
}


@pytest.fixture(scope="module")
def three_runs(module_platform: PlatformUnderTest):
    """Batch 1 trains the first champion; batch 2's winner must beat it by an impossible margin;
    then batch 1 runs again, unchanged."""
    first, second = module_platform.write_batches(2, rows=2000, drift=0.03)
    results = {first: module_platform.materialize(first)}
    impossible_margin = small_config(**{"promotion.min_improvement": 0.5})
    results[second] = module_platform.materialize(second, config=impossible_margin)
    results["rerun"] = module_platform.materialize(first)
    return module_platform, results


def materialized(result: dg.ExecuteInProcessResult) -> set[str]:
    return {event.asset_key.to_user_string() for event in result.get_asset_materialization_events()}


def test_whole_graph_materializes_every_asset_and_passes_dbt_checks(three_runs):
    _, results = three_runs
    for result in results.values():
        assert result.success
        assert materialized(result) == PIPELINE_ASSETS
        checks = result.get_asset_check_evaluations()
        dbt_checks = [check for check in checks if check.check_name != "meets_quality_bar"]
        assert len(dbt_checks) == 5
        assert all(check.passed for check in dbt_checks)
        assert len(checks) == 6  # and the champion's quality bar, which may fail without failing the run


def test_raw_batch_records_rows_hash_and_null_counts(three_runs):
    platform, results = three_runs
    event = next(
        e for e in results["batch_0001"].get_asset_materialization_events() if e.asset_key == dg.AssetKey("raw_batch")
    )
    metadata = event.materialization.metadata
    assert metadata["dagster/row_count"].value == 2000
    assert len(metadata["content_hash"].value) == 64
    assert "total_charges" in metadata["null_counts"].value
    database = platform.settings.warehouse_dir / "batch_0001.duckdb"
    with duckdb.connect(str(database), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM raw_batch").fetchone()[0] == 2000
        assert con.execute("SELECT count(DISTINCT batch_id) FROM features").fetchone()[0] == 1


def test_one_mlflow_run_per_model_per_batch_with_provenance(three_runs):
    platform, results = three_runs
    client = platform.mlflow().client()
    experiment = client.get_experiment_by_name(platform.config.tracking.experiment_name)
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 3 * 3
    run = next(
        r
        for r in runs
        if r.data.tags["dagster.run_id"] == results["batch_0001"].run_id
        and r.data.tags["model_name"] == "random_forest"
    )
    tags = run.data.tags
    assert tags["dagster.run_id"] == results["batch_0001"].run_id
    assert tags["dagster.asset_key"] == "random_forest_model"
    assert len(tags["data_hash"]) == 64
    assert tags["code_version"] == code_version()
    assert tags["config_hash"] == platform.config.config_hash()
    assert tags["lib.scikit-learn"]
    assert run.data.params["n_estimators"] == "25"
    assert run.data.params["model_type"] == "random_forest"
    import mlflow.artifacts

    logged_config = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/config.json")
    assert PlatformConfig.model_validate(logged_config).config_hash() == tags["config_hash"]
    assert set(run.data.metrics) >= {"f1", "roc_auc", "precision", "recall", "accuracy"}
    assert 0.6 < run.data.metrics["roc_auc"] <= 1.0
    logged = [
        model
        for model in client.search_logged_models([experiment.experiment_id])
        if model.source_run_id == run.info.run_id
    ]
    assert len(logged) == 1
    from mlflow.models import get_model_info

    from ml_platform.lib.mlflow_store import tracking_uri_in_use

    event = next(
        e
        for e in results["batch_0001"].get_asset_materialization_events()
        if e.asset_key == dg.AssetKey("random_forest_model")
    )
    assert event.materialization.metadata["mlflow_run"].value.endswith(f"/runs/{run.info.run_id}")
    with tracking_uri_in_use(platform.mlflow().tracking_uri):  # get_model_info reads the fluent API's store
        info = get_model_info(logged[0].model_uri)
    assert info.signature is not None and "tenure_months" in info.signature.inputs.input_names()


def test_evaluation_report_names_winner_in_metadata_and_json(three_runs):
    platform, results = three_runs
    report = results["batch_0001"].output_for_node("evaluation_report")
    # Picked on the validation rows: the held-out ones are the promotion gate's alone.
    scores = {name: c["validation_metrics"]["roc_auc"] for name, c in report["candidates"].items()}
    assert report["winner"] == max(scores, key=scores.get)
    assert report["winner_chosen_on"] == "validation"
    on_disk = json.loads((platform.settings.reports_dir / "batch_0001" / "evaluation_report.json").read_text())
    latest = results["rerun"].output_for_node("evaluation_report")  # the file holds the latest run's report
    assert on_disk == json.loads(json.dumps(latest))
    event = next(
        e
        for e in results["batch_0001"].get_asset_materialization_events()
        if e.asset_key == dg.AssetKey("evaluation_report")
    )
    table = event.materialization.metadata["metrics"].value
    assert f"**{report['winner']}** (winner)" in table and "| roc_auc |" not in table.splitlines()[2]


def test_first_winner_becomes_champion_and_a_weaker_one_only_challenger(three_runs):
    platform, results = three_runs
    tracking = platform.mlflow()
    client = tracking.client()
    name = platform.config.promotion.registered_model_name
    versions = sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version))
    assert [str(v.version) for v in versions] == ["1", "2", "3"]
    champion = client.get_model_version_by_alias(name, "champion")
    challenger = client.get_model_version(name, "2")
    assert str(champion.version) == "1" and champion.tags["batch"] == "batch_0001"
    assert challenger.tags["batch"] == "batch_0002"
    assert champion.tags["promotion_reason"].startswith("no current champion")
    assert challenger.tags["promotion_reason"].startswith("not surely better than the champion (v1): roc_auc")
    assert "needed above 0.5" in challenger.tags["promotion_reason"]
    winner_of_batch_2 = results["batch_0002"].output_for_node("evaluation_report")["winner"]
    assert challenger.tags["model_name"] == winner_of_batch_2


def test_rerunning_a_batch_unchanged_replaces_its_data_and_cannot_beat_its_own_champion(three_runs):
    platform, results = three_runs
    with duckdb.connect(str(platform.settings.warehouse_dir / "batch_0001.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM raw_batch").fetchone()[0] == 2000
        assert con.execute("SELECT count(*) FROM features").fetchone()[0] == 2000
    first = results["batch_0001"].output_for_node("evaluation_report")
    again = results["rerun"].output_for_node("evaluation_report")
    for name, candidate in first["candidates"].items():  # same data, config and seeds: same models
        assert again["candidates"][name]["metrics"] == candidate["metrics"]
    client = platform.mlflow().client()
    name = platform.config.promotion.registered_model_name
    rerun = client.get_model_version_by_alias(name, "challenger")
    assert str(rerun.version) == "3" and rerun.tags["batch"] == "batch_0001"
    # Same data, config and seeds: the same model, so exactly no improvement.
    assert rerun.tags["promotion_reason"].startswith("not surely better than the champion (v1)")
    assert rerun.tags["decision.comparison.improvement"] == "0.0"
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"


def test_challenger_that_beats_the_champion_takes_the_alias(platform: PlatformUnderTest):
    first, second = platform.write_batches(2, rows=2000)
    # One stump: clearly worse than the next batch's winner, beyond the noise of 400 held-out rows.
    crippled = small_config(
        **{"models": {"random_forest": {"type": "random_forest", "params": {"n_estimators": 1, "max_depth": 1}}}}
    )
    assert platform.materialize(first, config=crippled).success
    assert platform.materialize(second).success
    client = platform.mlflow().client()
    name = platform.config.promotion.registered_model_name
    champion = client.get_model_version_by_alias(name, "champion")
    assert str(champion.version) == "2"
    assert champion.tags["promotion_reason"].startswith("beats the champion (v1): roc_auc")
    events = platform.instance.fetch_materializations(dg.AssetKey("champion_model"), limit=1).records
    metadata = events[0].asset_materialization.metadata
    assert metadata["alias"].value == "champion" and metadata["champion_version"].value == "2"
    assert metadata["previous_champion_roc_auc"].value < metadata["challenger_roc_auc"].value
    assert 0 < metadata["interval_low"].value < metadata["improvement"].value < metadata["interval_high"].value
    assert metadata["held_out_rows"].value == 400


def test_rematerializing_a_batch_replaces_it(platform: PlatformUnderTest):
    (batch,) = platform.write_batches(1, rows=1500)
    assert platform.materialize(batch, selection=["raw_batch", "stg_batch", "features"]).success
    assert platform.materialize(batch, selection=["raw_batch", "stg_batch", "features"]).success
    with duckdb.connect(str(platform.settings.warehouse_dir / f"{batch}.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM raw_batch").fetchone()[0] == 1500
        assert con.execute("SELECT count(*) FROM features").fetchone()[0] == 1500
    history = platform.instance.fetch_materializations(dg.AssetKey("raw_batch"), limit=10).records
    assert len(history) == 2


def test_cumulative_window_trains_on_every_batch_up_to_this_one(platform: PlatformUnderTest):
    config = small_config(**{"training.window": "cumulative"})
    batches = platform.write_batches(3, rows=1000)
    for batch in batches:
        assert platform.materialize(batch, config=config, selection=["raw_batch", "stg_batch", "features"]).success
    result = platform.materialize(batches[1], config=config, selection=["training_data"])
    data = result.output_for_node("training_data")
    assert data.batches == ["batch_0001", "batch_0002"]  # batch 3 is later: not in batch 2's window
    assert len(data.split.train) + len(data.split.validation) + len(data.split.test) == 2000
    assert set(data.split.test["batch_id"]) == {"batch_0002"}


def test_bring_your_own_regression_data_in_parquet(platform: PlatformUnderTest):
    """A user's own data set: another target, the regression task, Parquet files, no dbt to write."""

    columns = {
        "customer_id": {"type": "string", "nullable": False},
        "tenure_months": {"type": "integer", "nullable": False, "min": 0},
        "internet_service": {"type": "category", "nullable": False, "allowed": ["dsl", "fiber_optic", "none"]},
        "num_products": {"type": "integer", "nullable": False, "min": 1},
        "monthly_charges": {"type": "float", "nullable": False, "min": 0},
    }
    config = PlatformConfig.model_validate(
        {
            "data": {
                "name": "charges",
                "incoming_dir": "data/charges",
                "file_format": "parquet",
                "task": "regression",
                "target": "monthly_charges",
                "id_column": "customer_id",
                "columns": columns,
            },
            "models": {
                "ridge": {"type": "ridge"},
                "forest": {"type": "random_forest", "params": {"n_estimators": 20}},
                "boosting": {"type": "gradient_boosting", "params": {"n_estimators": 30}},
            },
        }
    )
    frame = generate_churn_batch(1, 2000)[list(columns)]
    path = platform.settings.incoming_dir(config) / "month_01.parquet"
    path.parent.mkdir(parents=True)
    frame.to_parquet(path, index=False)
    platform.instance.add_dynamic_partitions("batches", ["month_01"])

    result = platform.materialize("month_01", config=config)

    assert result.success
    report = result.output_for_node("evaluation_report")
    assert report["primary_metric"] == "rmse" and report["mode"] == "min"
    assert set(report["candidates"]) == {"ridge", "forest", "boosting"}
    for candidate in report["candidates"].values():
        assert set(candidate["metrics"]) >= {"rmse", "mae", "r2"}
        assert candidate["metrics"]["r2"] > 0.5  # price follows the internet service and products
    client = platform.mlflow(config).client()
    champion = client.get_model_version_by_alias("charges_regression", "champion")
    assert "rmse=" in champion.tags["promotion_reason"]


def test_hyperparameters_can_be_overridden_at_launch_and_are_validated(platform: PlatformUnderTest):
    (batch,) = platform.write_batches(1, rows=1000)
    upstream = ["raw_batch", "stg_batch", "features", "training_data"]
    assert platform.materialize(batch, selection=upstream).success

    launched = platform.materialize(
        batch,
        selection=["random_forest_model"],
        run_config={"ops": {"random_forest_model": {"config": {"params": {"n_estimators": 7}}}}},
    )
    candidate = launched.output_for_node("random_forest_model")
    assert candidate.params["n_estimators"] == 7
    run = platform.mlflow().client().get_run(candidate.run_id)
    assert run.data.params["n_estimators"] == "7"
    assert run.data.params["max_depth"] == "6"  # the rest still comes from the config file

    with pytest.raises(Exception, match="n_estimators") as refused:
        platform.materialize(
            batch,
            selection=["random_forest_model"],
            run_config={"ops": {"random_forest_model": {"config": {"params": {"n_estimators": -1}}}}},
        )
    assert "greater than 0" in str(refused.value)


def test_a_champion_that_cannot_read_the_new_features_is_kept_and_the_winner_is_challenger(
    two_batches: PlatformUnderTest,
):
    platform = two_batches
    client = platform.mlflow().client()
    name = platform.config.promotion.registered_model_name
    champion = str(client.get_model_version_by_alias(name, "champion").version)
    # The data set changes shape: a data set without the churn features, same registered model.
    raw = small_config().model_dump(mode="json")
    raw["data"]["name"] = "churn_lite"
    del raw["data"]["columns"]["region"]
    reshaped = small_config().model_validate(raw)
    frame = generate_churn_batch(3, 1000).drop(columns=["region"])
    platform.add_batch_file("batch_0003", frame.to_csv(index=False).encode())

    assert platform.materialize("batch_0003", config=reshaped).success

    assert str(client.get_model_version_by_alias(name, "champion").version) == champion
    challenger = client.get_model_version_by_alias(name, "challenger")
    assert challenger.tags["batch"] == "batch_0003"
    reason = challenger.tags["promotion_reason"]
    assert f"the champion (v{champion}) cannot be scored on this batch's held-out data" in reason
    # Nor can it score the batch: recorded as not scored, and the run still succeeds.
    (scored,) = platform.instance.fetch_materializations(dg.AssetKey("predictions"), limit=1).records
    metadata = scored.asset_materialization.metadata
    assert scored.partition_key == "batch_0003" and metadata["status"].value == "not scored"
    assert "lack column(s) the model's signature takes: region" in metadata["reason"].value
