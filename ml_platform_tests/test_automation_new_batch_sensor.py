"""The new-batch sensor, evaluated in-process: partitions, run requests and the cursor of each tick."""

import os
import time

import dagster as dg
import pytest

from ml_platform.defs.automation.sensors import SOURCE_FILE_TAG, TRIGGER_TAG, build_new_batch_sensor
from ml_platform.lib.demo_data import write_demo_batches
from ml_platform_tests.conftest import small_config


def settle(path):
    """Make a file look written a minute ago, as one a writer has finished with."""
    past = time.time_ns() - 60 * 10**9
    os.utime(path, ns=(past, past))


@pytest.fixture
def sensor(platform):
    return build_new_batch_sensor(platform.config, platform.settings)


def tick(sensor, platform, cursor=None) -> dg.SensorResult:
    return sensor(dg.build_sensor_context(instance=platform.instance, cursor=cursor))


def apply(platform, result: dg.SensorResult) -> None:
    """What the daemon does with a tick's result: add the requested partitions."""
    for request in result.dynamic_partitions_requests:
        platform.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))


def test_an_empty_folder_is_a_skip_that_says_where_it_looked(sensor, platform):
    result = tick(sensor, platform)
    assert result.run_requests == []
    assert result.skip_reason.skip_message.startswith(f"no new batch files in {platform.incoming_dir}")


def test_a_new_file_adds_its_partition_and_requests_its_run_in_the_same_tick(sensor, platform):
    [path] = write_demo_batches(platform.incoming_dir, 1, 1000)
    settle(path)
    result = tick(sensor, platform)
    [partitions] = result.dynamic_partitions_requests
    assert (partitions.partitions_def_name, list(partitions.partition_keys)) == ("batches", ["batch_0001"])
    [run] = result.run_requests
    assert run.partition_key == "batch_0001"
    assert run.tags[TRIGGER_TAG] == "new batch file"
    assert run.tags[SOURCE_FILE_TAG] == str(path)
    assert run.run_key.startswith("batch_0001:")


def test_each_file_is_processed_once_even_after_a_restart(sensor, platform):
    paths = write_demo_batches(platform.incoming_dir, 2, 1000)
    for path in paths:
        settle(path)
    first = tick(sensor, platform)
    apply(platform, first)
    # A restarted daemon evaluates a freshly built sensor with the stored cursor.
    again = tick(build_new_batch_sensor(platform.config, platform.settings), platform, first.cursor)
    assert again.run_requests == []
    assert again.dynamic_partitions_requests == []
    assert "2 already processed" in again.skip_reason.skip_message


def test_a_file_still_being_written_is_left_for_the_next_tick(sensor, platform):
    platform.incoming_dir.mkdir(parents=True)
    growing = platform.incoming_dir / "batch_0001.csv"
    growing.write_text("customer_id,tenure_months\n")  # just modified: the writer may not be done
    (platform.incoming_dir / "batch_0002.csv.part").write_text("customer_id\n")
    result = tick(sensor, platform)
    assert result.run_requests == []
    assert "2 still being written" in result.skip_reason.skip_message
    settle(growing)
    later = tick(sensor, platform, result.cursor)
    assert [request.partition_key for request in later.run_requests] == ["batch_0001"]


def test_a_name_that_is_not_a_batch_id_never_becomes_a_partition(sensor, platform):
    platform.incoming_dir.mkdir(parents=True)
    for name in ["bad..name.csv", "a,b.csv", "x" * 70 + ".csv"]:
        path = platform.incoming_dir / name
        path.write_text("customer_id\n1\n")
        settle(path)
    result = tick(sensor, platform)
    assert result.run_requests == []
    assert result.dynamic_partitions_requests == []
    assert "3 refused" in result.skip_reason.skip_message
    assert platform.instance.get_dynamic_partitions("batches") == []


def test_max_batches_limits_each_tick_and_the_rest_follow(platform):
    config = small_config(**{"automation.new_batch_sensor.max_batches": 2})
    sensor = build_new_batch_sensor(config, platform.settings)
    for path in write_demo_batches(platform.incoming_dir, 3, 1000):
        settle(path)
    first = tick(sensor, platform)
    assert [request.partition_key for request in first.run_requests] == ["batch_0001", "batch_0002"]
    second = tick(sensor, platform, first.cursor)
    assert [request.partition_key for request in second.run_requests] == ["batch_0003"]


def test_a_rewritten_file_runs_its_existing_batch_again_without_adding_it(sensor, platform):
    [path] = write_demo_batches(platform.incoming_dir, 1, 1000)
    settle(path)
    first = tick(sensor, platform)
    apply(platform, first)
    path.write_bytes(path.read_bytes() + b"")  # rewritten in place
    os.utime(path, ns=(time.time_ns() - 30 * 10**9,) * 2)
    second = tick(sensor, platform, first.cursor)
    assert second.dynamic_partitions_requests == []
    [run] = second.run_requests
    assert run.tags[TRIGGER_TAG] == "rewritten batch file"
    assert run.run_key != first.run_requests[0].run_key


def test_the_sensor_runs_by_default_and_can_be_switched_off_in_config(platform):
    assert build_new_batch_sensor(platform.config, platform.settings).default_status == dg.DefaultSensorStatus.RUNNING
    off = small_config(**{"automation.new_batch_sensor.enabled": False})
    assert build_new_batch_sensor(off, platform.settings).default_status == dg.DefaultSensorStatus.STOPPED
