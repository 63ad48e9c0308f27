"""A 3-class target through the real pipeline: scikit-learn's wine data set, one batch, the default models."""

from __future__ import annotations

import dagster as dg
import pytest

from ml_platform.lib.config import CLASSIFICATION_METRICS, PlatformConfig, load_config
from ml_platform.lib.demo_data import wine_batches, write_batch_files
from ml_platform.lib.settings import PROJECT_ROOT
from ml_platform_tests.conftest import PlatformUnderTest

CULTIVARS = ["class_0", "class_1", "class_2"]


def small_wine_config() -> PlatformConfig:
    """`configs/wine.yaml` with small models, so the run takes seconds."""
    raw = load_config(PROJECT_ROOT / "configs" / "wine.yaml").model_dump(mode="json")
    raw["models"]["random_forest"]["params"].update(n_estimators=25, max_depth=6)
    raw["models"]["gradient_boosting"]["params"].update(n_estimators=40)
    return PlatformConfig.model_validate(raw)


@pytest.fixture(scope="module")
def wine_run(module_platform: PlatformUnderTest):
    config = small_wine_config()
    (path,) = write_batch_files(module_platform.settings.incoming_dir(config), {1: wine_batches(1)[0]})
    module_platform.instance.add_dynamic_partitions("batches", [path.stem])
    return module_platform, config, module_platform.materialize(path.stem, config=config)


def test_three_classes_are_scored_with_macro_metrics_and_per_class_figures(wine_run):
    _, _, result = wine_run
    assert result.success

    report = result.output_for_node("evaluation_report")

    assert report["classes"] == CULTIVARS
    assert report["unseen_labels"] == []
    for candidate in report["candidates"].values():
        assert set(candidate["metrics"]) == set(CLASSIFICATION_METRICS)
        assert set(candidate["per_class"]) == set(CULTIVARS)
        assert sum(figures["support"] for figures in candidate["per_class"].values()) == 36  # a fifth of 178
    assert report["candidates"][report["winner"]]["metrics"]["roc_auc"] > 0.95


def test_the_per_class_metrics_are_on_each_models_mlflow_run_and_the_confusion_matrix_is_drawn(wine_run):
    platform, _, result = wine_run
    report = result.output_for_node("evaluation_report")
    client = platform.mlflow().client()

    for candidate in report["candidates"].values():
        logged = client.get_run(candidate["mlflow_run_id"]).data.metrics
        assert {f"class_{label}_{name}" for label in CULTIVARS for name in ("precision", "recall")} <= set(logged)
    metadata = next(
        event.materialization.metadata
        for event in result.get_asset_materialization_events()
        if event.asset_key == dg.AssetKey("evaluation_report")
    )
    assert (platform.settings.reports_dir / "batch_0001" / "confusion_matrix.png").stat().st_size > 0
    assert "plot_confusion_matrix" in metadata and "plot_precision_recall_curves" in metadata


def test_the_registered_champion_predicts_the_three_labels(wine_run):
    platform, config, result = wine_run
    training_data = result.output_for_node("training_data")

    champion = platform.mlflow(config).load_model("models:/wine_classifier@champion")

    assert list(champion.classes_) == CULTIVARS
    assert set(champion.predict(training_data.split.x_test)) == set(CULTIVARS)
