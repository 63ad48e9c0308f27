"""A backfill through the embedded deployment and through the cluster, on the same batches, in one
invocation; prints a table and appends it to benchmarks/CLUSTER_RESULTS.md.

    .venv/bin/python -m benchmarks.cluster_backfill [--batches 20] [--rows 2000] [--workers 2] [--output FILE]

Both deployments get the same batch files (`write_demo_batches`, seed 42, drift 0.03, as `make demo`),
the project's `configs/platform.yaml` (the models a user gets, not the tests' small ones) and a fresh
temporary home each. They run one after the other, never at the same time:

  embedded  `ml-platform batches scan`, then `ml-platform run --all`, each a fresh process: the backfill
            a user runs (`make demo`'s path), every batch in turn in that one process, Dagster and MLflow
            in SQLite. Timed from the scan's spawn to the exit of `run --all`.
  cluster   `ml-platform cluster up --workers W` on free ports in its own folder (not timed), then every
            batch file hard-linked into its home's incoming folder at once (a drop). The daemon's
            new-batch sensor adds the partitions and queues the runs, the daemon launches them (two at a
            time: dagster.yaml's run queue), their steps run on the Celery workers. Timed from the drop to
            the end of the last batch's first successful `batch_pipeline` run, read from the cluster's
            Dagster instance. Then `ml-platform cluster down`, and no process of the cluster may be left.

Both are checked alike afterwards: one successful `batch_pipeline` run per batch, one registered model
version per batch and one @champion; the cluster also for "database is locked" in its logs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from unittest import mock

import dagster as dg
from rich.console import Console

from benchmarks.measure import PeakRssSampler, run_measured, tail
from benchmarks.run import BIN, REPO, base_env, free_port, git_sha, machine, make_home, markdown_table, rich_table
from ml_platform.cluster import cluster_processes, environment, layout_for, stop_leftovers, supervisor_running
from ml_platform.lib.config import load_config
from ml_platform.lib.demo_data import write_demo_batches
from ml_platform.lib.settings import DEFAULT_CONFIG_PATH, Settings

SEED, DRIFT = 42, 0.03
JOB = "batch_pipeline"
PARTITION_TAG = "dagster/partition"
LOCKED = "database is locked"

console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)


@dataclass
class Outcome:
    """One deployment's backfill: its wall time, its runs and what was checked afterwards."""

    deployment: str
    batches: list[str]
    wall_s: float | None = None
    run_s: dict[str, float] = field(default_factory=dict)  # batch -> its successful run, start to end
    queued_s: dict[str, float] = field(default_factory=dict)  # batch -> its run's creation to its dequeue
    launch_s: dict[str, float] = field(default_factory=dict)  # batch -> its run's dequeue to its start
    runs_by_job: Counter = field(default_factory=Counter)  # every run in the instance, "job status"
    step_s: dict[str, list[float]] = field(default_factory=dict)  # step -> its durations in the successful runs
    checks: dict[str, str] = field(default_factory=dict)  # what was checked -> "ok" or what is wrong
    champion: str = "-"
    peak_rss_bytes: int = 0
    other_cores: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.wall_s is not None and all(value == "ok" for value in self.checks.values())

    @property
    def batches_per_minute(self) -> float | None:
        return len(self.batches) / self.wall_s * 60 if self.wall_s else None


# ---------------------------------------------------------------- what both deployments are checked for


