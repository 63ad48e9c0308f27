"""Plots for the evaluation report: how the batch's models did, what drove them, how batches compare.

Pure (no Dagster). Each builder takes held-out data or fitted scikit-learn models and returns a
matplotlib `Figure`, so a test can read its title, labels and legend before anything is drawn;
`to_png` renders one. Figures are made on the Agg canvas through the object-oriented API, never
through pyplot: pyplot keeps every figure it opens in a global list until it is closed, and a
long-running process would grow with each batch. These figures are freed like any object.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn import metrics as skm
from sklearn.inspection import permutation_importance
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from ml_platform.lib.evaluation import class_probabilities
from ml_platform.lib.tuning import StudyResult

# 640x480 pixels for a default figure: sharp enough on screen, and a few tens of KB as a PNG, so
# the copy embedded in Dagster's event log stays small.
PNG_DPI = 100
TOP_FEATURES = 15

# What each plot shows, by the name its PNG is saved under.
PLOT_TITLES = {
    "confusion_matrix": "Confusion matrix",
    "roc_curves": "ROC curves",
    "precision_recall_curves": "Precision-recall curves",
    "predicted_vs_actual": "Predicted vs actual",
    "residuals": "Residuals",
    "feature_importances": "Feature importances",
    "metrics_over_batches": "Metrics over batches",
    "objective_over_trials": "Objective over trials",
}

# The scikit-learn scorer for each platform metric, for permutation importances. Error metrics
# are negated by scikit-learn, so "importance" is always how much worse the model gets.
PERMUTATION_SCORING = {
    "roc_auc": "roc_auc",
    "f1": "f1",
    "precision": "precision",
    "recall": "recall",
    "accuracy": "accuracy",
    "rmse": "neg_root_mean_squared_error",
    "mae": "neg_mean_absolute_error",
    "r2": "r2",
}

# The same metrics for more than two classes: macro averages and one-vs-rest ROC AUC, as `metrics_of`.
MULTICLASS_SCORING = {
    "roc_auc": "roc_auc_ovr",
    "f1": "f1_macro",
    "precision": "precision_macro",
    "recall": "recall_macro",
}

# How the winner of a batch is marked over batches, by the champion_model decision for it.
DECISION_MARKERS = {
    "champion": {"marker": "*", "s": 260, "facecolors": "gold", "label": "winner, promoted to champion"},
    "challenger": {"marker": "D", "s": 90, "facecolors": "none", "label": "winner, kept as challenger"},
    None: {"marker": "o", "s": 170, "facecolors": "none", "label": "winner, promotion not decided yet"},
}


def to_png(figure: Figure, dpi: int = PNG_DPI) -> bytes:
    """The figure rendered as PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def model_colors(names) -> dict[str, tuple]:
    """One colour per model, the same in every plot (models in name order over the tab10 palette)."""
    palette = colormaps["tab10"].colors
    return {name: palette[index % len(palette)] for index, name in enumerate(sorted(names))}


def _figure(width: float = 6.4, height: float = 4.8) -> tuple[Figure, Axes]:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


# Classification ---------------------------------------------------------------------------------


def confusion_matrix_figure(y_true, y_pred, model_name: str, target: str, classes: Sequence | None = None) -> Figure:
    """Counts and rates of each (actual, predicted) class pair; a rate is the share of its actual class.

    N x N over `classes` (the target's labels) when given, so a label missing from these rows still
    has its row and column; else over the labels that occur."""
    occurring = np.unique(np.concatenate([np.asarray(y_true), np.asarray(y_pred)]))
    labels = list(classes) if classes is not None else occurring
    counts = skm.confusion_matrix(y_true, y_pred, labels=labels)
    totals = counts.sum(axis=1, keepdims=True)
    rates = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    figure, axes = _figure(5.6, 4.8)
    image = axes.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for row, column in np.ndindex(counts.shape):
        axes.text(
            column,
            row,
            f"{counts[row, column]}\n{rates[row, column]:.1%}",
            ha="center",
            va="center",
            color="white" if rates[row, column] > 0.5 else "black",
        )
    ticks = range(len(labels))
    axes.set_xticks(ticks, [str(label) for label in labels])
    axes.set_yticks(ticks, [str(label) for label in labels])
    axes.set_xlabel(f"predicted {target}")
    axes.set_ylabel(f"actual {target}")
    axes.set_title(f"Confusion matrix: {model_name} (held-out rows)")
    figure.colorbar(image, ax=axes, label="share of the actual class")
    return figure


