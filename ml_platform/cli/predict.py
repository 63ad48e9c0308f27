"""`ml-platform predict FILE`: score a file with a registered model, outside the pipeline.

The file goes the pipeline's way (data contract, then the dbt project's features, in a scratch
warehouse that is removed after) and is scored through `mlflow.pyfunc`, so a row scored here gets
what the pipeline would have given it. Nothing is written unless every step succeeded.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from ml_platform.cli.common import console, fail, format_cell, load_platform_config, print_table
from ml_platform.lib.settings import Settings

# A file to score has no labels: the test that every row has one is the training data's.
TESTS_NOT_FOR_SCORING = ("features_target_has_no_nulls",)


def predict(
    file: Annotated[Path, typer.Argument(help="The CSV or Parquet file to score, in the config's data contract.")],
    model: Annotated[
        str | None,
        typer.Option(help="NAME@ALIAS or NAME/VERSION; default: the config's registered model @champion."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="The CSV to write; default: <FILE stem>.predictions.csv beside FILE.")
    ] = None,
) -> None:
    """Score FILE with a registered model: id, prediction, probabilities, model name and version per row.

    The target column may be absent. Example: ml-platform predict new_customers.csv --model churn_classifier/3
    """
    from mlflow.exceptions import MlflowException

    from ml_platform.defs.features.assets import DBT_PROJECT, dbt_vars
    from ml_platform.lib.ingestion import BatchRejected
    from ml_platform.lib.mlflow_store import MlflowStore
    from ml_platform.lib.predictions import (
        ModelReferenceError,
        class_shares,
        features_to_score,
        parse_model_reference,
        resolve_model,
        score_features,
        score_quantiles,
        scored_column,
    )
    from ml_platform.resources.dbt_runner import DbtBuildError, DbtRunnerResource

    settings = Settings.from_env()
    config = load_platform_config(settings)
    data = config.data
    if (suffix := file.suffix.lower().lstrip(".")) in ("csv", "parquet"):
        data = data.model_copy(update={"file_format": suffix})  # a file to score need not be in the batches' format
    target = out or file.with_name(f"{file.stem}.predictions.csv")
    try:
        reference = parse_model_reference(model, config.promotion.registered_model_name)
    except ModelReferenceError as error:
        fail(str(error))
    store = MlflowStore(settings.tracking_uri_for(config), config.tracking.experiment_name)
    with tempfile.TemporaryDirectory(prefix="ml-platform-predict-") as scratch:
        dbt = DbtRunnerResource(
            project_dir=str(DBT_PROJECT.project_dir),
            profiles_dir=str(DBT_PROJECT.profiles_dir),
            runs_dir=str(Path(scratch) / "dbt_runs"),
        )

        def build_features(warehouse, batch_id: str) -> None:
            dbt.build_all(dbt_vars(config, batch_id, str(warehouse.root)), exclude=TESTS_NOT_FOR_SCORING)

        try:
            # Resolved once, first: a mistyped model fails before the file's features are built, and
            # the version printed and written is the one used even if the alias moves meanwhile.
            scoring = resolve_model(store.client(), reference)
            features = features_to_score(file, data, Path(scratch) / "warehouse", build_features)
        except (BatchRejected, ModelReferenceError, DbtBuildError) as error:
            fail(" ".join(line.strip() for line in str(error).splitlines()))  # the contract's list, on one line
        try:
            scored = score_features(store.load_pyfunc(scoring.uri), features, data.id_column, scoring, data.classes)
        except (ValueError, MlflowException) as error:  # a model whose signature these features do not fit
            fail(f"{scoring.uri} cannot score {file}: {str(error).splitlines()[0][:300]}")
    _write_atomically(scored, target)
    console.print(
        f"scored {len(scored)} rows of {file} with {scoring.name} v{scoring.version} (run {scoring.run_id})",
        soft_wrap=True,
    )
    column = scored_column(scored)
    quantiles = score_quantiles(scored)
    print_table(
        f"{column} distribution",
        [f"{q:.0%}" for q in quantiles["quantile"]],
        [[format_cell(float(value)) for value in quantiles["value"]]],
    )
    if shares := class_shares(scored):
        console.print("predicted: " + ", ".join(f"{label} {share:.1%}" for label, share in shares.items()))
    console.print(f"wrote {target}", soft_wrap=True)


def _write_atomically(frame, target: Path) -> None:
    """The CSV appears whole or not at all: a reader never sees half of it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        frame.to_csv(partial, index=False)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
