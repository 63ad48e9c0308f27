"""The floor: the pipeline's work on one batch as a plain script, with no orchestration, in one process.

Read the batch file and check its data contract (`ingest_batch`), build the dbt models' feature SQL in
an in-memory DuckDB (the same SQL files, rendered with jinja2: `stg_batch` as a view, `features` as a
table), the same seeded split, every configured model with its hyperparameters, the same metrics and
winner. With `--tracking`, the same MLflow logging as the assets: one run per model with the same
params, metrics, tags and artifacts, and the winner registered (`champion` when it beats the current
champion, which a fresh home does not have).

    python benchmarks/floor.py --home H --batch batch_0001 [--tracking]

Settings come from the environment like the platform's (ML_PLATFORM_CONFIG); `--home` is the
ML_PLATFORM_HOME. The last stdout line is JSON: import and work time, per-step times, per-model metrics.
"""

# ruff: noqa: E402  (the clock starts before the heavy imports, to time them)
import time

STARTED = time.perf_counter()

import argparse
import json
import sys
import uuid
from pathlib import Path

import duckdb
import jinja2

import ml_platform
from ml_platform.lib.batches import batch_file
from ml_platform.lib.config import PlatformConfig, canonical_param_names, code_version, load_config
from ml_platform.lib.evaluation import (
    decide_on_held_out_rows,
    first_champion,
    metrics_of,
    pick_winner,
    predict,
    score,
    unfair_comparison,
)
from ml_platform.lib.ingestion import ingest_batch
from ml_platform.lib.provenance import frame_hash, model_run_record, reproduction_tags
from ml_platform.lib.settings import Settings
from ml_platform.lib.training import carve_validation, fit_model, split_train_test

DBT_MODELS = Path(ml_platform.__file__).resolve().parent / "dbt_project" / "models"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", required=True, type=Path, help="ML_PLATFORM_HOME: incoming batches, MLflow store")
    parser.add_argument("--batch", required=True, help="batch id, e.g. batch_0001")
    parser.add_argument("--tracking", action="store_true", help="log to MLflow and register the winner, as the assets")
    return parser.parse_args(argv)


def render_model(relative_path: str, variables: dict[str, str]) -> str:
    """A dbt model's SQL with `var`, `source` and `ref` resolved to the in-memory database's names."""

    def var(name: str, default: str | None = None) -> str:
        if name in variables:
            return variables[name]
        if default is None:
            raise KeyError(f"dbt var {name!r} is not set")
        return default

    environment = jinja2.Environment(undefined=jinja2.StrictUndefined)
    template = environment.from_string((DBT_MODELS / relative_path).read_text())
    return template.render(var=var, source=lambda source_name, table: f'"{table}"', ref=lambda model: f'"{model}"')


