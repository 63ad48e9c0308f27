"""The run-status sensors, evaluated in-process on real runs: failure and quality notifications reach a
real HTTP server, each run's summary is written, and MonitoringHooks hear of starts, ends and errors."""

import json

import dagster as dg
import pytest

from ml_platform.defs.monitoring.sensors import build_monitoring_sensors
from ml_platform.lib.demo_data import generate_churn_batch
from ml_platform.monitoring import MonitoringHook
from ml_platform.resources.notifier import NotifierResource
from ml_platform_tests.conftest import small_config

CALLS: list[tuple[str, object]] = []


class RecordingHook(MonitoringHook):
    """Named in the config as `ml_platform_tests.test_monitoring_sensors:RecordingHook`."""

    def on_experiment_start(self, run):
        CALLS.append(("start", run))

    def on_experiment_end(self, result):
        CALLS.append(("end", result))

    def on_error(self, error):
        CALLS.append(("error", error))


class BrokenHook(MonitoringHook):
    def on_error(self, error):
        raise RuntimeError("this hook is broken")


HOOKS = [f"{__name__}:BrokenHook", f"{__name__}:RecordingHook"]


@pytest.fixture(autouse=True)
def no_calls():
    CALLS.clear()


def sensor_named(config, platform, name):
    return next(sensor for sensor in build_monitoring_sensors(config, platform.settings) if sensor.name == name)


def run_event(platform, run_id, event_type):
    [record] = platform.instance.get_records_for_run(run_id, of_type=event_type).records
    return record.event_log_entry.dagster_event


def evaluate(platform, config, name, run_id, event_type, notifier):
    context = dg.build_run_status_sensor_context(
        sensor_name=name,
        dagster_event=run_event(platform, run_id, event_type),
        dagster_instance=platform.instance,
        dagster_run=platform.instance.get_run_by_id(run_id),
        resources={"notifier": notifier},
    )
    if event_type == dg.DagsterEventType.RUN_FAILURE:
        context = context.for_run_failure()
    sensor_named(config, platform, name)(context)


def test_a_failed_run_notifies_what_failed_where_and_links_the_run(platform, http_server, tmp_path):
    config = small_config(**{"monitoring.hooks": HOOKS})
    bad = generate_churn_batch(batch_number=1, n_rows=300).drop(columns=["monthly_charges"])
    platform.add_batch_file("batch_0001", bad.to_csv(index=False).encode())
    result = platform.materialize("batch_0001", raise_on_error=False)
    assert not result.success
    notifier = NotifierResource(webhook_url=http_server.url("/hooks/ml"), dagster_ui_url="http://127.0.0.1:3000")

    evaluate(platform, config, "run_failure_notifications", result.run_id, dg.DagsterEventType.RUN_FAILURE, notifier)

    [received] = http_server.received
    message = received["json"]
    assert message["title"] == "Run failed: __ephemeral_asset_job__ for batch_0001"
    assert message["fields"]["run"] == result.run_id
    assert message["fields"]["partition"] == "batch_0001"
    assert message["fields"]["step"] == "raw_batch"
    assert message["fields"]["asset"] == "raw_batch"
    assert "BatchValidationError" in message["error"].splitlines()[0]
    assert "monthly_charges" in message["error"]
    assert message["link"] == f"http://127.0.0.1:3000/runs/{result.run_id}"
    summary = json.loads((platform.settings.reports_dir / "runs" / f"{result.run_id}.json").read_text())
    assert summary["status"] == "FAILURE"
    # The broken hook is logged and skipped; the next one still hears of the error.
    [(kind, error)] = CALLS
    assert kind == "error"
    assert (error.run.run_id, error.steps) == (result.run_id, ["raw_batch"])
    assert "monthly_charges" in error.message


def test_a_winner_below_the_quality_bar_notifies_although_the_run_succeeds(platform, http_server):
    config = small_config(**{"notifications.quality.primary_metric_threshold": 0.99, "monitoring.hooks": HOOKS})
    [batch] = platform.write_batches(1, rows=1500)
    result = platform.materialize(batch, config=config)
    assert result.success
    [check] = [check for check in result.get_asset_check_evaluations() if check.check_name == "meets_quality_bar"]
    assert not check.passed
    notifier = NotifierResource(webhook_url=http_server.url("/hooks/ml"))

    evaluate(platform, config, "run_success_monitor", result.run_id, dg.DagsterEventType.RUN_SUCCESS, notifier)

    [received] = http_server.received
    message = received["json"]
    assert message["title"] == f"Check failed: champion_model meets_quality_bar for {batch}"
    assert message["severity"] == "warning"
    assert "is below the threshold 0.99" in message["summary"]
    [(kind, summary)] = CALLS
    assert kind == "end"
    assert summary.run_id == result.run_id and summary.status == "SUCCESS"
    assert set(summary.metrics) == {"random_forest", "gradient_boosting", "logistic_regression"}


def test_a_run_that_meets_the_bar_sends_nothing_but_its_summary(platform, http_server):
    config = small_config(**{"notifications.quality.primary_metric_threshold": 0.5})
    [batch] = platform.write_batches(1, rows=1500)
    result = platform.materialize(batch, config=config)
    notifier = NotifierResource(webhook_url=http_server.url("/hooks/ml"))
    evaluate(platform, config, "run_success_monitor", result.run_id, dg.DagsterEventType.RUN_SUCCESS, notifier)
    assert http_server.received == []
    assert (platform.settings.reports_dir / "runs" / f"{result.run_id}.json").is_file()


def test_a_channel_that_is_down_does_not_stop_the_others_or_the_sensor(platform, start_http_server):
    down = start_http_server(503)
    up = start_http_server(200)
    bad = generate_churn_batch(batch_number=1, n_rows=300).drop(columns=["tenure_months"])
    platform.add_batch_file("batch_0001", bad.to_csv(index=False).encode())
    result = platform.materialize("batch_0001", raise_on_error=False)
    notifier = NotifierResource(slack_webhook_url=down.url("/slack"), webhook_url=up.url("/hook"))

    evaluate(
        platform, platform.config, "run_failure_notifications", result.run_id, dg.DagsterEventType.RUN_FAILURE, notifier
    )

    assert len(down.received) == 3  # tried and retried twice, answered 503 each time
    [received] = up.received
    assert received["json"]["fields"]["step"] == "raw_batch"


def test_start_hooks_exist_only_when_hooks_are_configured(platform):
    names = {sensor.name for sensor in build_monitoring_sensors(platform.config, platform.settings)}
    assert names == {"run_failure_notifications", "run_success_monitor", "notification_outbox"}
    with_hooks = small_config(**{"monitoring.hooks": HOOKS})
    assert "run_start_hooks" in {sensor.name for sensor in build_monitoring_sensors(with_hooks, platform.settings)}


def test_a_hook_that_cannot_be_imported_is_a_config_error_naming_it(platform):
    from ml_platform.lib.config import ConfigError

    config = small_config(**{"monitoring.hooks": ["no_such_module:Hook"]})
    with pytest.raises(ConfigError, match=r"monitoring.hooks.0 \('no_such_module:Hook'\): cannot import"):
        build_monitoring_sensors(config, platform.settings)
