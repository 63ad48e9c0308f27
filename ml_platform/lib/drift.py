"""Drift between batches: each feature of a batch against a reference sample, and a verdict.

Pure (no Dagster). Per feature: Kolmogorov-Smirnov on the values of a numeric feature (plus a
chi-squared test of its share of nulls when either side has nulls), chi-squared on the levels of a
categorical one (a null is a level of its own), and the population stability index (PSI) for both.

The rule (`judge`). A feature drifts when its PSI is at least `psi_threshold` AND its smallest
p-value, multiplied by the number of tests run on the batch (Bonferroni), is below `p_value`.
Both, because each fails alone where the other holds: on thousands of rows KS and chi-squared
reject a shift nobody would act on (their p-values shrink with the sample, the PSI does not), and
on a few dozen rows the PSI of two samples of the same distribution is large by chance (about
(bins - 1) * (1/n + 1/m)) while the test then knows it cannot tell. Bonferroni, because a batch
runs a test per feature: at 5% each, one of twenty stable features would "drift" every batch.
The batch's verdict is "drift" when the share of drifted features is above `share_bar`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pandas as pd
from scipy.stats import chi2_contingency, ks_2samp

from ml_platform.lib.config import DriftConfig

# An empty bin on one side would make the PSI infinite; a share this small stands in for it.
PSI_EPSILON = 1e-4
NULL_LEVEL = "(null)"
OTHER_LEVEL = "(other)"
# A text feature with thousands of levels keeps its most frequent ones; the rest pool as "(other)".
MAX_LEVELS = 50
# New levels listed in a report at most (their count is always given).
MAX_LISTED_LEVELS = 10

DRIFTED, STABLE, NOT_ENOUGH_ROWS = "drifted", "stable", "not enough rows"
DRIFT, NO_DRIFT, NO_REFERENCE = "drift", "no drift", "no reference"


@dataclass(frozen=True)
class FeatureDrift:
    """One feature of the batch against the reference. `p_value` is the smallest of its tests' raw
    p-values, `adjusted_p_value` that one after the correction; both None when there were too few rows."""

    feature: str
    kind: str  # "numeric" or "categorical"
    test: str  # "ks", "ks+nulls" (KS and the null-share test), "nulls", "chi2", or "" when not run
    reference_rows: int
    batch_rows: int
    reference_null_share: float
    batch_null_share: float
    statistic: float | None = None
    p_value: float | None = None
    tests: int = 0
    psi: float | None = None
    new_levels: list[str] = field(default_factory=list)
    new_level_count: int = 0
    adjusted_p_value: float | None = None
    status: str = NOT_ENOUGH_ROWS
    note: str = ""


@dataclass(frozen=True)
class DriftAssessment:
    """Every feature judged, the share of drifted features and the verdict for the batch."""

    features: list[FeatureDrift]
    drifted: list[str]
    assessed: int
    share_drifted: float
    verdict: str  # DRIFT, NO_DRIFT or NOT_ENOUGH_ROWS

    def as_json(self) -> dict:
        return asdict(self)


def population_stability_index(expected: np.ndarray, actual: np.ndarray) -> float:
    """PSI of two distributions over the same bins: sum((a - e) * ln(a / e)), empty bins at PSI_EPSILON."""
    e = np.clip(np.asarray(expected, dtype=float), PSI_EPSILON, None)
    a = np.clip(np.asarray(actual, dtype=float), PSI_EPSILON, None)
    return float(np.sum((a - e) * np.log(a / e)))


def numeric_shares(values: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """The share of `values` in each bin between `cuts` (`(c[i-1], c[i]]`, open at both ends), then nulls."""
    nulls = np.isnan(values)
    counts = np.bincount(np.searchsorted(cuts, values[~nulls], side="left"), minlength=len(cuts) + 1)
    return np.append(counts, nulls.sum()) / max(len(values), 1)


def quantile_cuts(reference: np.ndarray, bins: int) -> np.ndarray:
    """The reference's inner quantiles as bin edges, repeated edges merged: a constant reference
    gives one edge (its value), so any other value in the batch shows as a shift."""
    present = reference[~np.isnan(reference)]
    if len(present) == 0:
        return np.array([])
    return np.unique(np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1]))


def compare_numeric(name: str, reference: pd.Series, batch: pd.Series, config: DriftConfig) -> FeatureDrift:
    ref = pd.to_numeric(reference, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    new = pd.to_numeric(batch, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    base = _base(name, "numeric", ref, new)
    if short := _too_few(len(ref), len(new), config.min_rows):
        return replace(base, note=short)
    ref_present, new_present = ref[~np.isnan(ref)], new[~np.isnan(new)]
    tests: dict[str, tuple[float, float]] = {}
    if min(len(ref_present), len(new_present)) >= config.min_rows:
        result = ks_2samp(ref_present, new_present)
        tests["ks"] = (float(result.statistic), float(result.pvalue))
    if np.isnan(ref).any() or np.isnan(new).any():
        tests["nulls"] = _chi2([[np.isnan(ref).sum(), len(ref_present)], [np.isnan(new).sum(), len(new_present)]])
    cuts = quantile_cuts(ref, config.bins)
    psi = population_stability_index(numeric_shares(ref, cuts), numeric_shares(new, cuts))
    return _with_tests(base, tests, psi)


def compare_categorical(name: str, reference: pd.Series, batch: pd.Series, config: DriftConfig) -> FeatureDrift:
    ref, new = _levels(reference), _levels(batch)
    base = _base(name, "categorical", reference.isna().to_numpy(), batch.isna().to_numpy(), nulls_given=True)
    if short := _too_few(len(ref), len(new), config.min_rows):
        return replace(base, note=short)
    ref_counts, new_counts = ref.value_counts(), new.value_counts()
    kept = list(ref_counts.index[:MAX_LEVELS])
    # A null new in the batch is a change of the null share (reported beside), not a new level.
    unseen = [level for level in new_counts.index if level not in ref_counts.index and level != NULL_LEVEL]
    kept += [level for level in unseen if len(kept) < 2 * MAX_LEVELS]
    table = np.array(
        [_pooled(ref_counts, kept), _pooled(new_counts, kept)],
        dtype=float,
    )
    table = table[:, table.sum(axis=0) > 0]
    psi = population_stability_index(table[0] / table[0].sum(), table[1] / table[1].sum())
    drift = replace(base, new_levels=[str(level) for level in unseen[:MAX_LISTED_LEVELS]], new_level_count=len(unseen))
    return _with_tests(drift, {"chi2": _chi2(table)}, psi)


def compare_feature(name: str, reference: pd.Series, batch: pd.Series, config: DriftConfig) -> FeatureDrift:
    """Numeric when both sides hold numbers (booleans are categories); a side with only nulls takes the other's kind."""
    numeric = [_is_numeric(side) for side in (reference, batch) if side.notna().any()]
    if numeric and all(numeric):
        return compare_numeric(name, reference, batch, config)
    return compare_categorical(name, reference, batch, config)