def build_features(con: duckdb.DuckDBPyConnection, config: PlatformConfig, batch_id: str) -> None:
    """`stg_batch` (a view) and `features` (a table) over `raw_batch`, as dbt's materializations do."""
    variables = {  # the vars the platform passes to dbt (defs/features/assets.py: dbt_vars)
        "batch_id": batch_id,
        "dataset": config.data.name,
        "id_column": config.data.id_column,
        "target_column": config.data.target,
    }
    con.execute(f'CREATE VIEW "stg_batch" AS (\n{render_model("staging/stg_batch.sql", variables)}\n)')
    con.execute(f'CREATE TABLE "features" AS (\n{render_model("features/features.sql", variables)}\n)')


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = Settings(home=args.home.resolve(), config_path=Settings.from_env().config_path)
    config = load_config(settings.config_path)
    if config.training.window != "batch":
        raise SystemExit("the floor trains on one batch: set training.window to 'batch'")
    store = None
    if args.tracking:
        # The same libraries the platform loads for tracking, imported before the work clock starts.
        import mlflow.sklearn  # noqa: F401

        from ml_platform.lib.mlflow_store import MlflowStore

        store = MlflowStore(
            settings.local_tracking_uri,
            config.tracking.experiment_name,
            artifact_location=(settings.mlflow_dir / "artifacts").as_uri(),
        )
    imported = time.perf_counter()

    steps: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        steps[name] = round(now - clock, 4)
        clock = now

    batch_id = args.batch
    task, training = config.data.task, config.training
    source = batch_file(settings.incoming_dir(config), batch_id, config.data.file_format)
    with duckdb.connect() as con:
        summary = ingest_batch(source, config.data, con)
        lap("ingest")
        build_features(con, config, batch_id)
        features = con.execute('SELECT * FROM "features"').df()
    lap("features")
    split = carve_validation(split_train_test(features, config.data, training, batch_id), config.data, training)
    data_hash = frame_hash(features) if store else None
    lap("split")

    fake_run_id = str(uuid.uuid4())  # stands in for the Dagster run id in the tags
    scores: dict[str, dict[str, float]] = {}
    validation_scores: dict[str, dict[str, float]] = {}
    held_out = {}
    logged: dict[str, tuple[str, str]] = {}
    fit_seconds: dict[str, float] = {}
    for name, spec in config.models.items():
        fitted = fit_model(task, spec.type, canonical_param_names(spec.type, spec.params), split, training.random_state)
        held_out[name] = predict(task, fitted.pipeline, split.x_test)
        metrics = metrics_of(task, split.y_test, held_out[name])
        validation_scores[name] = score(task, fitted.pipeline, split.x_validation, split.y_validation)
        scores[name], fit_seconds[name] = metrics, fitted.fit_seconds
        lap(f"{name}_fit_score")
        if store:
            record = model_run_record(
                spec.type,
                fitted,
                {**metrics, **{f"validation_{m}": value for m, value in validation_scores[name].items()}},
                split,
                training,
                data_hash,
                config,
                {
                    "dagster.run_id": fake_run_id,
                    "dagster.asset_key": f"{name}_model",
                    "dagster.partition": batch_id,
                    "model_name": name,
                    "benchmark": "floor",
                    **reproduction_tags(fitted, held_out[name]),
                },
                {batch_id: summary.content_hash},
            )
            logged[name] = store.log_fitted_model(f"{name}-{batch_id}", record, fitted, split)
            store.run_url(logged[name][0])
            lap(f"{name}_mlflow")

    metric, mode = config.promotion.primary_metric, config.primary_metric_mode
    winner = pick_winner(validation_scores, metric, mode)
    lap("evaluate")
    champion: dict[str, str] = {}
    if store:
        model_name = config.promotion.registered_model_name
        challenger_score = scores[winner][metric]
        incumbent = store.champion_version(model_name)
        if incumbent is None:
            decision = first_champion(metric, challenger_score)
        else:  # not in a fresh home: the asset's fairness check and gate on the same held-out rows
            seen = store.rows_trained_on(incumbent.run_id, split.held_out_ids())
            model = store.load_model(f"models:/{model_name}/{incumbent.version}")
            decision = unfair_comparison(batch_id, str(incumbent.version), seen) or decide_on_held_out_rows(
                config.promotion,
                mode,
                config.seed,
                split.y_test,
                held_out[winner],
                predict(task, model, split.x_test),
                str(incumbent.version),
            )
        run_id, model_uri = logged[winner]
        version = store.register(
            model_name,
            model_uri,
            run_id,
            alias=decision.alias,
            tags={
                "batch": batch_id,
                "window": training.window,
                "model_name": winner,
                metric: f"{challenger_score:.6f}",
                **split.provenance.as_tags(),
                **decision.as_tags(incumbent and str(incumbent.version), code_version(config.promotion)),
                "dagster.run_id": fake_run_id,
            },
        )
        store.run_url(run_id)
        champion = {"model_name": model_name, "version": version, "alias": decision.alias}
        lap("register")
    finished = time.perf_counter()

    print(
        json.dumps(
            {
                "variant": "floor_tracking" if store else "floor",
                "success": True,
                "import_s": round(imported - STARTED, 4),
                "work_s": round(finished - imported, 4),
                "steps": steps,
                "rows": summary.rows,
                "train_rows": len(split.train),
                "validation_rows": len(split.validation),
                "test_rows": len(split.test),
                "winner": winner,
                "models": scores,
                "fit_seconds": fit_seconds,
                "mlflow_run_ids": {name: run_id for name, (run_id, _) in logged.items()},
                "data_hash": data_hash,
                "champion": champion,
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