def read_runs(outcome: Outcome, instance: dg.DagsterInstance) -> list[dg.RunRecord]:
    """Fill the outcome's per-batch run times from the instance; returns the batch runs, oldest first."""
    records = sorted(instance.get_run_records(), key=lambda record: record.create_timestamp)
    outcome.runs_by_job = Counter(f"{r.dagster_run.job_name} {r.dagster_run.status.value}" for r in records)
    batch_runs = [record for record in records if record.dagster_run.job_name == JOB]
    for record in batch_runs:
        batch = record.dagster_run.tags.get(PARTITION_TAG)
        if record.dagster_run.status == dg.DagsterRunStatus.SUCCESS and batch not in outcome.run_s:
            outcome.run_s[batch] = record.end_time - record.start_time
            if dequeued := dequeued_at(instance, record.dagster_run.run_id):  # runs the daemon launched
                outcome.queued_s[batch] = dequeued - record.create_timestamp.timestamp()
                outcome.launch_s[batch] = record.start_time - dequeued
            for step, seconds in step_durations(instance, record.dagster_run.run_id).items():
                outcome.step_s.setdefault(step, []).append(seconds)
    missing = [batch for batch in outcome.batches if batch not in outcome.run_s]
    outcome.checks["a successful run per batch"] = f"none for {', '.join(missing)}" if missing else "ok"
    per_batch = Counter(record.dagster_run.tags.get(PARTITION_TAG) for record in batch_runs)
    failed = [r.dagster_run.run_id for r in batch_runs if r.dagster_run.status != dg.DagsterRunStatus.SUCCESS]
    twice = {batch: count for batch, count in per_batch.items() if count > 1}
    problems = []
    if failed:
        problems.append(f"{len(failed)} not successful: {failed}")
    if twice:
        problems.append(f"runs per batch: {twice}")
    outcome.checks["every run succeeded, one per batch"] = "; ".join(problems) or "ok"
    return batch_runs


def dequeued_at(instance: dg.DagsterInstance, run_id: str) -> float | None:
    """When the daemon took the run from the queue to launch it (RUN_STARTING); None for a run executed
    in place (`ml-platform run`), which is never queued."""
    entries = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_STARTING)
    return entries[0].timestamp if entries else None


def step_durations(instance: dg.DagsterInstance, run_id: str) -> dict[str, float]:
    """Each step's start to its success (on the cluster: on the worker that ran it)."""
    started, durations = {}, {}
    for entry in instance.all_logs(run_id, of_type={dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS}):
        if entry.dagster_event.event_type == dg.DagsterEventType.STEP_START:
            started[entry.step_key] = entry.timestamp
        elif entry.step_key in started:
            durations[entry.step_key] = entry.timestamp - started[entry.step_key]
    return durations


