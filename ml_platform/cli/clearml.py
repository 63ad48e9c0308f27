"""`ml-platform clearml ...`: what was logged to ClearML (`tracking.backends: [mlflow, clearml]`),
from the configured server or, without one, the platform's offline sessions."""

from __future__ import annotations

import contextlib
from typing import Annotated

import typer

from ml_platform.cli.common import JSON_HELP, fail, load_platform_config, print_json, print_table
from ml_platform.lib.settings import Settings

clearml_app = typer.Typer(help="ClearML: the tasks and models logged beside MLflow.", no_args_is_help=True)

PROJECT_HELP = "The ClearML project (default: the pipeline's, named like its MLflow experiment)."


def _project(project: str | None) -> str:
    return project or load_platform_config(Settings.from_env()).tracking.experiment_name


@contextlib.contextmanager
def _tracking_errors():
    from ml_platform.tracking import TrackingError

    try:
        yield
    except TrackingError as error:
        fail(str(error))


@clearml_app.command("tasks")
def tasks(
    project: Annotated[str | None, typer.Option(help=PROJECT_HELP)] = None,
    metric: Annotated[str, typer.Option(help="A scalar's title, or title/series (roc_auc/test).")] = "roc_auc/test",
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """The project's tasks, oldest first: name, status and the metric's last value.

    Example: ml-platform clearml tasks --metric f1/validation
    """
    from ml_platform.tracking import compare_clearml_experiments

    with _tracking_errors():
        table = compare_clearml_experiments(_project(project), metric_name=metric)
    if as_json:
        print_json(table.reset_index().to_dict(orient="records"))
    else:
        print_table(
            f"ClearML tasks of {_project(project)}",
            ["task", "status", metric],
            table[["name", "status", metric]].values.tolist(),
        )


@clearml_app.command("models")
def models(
    name: Annotated[str, typer.Argument(help="The model's name (the pipeline registers each candidate by its name).")],
    project: Annotated[str | None, typer.Option(help=PROJECT_HELP)] = None,
    metric: Annotated[
        str, typer.Option(help="The metadata entry to show (the held-out metrics are there).")
    ] = "roc_auc",
    max_results: Annotated[int, typer.Option("--max", help="At most this many versions, newest first.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """The versions of a model registered in ClearML, newest first, with the task that logged each.

    Example: ml-platform clearml models random_forest
    """
    from ml_platform.tracking import compare_registered_models

    with _tracking_errors():
        table = compare_registered_models(name, _project(project), max_results=max_results)
    if as_json:
        print_json(table.to_dict(orient="records"))
    else:
        rows = [
            [
                row.version,
                row.task_name,
                row.metadata.get(metric),
                row.registered and f"{row.registered:%Y-%m-%d %H:%M}",
            ]
            for row in table.itertuples()
        ]
        print_table(f"ClearML model {name}", ["version", "task", metric, "registered"], rows)
