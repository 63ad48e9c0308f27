"""`ml-platform reproduce`: rebuild a registered model version or a model run from what it recorded."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from ml_platform.cli.common import console, fail, load_platform_config, print_table
from ml_platform.lib.settings import Settings


def reproduce(
    model: Annotated[
        str, typer.Argument(help="NAME/VERSION, NAME@alias (e.g. churn_classifier@champion) or an MLflow run id.")
    ],
) -> None:
    """Rebuild a model in a scratch home from its recorded batch files, config, params and seeds, and
    compare it with the recorded one: metrics, held-out predictions, the serialised model, the data and
    config hashes; library and code versions that changed are named. Exit 0 identical, 1 different,
    2 cannot reproduce (a batch file missing or changed, not a model run, an unknown version).

    Example: ml-platform reproduce churn_classifier@champion
    """
    from ml_platform.lib.mlflow_store import MlflowStore
    from ml_platform.lib.reproduce import CannotReproduce, identical_line, parse_reference
    from ml_platform.reproduce import reproduce as rebuild_and_compare

    settings = Settings.from_env()
    config = load_platform_config(settings)
    store = MlflowStore(settings.tracking_uri_for(config), config.tracking.experiment_name)
    try:
        reproduction = rebuild_and_compare(parse_reference(model), store, settings)
    except CannotReproduce as error:
        fail(f"cannot reproduce: {error}")
    comparison = reproduction.comparison
    if comparison.identical:
        line = identical_line(reproduction.label, reproduction.recorded.run_id, reproduction.batch_hashes)
        console.print(f"[green]{escape(line)}[/]", highlight=False, soft_wrap=True)
        for difference in comparison.environment:
            console.print(
                f"  {difference.what} changed, the model did not: {difference.recorded} then, {difference.rebuilt} now",
                highlight=False,
                soft_wrap=True,
            )
        return
    print_table(
        f"{reproduction.label} (run {reproduction.recorded.run_id}): rebuilt, different",
        ["", "recorded", "rebuilt"],
        [[d.what, d.recorded, d.rebuilt] for d in [*comparison.results, *comparison.environment]],
    )
    raise typer.Exit(code=1)
