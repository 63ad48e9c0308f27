"""Plots people look at: drawn with matplotlib (no screen needed), saved as PNG files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def plot_metrics_side_by_side(runs: pd.DataFrame, path: Path) -> Path:
    """A grouped bar chart: one group per metric, one bar per run (`experiment@batch`).

    `runs` has one row per run with `experiment_id`, `experiment`, `batch` and `metrics.*` columns,
    as `ExperimentManager.compare_experiments` returns. Timing metrics are left out: they are not quality.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [c for c in runs.columns if c.startswith("metrics.") and not c.endswith("_seconds")]
    if not metrics:
        raise ValueError("no metrics to plot")
    labels = [f"{row.experiment_id}: {row.experiment} @ {row.batch}" for row in runs.itertuples()]
    width = 0.8 / len(runs)
    figure, axes = plt.subplots(figsize=(max(6, 1.6 * len(metrics) * max(1, len(runs) / 2)), 4.5))
    for index, label in enumerate(labels):
        values = [runs.iloc[index][metric] for metric in metrics]
        positions = [m + (index - (len(runs) - 1) / 2) * width for m in range(len(metrics))]
        bars = axes.bar(positions, values, width, label=label)
        axes.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)
    axes.set_xticks(range(len(metrics)), [metric.removeprefix("metrics.") for metric in metrics])
    axes.set_ylabel("value on the held-out split")
    axes.set_title("Experiments compared")
    axes.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=min(3, len(labels)))
    axes.margins(y=0.15)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
