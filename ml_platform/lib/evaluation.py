"""Evaluation: metrics on the held-out split, the winner among candidates, the report table."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from ml_platform.lib.config import METRIC_DIRECTIONS


def score(task: str, model, x: pd.DataFrame, y: pd.Series) -> dict[str, float]:
    """Every metric of the task for a fitted model on (x, y)."""
    predictions = model.predict(x)
    if task == "classification":
        positive_scores = model.predict_proba(x)[:, 1]
        return {
            "f1": float(skm.f1_score(y, predictions, zero_division=0)),
            "roc_auc": float(skm.roc_auc_score(y, positive_scores)),
            "precision": float(skm.precision_score(y, predictions, zero_division=0)),
            "recall": float(skm.recall_score(y, predictions, zero_division=0)),
            "accuracy": float(skm.accuracy_score(y, predictions)),
        }
    return {
        "rmse": float(math.sqrt(skm.mean_squared_error(y, predictions))),
        "mae": float(skm.mean_absolute_error(y, predictions)),
        "r2": float(skm.r2_score(y, predictions)),
    }


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


@dataclass(frozen=True)
class PromotionDecision:
    alias: str  # "champion" or "challenger"
    reason: str


def decide_promotion(
    metric: str, mode: str, min_improvement: float, challenger: float, champion: float | None
) -> PromotionDecision:
    """Whether the batch's winner takes the `champion` alias, and why, in words a person reads."""
    if champion is None:
        return PromotionDecision("champion", f"no current champion; {metric}={challenger:.4f}")
    if is_better(challenger, champion, mode, min_improvement):
        return PromotionDecision(
            "champion",
            f"beats the champion on this batch's held-out data: {metric} {challenger:.4f} vs {champion:.4f} "
            f"(needed a margin over {min_improvement:g})",
        )
    return PromotionDecision(
        "challenger",
        f"does not beat the champion on this batch's held-out data: {metric} {challenger:.4f} vs {champion:.4f} "
        f"(needed a margin over {min_improvement:g})",
    )


def champion_saw_batch(
    champion_window: str | None, champion_batch: str | None, batch_id: str, ordered_batches: list[str]
) -> bool:
    """Whether a champion trained on rows of `batch_id`, so scoring it there would flatter it.

    It did when it was trained with a cumulative window for a later batch: that window held every
    row of `batch_id`. (With a per-batch window, or for an earlier batch, it never saw this batch's
    held-out rows: the split of a batch is the same whenever it runs.)
    """
    if champion_window != "cumulative" or champion_batch not in ordered_batches or batch_id not in ordered_batches:
        return False
    return ordered_batches.index(batch_id) < ordered_batches.index(champion_batch)


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