def roc_curves_figure(y_true, positive_scores: Mapping[str, np.ndarray], winner: str, positive_label=1) -> Figure:
    """Every candidate's ROC curve on one axes, AUC in the legend, the winner drawn bold.

    All candidates rather than the winner alone: the report is a comparison, and where the
    curves cross says more than the one number that picked the winner.
    """
    figure, axes = _figure()
    colors = model_colors(positive_scores)
    for name, scores in sorted(positive_scores.items()):
        false_positives, true_positives, _ = skm.roc_curve(y_true, scores, pos_label=positive_label)
        auc = skm.auc(false_positives, true_positives)
        axes.plot(
            false_positives,
            true_positives,
            color=colors[name],
            **_emphasis(name == winner),
            label=f"{_label(name, winner)}: AUC {auc:.3f}",
        )
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance: AUC 0.500")
    axes.set_xlabel("false positive rate")
    axes.set_ylabel("true positive rate")
    axes.set_title("ROC curves on the held-out rows")
    axes.legend(loc="lower right")
    return figure


def precision_recall_figure(y_true, positive_scores: Mapping[str, np.ndarray], winner: str, positive_label=1) -> Figure:
    """Every candidate's precision-recall curve on one axes, average precision in the legend, the
    winner drawn bold; the dashed line is the positive rate, what guessing achieves."""
    figure, axes = _figure()
    colors = model_colors(positive_scores)
    for name, scores in sorted(positive_scores.items()):
        precision, recall, _ = skm.precision_recall_curve(y_true, scores, pos_label=positive_label)
        average = skm.average_precision_score(y_true, scores, pos_label=positive_label)
        axes.step(
            recall,
            precision,
            where="post",
            color=colors[name],
            **_emphasis(name == winner),
            label=f"{_label(name, winner)}: AP {average:.3f}",
        )
    positive_rate = float(np.mean(np.asarray(y_true) == positive_label))
    axes.axhline(positive_rate, linestyle="--", color="grey", linewidth=1, label=f"no skill: AP {positive_rate:.3f}")
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_ylim(0, 1.02)
    axes.set_title("Precision-recall curves on the held-out rows")
    axes.legend(loc="best")
    return figure


def per_class_roc_figure(y_true, probabilities: np.ndarray, classes: Sequence, model_name: str) -> Figure:
    """Multi-class: the model's one-vs-rest ROC curve of each label (that label against all the
    others, ranked by its probability column), AUC in the legend. A label absent from the rows has no curve."""
    figure, axes = _figure()
    for column, label in _labels_present(y_true, classes):
        false_positives, true_positives, _ = skm.roc_curve(np.asarray(y_true) == label, probabilities[:, column])
        auc = skm.auc(false_positives, true_positives)
        axes.plot(false_positives, true_positives, linewidth=1.8, label=f"{label}: AUC {auc:.3f}")
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance: AUC 0.500")
    axes.set_xlabel("false positive rate")
    axes.set_ylabel("true positive rate")
    axes.set_title(f"ROC curves per class (one vs rest): {model_name}")
    axes.legend(loc="lower right")
    return figure


def per_class_precision_recall_figure(y_true, probabilities: np.ndarray, classes: Sequence, model_name: str) -> Figure:
    """Multi-class: the model's precision-recall curve of each label against the others, average
    precision in the legend: where a rare class's poor recall shows, which a macro average hides."""
    figure, axes = _figure()
    for column, label in _labels_present(y_true, classes):
        actual = np.asarray(y_true) == label
        precision, recall, _ = skm.precision_recall_curve(actual, probabilities[:, column])
        average = skm.average_precision_score(actual, probabilities[:, column])
        axes.step(recall, precision, where="post", linewidth=1.8, label=f"{label}: AP {average:.3f}")
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_ylim(0, 1.02)
    axes.set_title(f"Precision-recall curves per class: {model_name}")
    axes.legend(loc="best")
    return figure


def _labels_present(y_true, classes: Sequence) -> list[tuple[int, object]]:
    """(column, label) of each label in `classes` that occurs in `y_true` without being all of it."""
    truth = np.asarray(y_true)
    return [(column, label) for column, label in enumerate(classes) if 0 < np.sum(truth == label) < len(truth)]


def _emphasis(is_winner: bool) -> dict:
    return {"linewidth": 2.8, "zorder": 3} if is_winner else {"linewidth": 1.2, "alpha": 0.75, "zorder": 2}


def _label(name: str, winner: str) -> str:
    return f"{name} (winner)" if name == winner else name


# Regression -------------------------------------------------------------------------------------


