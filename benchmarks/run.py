"""The benchmark driver: the platform against its floor, per batch size, and a backfill; prints a table
and writes benchmarks/RESULTS.md.

    .venv/bin/python -m benchmarks.run [--sizes 10000 100000 1000000] [--repeats 3] [--repeats-large 1]
                                       [--backfill 20] [--backfill-rows 10000] [--output benchmarks/RESULTS.md]

Variants, each a fresh process against a fresh temporary home (ML_PLATFORM_HOME, with DAGSTER_HOME
inside it seeded with the project's dagster.yaml), the batch's partition added beforehand (not timed):

  floor            benchmarks/floor.py: the pipeline's work as a plain script, no orchestration, no tracking
  floor_tracking   the same with the assets' MLflow logging and registration
  inprocess        benchmarks/platform_inprocess.py: `dg.materialize` of the code location's assets
  cli              `dagster asset materialize -m ml_platform.definitions --select '*' --partition B`
                   (the path people and CI run), without the venv on PATH
  launched         a run of `batch_pipeline` submitted through GraphQL to `dagster-webserver`, dequeued and
                   launched by `dagster-daemon`, as the UI does (one home and one pair of servers per size)

Every figure is the wall time of the fresh process (imports included) and the peak RSS of its process
tree; floor and in-process also report their own import and work times. Ratios are to the floors
measured in the same invocation.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import psutil
import yaml
from rich.console import Console
from rich.table import Table

from benchmarks.cli_latency import latency_section
from benchmarks.measure import Measured, PeakRssSampler, kill_group, run_measured, tail, without_unexeced_forks
from ml_platform.lib.config import PlatformConfig, compose_config, load_config
from ml_platform.lib.demo_data import write_demo_batches

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
BIN = Path(sys.executable).parent  # the venv's bin: dagster, dagster-webserver, ml-platform
DEFAULT_CONFIG = REPO / "configs" / "platform.yaml"
LARGE = 1_000_000

VARIANTS = {
    "floor": "floor",
    "floor_tracking": "floor+MLflow",
    "inprocess": "in-process",
    "cli": "CLI",
    "launched": "launched",
}
PROCESS_VARIANTS = ("floor", "floor_tracking", "inprocess", "cli")
REFERENCE = "floor_tracking"
# Above this many cores kept busy by other processes during a run, its row says the machine was busy.
BUSY_CORES = 0.25

# Wide enough for the tables when the output is a file or a pipe.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)


# ---------------------------------------------------------------- homes and environments


@dataclass
class Home:
    """A fresh ML_PLATFORM_HOME with its DAGSTER_HOME, batch files linked into its incoming folder."""

    root: Path
    config_path: Path

    @property
    def dagster_home(self) -> Path:
        return self.root / ".dagster_home"

    def env(self) -> dict[str, str]:
        return {
            **base_env(),
            "ML_PLATFORM_HOME": str(self.root),
            "ML_PLATFORM_CONFIG": str(self.config_path),
            "DAGSTER_HOME": str(self.dagster_home),
        }


def base_env() -> dict[str, str]:
    """The caller's environment without the venv on PATH (the platform finds dbt itself), without a
    tracking server (MLflow goes to SQLite in the home) and without the caller's platform settings."""
    dropped = {"MLFLOW_TRACKING_URI", "VIRTUAL_ENV", "ML_PLATFORM_HOME", "ML_PLATFORM_CONFIG", "DAGSTER_HOME"}
    env = {key: value for key, value in os.environ.items() if key not in dropped}
    venv_bin = os.path.abspath(BIN)
    env["PATH"] = os.pathsep.join(
        entry for entry in env.get("PATH", "").split(os.pathsep) if entry and os.path.abspath(entry) != venv_bin
    )
    return env


def make_home(parent: Path, config: PlatformConfig, config_path: Path, batches: dict[str, Path]) -> Home:
    root = Path(tempfile.mkdtemp(prefix="home-", dir=parent))
    incoming = root / config.data.incoming_dir
    incoming.mkdir(parents=True, exist_ok=True)
    for batch_id, source in batches.items():
        target = incoming / f"{batch_id}.{config.data.file_format}"
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
    home = Home(root, config_path)
    home.dagster_home.mkdir()
    shutil.copyfile(REPO / "dagster.yaml", home.dagster_home / "dagster.yaml")
    return home