def judge(features: Sequence[FeatureDrift], config: DriftConfig) -> DriftAssessment:
    """Apply the rule of the module's docstring to every feature, then the verdict of the batch."""
    total_tests = sum(feature.tests for feature in features)
    judged = []
    for feature in features:
        if feature.p_value is None:
            judged.append(replace(feature, status=NOT_ENOUGH_ROWS))
            continue
        adjusted = min(1.0, feature.p_value * total_tests)
        drifted = feature.psi >= config.psi_threshold and adjusted < config.p_value
        judged.append(replace(feature, adjusted_p_value=adjusted, status=DRIFTED if drifted else STABLE))
    drifted_names = [feature.feature for feature in judged if feature.status == DRIFTED]
    assessed = sum(feature.status != NOT_ENOUGH_ROWS for feature in judged)
    share = len(drifted_names) / assessed if assessed else 0.0
    return DriftAssessment(judged, drifted_names, assessed, share, verdict_of(share, assessed, config.share_bar))


def verdict_of(share_drifted: float, assessed: int, share_bar: float) -> str:
    """DRIFT when the share of drifted features is above the bar (a bar of 0: any drifted feature)."""
    if not assessed:
        return NOT_ENOUGH_ROWS
    return DRIFT if share_drifted > share_bar else NO_DRIFT


