"""The `ml-platform` command: demo data, batches (partitions), pipeline runs, the champion.
Experiments are in `cli/experiments.py`, registered models in `cli/models.py`, the UIs in `cli/ui.py`,
`reproduce` in `cli/reproduce.py`, ClearML's side in `cli/clearml.py`.

Heavy imports (Dagster, MLflow, scikit-learn) happen inside the commands that need them, so
`ml-platform --help` answers at once.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import signal
import sys
from typing import Annotated

import typer
from rich.table import Table

from ml_platform.cli.clearml import clearml_app
from ml_platform.cli.cluster import cluster_app, use_cluster
from ml_platform.cli.common import console, dagster_instance, fail, load_platform_config
from ml_platform.cli.experiments import experiment_app, experiments_app
from ml_platform.cli.init_config import init_config
from ml_platform.cli.models import models_app
from ml_platform.cli.predict import predict
from ml_platform.cli.reproduce import reproduce
from ml_platform.cli.schedules import schedules_app
from ml_platform.cli.status import status
from ml_platform.cli.tune import tune
from ml_platform.cli.ui import ui
from ml_platform.lib.settings import Settings

app = typer.Typer(help="ml_platform: batches of data to evaluated, registered models.", no_args_is_help=True)
batches_app = typer.Typer(help="Batches: the partitions of the pipeline.", no_args_is_help=True)
app.add_typer(batches_app, name="batches")
app.add_typer(clearml_app, name="clearml")
app.add_typer(cluster_app, name="cluster")
app.add_typer(experiment_app, name="experiment")
app.add_typer(experiments_app, name="experiments")
app.add_typer(models_app, name="models")
app.add_typer(schedules_app, name="schedules")
app.command("predict")(predict)
app.command("reproduce")(reproduce)
app.command("status")(status)
app.command("tune")(tune)
app.command("init-config")(init_config)
app.command("ui")(ui)


@app.callback()
def _before_every_command(
    context: typer.Context,
    deployment: Annotated[
        str | None,
        typer.Option(
            "--deployment",
            envvar="ML_PLATFORM_DEPLOYMENT",
            help="embedded (the default: SQLite, local files) or cluster (the one `ml-platform cluster up` "
            "started: its Dagster instance, MLflow server and Celery workers).",
        ),
    ] = None,
) -> None:
    """Every command prints to the stdout it was started with: the console is made on import, and a
    caller that runs commands in its own process (typer's CliRunner in the tests) swaps stdout later.

    `--deployment cluster` points the command at the running cluster (`cli/cluster.py`).

    MLflow narrates its housekeeping at INFO ("Creating initial MLflow database tables..."); a person
    at the terminal wants the command's own output. Export MLFLOW_LOGGING_LEVEL to see it.
    """
    console.file = sys.stdout
    if (columns := os.environ.get("COLUMNS", "")).isdigit():
        console.width = int(columns)
    level = os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when MLflow is imported
    logging.getLogger("mlflow").setLevel(level.upper())  # in case it already is
    if deployment not in (None, "embedded", "cluster"):
        fail(f"--deployment {deployment!r}: expected embedded or cluster")
    if deployment == "cluster" and context.invoked_subcommand != "cluster":
        use_cluster()


@app.command("demo-data")
def demo_data(
    batches: Annotated[int, typer.Option(min=1, help="How many batch files to write.")] = 3,
    rows: Annotated[int, typer.Option(min=1000, max=1_000_000, help="Rows per batch.")] = 5000,
    seed: Annotated[int, typer.Option(help="Same seed, same data.")] = 42,
    drift: Annotated[float, typer.Option(min=0.0, help="How much each batch drifts from the one before.")] = 0.0,
    first: Annotated[int, typer.Option(min=1, help="Number of the first batch.")] = 1,
    file_format: Annotated[
        str | None, typer.Option("--format", help="csv or parquet; default: the config's data.file_format.")
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option(
            help="churn (generated, --rows each) or wine (scikit-learn's 178 wines, 3 classes, cut into "
            "--batches); default: wine when the config's data set is wine (configs/wine.yaml), else churn."
        ),
    ] = None,
) -> None:
    """Write deterministic demo batches into the incoming folder.

    Example: ml-platform demo-data --batches 3 --rows 10000 --drift 0.03
    """
    from ml_platform.lib.demo_data import generate_churn_batch, wine_batches, write_batch_files

    settings = Settings.from_env()
    config = load_platform_config(settings)
    file_format = file_format or config.data.file_format
    dataset = dataset or ("wine" if config.data.name == "wine" else "churn")
    if dataset not in ("churn", "wine"):
        fail(f"--dataset {dataset!r}: expected churn or wine")
    try:
        if dataset == "wine":
            frames = dict(enumerate(wine_batches(batches, seed), start=first))
        else:
            frames = {n: generate_churn_batch(n, rows, seed, drift) for n in range(first, first + batches)}
        paths = write_batch_files(settings.incoming_dir(config), frames, file_format)
    except ValueError as error:
        fail(f"--format: {error}" if "file_format" in str(error) else str(error))
    for path, frame in zip(paths, frames.values(), strict=True):
        console.print(f"wrote {path} ({len(frame)} rows)")


@batches_app.command("scan")
def batches_scan() -> None:
    """Add a partition for every batch file in the incoming folder that has none yet.

    Example: ml-platform batches scan
    """
    from ml_platform.defs.partitions import batch_partitions
    from ml_platform.lib.incoming import scan_incoming

    settings = Settings.from_env()
    config = load_platform_config(settings)
    incoming = settings.incoming_dir(config)
    scanned = scan_incoming(incoming, config.data.file_format)
    instance = dagster_instance(settings)
    known = set(instance.get_dynamic_partitions(batch_partitions.name))
    new = [batch_id for batch_id in scanned.batches if batch_id not in known]
    instance.add_dynamic_partitions(batch_partitions.name, new)
    console.print(
        f"{len(scanned.batches)} batch file(s) in {incoming}; added {len(new)} partition(s): {', '.join(new) or '-'}",
        soft_wrap=True,
    )
    for name, reason in scanned.skipped.items():
        console.print(f"skipped {name}: {reason}", soft_wrap=True, highlight=False, markup=False)


@batches_app.command("add")
def batches_add(batch_ids: Annotated[list[str], typer.Argument(help="Batch ids, e.g. batch_0004.")]) -> None:
    """Add partitions for the named batches; each needs its file in the incoming folder.

    Example: ml-platform batches add batch_0004 batch_0005
    """
    from ml_platform.defs.partitions import batch_partitions
    from ml_platform.lib.batches import InvalidBatchIdError, batch_file

    settings = Settings.from_env()
    config = load_platform_config(settings)
    incoming = settings.incoming_dir(config)
    for batch_id in batch_ids:
        try:
            path = batch_file(incoming, batch_id, config.data.file_format)
        except InvalidBatchIdError as error:
            fail(str(error))
        if not path.is_file():
            fail(f"no file for batch {batch_id!r}: expected {path}")
    dagster_instance(settings).add_dynamic_partitions(batch_partitions.name, batch_ids)
    console.print(f"added partition(s): {', '.join(batch_ids)}")


@batches_app.command("list")
def batches_list() -> None:
    """List the batch partitions and whether each has been through the pipeline.

    Example: ml-platform batches list
    """
    import dagster as dg

    from ml_platform.defs.partitions import batch_partitions

    instance = dagster_instance(Settings.from_env())
    keys = instance.get_dynamic_partitions(batch_partitions.name)
    done = instance.get_materialized_partitions(dg.AssetKey("champion_model"))
    table = Table("batch", "through the pipeline")
    for key in keys:
        table.add_row(key, "yes" if key in done else "no")
    console.print(table)


@app.command("run")
def run(
    batch_ids: Annotated[list[str] | None, typer.Argument(help="Batches to run; see --all.")] = None,
    all_batches: Annotated[bool, typer.Option("--all", help="Run every batch partition, in order.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Print every step's log lines.")] = False,
    only_stale: Annotated[
        bool,
        typer.Option(
            "--only-stale",
            help="Run only the assets whose data, code or config changed since they were built (or that "
            "never were), and say why; a batch that is up to date runs nothing, and a quarantined one (refused "
            "at ingestion, file and config unchanged since) is skipped.",
        ),
    ] = False,
) -> None:
    """Run the batch pipeline for batches, in this process, recorded in the Dagster instance; with
    --deployment cluster, submitted to the cluster (its steps on the Celery workers) and followed.

    Example: ml-platform run batch_0001  |  ml-platform run --all --only-stale
    |  ml-platform --deployment cluster run batch_0001
    """
    from ml_platform.cli.progress import run_progress, watch_signals
    from ml_platform.defs.monitoring.dead_runs import mark_stopped, process_tags, reap_dead_runs
    from ml_platform.defs.partitions import batch_partitions
    from ml_platform.defs.runs import first_failure
    from ml_platform.lib.mlflow_store import MlflowStore

    settings = Settings.from_env()
    config = load_platform_config(settings)  # a bad config is one line here, not a traceback from the definitions
    instance = dagster_instance(settings)
    mlflow_store = functools.cache(
        lambda: MlflowStore(settings.tracking_uri_for(config), config.tracking.experiment_name)
    )
    on_cluster = settings.deployment == "cluster"
    # A run left STARTED by a killed `ml-platform run` would block its batch: fail it first. (In the
    # cluster no run executes in this process: the daemon's run monitoring watches them.)
    for line in [] if on_cluster else reap_dead_runs(instance, settings, mlflow_store):
        console.print(f"[yellow]{line}[/]", soft_wrap=True, highlight=False)
    known = instance.get_dynamic_partitions(batch_partitions.name)
    targets = known if all_batches else list(batch_ids or [])
    if not targets:
        fail("nothing to run: name batches or pass --all (add batches with `ml-platform batches scan`)")
    unknown = [batch_id for batch_id in targets if batch_id not in known]
    if unknown:
        fail(f"unknown batch(es) {', '.join(unknown)}: add them first with `ml-platform batches add` or `scan`")

    from ml_platform.defs.definitions import build_definitions

    try:
        definitions = build_definitions(config, settings)
    except FileNotFoundError as error:  # the dbt manifest has not been prepared
        fail(str(error))

    from dagster._core.storage.defs_state.base import set_defs_state_storage

    # Loading the definitions reads the current instance's definitions state: this command's instance,
    # never one its caller (a test, a notebook) entered and left behind as the current one.
    with set_defs_state_storage(instance.defs_state_storage):
        job = definitions.resolve_job_def("batch_pipeline")
    failed = []
    for batch_id in targets:
        selection, tags = None, {}
        if only_stale:
            from ml_platform.defs.automation.staleness import STALE_REASON_TAG, describe_reasons, reasons_to_run
            from ml_platform.defs.ingestion.quarantine import batch_quarantine
            from ml_platform.lib.batches import batch_file
            from ml_platform.lib.ingestion import ingestion_code_version

            source = batch_file(settings.incoming_dir(config), batch_id, config.data.file_format)
            # Refused with this file and config: it would be refused again. Naming the batch forces it.
            if quarantine := batch_quarantine(
                instance, batch_id, source, ingestion_code_version(config.data, config.training)
            ):
                from rich.markup import escape

                console.print(
                    f"[yellow]quarantined[/] {escape(quarantine.describe())}; correct the file, or force: "
                    f"ml-platform run {batch_id}",
                    highlight=False,
                    soft_wrap=True,
                )
                continue
            reasons = reasons_to_run(
                instance, definitions.resolve_asset_graph(), batch_id, list(job.asset_layer.selected_asset_keys), source
            )
            if not reasons:
                console.print(f"[green]up to date[/] {batch_id}: data, code and config unchanged; nothing to run")
                continue
            console.print(f"{batch_id}: running {len(reasons)} asset(s)\n{describe_reasons(reasons)}")
            selection, tags = list(reasons), {STALE_REASON_TAG: describe_reasons(reasons)[:1000]}
        if on_cluster:
            if not _run_on_cluster(instance, batch_id, selection, tags):
                failed.append(batch_id)
            continue
        planned = job.get_subset(asset_selection=set(selection)) if selection else job
        quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
        result = None
        # The run names this process, so a later command can tell when it was killed (`defs/monitoring/dead_runs.py`).
        with (
            watch_signals() as signals,
            contextlib.suppress(KeyboardInterrupt),
            run_progress(instance, f"batch_pipeline for {batch_id}", planned) as run_id,
            quiet,
        ):
            result = job.execute_in_process(
                instance=instance,
                partition_key=batch_id,
                raise_on_error=False,
                asset_selection=selection,
                run_id=run_id,
                tags={**tags, **process_tags()},
                # The full event log, tracebacks included, goes to the instance (the UI shows it) and,
                # with --verbose, to the terminal; otherwise a failure is the one line printed below.
                run_config={"loggers": {"console": {"config": {"log_level": "DEBUG" if verbose else "CRITICAL"}}}},
            )
            signals.finished()
        if (signum := signals.received()) or result is None:
            why = f"stopped by {signal.Signals(signum or signal.SIGINT).name}"
            outcome = mark_stopped(instance, run_id, f"ml-platform run was {why}", settings, mlflow_store)
            left = targets[targets.index(batch_id) + 1 :]
            fail(
                f"{why}: run {run_id} of {batch_id} {outcome}" + (f"; not run: {', '.join(left)}" if left else ""),
                code=128 + (signum or signal.SIGINT),
            )
        materialized = [event.materialization for event in result.get_asset_materialization_events()]
        if result.success:
            console.print(f"[green]ok[/] {batch_id} (run {result.run_id}){_decision(materialized)}", soft_wrap=True)
        else:
            failed.append(batch_id)
            console.print(f"[red]failed[/] {batch_id} (run {result.run_id}): {first_failure(result.all_events)}")
        _report_run(instance, result.run_id, config, settings)
    if failed:
        more = "" if verbose or on_cluster else "; --verbose prints their logs and tracebacks"
        fail(
            f"{len(failed)} of {len(targets)} batch run(s) failed: {', '.join(failed)} "
            f"(each run's full log: the Dagster UI, `make ui`{more})"
        )


def _run_on_cluster(instance, batch_id: str, selection: list | None, tags: dict[str, str]) -> bool:
    """Submit the batch's run to the cluster, follow it (and its retry) to the end, print its outcome."""
    import dagster as dg

    from ml_platform.cli.cluster import current_layout
    from ml_platform.cluster import submit_run, wait_for_run
    from ml_platform.defs.runs import first_failure

    layout = current_layout()
    run_id = submit_run(layout, "batch_pipeline", batch_id, tags, selection)
    console.print(f"{batch_id}: run {run_id} queued ({layout.dagster_url}/runs/{run_id})", soft_wrap=True)
    try:
        run = wait_for_run(instance, run_id)
    except KeyboardInterrupt:
        fail(
            f"stopped watching: run {run_id} of {batch_id} goes on in the cluster ({layout.dagster_url}/runs/{run_id})",
            code=130,
        )
    if run.status == dg.DagsterRunStatus.SUCCESS:
        records = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
        materialized = [record.event_log_entry.asset_materialization for record in records]
        console.print(f"[green]ok[/] {batch_id} (run {run.run_id}){_decision(materialized)}", soft_wrap=True)
        return True
    failures = {dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE}
    events = [entry.dagster_event for entry in instance.all_logs(run.run_id, of_type=failures)]
    console.print(f"[red]{run.status.value.lower()}[/] {batch_id} (run {run.run_id}): {first_failure(events)}")
    return False


def _decision(materializations) -> str:
    """The run's champion decision, as the line a person wants after each batch; empty when the run
    did not decide (an `--only-stale` run that left `champion_model` alone)."""
    for materialization in materializations:
        if materialization.asset_key.to_user_string() == "champion_model":
            metadata = {key: value.value for key, value in materialization.metadata.items()}
            return f"\n  v{metadata['version']} {metadata['alias']}: {metadata['reason']}"
    return ""


def _report_run(instance, run_id: str, config, settings: Settings) -> None:
    """Notify about the run and write its summary, as the run-status sensors do for the daemon's runs
    (once: if the daemon's sensors got there first, they did it). A failure to report is one line,
    never the command's failure."""
    from ml_platform.defs.monitoring.report import report_cli_run

    try:
        outcomes = report_cli_run(instance, run_id, config, settings)
    except Exception as error:  # noqa: BLE001 - the run's own outcome is what the command reports
        console.print(f"[yellow]could not report run {run_id}[/]: {type(error).__name__}: {error}", soft_wrap=True)
        return
    if outcomes:
        console.print("notified: " + ", ".join(f"{key} {value}" for key, value in outcomes.items()), soft_wrap=True)


@app.command("champion")
def champion() -> None:
    """Show the registered champion model and its metrics.

    Example: ml-platform champion
    """
    from ml_platform.lib.mlflow_store import MlflowStore

    settings = Settings.from_env()
    config = load_platform_config(settings)
    tracking = MlflowStore(settings.tracking_uri_for(config), config.tracking.experiment_name)
    name = config.promotion.registered_model_name
    version = tracking.champion_version(name)
    if version is None:
        fail(f"no champion yet for {name!r}: run the pipeline first (`ml-platform run --all`)")
    run = tracking.client().get_run(version.run_id)
    table = Table(title=f"{name} v{version.version} @champion", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for metric, value in sorted(run.data.metrics.items()):
        table.add_row(metric, f"{value:.4f}")
    console.print(table)
    console.print(f"model: {version.tags.get('model_name')}  batch: {version.tags.get('batch')}  run: {version.run_id}")
    console.print(f"why: {version.tags.get('promotion_reason')}")


def main() -> None:  # pragma: no cover - the console script
    app(prog_name="ml-platform")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
