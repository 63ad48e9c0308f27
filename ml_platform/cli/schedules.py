"""`ml-platform schedules ...`: the TaskScheduler from the command line (add, list, remove).

Added schedules go to the schedules file the code location reads; they show in the Dagster UI
after "Reload definitions" (or a restart of `dagster dev`) and run under the daemon.
"""

from __future__ import annotations

import contextlib
from typing import Annotated

import typer

from ml_platform.cli.common import JSON_HELP, console, fail, print_json, print_table
from ml_platform.cli.experiments import config_path, errors_as_one_line
from ml_platform.lib.settings import Settings

schedules_app = typer.Typer(help="Cron schedules for training, backtests and pipelines.", no_args_is_help=True)
add_app = typer.Typer(help="Add a schedule.", no_args_is_help=True)
schedules_app.add_typer(add_app, name="add")

CRON = Annotated[str, typer.Option("--cron", help='A cron expression, e.g. "0 5 * * *" (05:00 UTC daily).')]
NAME = Annotated[str | None, typer.Option("--name", help="The schedule's name (default: derived from the target).")]
RELOAD_HINT = "reload the code location in the Dagster UI (or restart `dagster dev`) to see it"


@contextlib.contextmanager
def _scheduler():
    """The TaskScheduler; its refusals end the command with one line and exit code 2."""
    from ml_platform.lib.config import ConfigError
    from ml_platform.scheduler import SchedulerError, TaskScheduler

    try:
        yield TaskScheduler(Settings.from_env())
    except (SchedulerError, ConfigError) as error:
        fail(str(error))


def _added(task, as_json: bool) -> None:
    if as_json:
        print_json(task.model_dump(mode="json"))
    else:
        console.print(f"added schedule {task.name} ({task.kind}, cron {task.cron!r}); {RELOAD_HINT}")


@add_app.command("training")
def add_training(
    cron: CRON,
    args: Annotated[
        list[str] | None,
        typer.Argument(help="[CONFIG] [OVERRIDES...]: an experiment config (default: experiment), then overrides."),
    ] = None,
    name: NAME = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Train an experiment on the newest batch with features, on cron.

    Example: ml-platform schedules add training --cron "0 5 * * *" model=gradient_boosting model.params.n_estimators=300
    """
    args = list(args or [])
    config_name = args.pop(0) if args and "=" not in args[0] else "experiment"
    # Adding one records its experiment, whose refusals are the experiment commands' own.
    with errors_as_one_line(), _scheduler() as scheduler:
        task = scheduler.schedule_training(config_path(config_name), cron, overrides=args, name=name)
    _added(task, as_json)


@add_app.command("backtest")
def add_backtest(
    cron: CRON,
    model: Annotated[str | None, typer.Argument(help="Registered model (default: the pipeline's).")] = None,
    alias: Annotated[str, typer.Option(help="The alias whose version is backtested.")] = "champion",
    name: NAME = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Score a registered model's alias on every batch after the one it was trained on, on cron.

    Example: ml-platform schedules add backtest --cron "0 6 * * 1" churn_classifier
    """
    with _scheduler() as scheduler:
        task = scheduler.schedule_backtest(model, cron, alias=alias, name=name)
    _added(task, as_json)


@add_app.command("pipeline")
def add_pipeline(
    cron: CRON,
    pipeline: Annotated[str, typer.Argument(help="batch_pipeline or batch_pipeline_parallel.")] = "batch_pipeline",
    name: NAME = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Run a pipeline on cron for every batch that is stale or was never run.

    Example: ml-platform schedules add pipeline --cron "0 */6 * * *" batch_pipeline_parallel
    """
    with _scheduler() as scheduler:
        task = scheduler.schedule_pipeline(pipeline, cron, name=name)
    _added(task, as_json)


@schedules_app.command("list")
def list_schedules(as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False) -> None:
    """The platform's own schedules (from the config) and the ones added with `schedules add`.

    Example: ml-platform schedules list
    """
    with _scheduler() as scheduler:
        specs = scheduler.config.automation.schedules
        rows = [
            {"name": f"{kind}_schedule", "kind": kind, "cron": spec.cron, "target": "built in", "enabled": spec.enabled}
            for kind, spec in (
                ("retraining", specs.retraining),
                ("backtest", specs.backtest),
                ("pipeline", specs.pipeline),
            )
        ]
        for task in scheduler.list():
            target = {"training": "experiment_name", "backtest": "model", "pipeline": "pipeline"}[task.kind]
            rows.append(
                {
                    "name": task.name,
                    "kind": task.kind,
                    "cron": task.cron,
                    "target": getattr(task, target),
                    "enabled": True,
                }
            )
    if as_json:
        print_json(rows)
    else:
        print_table(
            "schedules",
            ["name", "kind", "cron", "target"],
            [[r["name"], r["kind"], r["cron"], r["target"]] for r in rows],
        )


@schedules_app.command("remove")
def remove(name: Annotated[str, typer.Argument(help="The schedule's name (see `schedules list`).")]) -> None:
    """Remove a schedule added with `schedules add` (the built-in ones are switched off in the config).

    Example: ml-platform schedules remove training_gradient_boosting_1a2b3c4d
    """
    with _scheduler() as scheduler:
        task = scheduler.remove(name)
    console.print(f"removed schedule {task.name}; {RELOAD_HINT}")
