"""Tuning: an Optuna study over a model's `search:` block, scored on the training rows only.

Pure (no Dagster, no MLflow): the study's trials come back as plain data (`StudyResult`), which the
model asset and `ml-platform tune` log as nested MLflow runs and show as a table and a plot.

Trials never see the held-out rows (`split.test`): they are what the promotion gate judges the
candidate on, and a candidate tuned on them would be flattered there. Each trial is scored by
k-fold cross-validation of the training rows, or fitted on the training rows and scored on the
validation split; `rows_seen` records every id a trial fitted or scored on, so this can be checked.

The sampler (TPE) and the folds are seeded from `training.random_state` and the study runs one
trial at a time, so the same config on the same rows gives the same trials and the same best
params, unless `timeout_seconds` cuts the study short (how many trials fit depends on the machine).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import pandas as pd
from sklearn.model_selection import KFold, StratifiedKFold

from ml_platform.lib.config import (
    METRIC_DIRECTIONS,
    Choices,
    FloatRange,
    SearchConfig,
    canonical_param_names,
    validate_model_params,
)
from ml_platform.lib.evaluation import score
from ml_platform.lib.training import TrainTestSplit, build_pipeline

OPTUNA_DIRECTIONS = {"max": "maximize", "min": "minimize"}


class TuningError(ValueError):
    """A study that cannot run or found nothing; the message says why."""


@dataclass(frozen=True)
class TrialResult:
    number: int
    params: dict
    value: float | None  # None for a trial that failed
    state: str  # Optuna's: COMPLETE or FAIL
    started: datetime
    seconds: float
    error: str | None = None


@dataclass(frozen=True)
class StudyResult:
    model_type: str
    metric: str
    mode: str  # max or min
    scoring: str  # how each trial was scored, for people: "3-fold cross-validation of 600 training rows"
    trials: list[TrialResult]
    rows_seen: frozenset[str] = field(repr=False)

    @property
    def completed(self) -> list[TrialResult]:
        return [trial for trial in self.trials if trial.value is not None]

    @property
    def best(self) -> TrialResult:
        """The best completed trial; ties go to the earlier trial (as Optuna's own `best_trial`)."""
        sign = -1 if self.mode == "max" else 1
        return min(self.completed, key=lambda trial: (sign * trial.value, trial.number))

    def best_so_far(self) -> list[float | None]:
        """For each trial in order, the best value of the trials up to it (None before the first)."""
        best, line = None, []
        for trial in self.trials:
            if trial.value is not None and (best is None or _better(trial.value, best, self.mode)):
                best = trial.value
            line.append(best)
        return line

    def ranked(self, top: int) -> list[TrialResult]:
        """The `top` best completed trials, best first."""
        sign = -1 if self.mode == "max" else 1
        return sorted(self.completed, key=lambda trial: (sign * trial.value, trial.number))[:top]


def _better(value: float, than: float, mode: str) -> bool:
    return value > than if mode == "max" else value < than


def search_left_after(model_type: str, search: SearchConfig | None, fixed_at_launch: dict) -> SearchConfig | None:
    """`search` without the params given at launch, or None when none is left to tune.

    A param the person launching the run fixed is not tuned: that is how `ml-platform reproduce`
    refits a tuned model with its recorded best params instead of running the study again.
    """
    if search is None:
        return None
    fixed = canonical_param_names(model_type, fixed_at_launch)
    # The search's own names are canonical already (validated with the config).
    left = {name: values for name, values in search.params.items() if name not in fixed}
    return search.model_copy(update={"params": left}) if left else None


def distributions(search: SearchConfig) -> dict:
    """The search space as Optuna distributions, one per tuned param."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    space = {}
    for name, search_range in search.params.items():
        if isinstance(search_range, Choices):
            space[name] = CategoricalDistribution(search_range.choices)
        elif isinstance(search_range, FloatRange):
            space[name] = FloatDistribution(search_range.low, search_range.high, log=search_range.log)
        else:
            space[name] = IntDistribution(search_range.low, search_range.high, log=search_range.log)
    return space


@dataclass(frozen=True)
class Fold:
    """Rows one trial fits on and the rows it is scored on."""

    fit: pd.DataFrame
    scored: pd.DataFrame


def scoring_folds(task: str, split: TrainTestSplit, cv_folds: int | None, random_state: int) -> list[Fold]:
    """The folds every trial is scored on: made from the training rows (and the validation split
    when `cv_folds` is None), never from the held-out rows. Stratified for classification."""
    if cv_folds is None:
        if split.validation.empty:
            raise TuningError("search.cv_folds is null (score on the validation split) but the split has none")
        return [Fold(split.train, split.validation)]
    splitter = (StratifiedKFold if task == "classification" else KFold)(
        n_splits=cv_folds, shuffle=True, random_state=random_state
    )
    try:
        indices = list(splitter.split(split.x_train, split.y_train))
    except ValueError as error:  # e.g. fewer rows of a class than folds
        raise TuningError(f"search.cv_folds {cv_folds}: {error}") from None
    return [Fold(split.train.iloc[fit], split.train.iloc[scored]) for fit, scored in indices]


def run_study(
    task: str,
    model_type: str,
    fixed_params: dict,
    search: SearchConfig,
    split: TrainTestSplit,
    random_state: int,
    metric: str,
    classes: Sequence | None = None,
) -> StudyResult:
    """Run the study: each trial's params (the tuned ones over the fixed ones) fitted on each fold
    and scored by `metric`, averaged over the folds. A trial the estimator refuses is recorded as
    failed and the study goes on; none completing is an error. `timeout_seconds` is checked after
    each trial (as Optuna's `optimize` does), so at least one trial runs. `classes` lay out the
    probabilities as `lib.evaluation.predict` does: a fold may lack a rare class."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one INFO line per trial otherwise
    mode = METRIC_DIRECTIONS[task][metric]
    folds = scoring_folds(task, split, search.cv_folds, random_state)
    space = distributions(search)
    # Alias names (`n_estimators`) as field names, so a tuned param replaces its fixed value.
    fixed = canonical_param_names(model_type, fixed_params)
    rows_seen: set[str] = set()

    def objective(params: dict) -> float:
        values = []
        for fold in folds:
            x_fit = fold.fit[split.feature_columns]
            pipeline = build_pipeline(task, model_type, params, x_fit, random_state)
            pipeline.fit(x_fit, fold.fit[split.target])
            for frame in (fold.fit, fold.scored):
                rows_seen.update(frame[split.id_column].astype(str))
            scored = fold.scored
            values.append(score(task, pipeline, scored[split.feature_columns], scored[split.target], classes)[metric])
        return float(sum(values) / len(values))

    study = optuna.create_study(
        direction=OPTUNA_DIRECTIONS[mode], sampler=optuna.samplers.TPESampler(seed=random_state)
    )
    errors: dict[int, str] = {}
    clock = time.monotonic()
    for _ in range(search.n_trials):
        trial = study.ask(space)
        try:
            value = objective(validate_model_params(model_type, {**fixed, **trial.params}))
        except ValueError as error:  # a pydantic ValidationError is one too
            errors[trial.number] = " ".join(str(error).split())
            study.tell(trial, state=TrialState.FAIL)
        else:
            if math.isfinite(value):
                study.tell(trial, value)
            else:  # a metric undefined on a fold fails the trial, not the study
                errors[trial.number] = f"{metric} is not a number"
                study.tell(trial, state=TrialState.FAIL)
        if search.timeout_seconds is not None and time.monotonic() - clock >= search.timeout_seconds:
            break
    trials = [_trial_result(trial, errors.get(trial.number)) for trial in study.trials]
    scoring = (
        f"{search.cv_folds}-fold cross-validation of {len(split.train)} training rows"
        if search.cv_folds is not None
        else f"fitted on {len(split.train)} training rows, scored on {len(split.validation)} validation rows"
    )
    result = StudyResult(model_type, metric, mode, scoring, trials, frozenset(rows_seen))
    if not result.completed:
        raise TuningError(f"no trial of the {model_type} study completed; first error: {trials[0].error}")
    return result


def _trial_result(trial, error: str | None) -> TrialResult:
    started = trial.datetime_start
    ended = trial.datetime_complete or started
    return TrialResult(
        number=trial.number,
        params=dict(trial.params),
        value=trial.value if trial.state.name == "COMPLETE" else None,
        state=trial.state.name,
        started=started,
        seconds=(ended - started).total_seconds(),
        error=error,
    )


def trials_markdown(result: StudyResult, limit: int = 50) -> str:
    """The trials as a markdown table (trial, params, value, state), the best marked; beyond `limit`
    trials only the best `limit` are listed, so the asset's metadata stays small."""
    best = result.best.number
    shown = result.trials if len(result.trials) <= limit else sorted(result.ranked(limit), key=lambda t: t.number)
    lines = [f"| trial | params | {result.metric} | state |", "|---|---|---|---|"]
    for trial in shown:
        label = f"**{trial.number}** (best)" if trial.number == best else str(trial.number)
        params = ", ".join(f"{name}={_fmt(value)}" for name, value in sorted(trial.params.items()))
        value = "-" if trial.value is None else f"{trial.value:.4f}"
        lines.append(f"| {label} | {params} | {value} | {trial.state} |")
    if len(shown) < len(result.trials):
        lines.append(f"\n{len(result.trials) - len(shown)} more trials in MLflow (nested runs of this model's run).")
    return "\n".join(lines)


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
