"""The cron schedules, evaluated in-process: skips with reasons, and skip-unchanged re-running only
what changed (the same reasons `ml-platform run --only-stale` acts on)."""

from datetime import UTC, datetime

import dagster as dg
import pytest
from dagster._core.storage.defs_state.base import set_defs_state_storage

from ml_platform.defs.automation.schedules import build_schedules
from ml_platform.defs.automation.staleness import STALE_REASON_TAG
from ml_platform.defs.definitions import build_definitions, build_resources
from ml_platform.defs.tags import EXPERIMENT_ID_TAG
from ml_platform.lib.settings import DEFAULT_EXPERIMENT_CONFIG_PATH
from ml_platform.scheduler import TaskScheduler
from ml_platform_tests.conftest import small_config


def evaluate(platform, name, config=None):
    """One tick of the named schedule, against the platform's instance and resources."""
    config = config or platform.config
    definitions = build_definitions(config, platform.settings)
    schedule = next(schedule for schedule in build_schedules(config, platform.settings) if schedule.name == name)
    # Dagster finds the instance's definitions state through a context variable that a module-scoped
    # instance (created in another fixture's context) does not set here; the daemon always has it.
    with set_defs_state_storage(platform.instance.defs_state_storage):
        repository = definitions.get_repository_def()
    context = dg.build_schedule_context(
        instance=platform.instance,
        scheduled_execution_time=datetime.now(UTC),  # as the daemon sets it
        repository_def=repository,
        resources=build_resources(config, platform.settings),
    )
    return schedule.evaluate_tick(context)


def skip_message(result) -> str:
    assert not result.run_requests, [request.asset_selection for request in result.run_requests]
    return result.skip_message


def selected(request) -> list[str]:
    return [key.to_user_string() for key in request.asset_selection]


def test_with_no_batches_every_schedule_skips_and_says_why(platform):
    assert skip_message(evaluate(platform, "retraining_schedule")).startswith("no batches yet: drop a file in")
    assert skip_message(evaluate(platform, "pipeline_schedule")).startswith("no batches yet")
    assert "has no version with alias 'champion'" in skip_message(evaluate(platform, "backtest_schedule"))


def test_the_demo_automation_runs_every_few_minutes_and_production_daily():
    assert small_config().automation.schedules.retraining.cron == "*/2 * * * *"
    from ml_platform.lib.config import load_config
    from ml_platform.lib.settings import DEFAULT_CONFIG_PATH

    production = load_config(DEFAULT_CONFIG_PATH, ["automation=production"])
    assert production.automation.schedules.retraining.cron == "0 3 * * *"


@pytest.fixture(scope="module")
def trained(module_platform):
    """One batch through the whole pipeline."""
    [batch] = module_platform.write_batches(1, rows=1500)
    assert module_platform.materialize(batch).success
    return module_platform, batch


def test_an_up_to_date_batch_is_not_retrained(trained):
    platform, batch = trained
    message = skip_message(evaluate(platform, "retraining_schedule"))
    assert message == f"up to date (data, code and config unchanged): {batch}"
    assert skip_message(evaluate(platform, "pipeline_schedule")).startswith("up to date")


def test_a_changed_model_config_retrains_only_that_model_and_what_depends_on_it(trained):
    platform, batch = trained
    changed = small_config(**{"models.random_forest.params.n_estimators": 30})
    [request] = evaluate(platform, "retraining_schedule", changed).run_requests
    assert request.partition_key == batch
    assert selected(request) == ["random_forest_model", "evaluation_report", "champion_model"]
    reasons = request.tags[STALE_REASON_TAG]
    assert "random_forest_model: random_forest_model has a new code version" in reasons
    assert "evaluation_report: upstream random_forest_model runs again" in reasons


def test_a_rewritten_batch_file_reruns_the_whole_batch(trained, tmp_path):
    platform, batch = trained
    path = platform.incoming_dir / f"{batch}.csv"
    original = path.read_bytes()
    try:
        path.write_bytes(original.replace(b"\n", b"\r\n", 1))  # the same rows, different bytes
        [request] = evaluate(platform, "pipeline_schedule").run_requests
        assert selected(request)[0] == "raw_batch"
        assert f"raw_batch: {batch}.csv changed since it was ingested" in request.tags[STALE_REASON_TAG]
        assert "champion_model" in selected(request)
    finally:
        path.write_bytes(original)


def test_a_scheduled_training_task_trains_its_experiment_on_the_newest_batch(trained):
    platform, batch = trained
    task = TaskScheduler(platform.settings, platform.config).schedule_training(
        DEFAULT_EXPERIMENT_CONFIG_PATH, "0 5 * * *", overrides=["model=logistic_regression"], name="nightly_logreg"
    )
    result = evaluate(platform, "nightly_logreg")
    [request] = result.run_requests
    [schedule] = [s for s in build_schedules(platform.config, platform.settings) if s.name == "nightly_logreg"]
    assert schedule.job_name == "experiment"
    assert request.partition_key == batch
    assert request.tags[EXPERIMENT_ID_TAG] == task.experiment_id
    op_config = request.run_config["ops"]["train_experiment"]["config"]
    assert op_config["config"]["model"]["type"] == "logistic_regression"
    # The run config is one the experiment job accepts.
    definitions = build_definitions(platform.config, platform.settings)
    run = definitions.resolve_job_def("experiment").execute_in_process(
        run_config=request.run_config, instance=platform.instance, partition_key=batch, tags=request.tags
    )
    assert run.success


def test_the_backtest_runs_once_per_champion_and_set_of_later_batches(trained):
    # Last in this module: it adds a batch after the champion's.
    platform, batch = trained
    assert "the latest batch" in skip_message(evaluate(platform, "backtest_schedule"))
    [later] = platform.write_batches(1, rows=1500, first=2)
    assert platform.materialize(later, selection=["raw_batch", "stg_batch", "features"]).success
    [request] = evaluate(platform, "backtest_schedule").run_requests
    assert request.run_config["ops"]["champion_backtest"]["config"] == {
        "registered_model_name": "churn_classifier",
        "alias": "champion",
    }
    # The same champion and batches give the same run key, which Dagster runs only once.
    assert request.run_key.startswith("churn_classifier@champion:v1:")
    assert evaluate(platform, "backtest_schedule").run_requests[0].run_key == request.run_key
