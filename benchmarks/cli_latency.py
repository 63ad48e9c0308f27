"""CLI latency: each read-only `ml-platform` command against a plain script doing the same read.

    .venv/bin/python -m benchmarks.cli_latency [--repeats 5] [--home DIR] [--output benchmarks/RESULTS.md]

Without `--home`, a temporary demo home is built first (not timed): two demo batches through the
pipeline, one experiment run. Each command and its floor (the same reads, through MlflowClient or
Dagster's instance API, with the same libraries and nothing else) run as fresh processes, alternating,
`--repeats` times; the table has the medians and their ratio. The figures replace the "CLI latency"
section of the results file (the rest of it is `benchmarks.run`'s).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
ML_PLATFORM = str(Path(sys.executable).parent / "ml-platform")
SECTION_START = "<!-- cli-latency: written by benchmarks/cli_latency.py -->"
SECTION_END = "<!-- /cli-latency -->"
TARGET_RATIO = 1.3
console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)

# Every floor starts with the MLflow client of the home's store, or Dagster's instance in DAGSTER_HOME.
MLFLOW_CLIENT = """
import os
from mlflow import MlflowClient
uri = "sqlite:///" + os.environ["ML_PLATFORM_HOME"] + "/mlflow/mlflow.db"
client = MlflowClient(tracking_uri=uri, registry_uri=uri)
"""
DAGSTER_INSTANCE = """
import dagster as dg
instance = dg.DagsterInstance.get()
"""
EXPERIMENTS = "tags.`ml_platform.kind` = 'experiment'"


@dataclass(frozen=True)
class Pair:
    """A read command and the plain script that does the same read."""

    name: str
    command: list[str]
    floor: str


def pairs(experiment_id: str, model_name: str) -> list[Pair]:
    return [
        Pair(
            "champion",
            ["champion"],
            MLFLOW_CLIENT
            + f"""
version = client.get_model_version_by_alias("{model_name}", "champion")
run = client.get_run(version.run_id)
print(version.version, sorted(run.data.metrics.items()), version.tags)
""",
        ),
        Pair(
            "models list",
            ["models", "list"],
            MLFLOW_CLIENT
            + """
for model in client.search_registered_models(max_results=1000):
    versions = client.search_model_versions(f"name = '{model.name}'")
    print(model.name, max(int(v.version) for v in versions), model.aliases, model.last_updated_timestamp)
""",
        ),
        Pair(
            "models history",
            ["models", "history", model_name],
            MLFLOW_CLIENT
            + f"""
import json
print(json.loads(client.get_registered_model("{model_name}").tags["ml_platform.alias_history"]))
""",
        ),
        Pair(
            "experiments list",
            ["experiments", "list"],
            MLFLOW_CLIENT
            + f"""
experiments = client.search_experiments(filter_string="{EXPERIMENTS}", max_results=10000)
runs = client.search_runs([e.experiment_id for e in experiments], "attributes.status = 'FINISHED'")
print([(e.experiment_id, e.name, e.tags) for e in experiments], len(runs))
""",
        ),
        Pair(
            "experiment status",
            ["experiment", "status", experiment_id],
            MLFLOW_CLIENT
            + DAGSTER_INSTANCE
            + f"""
experiment = client.get_experiment("{experiment_id}")
records = instance.get_run_records(dg.RunsFilter(tags={{"ml_platform/experiment_id": "{experiment_id}"}}))
runs = client.search_runs(["{experiment_id}"], max_results=50000)
print(experiment.tags, [(r.dagster_run.run_id, r.dagster_run.status) for r in records], len(runs))
""",
        ),
        Pair(
            "experiment compare",
            ["experiment", "compare", experiment_id],
            MLFLOW_CLIENT
            + f"""
import pandas as pd
experiment = client.get_experiment("{experiment_id}")
runs = client.search_runs(["{experiment_id}"], "attributes.status = 'FINISHED'", max_results=50000)
print(pd.DataFrame([{{**run.data.params, **run.data.metrics}} for run in runs]))
""",
        ),
        Pair(
            "experiment best",
            ["experiment", "best", "--metric", "f1"],
            MLFLOW_CLIENT
            + f"""
experiments = client.search_experiments(filter_string="{EXPERIMENTS}", max_results=10000)
runs = client.search_runs([e.experiment_id for e in experiments], "attributes.status = 'FINISHED'")
print(max(runs, key=lambda run: run.data.metrics["f1"]).info.run_id)
""",
        ),
        Pair(
            "batches list",
            ["batches", "list"],
            DAGSTER_INSTANCE
            + """
done = instance.get_materialized_partitions(dg.AssetKey("champion_model"))
print([(key, key in done) for key in instance.get_dynamic_partitions("batches")])
""",
        ),
        Pair(
            "status",
            ["status"],
            DAGSTER_INSTANCE
            + """
for batch in instance.get_dynamic_partitions("batches"):
    last = instance.get_run_records(dg.RunsFilter(tags={"dagster/partition": batch}), limit=1)
    for key in ("evaluation_report", "champion_model"):
        filters = dg.AssetRecordsFilter(asset_key=dg.AssetKey(key), asset_partitions=[batch])
        print(batch, last, instance.fetch_materializations(filters, limit=1).records)
for record in instance.get_run_records(limit=3):
    run_id = record.dagster_run.run_id
    materialized = dg.DagsterEventType.ASSET_MATERIALIZATION
    print(instance.get_run_step_stats(run_id), instance.get_records_for_run(run_id, of_type=materialized))
