"""The champion backtest: one fitted model scored on each batch that came after its training data.

Every row of a later batch is out-of-time for the model (neither a per-batch nor a cumulative
window reaches past the batch it was trained for), so the whole batch is scored, not a held-out
split. The result is a per-batch metrics table and a trend of the primary metric across batches.
Dagster-free: `ml_platform.defs.evaluation.backtest` loads the model and the batches and calls
`run_backtest`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ml_platform.lib.config import METRIC_DIRECTIONS, DataConfig
from ml_platform.lib.evaluation import score
from ml_platform.lib.training import model_feature_columns, numbers_as_floats

# A trend within this fraction of the metric's mean per batch is noise, not a change: 1% of a
# roc_auc of 0.80 is 0.008 per batch; 1% of an RMSE of 12.0 is 0.12.
DEFAULT_RELATIVE_TOLERANCE = 0.01


@dataclass(frozen=True)
class BatchScore:
    """One batch of the backtest: its metrics, or why it could not be scored."""

    batch_id: str
    rows: int
    metrics: Mapping[str, float] | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch": self.batch_id,
            "rows": self.rows,
            # An undefined metric (ROC AUC on a batch of one class) is null, not JSON's invalid NaN.
            "metrics": None
            if self.metrics is None
            else {name: (value if math.isfinite(value) else None) for name, value in self.metrics.items()},
            "error": self.error,
        }


@dataclass(frozen=True)
class Trend:
    """The primary metric across the scored batches, in batch order.

    `slope` is the least-squares slope per batch (batches one step apart, a batch that could not
    be scored keeping its place), `change` the last scored value minus the first. The verdict
    reads the slope in the metric's direction: "degrading", "improving", "stable" within the
    tolerance, or "too few batches" when fewer than two were scored.
    """

    slope: float | None
    change: float | None
    verdict: str
    tolerance: float  # absolute, per batch, in the metric's units


@dataclass(frozen=True)
class BacktestResult:
    task: str
    metric: str
    mode: str
    batches: tuple[BatchScore, ...]
    trend: Trend

    @property
    def scored(self) -> tuple[BatchScore, ...]:
        return tuple(batch for batch in self.batches if batch.error is None)

    @property
    def errors(self) -> tuple[BatchScore, ...]:
        return tuple(batch for batch in self.batches if batch.error is not None)

    @property
    def rows_scored(self) -> int:
        return sum(batch.rows for batch in self.scored)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values: what the report file holds."""
        return {
            "task": self.task,
            "primary_metric": self.metric,
            "mode": self.mode,
            "batches": [batch.to_dict() for batch in self.batches],
            "trend": {
                "slope_per_batch": self.trend.slope,
                "change_first_to_last": self.trend.change,
                "verdict": self.trend.verdict,
                "tolerance_per_batch": self.trend.tolerance,
            },
        }

    def markdown(self) -> str:
        """A row per batch, every metric of the task (the primary one first), and the trend below."""
        names = [self.metric, *(name for name in METRIC_DIRECTIONS[self.task] if name != self.metric)]
        lines = ["| batch | rows | " + " | ".join(names) + " |", "|---" * (len(names) + 2) + "|"]
        for batch in self.batches:
            if batch.metrics is None:
                cells = [f"error: {_markdown_cell(batch.error or '')}", *[""] * (len(names) - 1)]
            else:
                cells = [_fmt(batch.metrics.get(name)) for name in names]
            lines.append(f"| {batch.batch_id} | {batch.rows} | " + " | ".join(cells) + " |")
        trend = self.trend
        if trend.slope is None:
            lines.append(f"\nTrend of {self.metric}: {trend.verdict}.")
        else:
            lines.append(
                f"\nTrend of {self.metric} ({self.mode} is better): {trend.verdict}, "
                f"slope {trend.slope:+.4f} per batch (tolerance {trend.tolerance:.4f}), "
                f"change {trend.change:+.4f} from first to last."
            )
        return "\n".join(lines)


def run_backtest(
    model,
    batches: Mapping[str, pd.DataFrame],
    data: DataConfig,
    *,
    metric: str,
    mode: str,
    relative_tolerance: float = DEFAULT_RELATIVE_TOLERANCE,
) -> BacktestResult:
    """Score `model` on each batch's features, in the mapping's order, and fit the trend.

    A batch the model cannot score (a column it needs is missing, the target is absent, no rows)
    becomes an error row with the reason; the other batches are still scored. A metric undefined
    on a batch (ROC AUC when it holds one class) is NaN there and left out of the trend.
    A multi-class model's metrics are laid out by the contract's labels (`data.classes`),
    including one it never saw in training.
    """
    if not batches:
        raise ValueError("no batches to backtest")
    task = data.task
    if metric not in METRIC_DIRECTIONS[task]:
        raise ValueError(f"{metric!r} is not a {task} metric; allowed: {', '.join(METRIC_DIRECTIONS[task])}")
    rows = tuple(_score_batch(model, batch_id, features, data) for batch_id, features in batches.items())
    points = [
        (position, row.metrics[metric])
        for position, row in enumerate(rows)
        if row.metrics is not None and math.isfinite(row.metrics[metric])
    ]
    return BacktestResult(task, metric, mode, rows, trend(points, mode, relative_tolerance))


def model_inputs(features: pd.DataFrame, data: DataConfig) -> tuple[pd.DataFrame, pd.Series]:
    """(x, y) from a batch's `features` table, as `split_train_test` builds them for training:
    the model's columns (`model_feature_columns`), numbers as floats."""
    if data.target not in features.columns:
        raise KeyError(f"no target column {data.target!r} in the batch's features")
    x = numbers_as_floats(features[model_feature_columns(features.columns, data)])
    return x, features[data.target]


def _score_batch(model, batch_id: str, features: pd.DataFrame, data: DataConfig) -> BatchScore:
    try:
        x, y = model_inputs(features, data)
        if x.empty:
            raise ValueError("the batch has no rows")
        metrics = score(data.task, model, x, y, data.classes)
    except (ValueError, KeyError, TypeError) as error:  # the model cannot read this batch
        reason = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
        first_line = reason.splitlines()[0][:200] if reason else ""
        return BatchScore(batch_id, len(features), error=f"{type(error).__name__}: {first_line}")
    return BatchScore(batch_id, len(features), metrics=metrics)


def trend(
    points: list[tuple[float, float]], mode: str, relative_tolerance: float = DEFAULT_RELATIVE_TOLERANCE
) -> Trend:
    """The least-squares slope through (position, value) points and its verdict in direction `mode`.

    The tolerance is relative to the mean value, so one default serves a ROC AUC and an RMSE.
    """
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
    values = [value for _, value in points]
    tolerance = relative_tolerance * abs(sum(values) / len(values)) if values else 0.0
    if len(points) < 2:
        return Trend(None, None, "too few batches", tolerance)
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(values) / len(values)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sum((x - mean_x) ** 2 for x, _ in points)
    if abs(slope) <= tolerance:
        verdict = "stable"
    elif (slope > 0) == (mode == "max"):
        verdict = "improving"
    else:
        verdict = "degrading"
    return Trend(slope, values[-1] - values[0], verdict, tolerance)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{value:.4f}"


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
