"""Evaluation: metrics on the held-out split, the winner among candidates, the report table."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from ml_platform.lib.config import METRIC_DIRECTIONS, PromotionConfig


@dataclass(frozen=True)
class Predictions:
    """A model's outputs on some rows: the predicted class or value, and for classification the
    probability of the positive class (what ROC AUC ranks)."""

    labels: np.ndarray
    scores: np.ndarray | None = None


def predict(task: str, model, x: pd.DataFrame) -> Predictions:
    labels = np.asarray(model.predict(x))
    return Predictions(labels, np.asarray(model.predict_proba(x)[:, 1]) if task == "classification" else None)


def metrics_of(task: str, y: pd.Series, predictions: Predictions) -> dict[str, float]:
    """Every metric of the task for predictions of the rows whose truth is `y`."""
    labels = predictions.labels
    if task == "classification":
        return {
            "f1": float(skm.f1_score(y, labels, zero_division=0)),
            "roc_auc": float(skm.roc_auc_score(y, predictions.scores)),
            "precision": float(skm.precision_score(y, labels, zero_division=0)),
            "recall": float(skm.recall_score(y, labels, zero_division=0)),
            "accuracy": float(skm.accuracy_score(y, labels)),
        }
    return {
        "rmse": float(math.sqrt(skm.mean_squared_error(y, labels))),
        "mae": float(skm.mean_absolute_error(y, labels)),
        "r2": float(skm.r2_score(y, labels)),
    }


def score(task: str, model, x: pd.DataFrame, y: pd.Series) -> dict[str, float]:
    """Every metric of the task for a fitted model on (x, y)."""
    return metrics_of(task, y, predict(task, model, x))


def is_better(candidate: float, incumbent: float, mode: str, min_improvement: float = 0.0) -> bool:
    """True when `candidate` beats `incumbent` by more than `min_improvement` in direction `mode`."""
    if mode == "max":
        return candidate > incumbent + min_improvement
    return candidate < incumbent - min_improvement


def pick_winner(scores: dict[str, dict[str, float]], metric: str, mode: str) -> str:
    """The candidate with the best `metric`; ties go to the first name in sorted order."""
    if not scores:
        raise ValueError("no candidates to choose from")
    sign = -1 if mode == "max" else 1
    return min(sorted(scores), key=lambda name: sign * scores[name][metric])


def metrics_table_markdown(scores: dict[str, dict[str, float]], task: str, winner: str) -> str:
    """The candidates' metrics as a markdown table, the winner marked."""
    names = list(METRIC_DIRECTIONS[task])
    lines = ["| model | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for model in sorted(scores):
        label = f"**{model}** (winner)" if model == winner else model
        values = " | ".join(_fmt(scores[model].get(name)) for name in names)
        lines.append(f"| {label} | {values} |")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or np.isnan(value) else f"{value:.4f}"


# ---------------------------------------------------------------- the promotion gate


def decide_on_held_out_rows(
    promotion: PromotionConfig,
    mode: str,
    seed: int,
    y: pd.Series,
    winner: Predictions,
    champion: Predictions,
    champion_version: str,
) -> PromotionDecision:
    """The gate's decision for a winner and a champion that both predicted the held-out rows `y`."""
    comparison = paired_bootstrap(
        promotion.primary_metric, mode, y, winner, champion, promotion.bootstrap_samples, promotion.confidence, seed
    )
    return gate_decision(comparison, champion_version, promotion.min_improvement, promotion.min_held_out_rows)


@dataclass(frozen=True)
class PairedComparison:
    """The winner against the champion on the same held-out rows, by a seeded paired bootstrap.

    `improvement` is the winner's metric minus the champion's, signed so that positive is better
    (for rmse, the champion's minus the winner's); `low` and `high` bound it at `confidence`.
    """

    metric: str
    winner: float
    champion: float
    improvement: float
    low: float
    high: float
    confidence: float
    rows: int
    samples: int

    def describe(self) -> str:
        return (
            f"{self.metric} {self.winner:.4f} vs {self.champion:.4f}, improvement {self.improvement:+.4f} "
            f"({self.confidence:.0%} interval {self.low:+.4f} to {self.high:+.4f}, {self.rows} rows)"
        )

    def as_tags(self) -> dict[str, str]:
        return {f"{COMPARISON_TAG_PREFIX}{name}": str(value) for name, value in asdict(self).items()}

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> PairedComparison | None:
        values = {name: tags.get(f"{COMPARISON_TAG_PREFIX}{name}") for name in cls.__dataclass_fields__}
        if any(value is None for value in values.values()):
            return None
        kinds = {"metric": str, "rows": int, "samples": int}
        return cls(**{name: kinds.get(name, float)(value) for name, value in values.items()})


COMPARISON_TAG_PREFIX = "decision.comparison."


# Rows x resamples drawn at once: about 40 MB for each array of draws, counts and weights, whatever the batch size.
_RESAMPLE_CELLS = 5_000_000


def paired_bootstrap(
    metric: str,
    mode: str,
    y: pd.Series,
    winner: Predictions,
    champion: Predictions,
    samples: int,
    confidence: float,
    seed: int,
) -> PairedComparison:
    """Resample the held-out rows with replacement, `samples` times, and score both models on each
    resample: the spread of the difference is what the rows' noise alone would make of it.

    Why a paired bootstrap: both models are scored on the same rows, so most of the noise (which
    rows happen to be easy) is shared and cancels in the difference; it works for every metric the
    platform offers (ROC AUC, F1, RMSE...), where DeLong's test covers ROC AUC only. The interval is
    the percentile interval of the differences; resamples where the metric is undefined (one class
    only) are left out. Seeded, so the same rows always give the same decision.
    """
    truth = np.asarray(y)
    rng = np.random.default_rng(seed)
    chunk = max(1, _RESAMPLE_CELLS // max(1, len(truth)))
    sign = 1.0 if mode == "max" else -1.0
    differences = []
    for start in range(0, samples, chunk):
        counts = _resample_counts(rng, min(chunk, samples - start), len(truth))
        differences.append(
            sign
            * (_metric_on_counts(metric, truth, winner, counts) - _metric_on_counts(metric, truth, champion, counts))
        )
    spread = np.concatenate(differences)
    spread = spread[np.isfinite(spread)]
    everything = np.ones((1, len(truth)))
    winner_value = float(_metric_on_counts(metric, truth, winner, everything)[0])
    champion_value = float(_metric_on_counts(metric, truth, champion, everything)[0])
    tail = (1 - confidence) / 2
    low, high = (float(q) for q in np.quantile(spread, [tail, 1 - tail])) if len(spread) else (math.nan, math.nan)
    return PairedComparison(
        metric=metric,
        winner=winner_value,
        champion=champion_value,
        improvement=sign * (winner_value - champion_value),
        low=low,
        high=high,
        confidence=confidence,
        rows=len(truth),
        samples=len(spread),
    )


def _resample_counts(rng: np.random.Generator, resamples: int, rows: int) -> np.ndarray:
    """How often each row is drawn in each resample (resamples x rows): `rows` draws with replacement."""
    drawn = rng.integers(0, rows, size=(resamples, rows)) + rows * np.arange(resamples)[:, np.newaxis]
    return np.bincount(drawn.ravel(), minlength=resamples * rows).reshape(resamples, rows).astype(float)


def _metric_on_counts(metric: str, truth: np.ndarray, predictions: Predictions, counts: np.ndarray) -> np.ndarray:
    """`metric` on each resample, a row of `counts` (how often each held-out row was drawn): one value
    per resample, agreeing with `metrics_of` (scikit-learn) on the rows drawn.

    Each metric is a weighted sum over the rows, so a resample costs a matrix product, not a copy of
    the rows; ROC AUC sorts the scores once and counts, per resample, the weight of negatives below
    each positive (ties count half), which is the Mann-Whitney form of the AUC.
    """
    labels = predictions.labels
    with np.errstate(invalid="ignore", divide="ignore"):
        if metric == "roc_auc":
            order = np.argsort(predictions.scores, kind="stable")
            ordered_scores = predictions.scores[order]
            starts = np.flatnonzero(np.r_[True, ordered_scores[1:] != ordered_scores[:-1]])
            positive = (truth[order] == 1).astype(float)
            weights = counts[:, order]
            positives = np.add.reduceat(weights * positive, starts, axis=1)
            negatives = np.add.reduceat(weights * (1 - positive), starts, axis=1)
            below = np.cumsum(negatives, axis=1) - negatives
            pairs = positives.sum(axis=1) * negatives.sum(axis=1)
            return (positives * (below + negatives / 2)).sum(axis=1) / pairs
        drawn = counts.sum(axis=1)
        if metric == "accuracy":
            return counts @ (labels == truth).astype(float) / drawn
        if metric in ("precision", "recall", "f1"):
            true_positive = counts @ ((labels == 1) & (truth == 1)).astype(float)
            predicted = counts @ (labels == 1).astype(float)
            actual = counts @ (truth == 1).astype(float)
            denominator = {"precision": predicted, "recall": actual, "f1": (predicted + actual) / 2}[metric]
            return np.where(denominator > 0, true_positive / np.where(denominator > 0, denominator, 1), 0.0)
        errors = labels.astype(float) - truth
        if metric == "rmse":
            return np.sqrt(counts @ errors**2 / drawn)
        if metric == "mae":
            return counts @ np.abs(errors) / drawn
        if metric == "r2":
            spread = counts @ truth.astype(float) ** 2 - (counts @ truth.astype(float)) ** 2 / drawn
            return 1 - (counts @ errors**2) / spread
    raise ValueError(f"unknown metric {metric!r}")


@dataclass(frozen=True)
class PromotionDecision:
    alias: str  # "champion" or "challenger"
    reason: str
    comparison: PairedComparison | None = None

    def as_tags(self, incumbent: str | None, rules: str) -> dict[str, str]:
        """The decision as registered-version tags, with the champion it was made against and the
        fingerprint of the rules that made it: what a retried step reads back (`recorded_decision`)."""
        return {
            "decision.alias": self.alias,
            "decision.incumbent": incumbent or "",
            "decision.rules": rules,
            "promotion_reason": self.reason,
            **(self.comparison.as_tags() if self.comparison else {}),
        }


def recorded_decision(
    tags: dict[str, str], version: str, champion_now: str | None, rules: str
) -> PromotionDecision | None:
    """The decision an earlier attempt recorded on `version`, if it still stands; else None (decide again).

    A retried champion step (its run retried, or the step after an MLflow error) must not decide
    again from scratch: the alias may have moved to this very version already, and the model would
    be compared with itself. The recorded decision stands while the champion is still the one it
    was made against, or is this version (the move happened), and the rules are unchanged.
    """
    if "decision.alias" not in tags or tags.get("decision.rules") != rules:
        return None
    if champion_now not in (tags["decision.incumbent"] or None, version):
        return None
    return PromotionDecision(tags["decision.alias"], tags.get("promotion_reason", ""), PairedComparison.from_tags(tags))


def first_champion(metric: str, winner_score: float) -> PromotionDecision:
    return PromotionDecision("champion", f"no current champion; {metric}={winner_score:.4f}")


def earlier_than_champion(
    batch_id: str, champion_version: str, champion_batch: str | None, ordered_batches: list[str]
) -> PromotionDecision | None:
    """A challenger when this batch comes before the champion's: an older batch's model never takes
    the alias by itself, whatever its score.

    Why: a backfill, a rerun after a config change or a corrected old file re-decides an old batch,
    and its held-out rows are old data; the champion was chosen on newer data. Without this rule,
    the last decision to finish would win whatever its batch, so the champion would depend on the
    order in which runs happen to end. A batch the partitions no longer list has no place in the
    order, and is not taken as later either.
    """
    if champion_batch not in ordered_batches or batch_id not in ordered_batches:
        return None
    if ordered_batches.index(batch_id) < ordered_batches.index(champion_batch):
        return PromotionDecision(
            "challenger",
            f"trained on {batch_id}, earlier than the champion's batch {champion_batch} (v{champion_version}): "
            "an older batch never replaces a newer champion by itself; promote by hand if intended",
        )
    return None


def unfair_comparison(
    batch_id: str, champion_version: str, rows_seen_by_champion: int | None
) -> PromotionDecision | None:
    """A challenger when the champion may have trained on this batch's held-out rows.

    `rows_seen_by_champion` is how many held-out ids are among the ids the champion was fitted on,
    or None when the champion's version did not record them (registered before the split was
    recorded): then nothing guarantees a fair comparison either. A changed test size or seed, a
    cumulative window, or a re-delivered row would otherwise flatter the champion silently.
    """
    if rows_seen_by_champion is None:
        return PromotionDecision(
            "challenger",
            f"the champion (v{champion_version}) has no record of the rows it trained on, so a comparison "
            f"on {batch_id}'s held-out rows cannot be shown to be fair; promote by hand if intended",
        )
    if rows_seen_by_champion:
        return PromotionDecision(
            "challenger",
            f"the champion (v{champion_version}) trained on {rows_seen_by_champion} of {batch_id}'s held-out "
            "rows: no fair comparison on them; promote by hand if intended",
        )
    return None


def gate_decision(
    comparison: PairedComparison, champion_version: str, min_improvement: float, min_held_out_rows: int
) -> PromotionDecision:
    """Champion only when the whole interval of the improvement lies above `min_improvement`.

    A point difference inside the noise (the standard error of ROC AUC on 1,000 rows is about
    0.015) would otherwise swap champions on luck, back and forth. Too few rows decide nothing.
    """
    against = f"the champion (v{champion_version}): {comparison.describe()}"
    if comparison.rows < min_held_out_rows:
        return PromotionDecision(
            "challenger",
            f"too few held-out rows to decide ({comparison.rows}, needs {min_held_out_rows}) against {against}",
            comparison,
        )
    if comparison.low > min_improvement:
        return PromotionDecision("champion", f"beats {against}; needed above {min_improvement:g}", comparison)
    return PromotionDecision(
        "challenger", f"not surely better than {against}; needed above {min_improvement:g}", comparison
    )


def quality_problems(
    metric: str,
    mode: str,
    winner: float,
    champion: float | None,
    threshold: float | None,
    max_drop: float | None,
) -> list[str]:
    """Why a batch's winner is worrying, in words a person reads; empty when it is fine.

    `threshold` is the worst acceptable value (a floor for a metric to maximise, a ceiling for one to
    minimise); `max_drop` is how much worse than the champion, on the same held-out rows, it may be.
    """
    problems = []
    if threshold is not None and is_better(threshold, winner, mode):
        side = "below" if mode == "max" else "above"
        problems.append(f"{metric} {winner:.4f} is {side} the threshold {threshold:g}")
    if max_drop is not None and champion is not None:
        drop = champion - winner if mode == "max" else winner - champion
        if drop > max_drop:
            problems.append(
                f"{metric} {winner:.4f} is {drop:.4f} worse than the champion's {champion:.4f} (allowed {max_drop:g})"
            )
    return problems
