"""Run summaries and batch history read back from the event log of real pipeline runs, and `ml-platform status`."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

import dagster as dg
import pytest

from ml_platform.defs.monitoring.run_summary import (
    batch_history,
    load_run_summary,
    recent_pipeline_runs,
    summarize_run,
    write_run_summary,
)
from ml_platform.defs.tags import EXPERIMENT_ID_TAG
from ml_platform.lib.run_summary import RunSummary
from ml_platform_tests.conftest import Cli, PlatformUnderTest, PreparedHome
from ml_platform_tests.test_defs_bad_input import missing_column

BAD_BATCH = "bad_missing_column"


@dataclass
class Runs:
    platform: PlatformUnderTest
    good: dict[str, dg.ExecuteInProcessResult]
    failed: dg.ExecuteInProcessResult
    experiment_run_id: str


@pytest.fixture(scope="module")
def runs(module_two_batches: PlatformUnderTest, prepared_home: PreparedHome) -> Runs:
    """Two good batches through the pipeline, a batch that fails at ingestion, and (last) an
    experiment's run on the second batch, which is no pipeline run of it."""
    module_platform, good = module_two_batches, prepared_home.results
    batches = list(good)
    module_platform.add_batch_file(BAD_BATCH, missing_column())
    failed = module_platform.materialize(BAD_BATCH, raise_on_error=False)
    assert not failed.success
    experiment_run = dg.DagsterRun(
        job_name="experiment",
        run_id=str(uuid.uuid4()),
        status=dg.DagsterRunStatus.SUCCESS,
        tags={"dagster/partition": batches[1], EXPERIMENT_ID_TAG: "1"},
    )
    module_platform.instance.add_run(experiment_run)
    return Runs(module_platform, good, failed, experiment_run.run_id)


def materialization_metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    (event,) = [event for event in result.get_asset_materialization_events() if event.asset_key == dg.AssetKey(asset)]
    return {key: value.value for key, value in event.step_materialization_data.materialization.metadata.items()}


def test_summary_has_a_stage_per_step_whose_durations_fit_in_the_run(runs: Runs):
    result = runs.good["batch_0002"]

    summary = summarize_run(runs.platform.instance, result.run_id)

    steps = {event.step_key for event in result.all_events if event.is_step_success}
    assert (summary.status, summary.partition, summary.error) == ("SUCCESS", "batch_0002", None)
    assert [stage.step_key for stage in summary.stages][0] == "raw_batch"
    assert {stage.step_key for stage in summary.stages} == steps
    assert all(stage.status == "SUCCESS" and stage.duration_seconds > 0 for stage in summary.stages)
    assert sum(stage.duration_seconds for stage in summary.stages) <= summary.duration_seconds + 0.5
    assert summary.start <= summary.stages[0].start and summary.stages[-1].end <= summary.end


def test_summary_has_every_models_metrics_the_winner_and_the_champion_decision(runs: Runs):
    platform = runs.platform
    for batch, result in runs.good.items():
        summary = summarize_run(platform.instance, result.run_id)

        assert set(summary.metrics) == set(platform.config.models)
        for name, metrics in summary.metrics.items():
            recorded = materialization_metadata(result, f"{name}_model")
            assert metrics == {key: value for key, value in recorded.items() if isinstance(value, float)}
            assert 0 < metrics["roc_auc"] <= 1 and metrics["fit_seconds"] > 0
        assert summary.winner == result.output_for_node("evaluation_report")["winner"]
        champion = materialization_metadata(result, "champion_model")
        assert (summary.champion.version, summary.champion.alias, summary.champion.reason) == (
            champion["version"],
            champion["alias"],
            champion["reason"],
        )
        assert summary.champion.champion_version == champion["champion_version"], batch

    # The latest decision agrees with the Model Registry.
    name = platform.config.promotion.registered_model_name
    registered = platform.mlflow().champion_version(name)
    assert summary.champion.champion_version == str(registered.version)


def test_failed_run_summary_has_failure_status_and_the_errors_first_line(runs: Runs):
    summary = summarize_run(runs.platform.instance, runs.failed.run_id)

    assert (summary.status, summary.partition) == ("FAILURE", BAD_BATCH)
    assert [(stage.step_key, stage.status) for stage in summary.stages] == [("raw_batch", "FAILURE")]
    first_line = summary.error.splitlines()[0]
    assert first_line.startswith("step raw_batch: ") and "batch rejected" in first_line
    assert "missing column(s): monthly_charges" in summary.error
    assert summary.metrics == {} and summary.winner is None and summary.champion is None


