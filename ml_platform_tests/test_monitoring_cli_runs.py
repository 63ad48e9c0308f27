"""Runs started outside the daemon are watched too: a failed `ml-platform run` notifies and gets its
summary, and the run-status sensors, evaluated as the daemon evaluates them (from a code location),
see runs that have no code-location origin, and report each run once, whoever comes first."""

from __future__ import annotations

import json

import dagster as dg
from dagster._core.remote_origin import RegisteredCodeLocationOrigin

from ml_platform.defs.monitoring.report import REPORTED_TAG
from ml_platform.defs.monitoring.sensors import build_monitoring_sensors
from ml_platform.lib.demo_data import generate_churn_batch
from ml_platform.lib.settings import Settings
from ml_platform.resources.notifier import NotifierResource
from ml_platform_tests.conftest import Cli, small_config


def as_the_daemon_does(sensor, instance, notifier, cursor):
    """One tick of `sensor` as the daemon runs it: from the code location `ml_platform`, with the cursor
    of the tick before. Returns the new cursor."""
    context = dg.SensorEvaluationContext(
        instance_ref=None,
        cursor=cursor,
        repository_name="__repository__",
        instance=instance,
        resources={"notifier": notifier},
        code_location_origin=RegisteredCodeLocationOrigin("ml_platform"),
    )
    with context:
        sensor.evaluate_tick(context)
    return context.cursor


def bad_batch() -> bytes:
    batch = generate_churn_batch(batch_number=1, n_rows=300).drop(columns=["monthly_charges"])
    return batch.to_csv(index=False).encode()


def test_the_failure_sensor_sees_a_run_without_a_code_location_origin_and_reports_it_once(platform, http_server):
    """`dg.materialize` (like `ml-platform run` and `dagster asset materialize`) records no origin: the
    sensor's location filter used to skip such a run without a word."""
    sensors = build_monitoring_sensors(platform.config, platform.settings)
    [sensor] = [sensor for sensor in sensors if sensor.name == "run_failure_notifications"]
    notifier = NotifierResource(webhook_url=http_server.url("/hooks/ml"))
    cursor = as_the_daemon_does(sensor, platform.instance, notifier, None)  # the first tick sets the cursor

    platform.add_batch_file("batch_0001", bad_batch())
    result = platform.materialize("batch_0001", raise_on_error=False)
    assert not result.success and platform.instance.get_run_by_id(result.run_id).remote_job_origin is None
    as_the_daemon_does(sensor, platform.instance, notifier, cursor)
    # The same tick again (a daemon that died before saving its cursor): the run is not reported twice.
    as_the_daemon_does(sensor, platform.instance, notifier, cursor)

    [received] = http_server.received
    assert received["json"]["fields"]["run"] == result.run_id
    assert received["json"]["fields"]["step"] == "raw_batch"
    assert (platform.settings.reports_dir / "runs" / f"{result.run_id}.json").is_file()
    assert platform.instance.get_run_by_id(result.run_id).tags[REPORTED_TAG] == f"{result.run_id} by run-status sensor"


def test_a_failed_cli_run_notifies_and_writes_its_summary_without_a_daemon_and_the_sensor_adds_nothing(
    tmp_path, http_server
):
    config = small_config(**{"notifications.channels.webhook_url": http_server.url("/hooks/ml")})
    cli = Cli(tmp_path, config)
    incoming = cli.home / config.data.incoming_dir
    incoming.mkdir(parents=True)
    (incoming / "batch_0001.csv").write_bytes(bad_batch())
    cli("batches", "add", "batch_0001")

    result = cli("run", "batch_0001", exit_code=2)

    [received] = http_server.received
    message = received["json"]
    assert message["title"] == "Run failed: batch_pipeline for batch_0001"
    assert message["fields"]["step"] == "raw_batch" and "monthly_charges" in message["error"]
    run_id = message["fields"]["run"]
    assert "notified: webhook sent" in result.stdout
    assert len(result.stderr.strip().splitlines()) == 1  # still one line: the notification is not printed
    summary = json.loads((cli.home / "reports" / "runs" / f"{run_id}.json").read_text())
    assert summary["status"] == "FAILURE" and "monthly_charges" in summary["error"]

    # The daemon starts later (or was running all along): its sensor finds the run already reported.
    # The CLI's own instance: its dagster.yaml links to the project's, which instance_for_test would overwrite.
    with dg.DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
        assert instance.get_run_by_id(run_id).tags[REPORTED_TAG] == f"{run_id} by ml-platform run"
        settings = Settings(home=cli.home, config_path=tmp_path / "platform.yaml")
        [sensor] = [s for s in build_monitoring_sensors(config, settings) if s.name == "run_failure_notifications"]
        notifier = NotifierResource(webhook_url=http_server.url("/hooks/ml"))
        failure = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records[0]
        context = dg.build_run_status_sensor_context(
            sensor_name=sensor.name,
            dagster_event=failure.event_log_entry.dagster_event,
            dagster_instance=instance,
            dagster_run=instance.get_run_by_id(run_id),
            resources={"notifier": notifier},
        ).for_run_failure()
        sensor(context)
    assert len(http_server.received) == 1
