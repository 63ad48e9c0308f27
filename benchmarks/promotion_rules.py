"""How often the old and the new champion rule promote, on the same demo batches.

The old rule picked the winner on the held-out rows and promoted it when its score there beat the
champion's by more than `promotion.min_improvement` (0.001). The new one picks the winner on
validation rows carved from the training rows, and promotes only when a paired bootstrap on the
held-out rows puts the whole interval of the improvement above that margin (`lib/evaluation.py`).
Each rule keeps its own champion from batch to batch. No orchestration: the dbt feature SQL and the
models run as in `benchmarks/floor.py`, on the platform's config (`configs/platform.yaml`).

    python -m benchmarks.promotion_rules --batches 3 --rows 5000 --drift 0.03
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import duckdb
import pandas as pd

from benchmarks.floor import build_features
from ml_platform.lib.config import canonical_param_names, load_config
from ml_platform.lib.demo_data import write_demo_batches
from ml_platform.lib.evaluation import decide_on_held_out_rows, is_better, metrics_of, pick_winner, predict
from ml_platform.lib.ingestion import ingest_batch
from ml_platform.lib.settings import DEFAULT_CONFIG_PATH
from ml_platform.lib.training import carve_validation, fit_model, split_train_test


def batch_features(path: Path, config, batch_id: str) -> pd.DataFrame:
    with duckdb.connect() as con:
        ingest_batch(path, config.data, con)
        build_features(con, config, batch_id)
        return con.execute('SELECT * FROM "features"').df()


def fitted_candidates(config, split):
    task = config.data.task
    return {
        name: fit_model(
            task, spec.type, canonical_param_names(spec.type, spec.params), split, config.training.random_state
        ).pipeline
        for name, spec in config.models.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--drift", type=float, default=0.03)
    args = parser.parse_args(argv)
    config = load_config(DEFAULT_CONFIG_PATH)
    task, metric, mode = config.data.task, config.promotion.primary_metric, config.primary_metric_mode
    margin = config.promotion.min_improvement
    old_champion = new_champion = None  # (batch, model) per rule
    promotions = {"old": 0, "new": 0}
    print(f"{args.batches} batches of {args.rows} rows, drift {args.drift}; {metric}, margin {margin:g}")
    print("| batch | old rule: winner on held-out rows, vs champion | new rule: winner on validation, gate |")
    print("|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        paths = write_demo_batches(Path(folder), args.batches, args.rows, drift=args.drift)
        for path in paths:
            batch_id = path.stem
            features = batch_features(path, config, batch_id)
            split = split_train_test(features, config.data, config.training, batch_id)

            # The old rule: every candidate trained on all training rows and picked on the held-out rows.
            models = fitted_candidates(config, split)
            held_out = {
                name: metrics_of(task, split.y_test, predict(task, m, split.x_test)) for name, m in models.items()
            }
            winner = pick_winner(held_out, metric, mode)
            old_score = held_out[winner][metric]
            if old_champion is None:
                old_line, promoted = f"{winner} {old_score:.4f}, first champion", True
            else:
                champion_score = metrics_of(task, split.y_test, predict(task, old_champion[1], split.x_test))[metric]
                promoted = is_better(old_score, champion_score, mode, margin)
                old_line = f"{winner} {old_score:.4f} vs {champion_score:.4f}: {'promoted' if promoted else 'kept'}"
            if promoted:
                old_champion, promotions["old"] = (batch_id, models[winner]), promotions["old"] + 1

            # The new rule: picked on validation rows, promoted by the gate on the untouched held-out rows.
            carved = carve_validation(split, config.data, config.training)
            models = fitted_candidates(config, carved)
            validation = {
                name: metrics_of(task, carved.y_validation, predict(task, m, carved.x_validation))
                for name, m in models.items()
            }
            winner = pick_winner(validation, metric, mode)
            winner_predictions = predict(task, models[winner], carved.x_test)
            if new_champion is None:
                score = metrics_of(task, carved.y_test, winner_predictions)[metric]
                new_line, promoted = f"{winner} {score:.4f}, first champion", True
            else:
                decision = decide_on_held_out_rows(
                    config.promotion,
                    mode,
                    config.seed,
                    carved.y_test,
                    winner_predictions,
                    predict(task, new_champion[1], carved.x_test),
                    new_champion[0],
                )
                promoted = decision.alias == "champion"
                new_line = f"{winner} {decision.comparison.describe()}: {'promoted' if promoted else 'kept'}"
            if promoted:
                new_champion, promotions["new"] = (batch_id, models[winner]), promotions["new"] + 1
            print(f"| {batch_id} | {old_line} | {new_line} |", flush=True)
    print(
        f"promotions (the first champion included): old rule {promotions['old']}, new rule {promotions['new']}; "
        f"champion at the end: old {old_champion[0]}, new {new_champion[0]}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
