"""What logging to ClearML as well as MLflow (`tracking.backends: [mlflow, clearml]`) costs a model run.

The default models are fitted once on one demo batch's split, as the pipeline does. Then each model's
run is logged, in rounds, to MLflow alone (the baseline) and to ClearML offline: the same
`ModelRunRecord` and fitted pipeline the model step hands each store. Rounds alternate so that a busy
machine slows both sides alike; the ratio is what to quote. The first ClearML task (importing
`clearml`, starting its logger) is timed on its own: a run process pays it once.

    python -m benchmarks.clearml_overhead --rounds 5 --rows 3000
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.promotion_rules import batch_features
from ml_platform.lib.config import canonical_param_names, load_config
from ml_platform.lib.demo_data import write_demo_batches
from ml_platform.lib.evaluation import score
from ml_platform.lib.mlflow_store import MlflowStore
from ml_platform.lib.provenance import frame_hash, model_run_record
from ml_platform.lib.settings import DEFAULT_CONFIG_PATH
from ml_platform.lib.training import carve_validation, fit_model, split_train_test


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds of logging every model to each side")
    parser.add_argument("--rows", type=int, default=3000, help="rows of the demo batch")
    args = parser.parse_args(argv)
    config = load_config(DEFAULT_CONFIG_PATH)
    task, seed = config.data.task, config.training.random_state
    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder)
        (path,) = write_demo_batches(home / "incoming", 1, args.rows)
        features = batch_features(path, config, path.stem)
        split = carve_validation(
            split_train_test(features, config.data, config.training, path.stem), config.data, config.training
        )
        fitted = {
            name: fit_model(task, spec.type, canonical_param_names(spec.type, spec.params), split, seed)
            for name, spec in config.models.items()
        }
        records = {
            name: model_run_record(
                config.models[name].type,
                model,
                score(task, model.pipeline, split.x_test, split.y_test, config.data.classes),
                split,
                config.training,
                frame_hash(features),
                config,
                {"dagster.partition": path.stem, "model_name": name},
            )
            for name, model in fitted.items()
        }
        mlflow = MlflowStore(f"sqlite:///{home / 'mlflow.db'}", "benchmark", str(home / "artifacts"))
        mlflow.experiment_id()  # the store's schema and experiment, made before timing

        from ml_platform.lib.clearml_store import ClearMLStore, ClearMLTarget

        clearml = ClearMLStore(ClearMLTarget(home / "clearml"), "benchmark")
        started = time.perf_counter()
        name = next(iter(records))
        clearml.log_fitted_model(f"{name}-first", records[name], fitted[name])
        first_task = time.perf_counter() - started

        per_run = {"mlflow": [], "clearml": []}
        for round_number in range(args.rounds):
            for name, record in records.items():
                run_name = f"{name}-{round_number}"
                started = time.perf_counter()
                mlflow.log_fitted_model(run_name, record, fitted[name], split)
                per_run["mlflow"].append(time.perf_counter() - started)
                started = time.perf_counter()
                clearml.log_fitted_model(run_name, record, fitted[name])
                per_run["clearml"].append(time.perf_counter() - started)
        sessions = list((home / "clearml" / "offline").glob("*.zip"))
        session_kb = statistics.median(session.stat().st_size for session in sessions) / 1024

    mlflow_ms = statistics.median(per_run["mlflow"]) * 1000
    clearml_ms = statistics.median(per_run["clearml"]) * 1000
    runs = len(per_run["mlflow"])
    print(f"{len(records)} models, {args.rows} rows, {args.rounds} rounds ({runs} runs per side), median per run:")
    print(f"  MLflow alone (baseline)       {mlflow_ms:8.1f} ms")
    print(f"  ClearML offline, added        {clearml_ms:8.1f} ms")
    print(f"  both / MLflow alone           {(mlflow_ms + clearml_ms) / mlflow_ms:8.2f} x")
    print(f"  first ClearML task of a process (import, logger): {first_task:.2f} s")
    print(f"  offline session zip (median): {session_kb:.0f} KB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