def predicted_vs_actual_figure(y_true, y_pred, model_name: str, target: str) -> Figure:
    """One point per held-out row; on the identity line a prediction is exact."""
    actual, predicted = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    figure, axes = _figure()
    axes.scatter(actual, predicted, s=12, alpha=0.5, label="held-out rows")
    low, high = float(min(actual.min(), predicted.min())), float(max(actual.max(), predicted.max()))
    axes.plot([low, high], [low, high], linestyle="--", color="black", linewidth=1, label="predicted = actual")
    axes.set_xlabel(f"actual {target}")
    axes.set_ylabel(f"predicted {target}")
    axes.set_title(f"Predicted vs actual: {model_name}")
    axes.legend(loc="upper left")
    return figure


def residuals_figure(y_true, y_pred, model_name: str, target: str) -> Figure:
    """Residual (actual - predicted) against the prediction: a shape or a funnel here is an error the
    model makes systematically."""
    actual, predicted = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    figure, axes = _figure()
    axes.scatter(predicted, actual - predicted, s=12, alpha=0.5, label="held-out rows")
    axes.axhline(0, linestyle="--", color="black", linewidth=1, label="no error")
    axes.set_xlabel(f"predicted {target}")
    axes.set_ylabel(f"residual: actual - predicted {target}")
    axes.set_title(f"Residuals: {model_name}")
    axes.legend(loc="upper left")
    return figure


def score_histogram_figure(scores, label: str, title: str) -> Figure:
    """How a model's scores (or predicted values) are spread over the rows it scored."""
    values = np.asarray(scores, dtype=float)
    figure, axes = _figure(6.4, 3.6)
    axes.hist(values, bins=30, color=colormaps["tab10"].colors[0], edgecolor="white")
    axes.set_xlabel(label)
    axes.set_ylabel("rows")
    axes.set_title(title)
    return figure


# Feature importances ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureImportances:
    values: pd.Series  # by feature name, largest first
    method: str  # "feature_importances_", "coef_" or "permutation"
    measure: str  # what a value means, in words for the axis


def feature_importances(
    pipeline: Pipeline,
    x: pd.DataFrame,
    y: pd.Series,
    metric: str | None = None,
    random_state: int = 0,
    multiclass: bool = False,
) -> FeatureImportances:
    """What the fitted Pipeline's estimator leans on.

    The estimator's own `feature_importances_` (trees) or `coef_` magnitudes (linear models) are
    free and name the transformed features (`tenure_months`, `region_north`). An estimator with
    neither (histogram gradient boosting) gets permutation importances on the held-out rows `x`,
    `y`: how much worse `metric` gets when one input column is shuffled, seeded by `random_state`.
    """
    estimator = pipeline[-1]
    if hasattr(estimator, "feature_importances_"):
        values = np.asarray(estimator.feature_importances_, dtype=float)
        return _importances(
            values,
            transformed_feature_names(pipeline, x),
            "feature_importances_",
            "importance (the model's feature_importances_)",
        )
    if hasattr(estimator, "coef_"):
        # Multi-class models have a row of coefficients per class: the mean size is how much a feature matters.
        values = np.abs(np.atleast_2d(np.asarray(estimator.coef_, dtype=float))).mean(axis=0)
        return _importances(
            values, transformed_feature_names(pipeline, x), "coef_", "|coefficient| on the transformed feature"
        )
    scoring = ({**PERMUTATION_SCORING, **MULTICLASS_SCORING} if multiclass else PERMUTATION_SCORING).get(metric)
    # Fifty predictions on a few hundred rows: OpenMP's threads cost more to start than they save
    # (measured 5 s with them, 1.3 s without, on 2 shared cores).
    with threadpool_limits(limits=1):
        result = permutation_importance(pipeline, x, y, scoring=scoring, n_repeats=5, random_state=random_state)
    worse = f"how much worse {metric} gets" if metric else "how much the score drops"
    return _importances(result.importances_mean, list(x.columns), "permutation", f"{worse} when shuffled")


def _importances(values: np.ndarray, names: list[str], method: str, measure: str) -> FeatureImportances:
    if len(values) != len(names):
        raise ValueError(f"{len(values)} importances for {len(names)} feature names")
    return FeatureImportances(pd.Series(values, index=names).sort_values(ascending=False), method, measure)


def transformed_feature_names(pipeline: Pipeline, x: pd.DataFrame) -> list[str]:
    """The names of the columns the estimator sees, without the ColumnTransformer's `numeric__`
    prefixes (kept when dropping them would make two names the same)."""
    if len(pipeline) > 1:
        names = [str(name) for name in pipeline[:-1].get_feature_names_out()]
    else:
        names = [str(name) for name in getattr(pipeline[-1], "feature_names_in_", x.columns)]
    short = [name.split("__", 1)[-1] for name in names]
    return short if len(set(short)) == len(short) else names


