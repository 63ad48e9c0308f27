"""Evaluation: metrics on the held-out split, the winner among candidates, the report table."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from ml_platform.lib.config import METRIC_DIRECTIONS, PromotionConfig


@dataclass(frozen=True)
class Predictions:
    """A model's outputs on some rows: the predicted class or value, and for classification the
    probabilities ROC AUC ranks, laid out by `classes` (the target's labels, `DataConfig.classes`).

    Binary: `scores` is the probability of the positive class, the last of the two `classes`.
    Multi-class: `scores` is the (rows x classes) probability matrix, a column per label of
    `classes` in that order; a label the model never saw in training has a column of zeros.
    """

    labels: np.ndarray
    scores: np.ndarray | None = None
    classes: tuple = ()

    @property
    def multiclass(self) -> bool:
        return self.scores is not None and self.scores.ndim == 2


def predict(task: str, model, x: pd.DataFrame, classes: Sequence | None = None) -> Predictions:
    """`model`'s predictions of `x`; for classification, its probabilities laid out by `classes`
    (by default the model's own `classes_`, as scikit-learn sorts them)."""
    labels = np.asarray(model.predict(x))
    if task != "classification":
        return Predictions(labels)
    classes = tuple(model.classes_ if classes is None else classes)
    probabilities = class_probabilities(model, x, classes)
    if len(classes) == 2:
        return Predictions(labels, probabilities[:, 1], classes)
    return Predictions(labels, probabilities, classes)


def class_probabilities(model, x: pd.DataFrame, classes: Sequence) -> np.ndarray:
    """`predict_proba` with a column per label of `classes`, in that order: a label the model was
    not trained on (absent from its training rows) gets probability 0, the model's true belief."""
    fitted = list(model.classes_)
    proba = np.asarray(model.predict_proba(x))
    columns = [proba[:, fitted.index(label)] if label in fitted else np.zeros(len(proba)) for label in classes]
    return np.column_stack(columns)


def metrics_of(task: str, y: pd.Series, predictions: Predictions) -> dict[str, float]:
    """Every metric of the task for predictions of the rows whose truth is `y`.

    Multi-class: the same names, macro-averaged (each class counts the same, however rare):
    precision, recall and F1 over the labels in `y` or the predictions, ROC AUC one-vs-rest over
    the labels in `y` (`one_vs_rest_auc`).
    """
    labels = predictions.labels
    if task == "classification" and predictions.multiclass:
        return {
            "f1": float(skm.f1_score(y, labels, average="macro", zero_division=0)),
            "roc_auc": one_vs_rest_auc(np.asarray(y), predictions.scores, predictions.classes),
            "precision": float(skm.precision_score(y, labels, average="macro", zero_division=0)),
            "recall": float(skm.recall_score(y, labels, average="macro", zero_division=0)),
            "accuracy": float(skm.accuracy_score(y, labels)),
        }
    if task == "classification":
        positive = predictions.classes[-1] if predictions.classes else 1
        return {
            "f1": float(skm.f1_score(y, labels, pos_label=positive, zero_division=0)),
            "roc_auc": float(skm.roc_auc_score(np.asarray(y) == positive, predictions.scores)),
            "precision": float(skm.precision_score(y, labels, pos_label=positive, zero_division=0)),
            "recall": float(skm.recall_score(y, labels, pos_label=positive, zero_division=0)),
            "accuracy": float(skm.accuracy_score(y, labels)),
        }
    return {
        "rmse": float(math.sqrt(skm.mean_squared_error(y, labels))),
        "mae": float(skm.mean_absolute_error(y, labels)),
        "r2": float(skm.r2_score(y, labels)),
    }


def one_vs_rest_auc(truth: np.ndarray, probabilities: np.ndarray, classes: Sequence) -> float:
    """The mean over labels of the ROC AUC of "this label or not" ranked by its probability column.

    Only labels that both occur in `truth` and leave some rows out count (AUC is undefined for the
    others): so a held-out batch missing a rare class still has a score, and a class the model never
    saw scores 0.5 (its column is all zeros), which is what it knows about it. Equal to
    scikit-learn's `roc_auc_score(multi_class="ovr", average="macro")` when every label occurs.
    """
    values = [
        skm.roc_auc_score(truth == label, probabilities[:, column])
        for column, label in enumerate(classes)
        if 0 < np.sum(truth == label) < len(truth)
    ]
    return float(np.mean(values)) if values else math.nan


def per_class_metrics(y: pd.Series, predictions: Predictions) -> dict[str, dict[str, float]]:
    """Precision, recall and support of each label of `predictions.classes`, by the label as text
    (what JSON and MLflow keys need): where a macro average hides the one class a model misses."""
    truth, labels = np.asarray(y), predictions.labels
    result = {}
    for label in predictions.classes:
        predicted, actual = labels == label, truth == label
        hits = int(np.sum(predicted & actual))
        result[str(label)] = {
            "precision": hits / int(predicted.sum()) if predicted.any() else 0.0,
            "recall": hits / int(actual.sum()) if actual.any() else 0.0,
            "support": int(actual.sum()),
        }
    return result


def per_class_run_metrics(per_class: dict[str, dict[str, float]]) -> dict[str, float]:
    """`per_class_metrics` as flat MLflow metric names, `class_<label>_precision`: a label's characters
    that MLflow refuses in a name become `_`."""
    return {
        f"class_{re.sub(r'[^A-Za-z0-9_.-]', '_', label)}_{name}": float(value)
        for label, values in per_class.items()
        for name, value in values.items()
        if name != "support"
    }


def labels_unseen_in_training(y_train: pd.Series, *evaluated: pd.Series) -> list[str]:
    """Labels of the `evaluated` rows (validation, held-out, a later batch) that no training row has,
    as text: a rare class a model cannot predict, reported rather than a crash."""
    seen = set(pd.unique(y_train))
    unseen = {label for y in evaluated for label in pd.unique(y) if label not in seen}
    return sorted(str(label) for label in unseen)


def score(task: str, model, x: pd.DataFrame, y: pd.Series, classes: Sequence | None = None) -> dict[str, float]:
    """Every metric of the task for a fitted model on (x, y); `classes` as for `predict`."""
    return metrics_of(task, y, predict(task, model, x, classes))


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
    the rows. Multi-class metrics are the per-class binary ones averaged over the classes that
    `metrics_of` would count on the resample, so the cost grows with the classes, not the memory.
    """
    labels = predictions.labels
    with np.errstate(invalid="ignore", divide="ignore"):
        if metric == "roc_auc" and predictions.multiclass:
            per_class = np.stack(
                [
                    _auc_on_counts(truth == label, predictions.scores[:, column], counts)
                    for column, label in enumerate(predictions.classes)
                ]
            )
            # A class absent from the resample (or the only one in it) has no AUC: left out, as in one_vs_rest_auc.
            defined = np.isfinite(per_class)
            return np.where(defined, per_class, 0).sum(axis=0) / defined.sum(axis=0)
        if metric == "roc_auc":
            positive = predictions.classes[-1] if predictions.classes else 1
            return _auc_on_counts(truth == positive, predictions.scores, counts)
        drawn = counts.sum(axis=1)
        if metric == "accuracy":
            return counts @ (labels == truth).astype(float) / drawn
        if metric in ("precision", "recall", "f1") and predictions.multiclass:
            classes = np.unique(np.concatenate([truth, labels]))
            per_class = np.stack([_binary_on_counts(metric, truth == c, labels == c, counts) for c in classes])
            # scikit-learn's macro average runs over the labels present in the truth or the predictions.
            present = np.stack([counts @ ((truth == c) | (labels == c)).astype(float) > 0 for c in classes])
            return np.where(present, per_class, 0).sum(axis=0) / present.sum(axis=0)
        if metric in ("precision", "recall", "f1"):
            positive = predictions.classes[-1] if predictions.classes else 1
            return _binary_on_counts(metric, truth == positive, labels == positive, counts)
        errors = labels.astype(float) - truth
        if metric == "rmse":
            return np.sqrt(counts @ errors**2 / drawn)
        if metric == "mae":
            return counts @ np.abs(errors) / drawn
        if metric == "r2":
            spread = counts @ truth.astype(float) ** 2 - (counts @ truth.astype(float)) ** 2 / drawn
            return 1 - (counts @ errors**2) / spread
    raise ValueError(f"unknown metric {metric!r}")


def _auc_on_counts(positive: np.ndarray, scores: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """ROC AUC of `scores` for the rows where `positive` holds, on each resample: the scores sorted
    once, then per resample the weight of negatives below each positive (ties count half), the
    Mann-Whitney form of the AUC. NaN for a resample without positives or without negatives."""
    order = np.argsort(scores, kind="stable")
    ordered_scores = scores[order]
    starts = np.flatnonzero(np.r_[True, ordered_scores[1:] != ordered_scores[:-1]])
    is_positive = positive[order].astype(float)
    weights = counts[:, order]
    positives = np.add.reduceat(weights * is_positive, starts, axis=1)
    negatives = np.add.reduceat(weights * (1 - is_positive), starts, axis=1)
    below = np.cumsum(negatives, axis=1) - negatives
    pairs = positives.sum(axis=1) * negatives.sum(axis=1)
    return (positives * (below + negatives / 2)).sum(axis=1) / pairs


def _binary_on_counts(metric: str, actual: np.ndarray, predicted: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Precision, recall or F1 of one class on each resample; 0 where undefined (scikit-learn's zero_division=0)."""
    true_positive = counts @ (actual & predicted).astype(float)
    predicted_count = counts @ predicted.astype(float)
    actual_count = counts @ actual.astype(float)
    both = (predicted_count + actual_count) / 2
    denominator = {"precision": predicted_count, "recall": actual_count, "f1": both}[metric]
    return np.where(denominator > 0, true_positive / np.where(denominator > 0, denominator, 1), 0.0)


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
