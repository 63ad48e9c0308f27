"""The evaluation report's plots in a real pipeline run: on disk, on the winner's MLflow run, in the
asset's metadata, and never a reason for a batch to fail."""

from __future__ import annotations

import base64
import logging

import dagster as dg
import pytest

import ml_platform.defs.evaluation.plots as evaluation_plots
import ml_platform.lib.report_plots as report_plots
from ml_platform.lib.report_plots import BatchOutcome
from ml_platform_tests.conftest import PlatformUnderTest

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BATCH_PLOTS = {"confusion_matrix", "roc_curves", "precision_recall_curves", "feature_importances"}


@pytest.fixture(scope="module")
def two_batches(module_platform: PlatformUnderTest):
    """Two batches run one after the other, with the metrics-over-batches history each run drew."""
    drawn: dict[str, list[BatchOutcome]] = {}

    def recording(outcomes: list[BatchOutcome], metric: str):
        drawn[outcomes[-1].batch] = outcomes
        return report_plots.metrics_over_batches_figure(outcomes, metric)

    batches = module_platform.write_batches(2, rows=1500)
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(evaluation_plots, "metrics_over_batches_figure", recording)
        results = {batch: module_platform.materialize(batch) for batch in batches}
    return module_platform, results, drawn


def report_metadata(result: dg.ExecuteInProcessResult) -> dict:
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey("evaluation_report")]
    return event.materialization.metadata


def test_each_batch_writes_its_plots_and_a_markdown_page_under_reports(two_batches):
    platform, results, _ = two_batches
    for batch in results:
        folder = platform.settings.reports_dir / batch
        for name in BATCH_PLOTS:
            assert (folder / f"{name}.png").read_bytes().startswith(PNG_MAGIC), name
        page = (folder / "evaluation_report.md").read_text()
        assert "![ROC curves](roc_curves.png)" in page
        assert "![Metrics over batches](../metrics_over_batches.png)" in page
    assert (platform.settings.reports_dir / "metrics_over_batches.png").read_bytes().startswith(PNG_MAGIC)


def test_the_winners_mlflow_run_holds_the_plots(two_batches):
    platform, results, _ = two_batches
    client = platform.mlflow().client()
    for result in results.values():
        report = result.output_for_node("evaluation_report")
        winner_run = report["candidates"][report["winner"]]["mlflow_run_id"]
        logged = {artifact.path for artifact in client.list_artifacts(winner_run, "evaluation")}
        expected = {f"evaluation/{name}.png" for name in [*BATCH_PLOTS, "metrics_over_batches"]}
        assert logged == expected | {"evaluation/evaluation_report.md"}
        loser_run = next(c["mlflow_run_id"] for name, c in report["candidates"].items() if name != report["winner"])
        assert client.list_artifacts(loser_run, "evaluation") == []


def test_evaluation_report_metadata_shows_each_plot_as_a_small_inline_image(two_batches):
    _, results, _ = two_batches
    metadata = report_metadata(results["batch_0001"])

    plots = {key.removeprefix("plot_") for key in metadata if key.startswith("plot_")}
    assert plots == BATCH_PLOTS | {"metrics_over_batches"}
    for name in plots:
        markdown = metadata[f"plot_{name}"].value
        assert markdown.startswith(f"![{report_plots.PLOT_TITLES[name]}](data:image/png;base64,")
        png = base64.b64decode(markdown.split(",", 1)[1].removesuffix(")"))
        assert png.startswith(PNG_MAGIC)
        assert len(markdown) < 200_000  # it is stored in Dagster's event log
    assert metadata["report_markdown"].value.endswith("batch_0001/evaluation_report.md")


def test_metrics_over_batches_covers_every_batch_so_far_and_stars_the_first_champion(two_batches):
    _, results, drawn = two_batches
    first = results["batch_0001"].output_for_node("evaluation_report")
    second = results["batch_0002"].output_for_node("evaluation_report")

    assert [outcome.batch for outcome in drawn["batch_0001"]] == ["batch_0001"]
    earlier, current = drawn["batch_0002"]
    assert (earlier.batch, earlier.winner, earlier.decision, earlier.version) == (
        "batch_0001",
        first["winner"],
        "champion",
        "1",
    )
    assert earlier.scores == {name: c["metrics"]["roc_auc"] for name, c in first["candidates"].items()}
    # champion_model decides on batch_0002 after the plot is drawn.
    assert (current.batch, current.winner, current.decision) == ("batch_0002", second["winner"], None)


def test_a_plot_that_fails_is_a_warning_and_the_batch_still_succeeds(
    platform: PlatformUnderTest, monkeypatch: pytest.MonkeyPatch
):
    def broken(*args, **kwargs):
        raise RuntimeError("the plotting library broke")

    monkeypatch.setattr(report_plots, "confusion_matrix_figure", broken)
    (batch,) = platform.write_batches(1, rows=1000)

    result = platform.materialize(batch)

    assert result.success
    assert dg.AssetKey("champion_model") in {e.asset_key for e in result.get_asset_materialization_events()}
    folder = platform.settings.reports_dir / batch
    assert not (folder / "confusion_matrix.png").exists()
    assert (folder / "roc_curves.png").exists()
    assert "plot_confusion_matrix" not in report_metadata(result)
    warnings = [
        entry.user_message for entry in platform.instance.all_logs(result.run_id) if entry.level == logging.WARNING
    ]
    assert any(
        "plot confusion_matrix failed" in message and "the plotting library broke" in message for message in warnings
    )