def test_a_written_summary_is_valid_json_and_is_read_back_instead_of_the_log(runs: Runs, tmp_path):
    instance, run_id = runs.platform.instance, runs.failed.run_id

    path = write_run_summary(instance, run_id, tmp_path)

    assert path == tmp_path / "runs" / f"{run_id}.json"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no partial file left behind
    written = json.loads(path.read_text())
    assert RunSummary.from_dict(written) == summarize_run(instance, run_id)

    path.write_text(json.dumps({**written, "trigger": {"ml_platform/trigger": "from the file"}}))
    assert load_run_summary(instance, run_id, tmp_path).trigger == {"ml_platform/trigger": "from the file"}
    path.write_text("{half a file")
    assert load_run_summary(instance, run_id, tmp_path) == summarize_run(instance, run_id)


def test_recent_pipeline_runs_are_newest_first_without_experiment_runs(runs: Runs):
    recent = [record.dagster_run.run_id for record in recent_pipeline_runs(runs.platform.instance, 10)]

    assert runs.experiment_run_id not in recent
    assert recent == [runs.failed.run_id, runs.good["batch_0002"].run_id, runs.good["batch_0001"].run_id]
    assert [r.dagster_run.run_id for r in recent_pipeline_runs(runs.platform.instance, 1)] == recent[:1]


def test_batch_history_lists_the_batches_in_order_with_last_run_and_decision(runs: Runs):
    history = batch_history(runs.platform.instance)

    assert [entry["batch"] for entry in history] == ["batch_0001", "batch_0002", BAD_BATCH]
    assert [entry["last_run_status"] for entry in history] == ["SUCCESS", "SUCCESS", "FAILURE"]
    assert [entry["through_pipeline"] for entry in history] == [True, True, False]
    # The experiment's later run on batch_0002 is not that batch's last pipeline run.
    assert [entry["last_run_id"] for entry in history] == [
        runs.good["batch_0001"].run_id,
        runs.good["batch_0002"].run_id,
        runs.failed.run_id,
    ]
    for entry in history[:2]:
        summary = summarize_run(runs.platform.instance, entry["last_run_id"])
        assert entry["winner"] == summary.winner
        assert entry["primary_metric"] == runs.platform.config.promotion.primary_metric
        assert entry["winner_metric"] == summary.metrics[summary.winner][entry["primary_metric"]]
        assert entry["champion"] == summary.to_dict()["champion"]
    assert history[2]["winner"] is None and history[2]["champion"] is None


@pytest.fixture
def cli(runs: Runs, tmp_path) -> Cli:
    """`ml-platform` on the module's home and instance."""
    cli = Cli(tmp_path)
    cli.overrides.update(
        ML_PLATFORM_HOME=str(runs.platform.settings.home), DAGSTER_HOME=str(runs.platform.instance.root_directory)
    )
    return cli


def test_status_json_has_the_batches_and_the_latest_runs(runs: Runs, cli: Cli):
    report = cli.json("status", "--runs", "2")

    assert [entry["batch"] for entry in report["batches"]] == ["batch_0001", "batch_0002", BAD_BATCH]
    assert [run["run_id"] for run in report["runs"]] == [runs.failed.run_id, runs.good["batch_0002"].run_id]
    assert report["runs"][0]["status"] == "FAILURE" and report["runs"][1]["winner"]
    table = cli("status", "--runs", "1").stdout
    assert "batch_0002" in table and "champion" in table and "step raw_batch" in table


def test_status_without_run_summaries_lists_the_batches_and_claims_nothing_about_runs(cli: Cli):
    output = cli("status", "--runs", "0").stdout

    assert "batch_0002" in output and BAD_BATCH in output
    assert "no pipeline runs" not in output


def test_status_in_a_fresh_home_says_how_to_add_batches(tmp_path):
    cli = Cli(tmp_path)

    output = " ".join(cli("status").stdout.split())

    assert f"no batches yet: drop a file in {tmp_path / 'home' / 'data' / 'incoming'}" in output
    assert "ml-platform batches scan" in output
