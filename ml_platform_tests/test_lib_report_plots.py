"""The report's plots: each one readable at a glance (title, axis labels, legend) and a small PNG."""

from __future__ import annotations

import base64

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from ml_platform.lib.report_plots import (
    BatchOutcome,
    FeatureImportances,
    batch_outcome,
    confusion_matrix_figure,
    evaluation_markdown,
    evaluation_plot_builders,
    feature_importances,
    feature_importances_figure,
    image_markdown,
    metrics_over_batches_figure,
    precision_recall_figure,
    predicted_vs_actual_figure,
    residuals_figure,
    roc_curves_figure,
    to_png,
)
from ml_platform.lib.training import build_pipeline

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def churn_like(n_rows: int = 400, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    """A label driven by `tenure` and the `contract` category; `noise` carries nothing."""
    rng = np.random.default_rng(seed)
    tenure = rng.uniform(0, 60, n_rows)
    contract = rng.choice(["monthly", "yearly"], n_rows)
    noise = rng.normal(size=n_rows)
    risk = -0.08 * tenure + 2.0 * (contract == "monthly") + rng.normal(scale=0.5, size=n_rows)
    x = pd.DataFrame({"tenure": tenure, "contract": contract, "noise": noise})
    return x, pd.Series((risk > np.median(risk)).astype(int), name="churned")


def priced(n_rows: int = 400, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    """A price that follows `products` and the `plan`; `noise` carries nothing."""
    rng = np.random.default_rng(seed)
    products = rng.integers(1, 5, n_rows).astype(float)
    plan = rng.choice(["basic", "premium"], n_rows)
    noise = rng.normal(size=n_rows)
    price = 10 * products + 25 * (plan == "premium") + rng.normal(scale=2, size=n_rows)
    return pd.DataFrame({"products": products, "plan": plan, "noise": noise}), pd.Series(price, name="price")


def fitted(task: str, model_type: str, x: pd.DataFrame, y: pd.Series, **params):
    return build_pipeline(task, model_type, params, x, random_state=0).fit(x, y)


def legend_texts(axes) -> list[str]:
    return [text.get_text() for text in axes.get_legend().get_texts()]


def line_labelled(axes, prefix: str):
    (line,) = [line for line in axes.get_lines() if line.get_label().startswith(prefix)]
    return line


@pytest.fixture(scope="module")
def classifiers():
    x, y = churn_like()
    models = {
        "forest": fitted("classification", "random_forest", x, y, n_estimators=20, max_depth=4),
        "linear": fitted("classification", "logistic_regression", x, y),
    }
    return models, x, y


def test_every_plot_of_a_batch_is_a_small_png():
    cases = [
        ("classification", churn_like, "logistic_regression"),
        ("regression", priced, "ridge"),
    ]
    for task, data, model_type in cases:
        x, y = data()
        models = {"only": fitted(task, model_type, x, y)}
        builders = evaluation_plot_builders(
            task, models, "only", x, y, y.name, "roc_auc" if task == "classification" else "rmse"
        )
        for name, build in builders.items():
            png = to_png(build())
            assert png.startswith(PNG_MAGIC), name
            assert 5_000 < len(png) < 200_000, name  # a picture, and small enough for Dagster's event log


def test_a_batch_gets_the_plots_of_its_task():
    x, y = churn_like()
    classifier = {"m": fitted("classification", "logistic_regression", x, y)}
    x_r, y_r = priced()
    regressor = {"m": fitted("regression", "ridge", x_r, y_r)}

    assert list(evaluation_plot_builders("classification", classifier, "m", x, y, "churned", "roc_auc")) == [
        "confusion_matrix",
        "roc_curves",
        "precision_recall_curves",
        "feature_importances",
    ]
    assert list(evaluation_plot_builders("regression", regressor, "m", x_r, y_r, "price", "rmse")) == [
        "predicted_vs_actual",
        "residuals",
        "feature_importances",
    ]


def test_confusion_matrix_shows_counts_and_the_share_of_each_actual_class():
    figure = confusion_matrix_figure([0, 0, 0, 1, 1], [0, 1, 0, 1, 1], "forest", "churned")
    axes = figure.axes[0]

    cells = sorted(text.get_text() for text in axes.texts)
    assert cells == ["0\n0.0%", "1\n33.3%", "2\n100.0%", "2\n66.7%"]
    assert [label.get_text() for label in axes.get_xticklabels()] == ["0", "1"]
    assert [label.get_text() for label in axes.get_yticklabels()] == ["0", "1"]
    assert axes.get_xlabel() == "predicted churned" and axes.get_ylabel() == "actual churned"
    assert "forest" in axes.get_title()


def test_roc_curves_show_every_candidate_with_its_auc_and_the_winner_bold(classifiers):
    models, x, y = classifiers
    scores = {name: model.predict_proba(x)[:, 1] for name, model in models.items()}

    axes = roc_curves_figure(y, scores, winner="linear").axes[0]

    forest_auc = skm.roc_auc_score(y, scores["forest"])
    assert f"forest: AUC {forest_auc:.3f}" in legend_texts(axes)
    assert any(text.startswith("linear (winner): AUC") for text in legend_texts(axes))
    assert "chance: AUC 0.500" in legend_texts(axes)
    assert line_labelled(axes, "linear").get_linewidth() > line_labelled(axes, "forest").get_linewidth()
    assert axes.get_xlabel() == "false positive rate" and axes.get_ylabel() == "true positive rate"
    assert axes.get_title()


def test_precision_recall_curves_show_average_precision_and_the_no_skill_line(classifiers):
    models, x, y = classifiers
    scores = {name: model.predict_proba(x)[:, 1] for name, model in models.items()}

    axes = precision_recall_figure(y, scores, winner="forest").axes[0]

    average = skm.average_precision_score(y, scores["forest"])
    assert f"forest (winner): AP {average:.3f}" in legend_texts(axes)
    assert f"no skill: AP {y.mean():.3f}" in legend_texts(axes)
    assert line_labelled(axes, "forest").get_linewidth() > line_labelled(axes, "linear").get_linewidth()
    assert axes.get_xlabel() == "recall" and axes.get_ylabel() == "precision"


def test_predicted_vs_actual_draws_the_identity_line():
    axes = predicted_vs_actual_figure([1.0, 2.0, 5.0], [1.5, 2.0, 4.0], "ridge", "price").axes[0]

    identity = line_labelled(axes, "predicted = actual")
    assert list(identity.get_xdata()) == list(identity.get_ydata()) == [1.0, 5.0]
    assert axes.get_xlabel() == "actual price" and axes.get_ylabel() == "predicted price"
    assert "ridge" in axes.get_title()
    assert legend_texts(axes) == ["held-out rows", "predicted = actual"]


def test_residuals_are_actual_minus_predicted_around_a_zero_line():
    axes = residuals_figure([1.0, 2.0, 5.0], [1.5, 2.0, 4.0], "ridge", "price").axes[0]

    (points,) = axes.collections
    assert points.get_offsets().tolist() == [[1.5, -0.5], [2.0, 0.0], [4.0, 1.0]]
    assert list(line_labelled(axes, "no error").get_ydata()) == [0, 0]
    assert axes.get_xlabel() == "predicted price" and "residual" in axes.get_ylabel()


def test_tree_importances_name_the_transformed_features():
    x, y = churn_like()
    forest = fitted("classification", "random_forest", x, y, n_estimators=30, max_depth=5)

    importances = feature_importances(forest, x, y)

    assert importances.method == "feature_importances_"
    assert set(importances.values.index) == {"tenure", "noise", "contract_monthly", "contract_yearly"}
    assert importances.values.index[0] == "tenure"
    assert importances.values.is_monotonic_decreasing


def test_linear_importances_are_coefficient_sizes_by_transformed_feature():
    x, y = churn_like()
    linear = fitted("classification", "logistic_regression", x, y)

    importances = feature_importances(linear, x, y)

    assert importances.method == "coef_"
    coefficients = dict(
        zip(["tenure", "noise", "contract_monthly", "contract_yearly"], linear[-1].coef_[0], strict=True)
    )
    assert importances.values.to_dict() == pytest.approx({name: abs(c) for name, c in coefficients.items()})
    assert importances.values["noise"] < importances.values["tenure"]


def test_an_estimator_without_importances_gets_seeded_permutation_importances_by_input_column():
    x, y = priced()
    boosting = fitted("regression", "gradient_boosting", x, y, max_iter=30)

    first = feature_importances(boosting, x, y, metric="rmse", random_state=3)
    again = feature_importances(boosting, x, y, metric="rmse", random_state=3)

    assert first.method == "permutation"
    assert set(first.values.index) == {"products", "plan", "noise"}
    assert first.values.index[-1] == "noise"  # shuffling pure noise costs (almost) nothing
    assert first.values["products"] > 1  # shuffling the product count makes rmse worse by whole units
    assert "rmse" in first.measure
    pd.testing.assert_series_equal(first.values, again.values)


def test_importance_chart_shows_the_top_15_with_the_largest_at_the_top():
    values = pd.Series(np.arange(20, 0, -1, dtype=float), index=[f"f{i}" for i in range(20)])
    importances = FeatureImportances(values, "coef_", "|coefficient| on the transformed feature")

    axes = feature_importances_figure(importances, "linear").axes[0]

    (bars,) = axes.containers
    assert len(bars) == 15
    labels = [label.get_text() for label in axes.get_yticklabels()]
    assert labels[-1] == "f0" and labels[0] == "f14"  # horizontal bars are drawn bottom up
    assert axes.get_xlabel() == "|coefficient| on the transformed feature" and axes.get_ylabel() == "feature"
    assert axes.get_title() == "Top 15 features: linear"


def history() -> list[BatchOutcome]:
    return [
        BatchOutcome("batch_0001", {"forest": 0.80, "linear": 0.82}, "linear", "champion", "1"),
        BatchOutcome("batch_0002", {"forest": 0.81, "linear": 0.79}, "forest", "challenger", "2"),
        BatchOutcome("batch_0003", {"forest": 0.86, "linear": 0.80}, "forest", "champion", "3"),
        BatchOutcome("batch_0004", {"forest": 0.84, "linear": 0.83}, "forest", None),
    ]


def test_metrics_over_batches_draws_each_model_batch_after_batch():
    axes = metrics_over_batches_figure(history(), "roc_auc").axes[0]

    assert [label.get_text() for label in axes.get_xticklabels()] == [
        "batch_0001",
        "batch_0002",
        "batch_0003",
        "batch_0004",
    ]
    assert list(line_labelled(axes, "forest").get_ydata()) == [0.80, 0.81, 0.86, 0.84]
    assert list(line_labelled(axes, "linear").get_ydata()) == [0.82, 0.79, 0.80, 0.83]
    assert "roc_auc" in axes.get_ylabel() and "roc_auc" in axes.get_title()
    assert {"forest", "linear"} <= set(legend_texts(axes))


def test_metrics_over_batches_stars_the_batches_whose_winner_became_champion():
    axes = metrics_over_batches_figure(history(), "roc_auc").axes[0]

    marked = {collection.get_label(): collection.get_offsets().tolist() for collection in axes.collections}
    assert marked["winner, promoted to champion"] == [[0, 0.82], [2, 0.86]]
    assert marked["winner, kept as challenger"] == [[1, 0.81]]
    assert marked["winner, promotion not decided yet"] == [[3, 0.84]]
    assert "winner, promoted to champion" in legend_texts(axes)
    assert [text.get_text() for text in axes.texts] == ["v1", "v2", "v3"]


def test_batch_outcome_reads_an_evaluation_report_and_skips_models_without_the_metric():
    report = {
        "batch": "batch_0007",
        "winner": "forest",
        "candidates": {
            "forest": {"metrics": {"roc_auc": 0.9, "f1": 0.5}},
            "older": {"metrics": {"f1": 0.4}},  # scored before roc_auc was the primary metric
        },
    }

    outcome = batch_outcome(report, "roc_auc", "challenger", "4")

    assert outcome == BatchOutcome("batch_0007", {"forest": 0.9}, "forest", "challenger", "4")


def test_metrics_over_batches_needs_at_least_one_batch():
    with pytest.raises(ValueError, match="no batches"):
        metrics_over_batches_figure([], "roc_auc")


def test_drawing_plots_leaves_no_figure_open_in_pyplot():
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    for _ in range(3):
        to_png(metrics_over_batches_figure(history(), "roc_auc"))
        to_png(confusion_matrix_figure([0, 1], [0, 1], "m", "y"))

    assert plt.get_fignums() == before


def test_image_markdown_embeds_the_png_itself():
    png = to_png(confusion_matrix_figure([0, 1], [0, 1], "m", "y"))

    markdown = image_markdown("Confusion matrix", png)

    prefix = "![Confusion matrix](data:image/png;base64,"
    assert markdown.startswith(prefix) and markdown.endswith(")")
    assert base64.b64decode(markdown[len(prefix) : -1]) == png


def test_evaluation_markdown_links_the_plots_by_relative_path():
    report = {"batch": "batch_0002", "primary_metric": "roc_auc", "mode": "max", "winner": "forest"}

    page = evaluation_markdown(
        report,
        "| model |\n|---|",
        {"roc_curves": "roc_curves.png", "metrics_over_batches": "../metrics_over_batches.png"},
    )

    assert page.startswith("# Evaluation of batch batch_0002\n")
    assert "**forest**" in page and "| model |" in page
    assert "![ROC curves](roc_curves.png)" in page
    assert "![Metrics over batches](../metrics_over_batches.png)" in page


def three_grades(n_rows: int = 300, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    """Three labels ordered by `score`; `noise` carries nothing."""
    rng = np.random.default_rng(seed)
    score = rng.uniform(0, 3, n_rows)
    x = pd.DataFrame({"score": score + rng.normal(scale=0.3, size=n_rows), "noise": rng.normal(size=n_rows)})
    return x, pd.Series(np.array(["low", "mid", "high"])[score.astype(int)], name="grade")


def test_a_multiclass_batch_gets_an_n_by_n_confusion_matrix_and_curves_per_class():
    x, y = three_grades()
    models = {"m": fitted("classification", "logistic_regression", x, y)}
    classes = ["low", "mid", "high", "unseen"]  # a label of the contract no row has still gets its row and column

    builders = evaluation_plot_builders("classification", models, "m", x, y, "grade", "f1", classes=classes)
    confusion = builders["confusion_matrix"]().axes[0]
    roc = builders["roc_curves"]().axes[0]
    precision_recall = builders["precision_recall_curves"]().axes[0]

    assert [label.get_text() for label in confusion.get_xticklabels()] == classes
    assert len(confusion.texts) == 16
    assert [text.split(":")[0] for text in legend_texts(roc)] == ["low", "mid", "high", "chance"]
    assert [text.split(":")[0] for text in legend_texts(precision_recall)] == ["low", "mid", "high"]
    assert "per class" in precision_recall.get_title()


def test_permutation_importances_of_a_multiclass_model_use_the_one_vs_rest_roc_auc():
    x, y = three_grades(150)
    boosted = fitted("classification", "gradient_boosting", x, y, max_iter=3)

    importances = feature_importances(boosted, x, y, "roc_auc", multiclass=True)

    assert importances.method == "permutation"
    assert importances.values.index[0] == "score"


def test_the_curves_of_a_binary_category_target_are_about_its_last_label():
    x, y = churn_like()
    fewer_leavers = ((y == 0) | (np.arange(len(y)) % 3 == 0)).to_numpy()  # a quarter or so leave
    x, y = x[fewer_leavers], y[fewer_leavers].map({0: "stayed", 1: "left"}).rename("churned")
    models = {"m": fitted("classification", "logistic_regression", x, y)}

    builders = evaluation_plot_builders(
        "classification", models, "m", x, y, "churned", "roc_auc", classes=["stayed", "left"]
    )
    axes = builders["precision_recall_curves"]().axes[0]

    no_skill = line_labelled(axes, "no skill")
    assert no_skill.get_ydata()[0] == pytest.approx((y == "left").mean())
    assert float(legend_texts(builders["roc_curves"]().axes[0])[0].split("AUC ")[1]) > 0.8