def assess_drift(
    reference: pd.DataFrame, batch: pd.DataFrame, columns: Iterable[str], config: DriftConfig
) -> DriftAssessment:
    """Each of `columns` of `batch` against the same column of `reference`, judged together.
    A column missing from one side is a feature that cannot be compared: "not enough rows" with a note."""
    features = []
    for column in columns:
        if column not in reference.columns or column not in batch.columns:
            side = "reference" if column not in reference.columns else "batch"
            features.append(FeatureDrift(column, "", "", 0, 0, 0.0, 0.0, note=f"not in the {side}"))
            continue
        features.append(compare_feature(column, reference[column], batch[column], config))
    return judge(features, config)


def score_columns(scores: np.ndarray, classes: Sequence | None = None) -> dict[str, np.ndarray]:
    """A model's scores as named columns: one for a vector (a positive-class probability, a regression's
    predictions), one per class for a matrix of class probabilities."""
    scores = np.asarray(scores, dtype=float)
    if scores.ndim == 1:
        return {"score": scores}
    names = list(classes) if classes is not None and len(classes) == scores.shape[1] else range(scores.shape[1])
    return {f"score[{name}]": scores[:, index] for index, name in enumerate(names)}


def assess_prediction_drift(
    reference_scores: Mapping[str, np.ndarray], batch_scores: Mapping[str, np.ndarray], config: DriftConfig
) -> DriftAssessment:
    """The champion's scores on the batch against its scores on the reference, as numeric features."""
    return assess_drift(
        pd.DataFrame(dict(reference_scores)), pd.DataFrame(dict(batch_scores)), list(batch_scores), config
    )


def reference_champion(
    holders: Iterable[tuple[str, str | None]], ordered_batches: Sequence[str], batch: str
) -> tuple[str, str] | None:
    """The champion a batch is compared with: among `holders` of the alias, newest first as
    `(version, training batch)`, the first trained on a batch earlier than `batch`.

    So the answer does not depend on whether this batch's own champion decision ran first, in this
    run or an earlier one, and a rerun of an old batch is compared with what was champion before it,
    not with a champion trained on later batches.
    """
    position = {name: index for index, name in enumerate(ordered_batches)}
    if batch not in position:
        return None
    for version, trained_on in holders:
        if trained_on in position and position[trained_on] < position[batch]:
            return version, trained_on
    return None


def drift_retraining_reason(
    retrain_on_drift: bool,
    verdict: str,
    share_drifted: float,
    reference: str | None,
    report_run_started_at: float,
    models_trained_at: Mapping[str, float | None],
) -> str | None:
    """Why drift retrains a batch, or None when it does not.

    It does when the switch is on, the batch's latest drift report says DRIFT, and a model of the
    batch was last trained before the run that wrote that report started (or never). A model trained
    since, in the same run (the pipeline runs both) or a later one, was fitted on the data the report
    judged: retraining it on the same rows with the same seed would change nothing. So it fires when
    the report is newer than the models: recomputed against a new champion, or under new thresholds.
    """
    if not retrain_on_drift or verdict != DRIFT:
        return None
    older = sorted(name for name, at in models_trained_at.items() if at is None or at < report_run_started_at)
    if not older:
        return None
    against = f" against {reference}" if reference else ""
    return f"drift: {share_drifted:.0%} of the features drifted{against}; trained before the report: {', '.join(older)}"


