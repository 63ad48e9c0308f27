"""The `predictions` asset: each batch of the prepared home scored by the champion its own run left."""

from __future__ import annotations

import dagster as dg
import numpy as np

from ml_platform.lib.predictions import PREDICTIONS_TABLE
from ml_platform.lib.settings import DEFAULT_CONFIG_PATH, Settings
from ml_platform.lib.warehouse import Warehouse
from ml_platform_tests.conftest import PreparedHome


def metadata_of(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(asset)]
    return {key: value.value for key, value in event.materialization.metadata.items()}


def test_each_batch_is_scored_by_the_champion_of_its_run_with_the_version_on_every_row(prepared_home: PreparedHome):
    warehouse = Warehouse(Settings(home=prepared_home.home, config_path=DEFAULT_CONFIG_PATH).warehouse_dir)
    for batch, result in prepared_home.results.items():
        champion = metadata_of(result, "champion_model")["champion_version"]
        metadata = metadata_of(result, "predictions")
        table = warehouse.read_table([batch], PREDICTIONS_TABLE)
        features = warehouse.read_table([batch], "features")

        assert metadata["model_version"] == champion
        assert set(table["model_version"]) == {champion}
        assert set(table["model_name"]) == {metadata["registered_model"]} == {"churn_classifier"}
        assert sorted(table["customer_id"]) == sorted(features["customer_id"])
        assert metadata["dagster/row_count"] == len(table) == 1500
        assert table["score"].between(0, 1).all()
        assert np.allclose(table["probability_0"] + table["probability_1"], 1.0)
        assert np.array_equal(table["score"], table["probability_1"])
        assert set(table["prediction"]) <= {0, 1}
        shares = {key: value for key, value in metadata.items() if key.startswith("predicted_share_")}
        assert np.isclose(sum(shares.values()), 1.0)
        assert shares["predicted_share_1"] == (table["prediction"] == 1).mean()
        assert "| 50% |" in metadata["score_quantiles"]
        assert metadata["score_histogram"].startswith("![score distribution](data:image/png;base64,")
    # The first batch crowned v1; the second ran after its own decision, whatever that was.
    assert metadata_of(prepared_home.results["batch_0001"], "predictions")["model_version"] == "1"
