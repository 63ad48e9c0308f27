"""Drift: `drift_report`, each batch's features against the champion's training batch and the
previous batch, and the champion's prediction drift (the statistics and the rule: `lib/drift.py`).

Which champion. The asset depends only on `features` and nothing depends on it, so within a run it
may execute before or after the batch's own `champion_model` step. So that this order never changes
the report, it compares with the newest holder of `@champion` (from the alias history) that was
trained on a batch earlier than this one: the champion as it stood before this batch.
"""

import dagster as dg
import pandas as pd
from filelock import FileLock

from ml_platform.defs.partitions import batch_partitions
from ml_platform.defs.training.assets import FEATURES_KEY
from ml_platform.lib.batches import batches_up_to
from ml_platform.lib.config import DriftConfig, PlatformConfig, code_version, fingerprint
from ml_platform.lib.drift import (
    DRIFT,
    DriftAssessment,
    assess_drift,
    assess_prediction_drift,
    drift_report_content,
    drift_table_markdown,
    reference_champion,
    score_columns,
)
from ml_platform.lib.evaluation import predict
from ml_platform.lib.notifications import Notification
from ml_platform.lib.registry import alias_history
from ml_platform.lib.report_plots import drift_psi_figure, image_markdown, to_png
from ml_platform.lib.training import model_feature_columns
from ml_platform.resources.mlflow_tracking import MlflowTrackingResource
from ml_platform.resources.notifier import NotifierResource
from ml_platform.resources.reports import ReportsResource
from ml_platform.resources.warehouse import WarehouseResource

DRIFT_REPORT_KEY = dg.AssetKey("drift_report")
# The reports whose notification was sent, per batch; the newest kept.
NOTIFIED_FILE = "drift_notified"
MAX_NOTIFIED = 20


def build_drift_assets(config: PlatformConfig) -> list[dg.AssetsDefinition]:
    drift = config.drift
    model_name = config.promotion.registered_model_name

    @dg.asset(
        partitions_def=batch_partitions,
        group_name="drift",
        deps=[FEATURES_KEY],
        kinds={"scipy"},
        code_version=code_version(drift),
        description="The batch's features against the champion's training batch and the previous batch (KS or "
        f"chi-squared, and PSI); a feature drifts at PSI >= {drift.psi_threshold:g} and a Bonferroni-corrected "
        f"p < {drift.p_value:g}; above {drift.share_bar:.0%} drifted features the batch has drifted and a "
        "notification goes out. Also the champion's scores on the batch against its training batch.",
    )
    def drift_report(
        context: dg.AssetExecutionContext,
        warehouse: WarehouseResource,
        mlflow: MlflowTrackingResource,
        reports: ReportsResource,
        notifier: NotifierResource,
    ) -> dg.MaterializeResult:
        batch = context.partition_key
        ordered = context.instance.get_dynamic_partitions(batch_partitions.name)
        store = warehouse.warehouse
        features = store.read_table([batch], "features")
        columns = model_feature_columns(features.columns, config.data)
        champion = find_reference_champion(mlflow, model_name, ordered, batch)
        if champion and not store.has_table(champion[1], "features"):
            context.log.warning(f"the champion v{champion[0]}'s batch {champion[1]} has no features any more")
            champion = None
        previous = previous_batch(context, ordered, batch, warehouse)
        references = {
            name: store.read_table([reference], "features")
            for name, reference in (("champion", champion and champion[1]), ("previous_batch", previous))
            if reference
        }
        against = {name: assess_drift(frame, features, columns, drift) for name, frame in references.items()}
        prediction, prediction_assessment = (
            prediction_drift(config, mlflow, champion, references["champion"], features) if champion else (None, None)
        )
        report = drift_report_content(batch, champion, previous, against, prediction, drift)
        path = reports.write_json(batch, "drift_report", report)
        metadata = {
            **{key: report[key] or "none" for key in ("verdict", "reference_batch", "previous_batch", "note")},
            "share_drifted": dg.MetadataValue.float(report["share_drifted"]),
            "drifted_features": ", ".join(report["drifted_features"]) or "none",
            "champion_version": champion[0] if champion else "none",
            "report_file": dg.MetadataValue.path(str(path)),
        }
        if primary := against.get(report["verdict_against"]):
            png = to_png(psi_figure(primary, drift, batch, report["reference_batch"]))
            reports.write_bytes(batch, "drift_psi.png", png)
            metadata["features"] = dg.MetadataValue.md(drift_table_markdown(primary))
            metadata["psi_plot"] = dg.MetadataValue.md(image_markdown("PSI per feature", png))
        if prediction:
            metadata["prediction_drift"] = prediction.get("error") or dg.MetadataValue.md(
                drift_table_markdown(prediction_assessment)
            )
        if report["verdict"] == DRIFT:
            metadata["notified"] = notify_once(context, reports, notifier, report)
        context.log.info(f"{batch}: {report['verdict']} ({report['share_drifted']:.0%} of the features drifted)")
        return dg.MaterializeResult(metadata=metadata)

    return [drift_report]