def drift_report_content(
    batch: str,
    champion: tuple[str, str] | None,
    previous: str | None,
    against: Mapping[str, DriftAssessment],
    prediction: dict | None,
    config: DriftConfig,
) -> dict:
    """`reports/<batch>/drift_report.json`. `against` holds the assessments against the champion's
    training batch ("champion") and the previous batch ("previous_batch"), whichever exist; the verdict
    is the champion's when there is one (what the model in use was fitted on), else the previous batch's.
    """
    verdict_against = next((name for name in ("champion", "previous_batch") if name in against), None)
    primary = against.get(verdict_against)
    return {
        "batch": batch,
        "verdict": primary.verdict if primary else NO_REFERENCE,
        "share_drifted": primary.share_drifted if primary else 0.0,
        "drifted_features": primary.drifted if primary else [],
        "verdict_against": verdict_against,
        "reference_batch": champion[1] if champion else previous,
        "champion": {"version": champion[0], "batch": champion[1]} if champion else None,
        "previous_batch": previous,
        "note": _reference_note(champion, previous),
        "thresholds": config.model_dump(mode="json"),
        "against_champion": against["champion"].as_json() if "champion" in against else None,
        "against_previous_batch": against["previous_batch"].as_json() if "previous_batch" in against else None,
        "prediction_drift": prediction,
    }


def _reference_note(champion: tuple[str, str] | None, previous: str | None) -> str:
    if champion:
        return f"verdict against the champion v{champion[0]}'s training batch {champion[1]}"
    if previous:
        return f"no champion trained before this batch yet: verdict against the previous batch {previous}"
    return "first batch and no champion: nothing to compare with"


def drift_table_markdown(assessment: DriftAssessment) -> str:
    """One row per feature: its test, p-values, PSI, nulls and status."""
    lines = [
        "| feature | test | statistic | p | p (adjusted) | PSI | nulls (ref → batch) | status |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for f in assessment.features:
        status = f.status + (f" ({f.note})" if f.note else "")
        if f.new_level_count:
            status += f"; new levels: {', '.join(f.new_levels)}" + (
                " …" if f.new_level_count > len(f.new_levels) else ""
            )
        lines.append(
            f"| {f.feature} | {f.test or '–'} | {_number(f.statistic)} | {_number(f.p_value)} | "
            f"{_number(f.adjusted_p_value)} | {_number(f.psi)} | "
            f"{f.reference_null_share:.1%} → {f.batch_null_share:.1%} | {status} |"
        )
    return "\n".join(lines)


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.3g}"


def _base(name: str, kind: str, reference, batch, nulls_given: bool = False) -> FeatureDrift:
    ref_nulls = reference if nulls_given else np.isnan(reference)
    new_nulls = batch if nulls_given else np.isnan(batch)
    return FeatureDrift(
        feature=name,
        kind=kind,
        test="",
        reference_rows=len(reference),
        batch_rows=len(batch),
        reference_null_share=float(ref_nulls.mean()) if len(reference) else 0.0,
        batch_null_share=float(new_nulls.mean()) if len(batch) else 0.0,
    )


def _too_few(reference_rows: int, batch_rows: int, min_rows: int) -> str:
    if min(reference_rows, batch_rows) >= min_rows:
        return ""
    return f"{batch_rows} rows in the batch, {reference_rows} in the reference; at least {min_rows} each"


def _with_tests(base: FeatureDrift, tests: dict[str, tuple[float, float]], psi: float) -> FeatureDrift:
    """The feature with its tests' results: the statistic of the first, the smallest p-value."""
    if not tests:
        return replace(base, psi=psi, note="no values to test")
    statistic = next(iter(tests.values()))[0]
    p_value = min(p for _, p in tests.values())
    return replace(base, test="+".join(tests), statistic=statistic, p_value=p_value, tests=len(tests), psi=psi)


def _chi2(table) -> tuple[float, float]:
    """Chi-squared test of independence of a 2 x k table; one level (or an empty row) shows no difference."""
    table = np.asarray(table, dtype=float)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 0.0, 1.0
    result = chi2_contingency(table)
    return float(result.statistic), float(result.pvalue) if not math.isnan(result.pvalue) else 1.0


def _levels(values: pd.Series) -> pd.Series:
    """Values as text levels, a null as NULL_LEVEL (so a rise in nulls is a change of level shares)."""
    return values.astype("object").where(values.notna(), NULL_LEVEL).astype(str)


def _pooled(counts: pd.Series, kept: list) -> list[float]:
    """Counts of the kept levels, then of every other level pooled."""
    return [float(counts.get(level, 0)) for level in kept] + [float(counts.drop(kept, errors="ignore").sum())]


def _is_numeric(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
