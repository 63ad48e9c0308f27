"""Tuning: the `search:` block's validation, a seeded study on the training rows only, its trials as data."""

from __future__ import annotations

import functools
import json
from datetime import datetime

import pytest
from pydantic import ValidationError

from ml_platform.lib.config import (
    ExperimentConfig,
    ModelSpec,
    PlatformConfig,
    code_version,
    format_validation_error,
    load_experiment_config,
)
from ml_platform.lib.demo_data import generate_churn_batch
from ml_platform.lib.report_plots import objective_over_trials_figure
from ml_platform.lib.settings import PROJECT_ROOT
from ml_platform.lib.training import carve_validation, split_train_test
from ml_platform.lib.tuning import (
    StudyResult,
    TrialResult,
    distributions,
    run_study,
    search_left_after,
    trials_markdown,
)
from ml_platform_tests.conftest import small_config

C_SEARCH = {"params": {"C": {"type": "float", "low": 0.01, "high": 10.0, "log": True}}, "n_trials": 3, "cv_folds": 2}


@functools.cache
def _small_config_raw() -> str:
    return json.dumps(small_config().model_dump(mode="json"))  # composing with Hydra takes a second


def config_with_search(model: str = "logistic_regression", **search) -> PlatformConfig:
    raw = json.loads(_small_config_raw())
    raw["models"][model]["search"] = {**C_SEARCH, **search}
    return PlatformConfig.model_validate(raw)


def refusal(model: str = "logistic_regression", **search) -> str:
    with pytest.raises(ValidationError) as error:
        config_with_search(model, **search)
    return format_validation_error(error.value)


@pytest.fixture(scope="module")
def split():
    config = config_with_search()
    features = generate_churn_batch(1, 300).assign(batch_id="batch_0001")
    return carve_validation(
        split_train_test(features, config.data, config.training, "batch_0001"), config.data, config.training
    )


def study(split, random_state: int = 42, model: str = "logistic_regression", **search) -> StudyResult:
    config = config_with_search(model, **search)
    spec = config.models[model]
    return run_study("classification", spec.type, spec.params, spec.search, split, random_state, spec.search.metric)


@pytest.fixture(scope="module")
def cv_study(split) -> StudyResult:
    """3 trials, 2-fold cross-validation, seed 42."""
    return study(split)


# ---------------------------------------------------------------- the search block


def test_a_search_param_the_model_type_does_not_have_is_refused_with_the_allowed_ones():
    message = refusal(params={"depth": {"type": "int", "low": 1, "high": 3}})

    assert "models.logistic_regression: search.params.depth: not a param of logistic_regression" in message
    assert "allowed: C, class_weight, max_iter" in message


@pytest.mark.parametrize(
    ("search_range", "message"),
    [
        (
            {"type": "float", "low": 0.0, "high": 1.0},
            "search.params.C: 0.0 is refused: C: Input should be greater than 0",
        ),
        ({"type": "float", "low": 2.0, "high": 1.0}, "search.params.C.float: low (2.0) must be below high (1.0)"),
        ({"type": "float", "low": -1.0, "high": 1.0, "log": True}, "a log range needs low > 0, got -1.0"),
        ({"type": "categorical", "choices": []}, "search.params.C.categorical.choices: List should have at least 1"),
        ({"type": "range", "low": 1, "high": 2}, "does not match any of the expected tags: 'int', 'float'"),
    ],
)
def test_a_range_that_could_give_an_invalid_param_is_refused_naming_its_key(search_range, message):
    assert message in refusal(params={"C": search_range})


def test_a_categorical_choice_the_model_refuses_is_refused():
    message = refusal(params={"class_weight": {"type": "categorical", "choices": [None, "weighted"]}})

    assert "search.params.class_weight: 'weighted' is refused" in message