def find_reference_champion(
    mlflow: MlflowTrackingResource, model_name: str, ordered: list[str], batch: str
) -> tuple[str, str] | None:
    """(version, training batch) of the champion before `batch` (see the module's docstring), or None."""
    store = mlflow.store
    current = store.champion_version(model_name)
    if current is None:
        return None
    client = store.client()
    newest_first = [str(current.version)] + [
        event.version for event in reversed(alias_history(client, model_name, "champion"))
    ]

    def holders():
        seen = set()
        for version in newest_first:
            if version not in seen:
                seen.add(version)
                yield version, client.get_model_version(model_name, version).tags.get("batch")

    return reference_champion(holders(), ordered, batch)


def previous_batch(context: dg.AssetExecutionContext, ordered: list[str], batch: str, warehouse: WarehouseResource):
    """The newest earlier batch whose features are built, or None."""
    ready = context.instance.get_materialized_partitions(FEATURES_KEY)
    earlier = batches_up_to(ordered, batch, ready)[:-1]
    return next((name for name in reversed(earlier) if warehouse.warehouse.has_table(name, "features")), None)


def prediction_drift(
    config: PlatformConfig,
    mlflow: MlflowTrackingResource,
    champion: tuple[str, str],
    reference: pd.DataFrame,
    batch: pd.DataFrame,
) -> tuple[dict, DriftAssessment | None]:
    """The champion's scores (probabilities, or a regression's predictions) on this batch against its
    scores on the rows of its training batch it was not fitted on: on its own training rows a model is
    more confident than on any new row, which would read as drift."""
    version, _ = champion
    model_name = config.promotion.registered_model_name
    store = mlflow.store
    model = store.load_model(f"models:/{model_name}/{version}")
    trained = store.training_ids(store.client().get_model_version(model_name, version).run_id)
    ids = reference[config.data.id_column].astype(str)
    unseen = reference if trained is None else reference[~ids.isin(trained)]
    columns = list(getattr(model, "feature_names_in_", model_feature_columns(batch.columns, config.data)))
    try:
        scores = {
            name: champion_scores(config.data.task, model, frame[columns])
            for name, frame in (("reference", unseen), ("batch", batch))
        }
    except (KeyError, ValueError, TypeError) as error:  # the champion cannot read this batch's columns
        return {
            "error": f"the champion v{version} cannot score these rows: {type(error).__name__}: {error}"[:500]
        }, None
    classes = getattr(model, "classes_", None)
    assessment = assess_prediction_drift(
        score_columns(scores["reference"], classes), score_columns(scores["batch"], classes), config.drift
    )
    return {
        "champion_version": version,
        "reference_rows": len(unseen),
        "reference_rows_are": "every row of the batch"
        if trained is None
        else "the rows the champion was not fitted on",
        "batch_rows": len(batch),
        "drifted": bool(assessment.drifted),
        "assessment": assessment.as_json(),
    }, assessment


def champion_scores(task: str, model, x: pd.DataFrame):
    """Class probabilities for classification (a vector for two classes, a matrix for more), else predictions."""
    predictions = predict(task, model, x)
    return predictions.labels if predictions.scores is None else predictions.scores


def psi_figure(assessment: DriftAssessment, drift: DriftConfig, batch: str, reference: str):
    title = (
        f"{batch} vs {reference}\n{len(assessment.drifted)} of {assessment.assessed} features drifted "
        f"({assessment.share_drifted:.0%}; the bar is {drift.share_bar:.0%})"
    )
    psi = {feature.feature: feature.psi for feature in assessment.features}
    return drift_psi_figure(psi, set(assessment.drifted), drift.psi_threshold, title)


def notify_once(
    context: dg.AssetExecutionContext, reports: ReportsResource, notifier: NotifierResource, report: dict
) -> str:
    """Send the drift notification unless this same report (batch, references, results) was notified
    before: a rerun that finds the same drift says nothing new. The channels' outcomes, or why not sent."""
    batch = report["batch"]
    key = fingerprint(report)
    claims = reports.path_for(batch, f"{NOTIFIED_FILE}.json")
    claims.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{claims}.lock", timeout=30):
        notified = (reports.read_json(batch, NOTIFIED_FILE) or {}).get("reports", [])
        if key in notified:
            skipped = f"not sent again: this report ({key}) was notified before"
            context.log.info(f"drift notification {skipped}")
            return skipped
        reports.write_json(batch, NOTIFIED_FILE, {"reports": [*notified, key][-MAX_NOTIFIED:]})
    outcomes = notifier.notify(drift_notification(report, notifier.run_url(context.run.run_id)), context.log)
    return ", ".join(f"{channel}: {outcome}" for channel, outcome in outcomes.items()) or "log only"


def drift_notification(report: dict, link: str) -> Notification:
    champion, reference = report["champion"], report["reference_batch"]
    thresholds = report["thresholds"]
    prediction = report["prediction_drift"] or {}
    return Notification(
        title=f"Drift: batch {report['batch']} against {reference}",
        severity="warning",
        summary=f"{report['share_drifted']:.0%} of the features drifted (bar {thresholds['share_bar']:.0%}): "
        + ", ".join(report["drifted_features"]),
        fields={
            "batch": report["batch"],
            "reference batch": reference,
            **({"champion": f"v{champion['version']}"} if champion else {}),
            **({"prediction drift": "yes" if prediction["drifted"] else "no"} if "drifted" in prediction else {}),
            "retrain on drift": "on" if thresholds["retrain_on_drift"] else "off",
        },
        link=link,
    )
