"""The 3-class demo against a plain scikit-learn Pipeline, on the same split of the same batches.

The platform's side is what `ml-platform run` does with `configs/wine.yaml`: each wine batch
ingested under the contract, its features built by the dbt SQL, split (held-out, validation and
training rows, seeded and stratified), the default models fitted on the training rows and the
winner picked on the validation rows. The baseline is the textbook Pipeline (standardise, then
logistic regression) fitted on the same training rows. Both are scored on the same held-out rows
by `metrics_of` (macro F1, one-vs-rest macro ROC AUC, accuracy). No orchestration, no MLflow.

    python -m benchmarks.multiclass_baseline --batches 2
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from benchmarks.promotion_rules import batch_features, fitted_candidates
from ml_platform.lib.config import load_config
from ml_platform.lib.demo_data import wine_batches, write_batch_files
from ml_platform.lib.evaluation import metrics_of, pick_winner, predict
from ml_platform.lib.settings import PROJECT_ROOT
from ml_platform.lib.training import carve_validation, split_train_test

WINE_CONFIG = PROJECT_ROOT / "configs" / "wine.yaml"
SHOWN = ("f1", "roc_auc", "accuracy")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=2, help="wine batches (1 to 4), as ml-platform demo-data")
    args = parser.parse_args(argv)
    config = load_config(WINE_CONFIG)
    task, classes, seed = config.data.task, config.data.classes, config.training.random_state
    print("| batch | held-out rows | model | " + " | ".join(SHOWN) + " |")
    print("|---" * (len(SHOWN) + 3) + "|")
    with tempfile.TemporaryDirectory() as folder:
        frames = dict(enumerate(wine_batches(args.batches, config.seed), start=1))
        for path in write_batch_files(Path(folder), frames):
            batch_id = path.stem
            split = carve_validation(
                split_train_test(batch_features(path, config, batch_id), config.data, config.training, batch_id),
                config.data,
                config.training,
            )
            models = fitted_candidates(config, split)
            validation = {
                name: metrics_of(task, split.y_validation, predict(task, model, split.x_validation, classes))
                for name, model in models.items()
            }
            winner = pick_winner(validation, config.promotion.primary_metric, config.primary_metric_mode)
            plain = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
            plain.fit(split.x_train, split.y_train)
            platform = metrics_of(task, split.y_test, predict(task, models[winner], split.x_test, classes))
            baseline = metrics_of(task, split.y_test, predict(task, plain, split.x_test, classes))
            for label, metrics in (
                (f"platform: {winner} (winner)", platform),
                ("plain scikit-learn Pipeline", baseline),
            ):
                values = " | ".join(f"{metrics[name]:.4f}" for name in SHOWN)
                print(f"| {batch_id} | {len(split.test)} | {label} | {values} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