def check_registry(outcome: Outcome, tracking_uri: str, model_name: str) -> None:
    """One registered version per batch, and exactly one of them @champion."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    versions = client.search_model_versions(f"name = '{model_name}'")
    per_batch = Counter(version.tags.get("batch") for version in versions)
    wrong = {batch: per_batch.get(batch, 0) for batch in {*outcome.batches, *per_batch} if per_batch[batch] != 1}
    outcome.checks["one model version per batch"] = f"versions per batch: {wrong}" if wrong else "ok"
    # search_model_versions leaves `aliases` empty: each version is read on its own for them.
    aliased = [client.get_model_version(model_name, version.version) for version in versions]
    champions = [version for version in aliased if "champion" in version.aliases]
    outcome.checks["exactly one @champion"] = "ok" if len(champions) == 1 else f"{len(champions)} versions"
    if len(champions) == 1:
        outcome.champion = f"v{champions[0].version} ({champions[0].tags.get('batch')})"


# ---------------------------------------------------------------- embedded


def run_embedded(work_dir: Path, config, config_path: Path, batch_files: dict[str, Path], timeout_s: float) -> Outcome:
    outcome = Outcome("embedded", list(batch_files))
    home = make_home(work_dir, config, config_path, batch_files)
    console.print(f"[bold]embedded[/]: `ml-platform batches scan` + `ml-platform run --all` in {home.root}")
    wall, peak, other_cpu_s = 0.0, 0, 0.0
    for command in (["batches", "scan"], ["run", "--all"]):
        measured = run_measured([str(BIN / "ml-platform"), *command], home.env(), REPO, timeout_s)
        label = " ".join(command)
        console.print(f"  ml-platform {label}: {measured.wall_s:.1f} s" + ("" if measured.ok else " FAILED"))
        if not measured.ok:
            outcome.checks[f"ml-platform {label}"] = measured.error
            return outcome
        wall += measured.wall_s
        peak = max(peak, measured.peak_rss_bytes)
        other_cpu_s += (measured.extra["other_cores"] or 0.0) * measured.wall_s
    outcome.wall_s, outcome.peak_rss_bytes, outcome.other_cores = wall, peak, other_cpu_s / wall
    with dg.DagsterInstance.from_config(str(home.dagster_home)) as instance:
        read_runs(outcome, instance)
    settings = Settings(home=home.root, config_path=config_path)
    check_registry(outcome, settings.local_tracking_uri, config.promotion.registered_model_name)
    return outcome


# ---------------------------------------------------------------- cluster


def run_cluster(
    work_dir: Path, config, config_path: Path, batch_files: dict[str, Path], workers: int, timeout_s: float
) -> Outcome:
    outcome = Outcome("cluster", list(batch_files))
    home, root = work_dir / "cluster-home", work_dir / "cluster"
    env = {
        **base_env(),
        "ML_PLATFORM_HOME": str(home),
        "ML_PLATFORM_CONFIG": str(config_path),
        "ML_PLATFORM_CLUSTER_DIR": str(root),
    }
    ports = [str(free_port()) for _ in range(4)]
    up_command = ["cluster", "up", "--workers", str(workers), "--postgres-port", ports[0], "--redis-port", ports[1]]
    up_command += ["--mlflow-port", ports[2], "--dagster-port", ports[3]]
    console.print(f"[bold]cluster[/]: ml-platform {' '.join(up_command)}  (folder {root})")
    layout = None
    try:
        clock = time.monotonic()
        ml_platform(up_command, env, work_dir / "cluster-up.log", timeout_s=900)
        outcome.notes.append(f"`cluster up` took {time.monotonic() - clock:.0f} s (not timed)")
        layout = layout_for(root, Settings(home=home, config_path=config_path))
        console.print(f"  up after {time.monotonic() - clock:.0f} s; dropping {len(batch_files)} batch files")
        incoming = home / config.data.incoming_dir
        incoming.mkdir(parents=True, exist_ok=True)
        with (
            mock.patch.dict(os.environ, environment(layout)),
            dg.DagsterInstance.get() as instance,
            PeakRssSampler(lambda: list(cluster_processes(layout)), interval=1.0) as sampler,
        ):
            dropped_at = time.time()
            for source in batch_files.values():
                os.link(source, incoming / source.name)  # atomic: the sensor never sees half a file
            wait_for_backfill(instance, layout, outcome.batches, timeout_s)
            batch_runs = read_runs(outcome, instance)
        first_success_end = {}
        for record in batch_runs:
            batch = record.dagster_run.tags.get(PARTITION_TAG)
            if record.dagster_run.status == dg.DagsterRunStatus.SUCCESS and batch not in first_success_end:
                first_success_end[batch] = record.end_time
        outcome.wall_s = max(first_success_end.values()) - dropped_at
        outcome.peak_rss_bytes, outcome.other_cores = sampler.peak_bytes, sampler.other_cores
        check_registry(outcome, layout.tracking_uri, config.promotion.registered_model_name)
        locked = log_lines([layout.logs_dir, layout.dagster_home], LOCKED)
        outcome.checks[f'"{LOCKED}" in the cluster logs'] = "ok" if not locked else f"{len(locked)}: {locked[:3]}"
    except (OSError, RuntimeError, TimeoutError, subprocess.SubprocessError) as error:
        outcome.checks["the backfill finished"] = f"{type(error).__name__}: {error}"
    finally:
        layout = layout or layout_for(root, Settings(home=home, config_path=config_path))
        clock = time.monotonic()
        outcome.checks["nothing left after `cluster down`"] = cluster_down(env, layout, work_dir)
        outcome.notes.append(f"`cluster down` took {time.monotonic() - clock:.0f} s")
    return outcome


def ml_platform(command: list[str], env: dict[str, str], log: Path, timeout_s: float) -> None:
    """Run `ml-platform COMMAND` with its output in `log` (not a pipe: supervisord, which `cluster up`
    starts, must not hold our pipe open)."""
    with log.open("ab") as out:
        done = subprocess.run(
            [str(BIN / "ml-platform"), *command], env=env, cwd=log.parent, stdout=out, stderr=out, timeout=timeout_s
        )
    if done.returncode != 0:
        raise RuntimeError(f"ml-platform {' '.join(command)} exited {done.returncode}:\n{tail(log.read_text())}")


def wait_for_backfill(instance: dg.DagsterInstance, layout, batches: list[str], timeout_s: float) -> None:
    """Until every batch has a successful run. A batch whose runs have all ended without one (its retry
    not started within two minutes) fails the backfill, as does a cluster that stopped."""
    started, last_report = time.monotonic(), 0.0
    without_success_since: dict[str, float] = {}
    while True:
        records = instance.get_run_records(dg.RunsFilter(job_name=JOB))
        by_batch: dict[str, list[dg.DagsterRun]] = {}
        for record in records:
            by_batch.setdefault(record.dagster_run.tags.get(PARTITION_TAG), []).append(record.dagster_run)
        done = {b for b, runs in by_batch.items() if any(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)}
        if set(batches) <= done:
            return
        now = time.monotonic()
        for batch in batches:
            runs = by_batch.get(batch, [])
            if runs and batch not in done and all(run.is_finished for run in runs):
                if now - without_success_since.setdefault(batch, now) > 120:
                    raise RuntimeError(f"{batch}: its run(s) ended {[run.status.value for run in runs]}, no retry")
            else:
                without_success_since.pop(batch, None)
        if not supervisor_running(layout):
            raise RuntimeError(f"the cluster stopped (supervisord is gone): see {layout.logs_dir}")
        if now - started > timeout_s:
            raise TimeoutError(f"{len(done)} of {len(batches)} batches succeeded after {timeout_s:.0f} s")
        if now - last_report >= 60:
            statuses = Counter(run.status.value for runs in by_batch.values() for run in runs)
            console.print(f"  {now - started:5.0f} s: {len(done)}/{len(batches)} batches done; runs {dict(statuses)}")
            last_report = now
        time.sleep(2)


def log_lines(folders: list[Path], text: str) -> list[str]:
    """Lines holding `text` in every file under `folders` (the parts' logs, the runs' compute logs)."""
    found = []
    for path in (path for folder in folders for path in folder.rglob("*") if path.is_file()):
        with contextlib.suppress(OSError), path.open(errors="replace") as file:
            found += [f"{path.name}: {line.strip()}" for line in file if text in line]
    return found


def cluster_down(env: dict[str, str], layout, work_dir: Path) -> str:
    """`ml-platform cluster down`, then what is left of this cluster (only this folder's processes)."""
    try:
        ml_platform(["cluster", "down"], env, work_dir / "cluster-down.log", timeout_s=300)
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        console.print(f"  [red]cluster down failed[/]: {error}")
    left = [f"{process.pid} {process.name()}" for process in cluster_processes(layout)]
    if not left:
        console.print("  cluster down: no process left")
        return "ok"
    console.print(f"  [red]left after cluster down[/]: {left}; stopping them (this cluster's folder only)")
    stop_leftovers(layout)
    return f"left running: {left}"


# ---------------------------------------------------------------- report


def median(values: dict[str, float]) -> float | None:
    return statistics.median(values.values()) if values else None


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def summary_rows(outcomes: list[Outcome]) -> list[list[str]]:
    embedded = outcomes[0].batches_per_minute
    rows = []
    for outcome in outcomes:
        bpm = outcome.batches_per_minute
        rows.append(
            [
                outcome.deployment,
                str(len(outcome.batches)),
                fmt(outcome.wall_s),
                fmt(bpm, 2),
                f"{bpm / embedded:.2f}x" if bpm and embedded else "-",
                fmt(median(outcome.run_s)),
                fmt(median(outcome.queued_s)),
                fmt(median(outcome.launch_s)),
                f"{outcome.peak_rss_bytes / 1e6:,.0f}",
                fmt(outcome.other_cores, 2),
                "yes" if outcome.ok else "NO",
            ]
        )
    return rows


SUMMARY_COLUMNS = [
    "deployment",
    "batches",
    "wall s",
    "batches/min",
    "batches/min ratio to embedded",
    "median run s",
    "median queued s",
    "median launch s",
    "peak RSS MB",
    "other cores",
    "all checks ok",
]


def check_rows(outcomes: list[Outcome]) -> list[list[str]]:
    names = list(dict.fromkeys(name for outcome in outcomes for name in outcome.checks))
    rows = [[name, *(outcome.checks.get(name, "n/a") for outcome in outcomes)] for name in names]
    rows.append(["champion at the end", *(outcome.champion for outcome in outcomes)])
    rows.append(["runs in the instance", *(", ".join(f"{k}: {v}" for k, v in o.runs_by_job.items()) for o in outcomes)])
    return rows


def batch_rows(outcomes: list[Outcome]) -> list[list[str]]:
    embedded, cluster = outcomes
    return [
        [
            batch,
            *(fmt(times.get(batch)) for times in (embedded.run_s, cluster.run_s, cluster.queued_s, cluster.launch_s)),
        ]
        for batch in embedded.batches
    ]


def step_rows(outcomes: list[Outcome]) -> list[list[str]]:
    steps = list(dict.fromkeys(step for outcome in outcomes for step in outcome.step_s))
    return [
        [step, *(fmt(statistics.median(o.step_s[step])) if step in o.step_s else "-" for o in outcomes)]
        for step in steps
    ]


INTRO = """# Benchmark: a backfill on the cluster against the embedded deployment

Each run of `benchmarks/cluster_backfill.py` appends a section below (the newest last): on a shared
machine one run is noisy, several show the spread. In each, the same batch files, config and seed for
both deployments, each in a fresh temporary home, one deployment after the other (the script's
docstring says how each is run and timed).

- *wall s*: embedded, the spawn of `ml-platform batches scan` to the exit of `ml-platform run --all`;
  cluster, the drop of the files into the incoming folder to the end of the last batch's successful
  `batch_pipeline` run (the cluster was up and idle before).
- *batches/min ratio to embedded*: batches per minute over the embedded figure (above 1: the cluster
  is faster).
- *median run s*: a batch's run from its start to its end (the cluster's run worker has imported the
  code by then). Cluster only: *median queued s*, the run's creation by the sensor to the daemon taking
  it from the queue (in a backfill, mostly the wait for one of the two run slots of dagster.yaml);
  *median launch s*, from there to the run's start (the run worker's process start and imports).
- *peak RSS MB*: the process tree of the commands (embedded) or every process of the cluster (sampled
  each second), MB = 10^6 bytes.
- *other cores*: how many cores other processes on the machine kept busy meanwhile (the noise; for the
  cluster slightly too high, as its short-lived processes are sampled once a second).
- The cluster's daemon also runs the config's schedules (retraining every 2 minutes, a backtest every 10
  once there is a champion): *runs in the instance* lists every run, the backfill's and theirs.
- *Median step time*: a step's start to its success, over the successful runs (on the cluster, on the
  Celery worker that ran it; the time a step waited in Redis for a free worker is not in it).
"""


def write_results(path: Path, title: str, context: dict[str, str], outcomes: list[Outcome]) -> None:
    """Append this run's section to `path` (created with the explanation of the figures)."""
    notes = [note for outcome in outcomes for note in outcome.notes]
    lines = [
        "",
        f"## {title}",
        "",
        *(f"- {key}: {value}" for key, value in context.items()),
        "",
        markdown_table(SUMMARY_COLUMNS, summary_rows(outcomes)),
        "",
        *(f"- {note}" for note in notes),
        "",
        "### Checks",
        "",
        markdown_table(["check", *(o.deployment for o in outcomes)], check_rows(outcomes)),
        "",
        "### Median step time (s)",
        "",
        markdown_table(["step", *(o.deployment for o in outcomes)], step_rows(outcomes)),
        "",
        "### Per batch (s)",
        "",
        markdown_table(
            ["batch", "embedded run", "cluster run", "cluster queued", "cluster launch"], batch_rows(outcomes)
        ),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file():
        path.write_text(INTRO)
    with path.open("a") as file:
        file.write("\n".join(lines) + "\n")


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cluster_backfill", description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=20, help="batches in the backfill")
    parser.add_argument("--rows", type=int, default=2000, help="rows per batch")
    parser.add_argument("--workers", type=int, default=2, help="the cluster's Celery workers")
    parser.add_argument("--output", type=Path, default=Path(__file__).with_name("CLUSTER_RESULTS.md"))
    parser.add_argument("--timeout", type=float, default=3 * 3600, help="seconds allowed per deployment")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (homes, cluster, logs)")
    args = parser.parse_args(argv)
    if args.batches < 1 or args.rows < 100 or args.workers < 1:
        parser.error("--batches and --workers must be at least 1, --rows at least 100")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started, clock = datetime.now(UTC), time.monotonic()
    config_path = DEFAULT_CONFIG_PATH
    config = load_config(config_path)
    # PostgreSQL runs as the `postgres` user when we are root: it must be able to enter the folder.
    work_dir = Path(tempfile.mkdtemp(prefix="ml-platform-cluster-bench-", dir="/tmp"))
    work_dir.chmod(0o711)
    load_at_start = ", ".join(f"{load:.2f}" for load in os.getloadavg())
    command = " ".join(shlex.quote(part) for part in ["python", "-m", "benchmarks.cluster_backfill", *sys.argv[1:]])
    console.print(f"[bold]cluster backfill benchmark[/]  work folder {work_dir}\n  {command}")
    paths = write_demo_batches(work_dir / "batches", args.batches, args.rows, seed=SEED, drift=DRIFT)
    batch_files = {path.stem: path for path in paths}

    embedded = run_embedded(work_dir, config, config_path, batch_files, args.timeout)
    cluster = run_cluster(work_dir, config, config_path, batch_files, args.workers, args.timeout)
    outcomes = [embedded, cluster]

    elapsed = time.monotonic() - clock
    info = machine()
    context = {
        "Took": f"{elapsed / 60:.1f} min (the whole benchmark)",
        "Command": f"`{command}` (from the repository root, with the venv's python)",
        "Git": f"`{git_sha()}`",
        "Machine": f"{info['CPU']}, nproc {os.cpu_count()}, {info['RAM']}",
        "Load average": f"{load_at_start} at the start, {', '.join(f'{x:.2f}' for x in os.getloadavg())} at the end",
        "Data": f"{args.batches} batches of {args.rows:,} rows (`write_demo_batches`, seed {SEED}, drift {DRIFT})",
        "Config": f"`configs/platform.yaml` (training window {config.training.window}); models: "
        + ", ".join(f"{name} {spec.params}" for name, spec in config.models.items()),
        "Cluster": f"{args.workers} Celery workers (solo pool), `ml-platform cluster up`'s defaults otherwise",
    }
    console.print()
    console.print(rich_table("Backfill: cluster against embedded", SUMMARY_COLUMNS, summary_rows(outcomes)))
    console.print(rich_table("Checks", ["check", "embedded", "cluster"], check_rows(outcomes)))
    for note in cluster.notes:
        console.print(f"  {note}")
    title = f"{started:%Y-%m-%d %H:%M} UTC: {args.batches} batches of {args.rows:,} rows, {args.workers} workers"
    write_results(args.output, title, context, outcomes)
    console.print(f"wrote {args.output} ({elapsed / 60:.1f} min)")
    ok = all(outcome.ok for outcome in outcomes)
    if ok and not args.keep:
        shutil.rmtree(work_dir, ignore_errors=True)
    else:
        console.print(f"work folder kept: {work_dir}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
