"""`ml-platform init-config`: a starting config, data contract included, drafted from a sample file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ml_platform.cli.common import console, fail


def init_config(
    sample: Annotated[Path, typer.Argument(help="A sample CSV file of the data set (one batch, as exported).")],
    target: Annotated[str, typer.Option(help="The column the models predict.")],
    task: Annotated[str, typer.Option(help="classification or regression.")] = "classification",
    out: Annotated[
        Path | None, typer.Option(help="Where to write the YAML (default: <sample>.yaml beside it).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Overwrite --out if it exists.")] = False,
) -> None:
    """Draft a platform config from SAMPLE: column types (DuckDB's sniffer), allowed labels of
    low-cardinality text, nullable where blanks appear, the id column guessed. Review it, then point
    ML_PLATFORM_CONFIG at it."""
    from ml_platform.lib.config import ConfigError, load_config
    from ml_platform.lib.contract_draft import DraftError, draft_contract

    if task not in ("classification", "regression"):
        fail(f"--task {task!r}: expected classification or regression")
    out = out or sample.with_suffix(".yaml")
    if out.exists() and not force:
        fail(f"{out} exists; give another --out, or --force to overwrite it")
    try:
        draft = draft_contract(sample, target, task)
    except DraftError as error:
        fail(str(error))
    out.write_text(draft.to_yaml())
    roles = [column.name for column in draft.columns if column.role != "feature"]
    console.print(
        f"Wrote {out}: {len(draft.columns)} columns from {draft.rows} rows of {sample.name}; "
        f"id column {draft.id_column!r} (guessed)"
        + (f"; kept out of the features: {', '.join(roles)}" if roles else "")
        + ". Review the lines marked REVIEW.",
        highlight=False,
    )
    try:
        load_config(out)
    except ConfigError as error:
        # Written all the same: the review starts from it, and the loader's message says what to fix.
        console.print(f"[yellow]warning:[/] the draft does not load as it is: {error}", highlight=False)
