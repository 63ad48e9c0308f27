"""`ml-platform models ...`: registered models, promotion, rollback and the alias history."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Annotated

import typer

from ml_platform.cli.common import JSON_HELP, console, fail, print_json, print_table
from ml_platform.lib.settings import Settings

models_app = typer.Typer(help="Registered models: list, promote, roll back, history.", no_args_is_help=True)


@contextlib.contextmanager
def _manager():
    """The registry of the pipeline's MLflow store; its errors end the command with one line."""
    from ml_platform.experiments import ExperimentError, ExperimentManager
    from ml_platform.lib.registry import RegistryError
    from ml_platform.tracking import MLflowManager, TrackingError

    try:
        yield MLflowManager(tracking_uri=ExperimentManager(Settings.from_env()).tracking_uri)
    except (ExperimentError, RegistryError, TrackingError) as error:
        fail(str(error))


def _guarded(label: str, change):
    """`change` one at a time with the pipeline's champion steps: a run in the registry's pool."""
    from ml_platform.cli.common import dagster_instance
    from ml_platform.defs.registry_guard import under_registry_guard

    return under_registry_guard(dagster_instance(Settings.from_env()), label, change)


@models_app.command("list")
def list_models(as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False) -> None:
    """List registered models with their latest version and aliases.

    Example: ml-platform models list
    """
    with _manager() as manager:
        models = manager.list_models()
    if as_json:
        print_json(models.to_dict(orient="records"))
    elif models.empty:
        console.print("no registered models yet: run the pipeline (`ml-platform run --all`)")
    else:
        print_table("registered models", list(models.columns), models.values.tolist())


@models_app.command("promote")
def promote(
    name: Annotated[str, typer.Argument(help="The registered model.")],
    version: Annotated[str, typer.Argument(help="The version to promote.")],
    alias: Annotated[str, typer.Option(help="The alias to give it.")] = "champion",
    reason: Annotated[str, typer.Option(help="Why, for the history.")] = "promoted by hand",
) -> None:
    """Give a version the alias (champion by default); the previous holder is kept in the history.

    Example: ml-platform models promote churn_classifier 3
    """
    with _manager() as manager:
        event = _guarded(
            f"promote {name} v{version} to @{alias}", lambda: manager.promote(name, version, alias, reason)
        )
    console.print(f"{name} v{event.version} is now @{alias} (was v{event.previous or '-'})")


@models_app.command("rollback")
def rollback(
    name: Annotated[str, typer.Argument(help="The registered model.")],
    alias: Annotated[str, typer.Option(help="The alias to roll back.")] = "champion",
) -> None:
    """Return the alias to the version that held it before the current one.

    Example: ml-platform models rollback churn_classifier
    """
    with _manager() as manager:
        event = _guarded(f"roll back {name} @{alias}", lambda: manager.rollback(name, alias))
    console.print(f"{name} @{alias} rolled back: v{event.previous} -> v{event.version}")


@models_app.command("history")
def history(
    name: Annotated[str, typer.Argument(help="The registered model.")],
    alias: Annotated[str | None, typer.Option(help="Only this alias.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Which version held which alias when: every promotion and rollback, oldest first.

    Example: ml-platform models history churn_classifier --alias champion
    """
    with _manager() as manager:
        events = manager.alias_history(name, alias)
    if as_json:
        print_json([dataclasses.asdict(event) for event in events])
        return
    print_table(
        f"{name}: alias history",
        ["at", "alias", "version", "action", "previous", "reason"],
        [[e.at, e.alias, e.version, e.action, e.previous, e.reason] for e in events],
    )