@pytest.mark.parametrize(
    ("search", "message"),
    [
        ({"n_trials": 0}, "search.n_trials: Input should be greater than or equal to 1"),
        ({"n_trials": 501}, "search.n_trials: Input should be less than or equal to 500"),
        ({"timeout_seconds": 0}, "search.timeout_seconds: Input should be greater than 0"),
        ({"cv_folds": 1}, "search.cv_folds: Input should be greater than or equal to 2"),
        ({"metric": "rmse"}, "search.metric 'rmse' is not a classification metric"),
        ({"metric": "loss"}, "search.metric 'loss' is unknown"),
        ({"trials": 5}, "search.trials: Extra inputs are not permitted"),
    ],
)
def test_the_study_is_bounded_and_its_metric_fits_the_task(search, message):
    assert message in refusal(**search)


def test_an_experiment_with_a_search_block_is_refused_not_silently_untuned():
    raw = load_experiment_config(PROJECT_ROOT / "configs" / "experiment.yaml", ["model=logistic_regression"])
    raw = {**raw.model_dump(mode="json"), "model": {"type": "logistic_regression", "search": C_SEARCH}}

    with pytest.raises(ValidationError, match="model.search: an experiment trains its params as given"):
        ExperimentConfig.model_validate(raw)


def test_the_metric_defaults_to_the_promotion_metric():
    assert config_with_search().models["logistic_regression"].search.metric == "roc_auc"
    assert config_with_search(metric="f1").models["logistic_regression"].search.metric == "f1"


def test_a_param_named_by_its_alias_is_searched_under_its_own_name():
    config = config_with_search("gradient_boosting", params={"n_estimators": {"type": "int", "low": 5, "high": 20}})

    assert list(config.models["gradient_boosting"].search.params) == ["max_iter"]


def test_the_search_space_is_part_of_the_models_code_version():
    training = small_config().training
    plain = ModelSpec(type="logistic_regression", params={"C": 1.0})
    tuned = ModelSpec(type="logistic_regression", params={"C": 1.0}, search=C_SEARCH)
    wider = ModelSpec(
        type="logistic_regression",
        params={"C": 1.0},
        search={**C_SEARCH, "params": {"C": {"type": "float", "low": 0.001, "high": 10.0, "log": True}}},
    )

    assert len({code_version(spec, training) for spec in (plain, tuned, wider)}) == 3
    # An untuned model's code version is the one it had before `search` existed.
    assert plain.model_dump() == {"type": "logistic_regression", "params": {"C": 1.0}}


def test_each_range_becomes_the_optuna_distribution_it_describes():
    spec = ModelSpec(
        type="random_forest",
        search={
            "params": {
                "n_estimators": {"type": "int", "low": 10, "high": 100, "log": True},
                "max_features": {"type": "float", "low": 0.2, "high": 0.9},
                "max_depth": {"type": "categorical", "choices": [None, 4, 8]},
            }
        },
    )

    space = distributions(spec.search)

    assert (space["n_estimators"].low, space["n_estimators"].high, space["n_estimators"].log) == (10, 100, True)
    assert (space["max_features"].low, space["max_features"].high, space["max_features"].log) == (0.2, 0.9, False)
    assert space["max_depth"].choices == (None, 4, 8)


# ---------------------------------------------------------------- the study


def test_the_same_seed_gives_the_same_trials_and_best_params_another_seed_others(split, cv_study):
    first, again, other = cv_study, study(split), study(split, random_state=7, n_trials=1)

    assert [t.params for t in first.trials] == [t.params for t in again.trials]
    assert first.best.params == again.best.params and first.best.value == again.best.value
    assert other.trials[0].params != first.trials[0].params


def test_cross_validation_trials_fit_and_score_on_the_training_rows_only(split, cv_study):
    assert cv_study.rows_seen == set(split.training_ids())
    assert cv_study.rows_seen.isdisjoint(split.held_out_ids())
    assert cv_study.scoring == f"2-fold cross-validation of {len(split.train)} training rows"


def test_validation_split_trials_never_see_the_held_out_rows_either(split):
    result = study(split, cv_folds=None, n_trials=2)

    assert result.rows_seen == set(split.training_ids()) | set(split.validation[split.id_column].astype(str))
    assert result.rows_seen.isdisjoint(split.held_out_ids())


