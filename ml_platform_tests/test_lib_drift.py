"""Drift between batches: the statistics per feature, the rule that says a feature drifted, the
verdict of a batch, which champion it is compared with and when drift retrains."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml_platform.lib.config import DriftConfig
from ml_platform.lib.drift import (
    DRIFT,
    DRIFTED,
    NO_DRIFT,
    NO_REFERENCE,
    NOT_ENOUGH_ROWS,
    STABLE,
    assess_drift,
    assess_prediction_drift,
    compare_feature,
    drift_report_content,
    drift_retraining_reason,
    drift_table_markdown,
    population_stability_index,
    reference_champion,
    score_columns,
    verdict_of,
)
from ml_platform.lib.report_plots import drift_psi_figure, to_png

CONFIG = DriftConfig()


def sample(seed: int, rows: int = 600, shift: float = 0.0, levels=("a", "b", "c")) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "price": rng.normal(50 + shift, 10, rows),
            "plan": rng.choice(levels, rows),
            "tickets": rng.poisson(1.2, rows),
        }
    )


def by_name(assessment):
    return {feature.feature: feature for feature in assessment.features}


def test_two_seeded_samples_of_the_same_distribution_are_not_drifted():
    for seed in range(5):
        assessment = assess_drift(sample(seed), sample(seed + 100), ["price", "plan", "tickets"], CONFIG)
        assert assessment.verdict == NO_DRIFT and assessment.drifted == [], by_name(assessment)


def test_a_shifted_mean_drifts():
    assessment = assess_drift(sample(1), sample(2, shift=8), ["price", "plan", "tickets"], CONFIG)
    features = by_name(assessment)
    assert features["price"].status == DRIFTED and features["price"].test == "ks"
    assert features["plan"].status == STABLE and features["tickets"].status == STABLE
    assert assessment.drifted == ["price"] and assessment.share_drifted == pytest.approx(1 / 3)
    assert assessment.verdict == DRIFT  # a third is above the default bar of 10%


def test_a_category_level_new_in_the_batch_is_named_and_drifts():
    batch = sample(2, levels=("a", "b", "d"))
    plan = by_name(assess_drift(sample(1), batch, ["plan"], CONFIG))["plan"]
    assert plan.status == DRIFTED and plan.test == "chi2"
    assert plan.new_levels == ["d"] and plan.new_level_count == 1


def test_on_a_large_sample_a_tiny_shift_is_significant_but_the_psi_says_it_is_not_drift():
    reference, batch = sample(1, rows=100_000), sample(2, rows=100_000, shift=0.3)
    price = by_name(assess_drift(reference, batch, ["price"], CONFIG))["price"]
    assert price.adjusted_p_value < 1e-6  # KS alone would call it drift
    assert price.psi < 0.01 and price.status == STABLE


def test_on_a_small_sample_a_large_psi_by_chance_is_not_drift():
    reference, batch = sample(1, rows=40), sample(2, rows=40)
    price = by_name(assess_drift(reference, batch, ["price"], DriftConfig(psi_threshold=0.1)))["price"]
    assert price.psi >= 0.1 and price.status == STABLE


def test_too_few_rows_say_so_and_give_no_verdict():
    assessment = assess_drift(sample(1, rows=10), sample(2), ["price", "plan"], CONFIG)
    assert [feature.status for feature in assessment.features] == [NOT_ENOUGH_ROWS] * 2
    assert "10 in the reference; at least 30 each" in assessment.features[0].note
    assert assessment.verdict == NOT_ENOUGH_ROWS and assessment.assessed == 0


def test_empty_samples_do_not_crash():
    empty = sample(1).head(0)
    assessment = assess_drift(empty, empty, ["price", "plan"], CONFIG)
    assert assessment.verdict == NOT_ENOUGH_ROWS


def test_a_constant_column_is_stable_and_a_constant_moved_elsewhere_drifts():
    ones, twos = pd.Series([1.0] * 200), pd.Series([2.0] * 200)
    assert compare_feature("c", ones, ones, CONFIG).psi == 0.0
    assessment = assess_drift(pd.DataFrame({"c": ones}), pd.DataFrame({"c": twos}), ["c"], CONFIG)
    assert assessment.features[0].status == DRIFTED


def test_an_all_null_column_is_stable_and_one_that_became_empty_drifts():
    values = pd.Series(np.random.default_rng(1).normal(size=300))
    empty = pd.Series([np.nan] * 300)
    assert assess_drift(pd.DataFrame({"x": empty}), pd.DataFrame({"x": empty}), ["x"], CONFIG).drifted == []
    gone = assess_drift(pd.DataFrame({"x": values}), pd.DataFrame({"x": empty}), ["x"], CONFIG).features[0]
    assert gone.status == DRIFTED and gone.test == "nulls" and gone.batch_null_share == 1.0


def test_a_rise_in_nulls_drifts_though_the_values_left_are_alike():
    rng = np.random.default_rng(3)
    reference = pd.Series(rng.normal(size=2000))
    batch = pd.Series(rng.normal(size=2000))
    batch[rng.uniform(size=2000) < 0.4] = np.nan
    feature = assess_drift(pd.DataFrame({"x": reference}), pd.DataFrame({"x": batch}), ["x"], CONFIG).features[0]
    assert feature.test == "ks+nulls" and feature.tests == 2 and feature.status == DRIFTED


def test_a_null_in_a_category_is_a_level_of_its_own():
    reference = pd.Series(["a", "b"] * 200)
    batch = pd.Series(["a", None] * 200)
    feature = compare_feature("plan", reference, batch, CONFIG)
    assert feature.kind == "categorical" and feature.batch_null_share == 0.5
    assert feature.new_levels == []  # a null is counted as nulls, not listed as a new level


def test_a_feature_missing_from_the_batch_is_reported_not_compared():
    feature = assess_drift(sample(1), sample(2).drop(columns="plan"), ["plan"], CONFIG).features[0]
    assert feature.status == NOT_ENOUGH_ROWS and feature.note == "not in the batch"


def test_the_correction_counts_every_test_of_the_batch():
    features = ["price", "plan", "tickets"]
    assessment = assess_drift(sample(1), sample(2, shift=3), features, CONFIG)
    price = by_name(assessment)["price"]
    assert price.adjusted_p_value == pytest.approx(min(1.0, price.p_value * 3))


def test_psi_of_identical_shares_is_zero_and_an_empty_bin_stays_finite():
    assert population_stability_index([0.5, 0.5], [0.5, 0.5]) == 0.0
    assert np.isfinite(population_stability_index([1.0, 0.0], [0.5, 0.5]))


def test_the_verdict_is_drift_only_above_the_bar():
    assert verdict_of(0.3, 10, 0.3) == NO_DRIFT
    assert verdict_of(0.31, 10, 0.3) == DRIFT
    assert verdict_of(0.1, 10, 0.0) == DRIFT
    assert verdict_of(0.0, 0, 0.3) == NOT_ENOUGH_ROWS


def test_prediction_drift_takes_a_vector_or_a_matrix_of_class_probabilities():
    rng = np.random.default_rng(1)
    assert list(score_columns(rng.uniform(size=50))) == ["score"]
    matrix = rng.dirichlet([1, 1, 1], size=300)
    columns = score_columns(matrix, classes=["setosa", "versicolor", "virginica"])
    assert list(columns) == ["score[setosa]", "score[versicolor]", "score[virginica]"]
    shifted = score_columns(rng.dirichlet([5, 1, 1], size=300), classes=["setosa", "versicolor", "virginica"])
    assessment = assess_prediction_drift(columns, shifted, CONFIG)
    assert "score[setosa]" in assessment.drifted


def test_the_champion_compared_with_is_the_newest_trained_before_the_batch():
    ordered = ["b1", "b2", "b3", "b4"]
    holders = [("3", "b3"), ("2", "b2"), ("1", "b1")]
    assert reference_champion(holders, ordered, "b4") == ("3", "b3")
    # b3's own decision may have run first, in this run or an earlier one: the answer is the same.
    assert reference_champion(holders, ordered, "b3") == ("2", "b2")
    # A rerun of an old batch is compared with the champion before it, not with a later one.
    assert reference_champion(holders, ordered, "b2") == ("1", "b1")
    assert reference_champion(holders, ordered, "b1") is None
    assert reference_champion([("9", None)], ordered, "b4") is None  # a version without a batch tag


def test_drift_retrains_when_on_drifted_and_a_model_was_trained_before_the_reports_run():
    trained = {"random_forest_model": 100.0, "ridge_model": 200.0}
    reason = drift_retraining_reason(True, DRIFT, 0.4, "batch_0001", 150.0, trained)
    assert (
        reason
        == "drift: 40% of the features drifted against batch_0001; trained before the report: random_forest_model"
    )
    assert drift_retraining_reason(False, DRIFT, 0.4, "batch_0001", 150.0, trained) is None
    assert drift_retraining_reason(True, NO_DRIFT, 0.1, "batch_0001", 150.0, trained) is None
    # Trained since the report's run started (in that run, or later): a rerun would change nothing.
    assert drift_retraining_reason(True, DRIFT, 0.4, "batch_0001", 50.0, trained) is None
    assert drift_retraining_reason(True, DRIFT, 0.4, None, 50.0, {"m": None}).endswith(
        "of the features drifted; trained before the report: m"
    )


def test_the_markdown_table_and_the_plot_show_every_feature():
    assessment = assess_drift(sample(1), sample(2, shift=8, levels=("a", "b", "d")), ["price", "plan"], CONFIG)
    table = drift_table_markdown(assessment)
    assert "| price | ks |" in table and "new levels: d" in table
    psi = {feature.feature: feature.psi for feature in assessment.features}
    figure = drift_psi_figure(psi, set(assessment.drifted), CONFIG.psi_threshold, "b2 vs b1")
    axes = figure.axes[0]
    assert [label.get_text() for label in axes.get_yticklabels()] == ["plan", "price"]
    assert axes.get_legend().get_texts()[0].get_text() == "PSI threshold 0.2"
    assert to_png(figure).startswith(b"\x89PNG")


def test_a_first_batch_without_a_champion_has_nothing_to_compare_with():
    report = drift_report_content("b1", None, None, {}, None, CONFIG)
    assert report["verdict"] == NO_REFERENCE and report["reference_batch"] is None
    assert report["note"] == "first batch and no champion: nothing to compare with"


def test_the_verdict_is_against_the_champion_else_against_the_previous_batch():
    stable = assess_drift(sample(1), sample(2), ["price"], CONFIG)
    shifted = assess_drift(sample(1), sample(2, shift=8), ["price"], CONFIG)
    alone = drift_report_content("b3", None, "b2", {"previous_batch": shifted}, None, CONFIG)
    assert (alone["verdict"], alone["verdict_against"], alone["reference_batch"]) == (DRIFT, "previous_batch", "b2")
    assert alone["note"].startswith("no champion trained before this batch yet")
    both = drift_report_content("b3", ("1", "b1"), "b2", {"champion": stable, "previous_batch": shifted}, None, CONFIG)
    assert (both["verdict"], both["verdict_against"], both["reference_batch"]) == (NO_DRIFT, "champion", "b1")
    assert both["against_previous_batch"]["drifted"] == ["price"]
