"""TaskScheduler: scheduled tasks are validated, persisted in the schedules file and removable."""

import pytest
import yaml

from ml_platform.lib.config import ConfigError
from ml_platform.scheduler import SchedulerError, TaskScheduler, load_scheduled_tasks
from ml_platform_tests.conftest import small_config


@pytest.fixture
def scheduler(platform):
    return TaskScheduler(platform.settings, small_config())


def test_tasks_of_each_kind_are_written_to_the_schedules_file(scheduler, platform):
    scheduler.schedule_backtest(None, "0 6 * * 1")
    scheduler.schedule_pipeline("batch_pipeline_parallel", "0 */6 * * *", name="six_hourly")
    assert scheduler.path == platform.settings.home / "schedules.yaml"
    stored = yaml.safe_load(scheduler.path.read_text())["tasks"]
    assert [(task["kind"], task["name"], task["cron"]) for task in stored] == [
        ("backtest", "backtest_churn_classifier_champion", "0 6 * * 1"),
        ("pipeline", "six_hourly", "0 */6 * * *"),
    ]
    assert stored[0]["model"] == "churn_classifier"
    assert [task.name for task in load_scheduled_tasks(scheduler.path)] == [
        "backtest_churn_classifier_champion",
        "six_hourly",
    ]


def test_a_training_task_records_its_experiment_and_validated_config(scheduler):
    task = scheduler.schedule_training(overrides=["model=gradient_boosting", "model.params.n_estimators=50"])
    assert task.experiment_id
    assert task.config["model"] == {"type": "gradient_boosting", "params": {"n_estimators": 50, "learning_rate": 0.1}}
    assert task.name.startswith("training_gradient_boosting")


@pytest.mark.parametrize("cron", ["every day", "61 * * * *", "* * *"])
def test_a_bad_cron_expression_is_refused_and_nothing_is_written(scheduler, cron):
    with pytest.raises(SchedulerError, match="is not a valid cron schedule"):
        scheduler.schedule_pipeline("batch_pipeline", cron)
    assert not scheduler.path.exists()


def test_bad_targets_and_names_are_refused_with_the_reason(scheduler):
    with pytest.raises(SchedulerError, match="unknown pipeline 'nightly'; allowed: batch_pipeline"):
        scheduler.schedule_pipeline("nightly", "0 2 * * *")
    with pytest.raises(ConfigError, match="model=xgboost: unknown model 'xgboost'"):
        scheduler.schedule_training(overrides=["model=xgboost"])
    with pytest.raises(SchedulerError, match="name"):
        scheduler.schedule_backtest(None, "0 2 * * *", name="bad name!")
    scheduler.schedule_pipeline("batch_pipeline", "0 2 * * *", name="nightly")
    with pytest.raises(SchedulerError, match="'nightly' exists already"):
        scheduler.schedule_backtest(None, "0 3 * * *", name="nightly")
    with pytest.raises(SchedulerError, match="exists already"):
        scheduler.schedule_backtest(None, "0 3 * * *", name="retraining_schedule")


def test_remove_takes_a_task_out_and_names_the_known_ones_when_unknown(scheduler):
    scheduler.schedule_pipeline("batch_pipeline", "0 2 * * *", name="nightly")
    scheduler.schedule_pipeline("batch_pipeline", "0 3 * * *", name="later")
    assert scheduler.remove("nightly").cron == "0 2 * * *"
    assert [task.name for task in scheduler.list()] == ["later"]
    with pytest.raises(SchedulerError, match="no scheduled task named 'nightly'; scheduled: later"):
        scheduler.remove("nightly")


def test_a_hand_edited_schedules_file_with_a_bad_cron_names_the_file_and_task(tmp_path):
    path = tmp_path / "schedules.yaml"
    path.write_text(
        yaml.safe_dump(
            {"tasks": [{"kind": "pipeline", "name": "x", "cron": "0 25 * * *", "pipeline": "batch_pipeline"}]}
        )
    )
    with pytest.raises(ConfigError, match=r"schedules.yaml: tasks.0.cron: '0 25 \* \* \*' is not a valid cron"):
        load_scheduled_tasks(path)
    path.write_text("tasks: [{kind: pipeline, name: x, cron: '0 2 * * *'}]")
    with pytest.raises(ConfigError, match="schedules.yaml: tasks.0.pipeline.pipeline: Field required"):
        load_scheduled_tasks(path)
