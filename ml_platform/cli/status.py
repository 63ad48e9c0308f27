"""`ml-platform status`: every batch's last run and champion decision, the quarantined batches, and
what the latest runs did.

Everything comes from Dagster's event log: the summaries the run-status sensor keeps in
`reports/runs/` when they are there, else summaries derived from the log on the spot; a quarantine
from the refusal `raw_batch` recorded, compared with the batch's file and config now.
"""

from __future__ import annotations

from typing import Annotated

import typer

from ml_platform.cli.common import JSON_HELP, console, dagster_instance, load_platform_config, print_json, print_table
from ml_platform.lib.settings import Settings


def status(
    runs: Annotated[int, typer.Option("--runs", min=0, help="How many of the latest pipeline runs to summarize.")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Show each batch's last pipeline run and champion decision, and the latest runs stage by stage.

    Example: ml-platform status --runs 5
    """
    from ml_platform.defs.monitoring.run_summary import batch_history, load_run_summary, recent_pipeline_runs
    from ml_platform.lib.run_summary import history_table, metrics_table, run_headline, stages_table

    settings = Settings.from_env()
    instance = dagster_instance(settings)
    with console.status("reading the event log ..."):
        history = batch_history(instance)
        quarantined = quarantined_batches(instance, settings, [entry["batch"] for entry in history])
        summaries = [
            load_run_summary(instance, record.dagster_run.run_id, settings.reports_dir)
            for record in recent_pipeline_runs(instance, runs)
        ]
    if as_json:
        print_json(
            {
                "batches": history,
                "quarantined": [quarantine.to_dict() for quarantine in quarantined],
                "runs": [summary.to_dict() for summary in summaries],
            }
        )
        return
    if not history and not summaries:
        incoming = settings.incoming_dir(load_platform_config(settings))
        console.print(
            f"no batches yet: drop a file in {incoming} or run `ml-platform batches scan` "
            "(`ml-platform demo-data` writes demo batches)",
            highlight=False,
            markup=False,
        )
        return
    print_table("batches", *history_table(history))
    if quarantined:
        from rich.markup import escape

        print_table(
            "quarantined: refused at ingestion, not run again until the file or the config changes "
            "(`ml-platform run BATCH` forces one)",
            ["batch", "refused by run", "error"],
            [[quarantine.batch, quarantine.run_id[:8], escape(quarantine.error)] for quarantine in quarantined],
        )
    if not summaries:
        if runs > 0:  # `--runs 0` asked for no run summaries, which says nothing about whether there are runs
            console.print("no pipeline runs yet: ml-platform run --all")
        return
    for summary in summaries:
        console.print()
        console.print(run_headline(summary), highlight=False, markup=False)
        print_table(None, *stages_table(summary))
        if summary.metrics:
            print_table(None, *metrics_table(summary))


def quarantined_batches(instance, settings: Settings, batches: list[str]) -> list:
    """The batches held back because their file and config are those they were refused with."""
    from ml_platform.defs.ingestion.quarantine import batch_quarantine
    from ml_platform.lib.batches import batch_file
    from ml_platform.lib.ingestion import ingestion_code_version

    config = load_platform_config(settings)
    incoming, version = settings.incoming_dir(config), ingestion_code_version(config.data, config.training)
    found = []
    for batch in batches:
        source = batch_file(incoming, batch, config.data.file_format)
        if quarantine := batch_quarantine(instance, batch, source, version):
            found.append(quarantine)
    return found