def feature_importances_figure(importances: FeatureImportances, model_name: str, top: int = TOP_FEATURES) -> Figure:
    """The `top` most important features as horizontal bars, the largest at the top."""
    shown = importances.values.head(top).iloc[::-1]
    figure, axes = _figure(6.4, max(3.0, 1.2 + 0.3 * len(shown)))
    axes.barh(list(shown.index), shown.to_numpy(), color="tab:blue")
    axes.set_xlabel(importances.measure)
    axes.set_ylabel("feature")
    axes.set_title(f"Top {len(shown)} features: {model_name}")
    return figure


# The batch's plots ------------------------------------------------------------------------------


def evaluation_plot_builders(
    task: str,
    models: Mapping[str, Pipeline],
    winner: str,
    x_test: pd.DataFrame,
    y_test: pd.Series,
    target: str,
    metric: str,
    random_state: int = 0,
    classes: Sequence | None = None,
) -> dict[str, Callable[[], Figure]]:
    """The batch's plots, by the name each is saved under, each a function that draws it, so a
    caller can draw them one at a time and lose only the one that fails.

    Classification: the winner's confusion matrix, every candidate's ROC and precision-recall
    curves; multi-class (more than two `classes`, the target's labels): the winner's N x N
    confusion matrix and its ROC and precision-recall curve per class. Regression: the winner's
    predicted vs actual and residuals. All: the winner's feature importances. `models` are the
    fitted candidates by name.
    """
    model = models[winner]
    builders: dict[str, Callable[[], Figure]] = {}
    multiclass = task == "classification" and classes is not None and len(classes) > 2
    if multiclass:

        def probabilities() -> np.ndarray:
            return class_probabilities(model, x_test, classes)

        builders["confusion_matrix"] = lambda: confusion_matrix_figure(
            y_test, model.predict(x_test), winner, target, classes
        )
        builders["roc_curves"] = lambda: per_class_roc_figure(y_test, probabilities(), classes, winner)
        builders["precision_recall_curves"] = lambda: per_class_precision_recall_figure(
            y_test, probabilities(), classes, winner
        )
    elif task == "classification":
        # The positive class is the last of the target's labels (scikit-learn's classes_[1] without them).
        positive = classes[-1] if classes is not None else model.classes_[1]

        def curves(draw: Callable[..., Figure]) -> Figure:
            scores = {name: class_probabilities(c, x_test, [positive])[:, 0] for name, c in models.items()}
            return draw(y_test, scores, winner, positive_label=positive)

        builders["confusion_matrix"] = lambda: confusion_matrix_figure(y_test, model.predict(x_test), winner, target)
        builders["roc_curves"] = lambda: curves(roc_curves_figure)
        builders["precision_recall_curves"] = lambda: curves(precision_recall_figure)
    else:
        builders["predicted_vs_actual"] = lambda: predicted_vs_actual_figure(
            y_test, model.predict(x_test), winner, target
        )
        builders["residuals"] = lambda: residuals_figure(y_test, model.predict(x_test), winner, target)
    builders["feature_importances"] = lambda: feature_importances_figure(
        feature_importances(model, x_test, y_test, metric, random_state, multiclass), winner
    )
    return builders


# Across batches ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchOutcome:
    """One batch's evaluation, as the metrics-over-batches plot needs it."""

    batch: str
    scores: dict[str, float]  # each candidate's primary metric on the batch's held-out rows
    winner: str
    decision: str | None  # champion_model's alias for the winner; None before it has decided
    version: str | None = None  # the winner's model version in the registry, once registered


def batch_outcome(report: Mapping, metric: str, decision: str | None, version: str | None = None) -> BatchOutcome:
    """A batch's outcome from its evaluation report (the `evaluation_report.json` dict). Candidates
    without `metric` (a report from before the primary metric changed) are left out."""
    scores = {
        name: float(candidate["metrics"][metric])
        for name, candidate in report["candidates"].items()
        if metric in candidate["metrics"]
    }
    return BatchOutcome(report["batch"], scores, report["winner"], decision, version)