def test_the_study_runs_n_trials_and_a_timeout_stops_it_after_the_first(split, cv_study):
    assert len(cv_study.trials) == 3
    assert len(study(split, n_trials=50, timeout_seconds=1e-6).trials) == 1


def test_a_trial_the_estimator_refuses_fails_and_the_study_goes_on(split):
    # max_features 1.5 passes the config (a float share) but random forests refuse a share above 1.
    result = study(
        split,
        model="random_forest",
        params={"max_features": {"type": "categorical", "choices": ["sqrt", 1.5]}},
        n_trials=4,
        cv_folds=None,
    )

    states = {trial.params["max_features"]: trial.state for trial in result.trials}
    assert states == {"sqrt": "COMPLETE", 1.5: "FAIL"}
    assert result.best.params == {"max_features": "sqrt"}
    assert "max_features" in next(trial.error for trial in result.trials if trial.state == "FAIL")


# ---------------------------------------------------------------- the study as data


def made_study(values: list[float | None], mode: str = "max") -> StudyResult:
    trials = [
        TrialResult(
            number, {"C": float(number)}, value, "COMPLETE" if value is not None else "FAIL", datetime(2026, 1, 1), 0.1
        )
        for number, value in enumerate(values)
    ]
    return StudyResult("logistic_regression", "roc_auc" if mode == "max" else "rmse", mode, "cv", trials, frozenset())


def test_best_so_far_skips_failed_trials_and_a_tie_keeps_the_earlier_best():
    result = made_study([None, 0.5, 0.7, 0.7, 0.6])

    assert result.best_so_far() == [None, 0.5, 0.7, 0.7, 0.7]
    assert result.best.number == 2
    assert [trial.number for trial in result.ranked(2)] == [2, 3]


def test_for_an_error_metric_lower_is_better():
    result = made_study([3.0, 2.0, 2.5], mode="min")

    assert result.best.number == 1 and result.best_so_far() == [3.0, 2.0, 2.0]


def test_the_trials_table_marks_the_best_and_lists_at_most_the_limit():
    table = trials_markdown(made_study([0.5, None, 0.9]))
    assert "| **2** (best) | C=2 | 0.9000 | COMPLETE |" in table
    assert "| 1 | C=1 | - | FAIL |" in table

    long = trials_markdown(made_study([i / 100 for i in range(60)]), limit=50)
    assert long.count("| COMPLETE |") == 50 and "10 more trials in MLflow" in long


def test_the_objective_plot_shows_each_trial_and_the_best_so_far():
    figure = objective_over_trials_figure(made_study([None, 0.5, 0.7, 0.6]))
    axes = figure.axes[0]

    assert axes.get_title() == "logistic_regression: roc_auc over 4 trials"
    assert [text.get_text() for text in axes.get_legend().get_texts()] == ["trial", "best so far"]
    assert list(axes.lines[0].get_xdata()) == [1, 2, 3] and list(axes.lines[0].get_ydata()) == [0.5, 0.7, 0.7]


def test_params_fixed_at_launch_are_not_tuned_and_a_search_with_none_left_is_skipped():
    search = ModelSpec(
        type="gradient_boosting",
        search={
            "params": {
                "n_estimators": {"type": "int", "low": 10, "high": 50},
                "learning_rate": {"type": "float", "low": 0.01, "high": 0.3},
            }
        },
    ).search

    partly = search_left_after("gradient_boosting", search, {"learning_rate": 0.1})
    # Alias names on either side name the same param: `n_estimators` is `max_iter`.
    fully = search_left_after("gradient_boosting", search, {"max_iter": 30, "learning_rate": 0.1})

    assert list(partly.params) == ["max_iter"]
    assert fully is None
    assert search_left_after("gradient_boosting", None, {}) is None
    assert search_left_after("gradient_boosting", search, {}) == search