def scan_batches(home: Home, timeout_s: float) -> None:
    """`ml-platform batches scan`: a partition per batch file (not timed)."""
    done = subprocess.run(
        [str(BIN / "ml-platform"), "batches", "scan"],
        env=home.env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    if done.returncode != 0:
        raise RuntimeError(f"ml-platform batches scan failed:\n{tail(done.stderr or done.stdout)}")


def command_for(variant: str, home: Home, batch_id: str) -> list[str]:
    if variant in ("floor", "floor_tracking"):
        tracking = ["--tracking"] if variant == "floor_tracking" else []
        return [sys.executable, str(BENCH_DIR / "floor.py"), "--home", str(home.root), "--batch", batch_id, *tracking]
    if variant == "inprocess":
        return [sys.executable, str(BENCH_DIR / "platform_inprocess.py"), "--home", str(home.root), "--batch", batch_id]
    if variant == "cli":
        return [
            str(BIN / "dagster"),
            "asset",
            "materialize",
            "-m",
            "ml_platform.definitions",
            "--select",
            "*",
            "--partition",
            batch_id,
        ]
    raise ValueError(variant)


def platform_succeeded(home: Home, batch_id: str) -> bool:
    """The evaluation report is on disk: the run got through training and evaluation."""
    return (home.root / "reports" / batch_id / "evaluation_report.json").is_file()


# ---------------------------------------------------------------- one measurement


@dataclass
class Bench:
    """Options shared by every measurement."""

    work_dir: Path
    config: PlatformConfig
    config_path: Path
    timeout_s: float
    keep: bool
    failures: list[str] = field(default_factory=list)

    def cleanup(self, home: Home, ok: bool) -> None:
        if ok and not self.keep:
            shutil.rmtree(home.root, ignore_errors=True)
        elif not ok:
            console.print(f"    [yellow]kept the failed run's home for inspection: {home.root}[/]")

    def fail(self, label: str, error: str) -> None:
        self.failures.append(f"{label}: {error}")
        console.print(f"    [red]FAILED[/] {label}\n" + "\n".join(f"      | {line}" for line in error.splitlines()))


def measure_process_variant(bench: Bench, variant: str, batch_file: Path, label: str) -> Measured:
    home = make_home(bench.work_dir, bench.config, bench.config_path, {"batch_0001": batch_file})
    try:
        if variant in ("inprocess", "cli"):
            scan_batches(home, bench.timeout_s)
        measured = run_measured(command_for(variant, home, "batch_0001"), home.env(), REPO, bench.timeout_s)
        if measured.ok and variant in ("inprocess", "cli") and not platform_succeeded(home, "batch_0001"):
            measured.ok, measured.error = False, "exit code 0 but no evaluation report was written"
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        measured = Measured(False, float("nan"), 0, None, error=str(error))
    if not measured.ok:
        bench.fail(label, measured.error)
    bench.cleanup(home, measured.ok)
    return measured


# ---------------------------------------------------------------- launched runs (webserver + daemon)

WORKSPACE_QUERY = """
{ workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message } } } } } }
"""
DAEMON_QUERY = "{ instance { daemonHealth { allDaemonStatuses { daemonType required healthy } } } }"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def graphql(port: int, query: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["data"]


def wait_until_ready(port: int, servers: Sequence[subprocess.Popen], logs: Sequence[Path], timeout_s: float) -> float:
    """Wait until the webserver has loaded the code location and the daemon reports healthy; returns seconds."""
    started = time.monotonic()
    while True:
        for server, log in zip(servers, logs, strict=True):
            if server.poll() is not None:
                raise RuntimeError(f"{log.stem} exited with code {server.returncode}:\n{tail(log.read_text())}")
        try:
            entries = graphql(port, WORKSPACE_QUERY)["workspaceOrError"]["locationEntries"]
            for entry in entries:
                if (entry.get("locationOrLoadError") or {}).get("__typename") == "PythonError":
                    raise RuntimeError(f"code location failed to load: {entry['locationOrLoadError']['message']}")
            statuses = graphql(port, DAEMON_QUERY)["instance"]["daemonHealth"]["allDaemonStatuses"]
            if (
                entries
                and all(entry["loadStatus"] == "LOADED" for entry in entries)
                and all(status["healthy"] for status in statuses if status["required"])
            ):
                return time.monotonic() - started
        except (urllib.error.URLError, ConnectionError, TimeoutError, KeyError, TypeError):
            pass
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(
                f"servers not ready after {timeout_s:.0f} s:\n" + "\n".join(tail(p.read_text(), 10) for p in logs)
            )
        time.sleep(1)


def run_worker_tree(daemon: psutil.Process, baseline: set[int]) -> Callable[[], list[psutil.Process]]:
    """The processes the daemon started for the run: its descendants that were not there at submission
    (the run worker spawned by the daemon's code server, its compute-log `tail`s and orphan watchers)."""

    def select() -> list[psutil.Process]:
        return without_unexeced_forks([process for process in _children(daemon) if process.pid not in baseline])

    return select


def _children(process: psutil.Process) -> list[psutil.Process]:
    try:
        return process.children(recursive=True)
    except psutil.Error:
        return []


def measure_launched(bench: Bench, batch_file: Path, repeats: int, size: int) -> list[Measured]:
    """Per size: one home with `repeats` copies of the batch (batch_0001, batch_0002, ...), one webserver and
    one daemon; each repetition submits `batch_pipeline` for the next copy and waits for it to finish."""
    import dagster as dg
    from dagster_graphql import DagsterGraphQLClient

    batch_ids = [f"batch_{number:04d}" for number in range(1, repeats + 1)]
    home = make_home(bench.work_dir, bench.config, bench.config_path, dict.fromkeys(batch_ids, batch_file))
    results: list[Measured] = []
    servers: list[subprocess.Popen] = []
    logs = [home.root / "dagster-webserver.log", home.root / "dagster-daemon.log"]
    port = free_port()
    try:
        scan_batches(home, bench.timeout_s)
        commands = [
            [str(BIN / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"],
        ]
        for command, log in zip(commands, logs, strict=True):
            with log.open("wb") as out:
                servers.append(
                    subprocess.Popen(
                        command, env=home.env(), cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
                    )
                )
        ready_s = wait_until_ready(port, servers, logs, timeout_s=600)
        console.print(f"    webserver on port {port} and daemon ready after {ready_s:.1f} s")
        client = DagsterGraphQLClient("127.0.0.1", port_number=port)
        daemon = psutil.Process(servers[1].pid)
        with dg.DagsterInstance.from_config(str(home.dagster_home)) as instance:
            for rep, batch_id in enumerate(batch_ids, start=1):
                label = f"{size:,} rows, launched, rep {rep}/{repeats}"
                measured = launch_one(bench, client, instance, daemon, batch_id)
                report_progress(label, measured)
                if not measured.ok:
                    bench.fail(label, measured.error)
                results.append(measured)
    except Exception as error:  # any failure of the servers marks the remaining repetitions FAILED
        message = f"{type(error).__name__}: {error}"
        bench.fail(f"{size:,} rows, launched", message)
        results.extend(Measured(False, float("nan"), 0, None, error=message) for _ in range(repeats - len(results)))
    finally:
        for server in servers:
            kill_group(server)
    bench.cleanup(home, all(m.ok for m in results))
    return results


def launch_one(bench: Bench, client, instance, daemon: psutil.Process, batch_id: str) -> Measured:
    import dagster as dg

    baseline = {process.pid for process in _children(daemon)}
    finished = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
    with PeakRssSampler(run_worker_tree(daemon, baseline)) as sampler:
        submitted = time.time()
        run_id = client.submit_job_execution("batch_pipeline", tags={"dagster/partition": batch_id})
        while (status := client.get_run_status(run_id)) not in finished:
            if time.time() - submitted > bench.timeout_s:
                status = None
                break
            time.sleep(0.5)
        observed = time.time()
    record = instance.get_run_record_by_id(run_id)
    events: dict[str, float] = {}
    failure = ""
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None:
            continue
        events.setdefault(event.event_type.name, entry.timestamp)
        if event.event_type in (dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE) and not failure:
            failure = tail(entry.message or "", 5)
    ok = status == dg.DagsterRunStatus.SUCCESS
    end = record.end_time or observed
    extra = {
        "run_id": run_id,
        "status": str(status.value if status else "TIMEOUT"),
        "observed_wall_s": observed - submitted,
        "worker_processes": sampler.max_processes,
        "worker_commands": " ".join(
            f"{name}x{count}" for name, count in sorted(Counter(sampler.names_by_pid.values()).items())
        ),
        "cpu_s": sampler.cpu_s,
        "other_cores": sampler.other_cores,
    }
    if record.start_time:
        extra["launch_latency_s"] = record.start_time - submitted
        extra["run_s"] = end - record.start_time
    if "RUN_STARTING" in events:
        extra["queued_s"] = events["RUN_STARTING"] - submitted
    error = "" if ok else f"run {run_id} ended {extra['status']} (logs in {instance.root_directory}):\n{failure}"
    report = {"work_s": extra.get("run_s")} if ok else {}
    return Measured(ok, end - submitted, sampler.peak_bytes, None, report=report, error=error, extra=extra)


# ---------------------------------------------------------------- summaries


def report_progress(label: str, measured: Measured) -> None:
    if not measured.ok:
        return
    parts = [f"wall {measured.wall_s:7.2f} s", f"peak {measured.peak_rss_bytes / 1e6:8.0f} MB"]
    if "work_s" in measured.report and measured.report["work_s"] is not None:
        parts.append(f"work {measured.report['work_s']:.2f} s")
    if "launch_latency_s" in measured.extra:
        parts.append(f"launch latency {measured.extra['launch_latency_s']:.2f} s")
    console.print(f"  {label}: " + ", ".join(parts))


@dataclass
class Summary:
    runs: int
    ok: int
    wall: float | None = None
    wall_min: float | None = None
    wall_max: float | None = None
    import_s: float | None = None
    work_s: float | None = None
    peak: float | None = None
    latency: float | None = None
    queued: float | None = None
    other_cores: float | None = None

    @property
    def failed(self) -> bool:
        return self.ok == 0


def _median(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def summarize(measured: list[Measured]) -> Summary:
    good = [m for m in measured if m.ok]
    if not good:
        return Summary(len(measured), 0)
    walls = [m.wall_s for m in good]
    return Summary(
        runs=len(measured),
        ok=len(good),
        wall=statistics.median(walls),
        wall_min=min(walls),
        wall_max=max(walls),
        import_s=_median([m.report.get("import_s") for m in good]),
        work_s=_median([m.report.get("work_s") for m in good]),
        peak=statistics.median(m.peak_rss_bytes for m in good),
        latency=_median([m.extra.get("launch_latency_s") for m in good]),
        queued=_median([m.extra.get("queued_s") for m in good]),
        other_cores=_median([m.extra.get("other_cores") for m in good]),
    )


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def fmt_s(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.1f}" if value >= 100 else f"{value:.2f}"


def fmt_x(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def fmt_mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value / 1e6:,.0f}"


def same_metrics(left: dict[str, dict[str, float]], right: dict[str, dict[str, float]]) -> bool:
    return set(left) == set(right) and all(
        set(left[name]) == set(right[name]) and all(abs(left[name][k] - right[name][k]) <= 1e-9 for k in left[name])
        for name in left
    )


SIZE_COLUMNS = [
    "rows",
    "variant",
    "n",
    "wall s",
    "wall min-max",
    "import s",
    "work s",
    "peak MB",
    "/floor+MLflow wall",
    "/floor+MLflow work",
    "/floor wall",
    "notes",
]


def size_rows(size: int, results: dict[str, list[Measured]]) -> list[list[str]]:
    summaries = {variant: summarize(measured) for variant, measured in results.items()}
    reference, bare = summaries.get(REFERENCE), summaries.get("floor")
    floor_metrics = next((m.report.get("models") for m in results.get("floor", []) if m.ok), None)
    rows = []
    for variant, summary in summaries.items():
        notes = []
        if summary.failed:
            cells = ["FAILED"] * 8
        else:
            cells = [
                fmt_s(summary.wall),
                f"{fmt_s(summary.wall_min)}-{fmt_s(summary.wall_max)}",
                fmt_s(summary.import_s),
                fmt_s(summary.work_s),
                fmt_mb(summary.peak),
                fmt_x(ratio(summary.wall, reference.wall if reference else None)),
                fmt_x(ratio(summary.work_s, reference.work_s if reference else None)),
                fmt_x(ratio(summary.wall, bare.wall if bare else None)),
            ]
            if summary.ok < summary.runs:
                notes.append(f"{summary.runs - summary.ok} of {summary.runs} FAILED")
        if variant == "launched" and summary.latency is not None:
            notes.append(f"launch latency {summary.latency:.2f} s (queued {fmt_s(summary.queued)} s); work = run time")
        if variant == "launched" and summary.runs > 1:
            notes.append("reps 2+ also score the champion of rep 1")
        if summary.other_cores is not None and summary.other_cores > BUSY_CORES:
            notes.append(f"machine busy: other processes used {summary.other_cores:.1f} cores")
        if variant in ("floor_tracking", "inprocess") and floor_metrics:
            other = next((m.report.get("models") for m in results[variant] if m.ok and m.report.get("models")), None)
            if other is not None:
                notes.append("metrics = floor's" if same_metrics(floor_metrics, other) else "METRICS DIFFER from floor")
        rows.append([f"{size:,}", VARIANTS[variant], str(summary.runs), *cells, "; ".join(notes)])
    return rows


def floor_step_rows(size: int, measured: list[Measured]) -> list[list[str]]:
    """Where the floor with tracking spends its work time (median per step)."""
    good = [m.report.get("steps", {}) for m in measured if m.ok]
    if not good:
        return []
    steps = list(good[0])
    return [[f"{size:,}", step, fmt_s(_median([g.get(step) for g in good]))] for step in steps]


# ---------------------------------------------------------------- backfill


@dataclass
class Backfill:
    window: str
    batch_ids: list[str]
    measured: list[Measured]

    def walls(self) -> list[float | None]:
        return [m.wall_s if m.ok else None for m in self.measured]

    def group(self) -> int:
        """How many batches at each end the medians take: 3 of 20, fewer for a short backfill."""
        return min(3, max(1, len(self.measured) // 2))


def run_backfill(bench: Bench, count: int, rows: int, backfills: list[Backfill]) -> None:
    """`count` drifting batches run one after another through the CLI in one home, per training window;
    appended to `backfills` as they are measured."""
    source_dir = bench.work_dir / "data" / f"backfill_{rows}"
    console.print(f"backfill: generating {count} batches of {rows:,} rows (drift 0.03) ...")
    paths = write_demo_batches(source_dir, count, rows, first_batch=1, drift=0.03)
    batches = {path.stem: path for path in paths}
    cumulative_config = bench.work_dir / "platform_cumulative.yaml"
    raw = compose_config(bench.config_path)  # a standalone file: its defaults list resolved
    raw.setdefault("training", {})["window"] = "cumulative"
    cumulative_config.write_text(yaml.safe_dump(raw, sort_keys=False))
    for window, config_path in (("batch", bench.config_path), ("cumulative", cumulative_config)):
        console.print(f"[bold]backfill[/], training window {window}: {count} batches of {rows:,} rows, CLI path")
        home = make_home(bench.work_dir, bench.config, config_path, batches)
        backfill = Backfill(window, list(batches), [])
        backfills.append(backfill)
        try:
            scan_batches(home, bench.timeout_s)
        except (RuntimeError, subprocess.SubprocessError) as error:
            bench.fail(f"backfill ({window}): batches scan", str(error))
            backfill.measured = [Measured(False, float("nan"), 0, None, error=str(error)) for _ in batches]
        else:
            for batch_id in batches:
                label = f"backfill ({window}) {batch_id}"
                result = run_measured(command_for("cli", home, batch_id), home.env(), REPO, bench.timeout_s)
                if result.ok and not platform_succeeded(home, batch_id):
                    result.ok, result.error = False, "exit code 0 but no evaluation report was written"
                report_progress(label, result)
                if not result.ok:
                    bench.fail(label, result.error)
                backfill.measured.append(result)
        bench.cleanup(home, all(m.ok for m in backfill.measured))


def backfill_summary_rows(backfill: Backfill) -> list[list[str]]:
    walls = backfill.walls()
    k = backfill.group()
    n = len(walls)
    first_group, last_group = _median(walls[:k]), _median(walls[-k:])
    return [
        [
            backfill.window,
            "batch 1",
            f"batch {n}",
            fmt_s(walls[0]),
            fmt_s(walls[-1]),
            fmt_x(ratio(walls[-1], walls[0])),
        ],
        [
            backfill.window,
            f"median of batches 1-{k}",
            f"median of batches {n - k + 1}-{n}",
            fmt_s(first_group),
            fmt_s(last_group),
            fmt_x(ratio(last_group, first_group)),
        ],
    ]


def backfill_batch_rows(backfills: list[Backfill]) -> tuple[list[str], list[list[str]]]:
    columns = ["batch"]
    for backfill in backfills:
        columns += [f"{backfill.window}: wall s", f"{backfill.window}: peak MB", f"{backfill.window}: other cores"]
    rows = []
    for index, batch_id in enumerate(backfills[0].batch_ids):
        row = [batch_id]
        for backfill in backfills:
            if index >= len(backfill.measured):  # interrupted before this batch
                row += ["-", "-", "-"]
                continue
            m = backfill.measured[index]
            other = m.extra.get("other_cores")
            row += [fmt_s(m.wall_s), fmt_mb(m.peak_rss_bytes)] if m.ok else ["FAILED", "FAILED"]
            row.append("n/a" if other is None else f"{other:.2f}")
        rows.append(row)
    return columns, rows


# ---------------------------------------------------------------- targets


def verdict(value: float | None, limit: float, inclusive: bool = True) -> str:
    if value is None:
        return "MISS"
    return "PASS" if (value <= limit if inclusive else value < limit) else "MISS"


def target_rows(sizes: dict[int, dict[str, list[Measured]]], backfills: list[Backfill]) -> list[list[str]]:
    """One row per target: what it asks, the measured figure, PASS / MISS (or "-" when not measured)."""
    rows = []
    for size, variant, limit in (
        (100_000, "cli", 1.5),
        (100_000, "inprocess", 1.2),
        (LARGE, "cli", 1.1),
        (LARGE, "inprocess", 1.1),
    ):
        target = f"{size:,} rows: {VARIANTS[variant]} wall <= {limit}x floor+MLflow"
        if variant not in sizes.get(size, {}) or REFERENCE not in sizes[size]:
            rows.append([target, "not measured", "-"])
            continue
        value = ratio(summarize(sizes[size][variant]).wall, summarize(sizes[size][REFERENCE]).wall)
        rows.append([target, fmt_x(value) if value is not None else "FAILED", verdict(value, limit)])

    for variant in ("inprocess", "cli", "launched"):
        target = f"{LARGE:,} rows: {VARIANTS[variant]} peak RSS < 4 GB"
        if variant not in sizes.get(LARGE, {}):
            rows.append([target, "not measured", "-"])
            continue
        peak = summarize(sizes[LARGE][variant]).peak
        shown = f"{peak / 1e9:.2f} GB" if peak is not None else "FAILED"
        rows.append([target, shown, verdict(peak, 4e9, inclusive=False)])

    per_batch = [backfill for backfill in backfills if backfill.window == "batch"]
    if not per_batch:
        rows.append(["backfill: last batch <= 1.2x batch 1", "not measured", "-"])
    for backfill in per_batch:
        walls, k = backfill.walls(), backfill.group()
        n = len(walls)
        for target, last, first in (
            (f"backfill: batch {n} <= 1.2x batch 1", walls[-1], walls[0]),
            (
                f"backfill: median of batches {n - k + 1}-{n} <= 1.2x median of 1-{k}",
                _median(walls[-k:]),
                _median(walls[:k]),
            ),
        ):
            value = ratio(last, first)
            rows.append([target, fmt_x(value) if value is not None else "FAILED", verdict(value, 1.2)])
    return rows


# ---------------------------------------------------------------- output


def rich_table(title: str, columns: list[str], rows: list[list[str]]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(
            column, justify="left" if column in ("rows", "variant", "notes", "target", "batch") else "right"
        )
    for row in rows:
        styled = [
            f"[green]{cell}[/]" if cell == "PASS" else f"[red]{cell}[/]" if cell in ("MISS", "FAILED") else cell
            for cell in row
        ]
        table.add_row(*styled)
    return table


def markdown_table(columns: list[str], rows: list[list[str]]) -> str:
    def escape(cell: str) -> str:
        return cell.replace("|", "\\|")

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(escape(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or "unknown"
    return {
        "CPU": cpu,
        "cores": f"{psutil.cpu_count(logical=True)} logical, {psutil.cpu_count(logical=False)} physical",
        "RAM": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "OS": platform.platform(),
        "load average at start": ", ".join(f"{load:.2f}" for load in os.getloadavg()),
    }


def git_sha() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True).stdout
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha.strip() + (" (uncommitted changes)" if dirty.strip() else "")


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in (
        "dagster",
        "dagster-dbt",
        "dagster-webserver",
        "dbt-core",
        "dbt-duckdb",
        "duckdb",
        "mlflow",
        "scikit-learn",
        "pandas",
        "numpy",
    ):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def command_line() -> str:
    python = Path(sys.executable)
    with_venv = os.path.relpath(python, Path.cwd()) if python.is_relative_to(Path.cwd()) else str(python)
    return " ".join(shlex.quote(part) for part in [with_venv, "-m", "benchmarks.run", *sys.argv[1:]])


def write_results(
    path: Path,
    started: datetime,
    elapsed_s: float,
    context: dict[str, Any],
    size_table: list[list[str]],
    step_table: list[list[str]],
    targets: list[list[str]],
    backfills: list[Backfill],
    raw: list[list[str]],
    failures: list[str],
) -> None:
    lines = [
        "# Benchmark: the platform against its floor",
        "",
        f"- Date: {started:%Y-%m-%d %H:%M} UTC (took {elapsed_s / 60:.1f} min)",
        f"- Command: `{context['command']}` (from the repository root)",
        f"- Git: `{context['git']}`",
        *(f"- {key}: {value}" for key, value in context["machine"].items()),
        "- Versions: " + ", ".join(f"{name} {value}" for name, value in context["versions"].items()),
        f"- Config: `{context['config_path']}`; models: {context['models']}",
        f"- Repetitions: {context['repeats']}",
        "",
        "Every measured run is a fresh process (interpreter start and imports included) against a fresh",
        "temporary home (`ML_PLATFORM_HOME`, `DAGSTER_HOME` inside it with the project's `dagster.yaml`, MLflow in",
        "SQLite under it); the batch's partition is added with `ml-platform batches scan` before the clock starts.",
        "Wall time is spawn to exit; peak RSS is the sum over the process and its descendants, sampled every 50 ms.",
        "Imports and work are the process's own figures (work excludes interpreter start and imports; the floor",
        "with MLflow and the in-process run both import `mlflow.sklearn` before their work clock). Ratios are of",
        "medians, to the floors measured in the same invocation.",
        "",
        "- **floor**: `benchmarks/floor.py` — the contract check and load into an in-memory DuckDB (`ingest_batch`),",
        "  the dbt models' SQL rendered with jinja2 (`stg_batch` view, `features` table), the same split, models,",
        "  hyperparameters, metrics and winner; no orchestration, no tracking, no dbt tests.",
        "- **floor + MLflow**: the same plus the assets' MLflow logging (one run per model, same params, metrics,",
        "  tags, model and `config.json`) and the winner registered as `champion`.",
        "- **in-process**: `benchmarks/platform_inprocess.py`, `dg.materialize` of all the code location's assets.",
        "- **CLI**: `dagster asset materialize -m ml_platform.definitions --select '*' --partition batch_0001`,",
        "  without the venv on `PATH`.",
        "- **launched run**: `batch_pipeline` submitted through GraphQL to `dagster-webserver`, queued and launched",
        "  by `dagster-daemon` as from the UI. Wall is submit to `RUN_SUCCESS`, work is the run's own start to end,",
        "  launch latency is submit to the run's start, peak RSS is the run worker's process tree. One home and one",
        "  pair of servers per size, so repetitions use copies of the batch as `batch_0001`, `batch_0002`, ...: from",
        "  the second repetition on there is a champion, and the run also loads and scores it (the comparison).",
        "",
        "## Results by batch size",
        "",
        "Medians over the repetitions. *wall s*: the fresh process, spawn to exit (launched: submit to the run's",
        "end); *import s* / *work s*: the process's own figures (launched: work is the run's start to end);",
        "*peak MB*: peak RSS of the process tree, MB = 10^6 bytes; */floor+MLflow wall*: the variant's wall over",
        "the floor with MLflow's (the targets' reference), */floor+MLflow work* the same for work time (imports",
        "excluded), */floor wall* over the bare floor. A note says when other processes kept the machine busy.",
        "",
        markdown_table(SIZE_COLUMNS, size_table),
        "",
        "## Targets",
        "",
        markdown_table(["target", "measured", "result"], targets),
        "",
    ]
    if backfills:
        count = len(backfills[0].batch_ids)
        lines += [
            "## Backfill",
            "",
            f"{count} different batches (drift 0.03) run one after another through the CLI path in one home. The",
            "per-batch window is the target; the cumulative window (every earlier batch added to training) is",
            "reported separately: its cost grows with history by design. From batch 2 on, each run also scores the",
            "current champion on the batch's held-out rows.",
            "",
            markdown_table(
                ["window", "first", "last", "first s", "last s", "last / first"],
                [row for backfill in backfills for row in backfill_summary_rows(backfill)],
            ),
            "",
            markdown_table(*backfill_batch_rows(backfills)),
            "",
        ]
    if step_table:
        lines += ["## Where the floor with MLflow spends its work time (median, s)", ""]
        lines += [markdown_table(["rows", "step", "s"], step_table), ""]
    lines += ["## Every run", "", markdown_table(RAW_COLUMNS, raw), ""]
    if failures:
        lines += ["## Failures", "", "```", *failures, "```", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    cli_latency = latency_section(path)  # benchmarks.cli_latency's figures stay
    path.write_text("\n".join(lines) + (f"\n{cli_latency}\n" if cli_latency else ""))


RAW_COLUMNS = ["rows", "variant", "rep", "ok", "wall s", "imports s", "work s", "peak RSS MB", "extra"]


def raw_rows(size_label: str, variant: str, measured: list[Measured]) -> list[list[str]]:
    rows = []
    for rep, m in enumerate(measured, start=1):
        extra = ", ".join(
            f"{key} {value:.2f}" if isinstance(value, float) else f"{key} {value}"
            for key, value in m.extra.items()
            if key not in ("run_id",)
        )
        rows.append(
            [
                size_label,
                VARIANTS.get(variant, variant),
                str(rep),
                "yes" if m.ok else "FAILED",
                fmt_s(m.wall_s) if m.ok else "-",
                fmt_s(m.report.get("import_s")),
                fmt_s(m.report.get("work_s")),
                fmt_mb(m.peak_rss_bytes) if m.ok else "-",
                extra,
            ]
        )
    return rows


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawTextHelpFormatter,
    )
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000, 1_000_000], help="rows per batch")
    parser.add_argument("--repeats", type=int, default=3, help="repetitions per variant (sizes below 1M)")
    parser.add_argument("--repeats-large", type=int, default=1, help="repetitions for sizes of 1M rows and more")
    parser.add_argument("--backfill", type=int, default=20, help="batches in the backfill (0: skip it)")
    parser.add_argument("--backfill-rows", type=int, default=10_000, help="rows per backfill batch")
    parser.add_argument(
        "--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS), help="variants to measure"
    )
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="platform config (ML_PLATFORM_CONFIG)")
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "RESULTS.md", help="the results file to write")
    parser.add_argument("--work-dir", type=Path, help="where homes and batch files go (default: a new temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep every home and the work folder")
    parser.add_argument("--timeout", type=float, default=7200, help="seconds allowed per measured run")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.repeats_large < 1 or args.backfill < 0:
        parser.error("--repeats and --repeats-large must be at least 1, --backfill at least 0")
    if args.backfill == 1:
        parser.error("--backfill needs at least 2 batches (or 0 to skip it)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started, clock = datetime.now(UTC), time.monotonic()
    config_path = args.config.resolve()
    config = load_config(config_path)
    work_dir = args.work_dir.resolve() if args.work_dir else Path(tempfile.mkdtemp(prefix="ml-platform-bench-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    bench = Bench(work_dir, config, config_path, args.timeout, args.keep)
    context = {
        "command": command_line(),
        "git": git_sha(),
        "machine": machine(),
        "versions": versions(),
        "config_path": os.path.relpath(config_path, REPO) if config_path.is_relative_to(REPO) else str(config_path),
        "models": ", ".join(f"{name} ({spec.type} {spec.params})" for name, spec in config.models.items()),
        "repeats": f"{args.repeats} per variant below {LARGE:,} rows, {args.repeats_large} from {LARGE:,} rows",
    }
    console.print(f"[bold]ml_platform benchmark[/]  work folder {work_dir}\n  {context['command']}")

    by_size: dict[int, dict[str, list[Measured]]] = {}
    size_table, step_table, raw = [], [], []
    backfills: list[Backfill] = []
    try:
        for size in args.sizes:
            source_dir = work_dir / "data" / f"rows_{size}"
            console.print(f"[bold]{size:,} rows[/]: generating the batch ...")
            batch_file = write_demo_batches(source_dir, 1, size, first_batch=1)[0]
            repeats = args.repeats_large if size >= LARGE else args.repeats
            results: dict[str, list[Measured]] = {v: [] for v in PROCESS_VARIANTS if v in args.variants}
            by_size[size] = results
            # Repetitions interleave the variants, so a slow spell of the machine hits all of them alike.
            for rep in range(1, repeats + 1):
                for variant in list(results):
                    label = f"{size:,} rows, {variant}, rep {rep}/{repeats}"
                    measured = measure_process_variant(bench, variant, batch_file, label)
                    report_progress(label, measured)
                    results[variant].append(measured)
            if "launched" in args.variants:
                console.print(f"  {size:,} rows, launched: starting dagster-webserver and dagster-daemon ...")
                results["launched"] = measure_launched(bench, batch_file, repeats, size)
            console.print(rich_table(f"{size:,} rows", SIZE_COLUMNS, size_rows(size, results)))
        if args.backfill:
            run_backfill(bench, args.backfill, args.backfill_rows, backfills)
    except KeyboardInterrupt:  # a long benchmark stopped by hand still reports what it measured
        bench.failures.append("interrupted by hand (Ctrl-C): the results below are partial")
        console.print("[red]interrupted[/]: writing the results measured so far")
    finally:
        if not args.keep and not bench.failures:
            shutil.rmtree(work_dir, ignore_errors=True)

    for size, results in by_size.items():
        results = {variant: measured for variant, measured in results.items() if measured}
        if results:
            size_table += size_rows(size, results)
            step_table += floor_step_rows(size, results.get(REFERENCE, []))
            for variant, measured in results.items():
                raw += raw_rows(f"{size:,}", variant, measured)
    backfills = [backfill for backfill in backfills if backfill.measured]
    for backfill in backfills:
        raw += raw_rows(f"backfill {args.backfill_rows:,}", f"CLI, window {backfill.window}", backfill.measured)
    targets = target_rows(by_size, backfills)
    console.print()
    console.print(rich_table("Results by batch size", SIZE_COLUMNS, size_table))
    if backfills:
        console.print(
            rich_table(
                "Backfill (CLI path, one home)",
                ["window", "first", "last", "first s", "last s", "last / first"],
                [row for backfill in backfills for row in backfill_summary_rows(backfill)],
            )
        )
        console.print(rich_table("Backfill per batch", *backfill_batch_rows(backfills)))
    console.print(rich_table("Targets", ["target", "measured", "result"], targets))
    elapsed = time.monotonic() - clock
    write_results(
        args.output, started, elapsed, context, size_table, step_table, targets, backfills, raw, bench.failures
    )
    console.print(f"wrote {args.output} ({elapsed / 60:.1f} min)")
    if bench.failures:
        console.print(f"[red]{len(bench.failures)} measurement(s) FAILED[/]; homes kept under {work_dir}")
    return 1 if bench.failures else 0


if __name__ == "__main__":
    sys.exit(main())