""",
        ),
        Pair(
            "schedules list",
            ["schedules", "list"],
            """
import os, pathlib, yaml
from ml_platform.lib.config import load_config
print(load_config(os.environ["ML_PLATFORM_CONFIG"]).automation.schedules)
schedules = pathlib.Path(os.environ["ML_PLATFORM_HOME"]) / "schedules.yaml"
print(yaml.safe_load(schedules.read_text()) if schedules.exists() else [])
""",
        ),
    ]


def run(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Wall seconds and stdout of one fresh process; fails loudly when it fails (a broken pair measures nothing)."""
    started = time.perf_counter()
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return elapsed, result.stdout


def prepare_home(home: Path, env: dict[str, str]) -> None:
    """A demo home: two batches through the pipeline and one experiment run (untimed)."""
    for step in (["demo-data", "--batches", "2", "--rows", "2000"], ["batches", "scan"], ["run", "--all"]):
        console.print(f"preparing {home}: ml-platform {' '.join(step)}")
        run([ML_PLATFORM, *step], env)
    console.print(f"preparing {home}: an experiment, run on the newest batch")
    _, created = run([ML_PLATFORM, "experiment", "create", "model=logistic_regression", "--json"], env)
    run([ML_PLATFORM, "experiment", "run", json.loads(created)["experiment_id"]], env)


def environment(home: Path) -> dict[str, str]:
    return {
        **{key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"},
        "ML_PLATFORM_HOME": str(home),
        "ML_PLATFORM_CONFIG": os.environ.get("ML_PLATFORM_CONFIG", str(REPO / "configs" / "platform.yaml")),
        "DAGSTER_HOME": os.environ.get("DAGSTER_HOME", str(home / ".dagster_home")),
    }


def measure(pair_list: list[Pair], env: dict[str, str], repeats: int) -> list[dict]:
    """Medians of `repeats` alternating runs of each command and its floor (which goes first alternates too)."""
    rows = []
    for pair in pair_list:
        times: dict[str, list[float]] = {"cli": [], "floor": []}
        for repeat in range(repeats):
            order = ("cli", "floor") if repeat % 2 == 0 else ("floor", "cli")
            for variant in order:
                args = [ML_PLATFORM, *pair.command] if variant == "cli" else [sys.executable, "-c", pair.floor]
                times[variant].append(run(args, env)[0])
        cli, floor = statistics.median(times["cli"]), statistics.median(times["floor"])
        rows.append({"command": pair.name, "cli_s": cli, "floor_s": floor, "ratio": cli / floor, "runs": times})
        console.print(f"{pair.name}: {cli:.2f} s against {floor:.2f} s ({cli / floor:.2f}x)")
    return rows


def markdown(rows: list[dict], repeats: int) -> str:
    worst = max(row["ratio"] for row in rows)
    lines = [
        SECTION_START,
        "## CLI latency: read commands against their plain-script floor",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores with "
        f"`python -m benchmarks.cli_latency --repeats {repeats}`: a demo home (two batches of 2,000 rows through "
        "the pipeline, one experiment run); each command and a plain script doing the same reads (MlflowClient, "
        "Dagster's instance API, the same libraries) as fresh processes, alternating; medians of "
        f"{repeats}. Target: each at most {TARGET_RATIO}x its floor. Worst ratio: {worst:.2f}x.",
        "",
        "| command | ml-platform (s) | floor (s) | ratio |",
        "| --- | ---: | ---: | ---: |",
        *(f"| `{r['command']}` | {r['cli_s']:.2f} | {r['floor_s']:.2f} | {r['ratio']:.2f}x |" for r in rows),
        SECTION_END,
    ]
    return "\n".join(lines)


def latency_section(path: Path) -> str:
    """The file's CLI latency section, or "" when it has none."""
    text = path.read_text() if path.exists() else ""
    if SECTION_START not in text or SECTION_END not in text:
        return ""
    return SECTION_START + text.split(SECTION_START, 1)[1].split(SECTION_END, 1)[0] + SECTION_END


def replace_section(path: Path, section: str) -> None:
    """Put `section` in place of the file's CLI latency section (appended when it has none)."""
    text = path.read_text() if path.exists() else ""
    old = latency_section(path)
    text = text.replace(old, section) if old else text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--home", type=Path, help="an ML_PLATFORM_HOME already through the pipeline")
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "RESULTS.md")
    parser.add_argument("--only", nargs="+", metavar="COMMAND", help='measure only these, e.g. "experiment best"')
    options = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="cli-latency-") as scratch:
        home = options.home or Path(scratch)
        env = environment(home)
        if options.home is None:
            prepare_home(home, env)
        # The floor takes the same ids the commands take: the first experiment, the pipeline's model.
        experiments = json.loads(run([ML_PLATFORM, "experiments", "list", "--json"], env)[1])
        models = json.loads(run([ML_PLATFORM, "models", "list", "--json"], env)[1])
        chosen = [
            pair
            for pair in pairs(experiments[0]["experiment_id"], models[0]["name"])
            if not options.only or pair.name in options.only
        ]
        rows = measure(chosen, env, options.repeats)

    table = Table("command", "ml-platform (s)", "floor (s)", "ratio", title="CLI latency (medians)")
    for row in rows:
        table.add_row(row["command"], f"{row['cli_s']:.2f}", f"{row['floor_s']:.2f}", f"{row['ratio']:.2f}x")
    console.print(table)
    replace_section(options.output, markdown(rows, options.repeats))
    console.print(f"wrote {options.output}")


if __name__ == "__main__":
    main()
