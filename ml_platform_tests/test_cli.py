"""The `ml-platform` command against temporary homes: in this process for its answers and mistakes,
through the installed entry point for what a person at the terminal sees of a run."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from ml_platform.cli.progress import describe_progress
from ml_platform.lib.config import load_config
from ml_platform.lib.settings import PROJECT_ROOT
from ml_platform_tests.conftest import Cli, small_config


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


def test_demo_session_adds_batches_runs_them_and_shows_the_champion(cli):
    written = cli("demo-data", "--batches", "2", "--rows", "1000")
    assert written.stdout.count("wrote ") == 2
    assert (cli.home / "data" / "incoming" / "batch_0002.csv").exists()

    scanned = cli("batches", "scan")
    assert "added 2 partition(s): batch_0001, batch_0002" in scanned.stdout
    assert "added 0 partition(s)" in cli("batches", "scan").stdout  # scanning twice adds nothing

    ran = cli.installed("run", "--all")
    assert "ok batch_0001" in ran.stdout and "ok batch_0002" in ran.stdout
    # Each batch's decision, with the gate's figures for the second.
    assert "v1 champion: no current champion; roc_auc=" in ran.stdout
    assert re.search(
        r"v2 (champion|challenger): .*the champion \(v1\): roc_auc .* \(95% interval .*, 200 rows\)", ran.stdout
    )
    assert ran.stderr == ""  # no library warning reaches the terminal
    assert (Path(cli.overrides["DAGSTER_HOME"]) / "dagster.yaml").exists()

    listed = cli("batches", "list").stdout
    assert "batch_0001" in listed and "yes" in listed

    champion = cli.installed("champion").stdout
    assert "churn_classifier" in champion and "@champion" in champion
    assert "roc_auc" in champion and "why:" in champion


def test_a_failed_run_is_one_line_on_stderr_and_its_reason_on_stdout(cli):
    cli("demo-data", "--batches", "1", "--rows", "1000")
    (cli.home / "data" / "incoming" / "batch_0002.csv").write_text("customer_id,churned\nc1,0\n")
    cli("batches", "scan")

    result = cli.installed("run", "batch_0002", exit_code=2)

    assert "failed batch_0002" in result.stdout and "missing column(s)" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "1 of 1 batch run(s) failed: batch_0002" in line and "--verbose" in line


def test_a_verbose_failed_run_prints_the_steps_logs_and_traceback(cli):
    cli("demo-data", "--batches", "1", "--rows", "1000")
    (cli.home / "data" / "incoming" / "batch_0001.csv").write_text("customer_id,churned\nc1,0\n")
    cli("batches", "scan")

    result = cli("run", "batch_0001", "--verbose", exit_code=2)

    assert "STEP_FAILURE" in result.stderr and "Stack Trace:" in result.stderr
    assert "BatchValidationError" in result.stderr
    assert "--verbose" not in result.stderr.strip().splitlines()[-1]


def test_a_scan_names_each_file_it_skipped_and_why(cli):
    cli("demo-data", "--batches", "1", "--rows", "1000")
    incoming = cli.home / "data" / "incoming"
    (incoming / "notes.txt").write_text("not a batch")
    (incoming / "batch_0002.csv.part").write_text("customer_id\n")

    output = cli("batches", "scan").stdout

    assert "added 1 partition(s): batch_0001" in output
    assert "skipped batch_0002.csv.part: temporary name: still being written" in output
    assert "skipped notes.txt: not a .csv file" in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["batches", "add", "../etc"], "invalid batch id '../etc'"),
        (["batches", "add", "batch_0099"], "no file for batch 'batch_0099'"),
        (["run", "batch_0099"], "unknown batch(es) batch_0099"),
        (["run"], "nothing to run"),
        (["champion"], "no champion yet"),
        (["demo-data", "--format", "xlsx"], "file_format must be 'csv' or 'parquet', got 'xlsx'"),
    ],
)
def test_mistakes_get_one_clear_line_and_exit_2(cli, args, message):
    result = cli(*args, exit_code=2)
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_config_is_reported_with_file_and_key(cli):
    config_path = Path(cli.overrides["ML_PLATFORM_CONFIG"])
    broken = yaml.safe_load(config_path.read_text())
    broken["models"]["random_forest"]["params"]["n_estimators"] = -3
    config_path.write_text(yaml.safe_dump(broken))
    for command in (["demo-data"], ["run", "--all"]):
        result = cli(*command, exit_code=2)
        assert str(config_path) in result.stderr
        assert "models.random_forest" in result.stderr and "n_estimators" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_every_command_has_help_with_an_example(cli):
    for command in (["demo-data"], ["batches", "scan"], ["batches", "add"], ["batches", "list"], ["run"], ["champion"]):
        assert "Example:" in cli(*command, "--help").stdout


def test_project_dagster_yaml_is_a_valid_instance_config(tmp_path):
    shutil.copyfile(PROJECT_ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    import dagster as dg

    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        concurrency = instance.get_concurrency_config()
        assert concurrency.run_queue_config.max_concurrent_runs == 2
        assert concurrency.run_queue_config.tag_concurrency_limits == [
            {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
        ]
        assert concurrency.pool_config.default_pool_limit == 1


def test_only_stale_runs_what_changed_and_says_why(cli, tmp_path):
    cli("demo-data", "--batches", "1", "--rows", "1000")
    cli("batches", "scan")
    first = cli("run", "--all", "--only-stale").stdout
    assert "raw_batch: never materialized for this batch" in first and "ok batch_0001" in first

    assert "up to date batch_0001" in cli("run", "--all", "--only-stale").stdout

    changed = small_config(**{"models.random_forest.params.n_estimators": 30})
    (tmp_path / "platform.yaml").write_text(yaml.safe_dump(changed.model_dump(mode="json")))
    rerun = cli("run", "batch_0001", "--only-stale").stdout
    # The model, the report and decision after it, and the batch's predictions by the champion it left.
    assert "running 4 asset(s)" in rerun
    assert "random_forest_model: random_forest_model has a new code version" in rerun
    assert "gradient_boosting_model" not in rerun


def test_schedules_are_added_listed_and_removed(cli):
    added = cli("schedules", "add", "pipeline", "--cron", "0 */6 * * *", "--name", "six_hourly").stdout
    assert "added schedule six_hourly (pipeline" in added
    listed = json.loads(cli("schedules", "list", "--json").stdout)
    assert {row["name"] for row in listed} == {
        "retraining_schedule",
        "backtest_schedule",
        "pipeline_schedule",
        "six_hourly",
    }
    bad = cli("schedules", "add", "backtest", "--cron", "every monday", exit_code=2)
    assert "'every monday' is not a valid cron schedule" in bad.stderr
    assert "removed schedule six_hourly" in cli("schedules", "remove", "six_hourly").stdout
    assert "no scheduled task named 'six_hourly'" in cli("schedules", "remove", "six_hourly", exit_code=2).stderr


def test_the_progress_line_says_how_many_steps_are_done_and_which_are_running():
    steps = [
        SimpleNamespace(step_key="raw_batch", end_time=10.0),
        SimpleNamespace(step_key="dbt_features", end_time=12.0),
        SimpleNamespace(step_key="random_forest_model", end_time=None),
        SimpleNamespace(step_key="logistic_regression_model", end_time=None),
    ]

    line = describe_progress("batch_pipeline for batch_0001", 8, steps)

    assert line == (
        "batch_pipeline for batch_0001: 2/8 steps done, running random_forest_model, logistic_regression_model"
    )
    assert describe_progress("x", 8, []) == "x: 0/8 steps done"
    assert describe_progress("x", 1, steps[:2]) == "x: 2/2 steps done"  # never more done than the total


def test_demo_data_writes_the_wine_batches_when_the_config_is_the_wine_data_set(tmp_path):
    cli = Cli(tmp_path, config=load_config(PROJECT_ROOT / "configs" / "wine.yaml"))

    written = cli("demo-data", "--batches", "2")
    refused = cli("demo-data", "--batches", "5", exit_code=2)

    assert written.stdout.count("(89 rows)") == 2
    assert (cli.home / "data" / "incoming_wine" / "batch_0002.csv").read_text().splitlines()[0].endswith(",cultivar")
    assert "the wine data set has 178 rows: 1 to 4 batches, got 5" in refused.stderr
