"""`ml-platform tune MODEL`: one Optuna study of a configured model on one batch, as an experiment.

The study is the one the model asset would run (`lib/tuning.py`, the model's `search:` block, the
batch's training rows, split as the pipeline splits them), logged to its own MLflow experiment
`<experiment_name>/tuning`, one run with the trials nested under it. Nothing of the pipeline
changes: no model is registered, no alias moves, no asset is materialized.
"""

from __future__ import annotations

from typing import Annotated

import typer

from ml_platform.cli.common import (
    JSON_HELP,
    console,
    dagster_instance,
    fail,
    load_platform_config,
    print_json,
    print_table,
)
from ml_platform.lib.settings import Settings

TOP_TRIALS = 10


def tune(
    model: Annotated[str, typer.Argument(help="A model of the config (e.g. gradient_boosting) with a search: block.")],
    batch: Annotated[str | None, typer.Option(help="The batch to tune on; default: the newest with features.")] = None,
    trials: Annotated[
        int | None, typer.Option(min=1, max=500, help="How many trials; default: the search block's n_trials.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Tune a model's hyperparameters on one batch and log the study to MLflow (outside the pipeline).

    Example: ml-platform tune gradient_boosting --batch batch_0002 --trials 30
    """
    settings = Settings.from_env()
    config = load_platform_config(settings)
    spec = config.models.get(model)
    if spec is None:
        fail(f"unknown model {model!r}; configured: {', '.join(sorted(config.models))}")
    if spec.search is None:
        fail(f"models.{model} has no search: block to tune (see the README's 'Tuning candidates')")
    search = spec.search if trials is None else spec.search.model_copy(update={"n_trials": trials})

    import dagster as dg

    from ml_platform.defs.partitions import batch_partitions, batches_with
    from ml_platform.defs.training.assets import FEATURES_KEY, prepare_training_data
    from ml_platform.lib.mlflow_store import MlflowStore
    from ml_platform.lib.tuning import TuningError, run_study
    from ml_platform.resources.warehouse import WarehouseResource

    instance = dagster_instance(settings)
    if batch is None:
        ready = batches_with(instance, FEATURES_KEY)
        if not ready:
            fail("no batch has features yet: run the pipeline first (`ml-platform run --all`)")
        batch = ready[-1]
    elif batch not in instance.get_dynamic_partitions(batch_partitions.name):
        fail(f"unknown batch {batch!r}: add it with `ml-platform batches add` or `scan`")
    warehouse = WarehouseResource(
        incoming_dir=str(settings.incoming_dir(config)), warehouse_dir=str(settings.warehouse_dir)
    )
    if not warehouse.warehouse.has_table(batch, "features"):
        fail(f"batch {batch} has no features yet: run the pipeline for it first (`ml-platform run {batch}`)")

    with console.status(f"tuning {model} on {batch}: {search.n_trials} trials ..."):
        # The pipeline's own window and split, so the study sees exactly the rows the model asset trains on.
        context = dg.build_op_context(partition_key=batch, instance=instance)
        training_data = prepare_training_data(context, config.data, config.training, warehouse, validation=True)
        try:
            study = run_study(
                config.data.task,
                spec.type,
                spec.params,
                search,
                training_data.split,
                config.training.random_state,
                search.metric,
                config.data.classes,
            )
        except TuningError as error:
            fail(str(error))
        store = MlflowStore(
            settings.tracking_uri_for(config),
            f"{config.tracking.experiment_name}/tuning",
            settings.artifact_location_for(config),
        )
        best = study.best
        run_id = store.log_study(
            run_name=f"tune-{model}-{batch}",
            study=study,
            params={"model_type": spec.type, **{f"best.{name}": value for name, value in best.params.items()}},
            tags={"model_name": model, "batch": batch, "data_hash": training_data.data_hash},
        )
    summary = {
        "model": model,
        "batch": batch,
        "metric": study.metric,
        "scoring": study.scoring,
        "trials": len(study.trials),
        "best_trial": best.number,
        "best_value": best.value,
        "best_params": best.params,
        "mlflow_run_id": run_id,
        "mlflow_run": store.run_url(run_id),
    }
    if as_json:
        print_json(summary)
        return
    console.print(f"tuned [bold]{model}[/] on {batch}: {len(study.trials)} trials, {study.scoring}")
    names = sorted(search.params)
    print_table(
        f"best {min(TOP_TRIALS, len(study.completed))} trials by {study.metric} ({study.mode})",
        ["trial", study.metric, *names],
        [
            [trial.number, trial.value, *(trial.params.get(name) for name in names)]
            for trial in study.ranked(TOP_TRIALS)
        ],
    )
    console.print(f"best params: {best.params}", soft_wrap=True)
    console.print(f"MLflow run {run_id}: {summary['mlflow_run']}", soft_wrap=True)
