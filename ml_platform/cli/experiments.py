"""`ml-platform experiment ...` and `ml-platform experiments list`: create, run, compare, rank.

Anything slower than a moment shows a spinner; rich draws it on a terminal only, so pipes and
`--json` get clean output.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer

from ml_platform.cli.common import JSON_HELP, console, fail, print_json, print_table
from ml_platform.lib.settings import PROJECT_ROOT, Settings

experiment_app = typer.Typer(help="One experiment: create, run, status, compare, best.", no_args_is_help=True)
experiments_app = typer.Typer(help="All experiments.", no_args_is_help=True)
CONFIGS_DIR = PROJECT_ROOT / "configs"


@contextlib.contextmanager
def errors_as_one_line():
    """The platform's own errors end the command with one line and exit code 2."""
    from ml_platform.experiments import ExperimentError
    from ml_platform.lib.config import ConfigError
    from ml_platform.tracking import TrackingError

    try:
        yield
    except (ExperimentError, ConfigError, TrackingError) as error:
        fail(str(error))


def _manager():
    from ml_platform.experiments import ExperimentManager

    return ExperimentManager(Settings.from_env())


def config_path(name: str) -> Path:
    """A config name in `configs/` (`experiment`) or a path to a YAML file."""
    if name.endswith((".yaml", ".yml")) or "/" in name:
        return Path(name)
    return CONFIGS_DIR / f"{name}.yaml"


