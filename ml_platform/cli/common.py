"""What every `ml-platform` command shares: the console, one-line errors, tables or JSON."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from ml_platform.lib.settings import Settings

# Bound to the real stdout: `run` silences what dbt prints to sys.stdout, not this console.
console = Console(file=sys.stdout)

JSON_HELP = "Print JSON (for scripts) instead of a table."


def fail(message: str, code: int = 2) -> NoReturn:
    """One clear line on stderr and a non-zero exit: what a script and a person both need."""
    Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=code)


def load_platform_config(settings: Settings):
    from ml_platform.lib.config import ConfigError, load_config

    try:
        return load_config(settings.config_path)
    except ConfigError as error:
        fail(str(error))


def dagster_instance(settings: Settings):
    from ml_platform.defs.runs import project_instance

    return project_instance(settings)


def print_json(content: Any) -> None:
    """JSON on stdout, plain (no colours or wrapping), for scripts. A missing number (NaN, as pandas
    gives a run without a metric) is `null`: `NaN` is not JSON, and jq or a browser refuse it."""
    sys.stdout.write(json.dumps(_nan_as_null(content), indent=2, default=str, allow_nan=False) + "\n")


def _nan_as_null(content: Any) -> Any:
    if isinstance(content, float) and content != content:
        return None
    if isinstance(content, dict):
        return {key: _nan_as_null(value) for key, value in content.items()}
    if isinstance(content, list | tuple):
        return [_nan_as_null(value) for value in content]
    return content


def print_table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    table = Table(*columns, title=title)
    for row in rows:
        table.add_row(*(format_cell(cell) for cell in row))
    console.print(table)


def format_cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):  # None or NaN
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
