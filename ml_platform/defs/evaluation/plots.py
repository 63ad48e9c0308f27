"""The evaluation report's pictures: drawn by `lib.report_plots`, saved under `reports/`, logged on the
winner's MLflow run and shown in the Dagster UI.

How the UI shows them: Dagster has no image metadata type, but its markdown renderer
(`MarkdownWithPlugins` in dagster-webserver 1.13) sanitises with rehype-sanitize extended to allow
`data:` image sources, and the page's CSP sets no `img-src`. So `![title](data:image/png;base64,...)`
in a `MetadataValue.md` shows the picture itself, with no file server and no path that only the
machine that ran the step can open. A markdown value over 1,000 characters shows as a
"[Show Markdown]" link on the asset's page that opens the picture in a dialog. The PNGs stay small
(`PNG_DPI`: tens of KB each), since metadata lives in the event log.
"""

import contextlib
from collections.abc import Iterator
from pathlib import Path

import dagster as dg

from ml_platform.defs.partitions import batch_partitions
from ml_platform.defs.training.assets import TrainingData
from ml_platform.lib.config import PlatformConfig
from ml_platform.lib.provenance import provenance_tags
from ml_platform.lib.report_plots import (
    PLOT_TITLES,
    BatchOutcome,
    batch_outcome,
    evaluation_markdown,
    evaluation_plot_builders,
    image_markdown,
    metrics_over_batches_figure,
    to_png,
)
from ml_platform.resources.clearml_tracking import ClearMLTrackingResource
from ml_platform.resources.mlflow_tracking import MlflowTrackingResource
from ml_platform.resources.reports import ReportsResource

CHAMPION_KEY = dg.AssetKey("champion_model")
METRICS_OVER_BATCHES = "metrics_over_batches"
# The folder of the winner's MLflow run that holds the plots.
ARTIFACT_PATH = "evaluation"


def publish_evaluation_plots(
    context: dg.AssetExecutionContext,
    config: PlatformConfig,
    report: dict,
    metrics_table: str,
    training_data: TrainingData,
    reports: ReportsResource,
    mlflow: MlflowTrackingResource,
    clearml: ClearMLTrackingResource,
) -> dict[str, dg.MetadataValue]:
    """Draw the batch's plots and the metrics over batches, write them with `evaluation_report.md`
    under `reports/<batch>/`, log them on the winner's run (and to ClearML's evaluation task of the
    batch when `tracking.backends` lists it), and return the metadata showing them.

    A plot that fails is left out with a warning, and so are the files or a tracker's copy if
    writing them fails: a broken picture is not worth losing a trained batch.
    """
    batch = context.partition_key
    metric = config.promotion.primary_metric
    pngs: dict[str, bytes] = {}
    builders = {}
    with _warn_on_failure(context, "loading the candidates from MLflow for the plots"):
        models = {name: mlflow.store.load_model(c["model_uri"]) for name, c in report["candidates"].items()}
        split = training_data.split
        builders = evaluation_plot_builders(
            config.data.task,
            models,
            report["winner"],
            split.x_test,
            split.y_test,
            config.data.target,
            metric,
            config.training.random_state,
            config.data.classes,
        )
    for name, build in builders.items():
        with _warn_on_failure(context, f"plot {name}"):
            pngs[name] = to_png(build())
    with _warn_on_failure(context, f"plot {METRICS_OVER_BATCHES}"):
        history = batch_history(context.instance, reports, report, metric)
        pngs[METRICS_OVER_BATCHES] = to_png(metrics_over_batches_figure(history, metric))
    if not pngs:
        return {}

    files: list[Path] = []
    markdown_file = None
    with _warn_on_failure(context, "writing the plots under reports/"):
        # The metrics over batches is about every batch: it goes beside the batches' folders.
        for name, png in pngs.items():
            files.append(reports.write_bytes(None if name == METRICS_OVER_BATCHES else batch, f"{name}.png", png))
        relative = {name: f"../{name}.png" if name == METRICS_OVER_BATCHES else f"{name}.png" for name in pngs}
        markdown_file = reports.write_bytes(
            batch, "evaluation_report.md", evaluation_markdown(report, metrics_table, relative).encode()
        )
        files.append(markdown_file)
    if files:
        with _warn_on_failure(context, "logging the plots on the winner's MLflow run"):
            winner_run = report["candidates"][report["winner"]]["mlflow_run_id"]
            mlflow.store.log_artifacts(winner_run, files, artifact_path=ARTIFACT_PATH)
    if files and "clearml" in config.tracking.backends:
        with _warn_on_failure(context, "logging the plots to ClearML"):
            tags = {"dagster.partition": batch, **provenance_tags(training_data.data_hash, config)}
            task_id = clearml.store.log_evaluation(batch, report["winner"], files, tags)
            context.log.info(f"evaluation plots logged to ClearML (task {task_id})")
    metadata = {
        f"plot_{name}": dg.MetadataValue.md(image_markdown(PLOT_TITLES[name], png)) for name, png in pngs.items()
    }
    if markdown_file is not None:
        metadata["report_markdown"] = dg.MetadataValue.path(str(markdown_file))
    return metadata


def batch_history(
    instance: dg.DagsterInstance, reports: ReportsResource, report: dict, metric: str
) -> list[BatchOutcome]:
    """Every batch up to this report's, in partition order, that has an evaluation report, with the
    champion_model decision on its winner. This batch's is not made yet: champion_model runs next."""
    batch = report["batch"]
    ordered = instance.get_dynamic_partitions(batch_partitions.name)
    earlier = ordered[: ordered.index(batch)] if batch in ordered else []
    history = []
    for batch_id in earlier:
        earlier_report = reports.read_json(batch_id, "evaluation_report")
        if earlier_report is None:  # rejected at ingestion, or not evaluated yet
            continue
        history.append(batch_outcome(earlier_report, metric, *champion_decision(instance, batch_id)))
    return [*history, batch_outcome(report, metric, None)]


def champion_decision(instance: dg.DagsterInstance, batch_id: str) -> tuple[str | None, str | None]:
    """The alias and model version champion_model last gave the winner of `batch_id`, or (None, None)."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=CHAMPION_KEY, asset_partitions=[batch_id]), limit=1
    ).records
    if not records:
        return None, None
    metadata = records[0].asset_materialization.metadata
    alias, version = metadata.get("alias"), metadata.get("version")
    return (alias.value if alias else None), (str(version.value) if version else None)


@contextlib.contextmanager
def _warn_on_failure(context: dg.AssetExecutionContext, what: str) -> Iterator[None]:
    """Turn a failure of `what` into a warning in the run's logs. Any exception: matplotlib,
    scikit-learn, MLflow and the file system each raise their own kinds, and none of them is
    worth failing a batch whose models are already trained and logged."""
    try:
        yield
    except Exception as error:
        context.log.warning(f"{what} failed, left out of the report: {type(error).__name__}: {error}")