@experiment_app.command("create")
def create(
    args: Annotated[
        list[str] | None,
        typer.Argument(
            help="[CONFIG] [OVERRIDES...]: a config in configs/ or a YAML path (default: experiment), "
            "then key=value overrides."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Compose an experiment config, validate it and record it; prints the new experiment's id.

    Example: ml-platform experiment create model=gradient_boosting model.params.n_estimators=200 training.test_size=0.25
    """
    from ml_platform.lib.config import load_experiment_config

    args = list(args or [])
    name = args.pop(0) if args and "=" not in args[0] else "experiment"
    with errors_as_one_line():
        config = load_experiment_config(config_path(name), args)
        with console.status(f"recording experiment {config.name} ..."):
            manager = _manager()
            experiment_id = manager.create_experiment(config)
    summary = {
        "experiment_id": experiment_id,
        "name": config.name,
        "model_type": config.model.type,
        "params": config.model.params,
        "config_hash": config.config_hash(),
    }
    if as_json:
        print_json(summary)
        return
    console.print(
        f"experiment [bold]{experiment_id}[/]: {config.name} ({config.model.type} {config.model.params}, "
        f"config hash {summary['config_hash']})"
    )
    console.print(f"run it: ml-platform experiment run {experiment_id} [--batch BATCH]")


@experiment_app.command("run")
def run(
    experiment_id: Annotated[str, typer.Argument(help="The experiment's id (or name).")],
    batch: Annotated[str | None, typer.Option(help="The batch to train on; default: the newest with features.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Run an experiment on one batch as a Dagster run (it shows in the Dagster UI) logged to MLflow.

    Example: ml-platform experiment run 2 --batch batch_0003
    """
    from ml_platform.cli.progress import run_progress

    with errors_as_one_line():
        manager = _manager()
        experiment = manager.get_experiment(experiment_id)
        label = f"experiment {experiment.name} on {batch or 'the newest batch'}"
        outcome = manager.run_experiment(
            experiment.experiment_id, batch, progress=lambda job: run_progress(manager.instance, label, job)
        )
    if not outcome.success:
        fail(
            f"experiment {experiment.experiment_id} on {outcome.batch} failed (Dagster run {outcome.dagster_run_id}): "
            f"{outcome.error}"
        )
    if as_json:
        print_json(outcome.__dict__)
        return
    console.print(
        f"[green]ok[/] experiment {experiment.experiment_id} ({experiment.name}) on {outcome.batch}: "
        f"Dagster run {outcome.dagster_run_id}, MLflow run {outcome.mlflow_run_id}"
    )
    print_table(None, ["metric", "value"], sorted(outcome.metrics.items()))


@experiment_app.command("status")
def status(
    experiment_id: Annotated[str, typer.Argument(help="The experiment's id (or name).")],
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Show an experiment's config and every run of it: batch, Dagster status, metrics.

    Example: ml-platform experiment status 2
    """
    with errors_as_one_line(), console.status("reading the experiment's runs ..."):
        report = _manager().status(experiment_id)
    if as_json:
        print_json(report)
        return
    console.print(
        f"experiment [bold]{report['experiment_id']}[/]: {report['name']}  model {report['model_type']} "
        f"{report['params']}  config hash {report['config_hash']}  created {report['created']}"
    )
    if not report["runs"]:
        console.print(f"no runs yet: ml-platform experiment run {report['experiment_id']}")
        return
    metric_names = sorted({name for run in report["runs"] for name in run["metrics"]})
    print_table(
        None,
        ["Dagster run", "batch", "status", "started", *metric_names],
        [
            [
                run["dagster_run_id"][:8],
                run["batch"],
                run["status"],
                run["started"],
                *(run["metrics"].get(name) for name in metric_names),
            ]
            for run in report["runs"]
        ],
    )


@experiment_app.command("compare")
def compare(
    experiment_ids: Annotated[list[str], typer.Argument(help="Two or more experiment ids (or names).")],
    plot: Annotated[Path | None, typer.Option(help="Also draw the metrics side by side into this PNG file.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Compare experiments: every finished run's params and metrics side by side.

    Example: ml-platform experiment compare 2 3 --plot compare.png
    """
    with errors_as_one_line(), console.status("comparing ..."):
        table = _manager().compare_experiments(experiment_ids)
    if plot is not None:
        from ml_platform.lib.plots import plot_metrics_side_by_side

        plot_metrics_side_by_side(table, plot)
    if as_json:
        print_json(table.to_dict(orient="records"))
        return
    labels = [f"{row.experiment_id}:{row.experiment}@{row.batch}" for row in table.itertuples()]
    fields = [column for prefix in ("params.", "metrics.") for column in sorted(table) if column.startswith(prefix)]
    print_table(
        "experiments side by side",
        ["", *labels],
        [[field, *table[field].tolist()] for field in ["run_id", *fields]],
    )
    if plot is not None:
        console.print(f"plot: {plot}")


@experiment_app.command("best")
def best(
    metric: Annotated[str, typer.Option(help="The metric to rank by, e.g. f1, roc_auc, rmse.")],
    mode: Annotated[str | None, typer.Option(help="max or min; default: the metric's usual direction.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """The best finished run over all experiments by a metric, and how to load its model.

    Example: ml-platform experiment best --metric f1 --mode max
    """
    with errors_as_one_line(), console.status("ranking every experiment's runs ..."):
        best_run = _manager().best_run(metric, mode)
    if as_json:
        print_json(best_run.to_dict())
        return
    console.print(
        f"best by {metric}: experiment {best_run['experiment_id']} ({best_run['experiment']}) on "
        f"{best_run['batch']}, {metric} = {best_run[f'metrics.{metric}']:.4f}"
    )
    console.print(f"MLflow run {best_run['run_id']}; model: runs:/{best_run['run_id']}/model")


@experiments_app.command("list")
def list_experiments(as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False) -> None:
    """List every experiment with its model, config hash and number of finished runs.

    Example: ml-platform experiments list
    """
    with errors_as_one_line(), console.status("listing experiments ..."):
        manager = _manager()
        experiments = manager.list_experiments()
        runs = manager.runs([e.experiment_id for e in experiments]) if experiments else None
    counts = runs["experiment_id"].value_counts().to_dict() if runs is not None and not runs.empty else {}
    rows = [
        {
            "experiment_id": e.experiment_id,
            "name": e.name,
            "model_type": e.config.model.type,
            "config_hash": e.config_hash,
            "runs": int(counts.get(e.experiment_id, 0)),
            "created": e.created.isoformat(timespec="seconds"),
        }
        for e in experiments
    ]
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("no experiments yet: ml-platform experiment create [CONFIG] [OVERRIDES...]")
        return
    print_table("experiments", list(rows[0]), [list(row.values()) for row in rows])