def metrics_over_batches_figure(outcomes: list[BatchOutcome], metric: str) -> Figure:
    """Each candidate's `metric` batch after batch (in the order given), one line per model, and each
    batch's winner marked by what happened to it: a star when it became the champion."""
    if not outcomes:
        raise ValueError("no batches to plot")
    figure, axes = _figure(max(6.4, 1.2 + 0.7 * len(outcomes)), 4.8)
    models = sorted({name for outcome in outcomes for name in outcome.scores})
    colors = model_colors(models)
    for name in models:
        points = [(x, outcome.scores[name]) for x, outcome in enumerate(outcomes) if name in outcome.scores]
        axes.plot(*zip(*points, strict=True), marker="o", markersize=4, color=colors[name], label=name)
    for decision, style in DECISION_MARKERS.items():
        winners = [
            (x, outcome.scores[outcome.winner])
            for x, outcome in enumerate(outcomes)
            if outcome.decision == decision and outcome.winner in outcome.scores
        ]
        if winners:
            axes.scatter(*zip(*winners, strict=True), edgecolors="black", linewidths=1.2, zorder=4, **style)
    for x, outcome in enumerate(outcomes):
        if outcome.version is not None and outcome.winner in outcome.scores:
            axes.annotate(
                f"v{outcome.version}",
                (x, outcome.scores[outcome.winner]),
                xytext=(8, 8),
                textcoords="offset points",
                fontsize=8,
            )
    axes.set_xticks(
        range(len(outcomes)), [outcome.batch for outcome in outcomes], rotation=30 if len(outcomes) > 6 else 0
    )
    axes.set_xlabel("batch, in the order added")
    axes.set_ylabel(f"{metric} on the batch's held-out rows")
    axes.set_title(f"{metric} per batch, every candidate")
    axes.margins(x=0.08, y=0.12)
    axes.legend(loc="best", fontsize=8)
    return figure


# Tuning -----------------------------------------------------------------------------------------


def objective_over_trials_figure(study: StudyResult) -> Figure:
    """Each trial's objective in the order the trials ran, failed ones left out, and the best so
    far as a step line: where it flattens, more trials stopped paying."""
    figure, axes = _figure()
    completed = study.completed
    axes.scatter(
        [trial.number for trial in completed], [trial.value for trial in completed], s=18, label="trial", zorder=3
    )
    best_so_far = zip(study.trials, study.best_so_far(), strict=True)
    line = [(trial.number, best) for trial, best in best_so_far if best is not None]
    axes.step(*zip(*line, strict=True), where="post", color="black", label="best so far")
    best = study.best
    axes.scatter([best.number], [best.value], marker="*", s=220, color="gold", edgecolors="black", zorder=4)
    axes.set_xlabel("trial")
    axes.set_ylabel(f"{study.metric} ({study.mode})")
    axes.set_title(f"{study.model_type}: {study.metric} over {len(study.trials)} trials")
    axes.legend(loc="best", fontsize=8)
    return figure


def image_markdown(title: str, png: bytes) -> str:
    """Markdown showing `png` inline, as a data URI: no file or server needed to see it."""
    return f"![{title}](data:image/png;base64,{base64.b64encode(png).decode()})"


def evaluation_markdown(report: Mapping, metrics_table: str, images: Mapping[str, str]) -> str:
    """`evaluation_report.md`: the batch's winner, the metrics table and the plots, linked by the
    relative paths in `images` (plot name to path), so the page reads the same wherever it is copied."""
    lines = [
        f"# Evaluation of batch {report['batch']}",
        "",
        f"Winner by {report['primary_metric']} ({report['mode']}): **{report['winner']}**",
        "",
        metrics_table,
    ]
    for name, path in images.items():
        lines += ["", f"## {PLOT_TITLES.get(name, name)}", "", f"![{PLOT_TITLES.get(name, name)}]({path})"]
    return "\n".join(lines) + "\n"


# Drift ------------------------------------------------------------------------------------------


def drift_psi_figure(psi: Mapping[str, float | None], drifted: set[str], psi_threshold: float, title: str) -> Figure:
    """Each feature's PSI as a horizontal bar (red when it drifted, grey when it had too few rows to
    judge, drawn at 0) and the PSI threshold as a dashed line, features in the order given."""
    names = list(psi)[::-1]
    values = [psi[name] or 0.0 for name in names]
    colors = ["tab:red" if name in drifted else "tab:blue" if psi[name] is not None else "tab:gray" for name in names]
    figure, axes = _figure(6.4, max(3.0, 1.2 + 0.3 * len(names)))
    axes.barh(names, values, color=colors)
    axes.axvline(psi_threshold, color="black", linestyle="--", label=f"PSI threshold {psi_threshold:g}")
    axes.set_xlabel("population stability index (PSI)")
    axes.set_ylabel("feature")
    axes.set_title(title)
    axes.legend(loc="lower right", fontsize=8)
    return figure
