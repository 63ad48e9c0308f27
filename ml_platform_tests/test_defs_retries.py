"""Step retries only for errors a retry can fix: the rule on its own, and through real steps."""

from __future__ import annotations

import errno
import sqlite3

import dagster as dg
import pytest
from filelock import Timeout
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INTERNAL_ERROR,
    INVALID_PARAMETER_VALUE,
    RESOURCE_ALREADY_EXISTS,
    TEMPORARILY_UNAVAILABLE,
)

from ml_platform.defs.retries import retry_only_transient
from ml_platform.lib.transient_errors import is_transient
from ml_platform_tests.conftest import small_config


def raised(error: BaseException, cause: BaseException | None = None) -> BaseException:
    """`error` as raised (with `cause` as its `from`), so its chain is what a real raise gives."""
    try:
        if cause is None:
            raise error
        try:
            raise cause
        except BaseException as inner:
            raise error from inner
    except BaseException as caught:
        return caught


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (MlflowException("Invalid model name 'a/b'", INVALID_PARAMETER_VALUE), False),
        (MlflowException("exists", RESOURCE_ALREADY_EXISTS), False),
        (MlflowException("database is locked", TEMPORARILY_UNAVAILABLE), True),
        (MlflowException("API request failed: 500"), True),  # MLflow's default code: INTERNAL_ERROR
        (raised(MlflowException("write failed", INTERNAL_ERROR), OSError(errno.ENOSPC, "No space left")), False),
        (OSError(errno.ENOSPC, "No space left on device"), False),
        (PermissionError(errno.EACCES, "Permission denied"), False),
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), True),
        (TimeoutError("timed out"), True),
        (Timeout("mlflow.db.lock"), True),
        (sqlite3.OperationalError("database is locked"), True),
        (sqlite3.OperationalError("no such table: runs"), False),
        (ValueError("Input contains NaN"), False),
        (KeyError("winner"), False),
        (raised(RuntimeError("logging the model failed"), ConnectionResetError(errno.ECONNRESET, "reset")), True),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else str(value),
)
def test_only_errors_a_retry_can_fix_count_as_transient(error, transient):
    assert is_transient(error) is transient


RETRY_NOW = dg.RetryPolicy(max_retries=2)  # no delay: the test is about whether, not when


def attempts_of(result: dg.ExecuteInProcessResult, step: str) -> int:
    return 1 + len(
        [event for event in result.all_events if event.event_type_value == "STEP_RESTARTED" and event.step_key == step]
    )


def test_a_transient_error_is_retried_and_a_permanent_one_is_not(tmp_path):
    calls = {"flaky": 0, "broken": 0}

    @dg.asset(retry_policy=RETRY_NOW)
    @retry_only_transient
    def flaky() -> int:
        calls["flaky"] += 1
        if calls["flaky"] == 1:
            raise Timeout("mlflow.db.lock")
        return 1

    @dg.asset(retry_policy=RETRY_NOW)
    @retry_only_transient
    def broken() -> int:
        calls["broken"] += 1
        raise OSError(errno.ENOSPC, "No space left on device")

    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        result = dg.materialize([flaky, broken], instance=instance, raise_on_error=False)
    assert calls == {"flaky": 2, "broken": 1}
    assert result.output_for_node("flaky") == 1
    [failure] = [event for event in result.all_events if event.is_step_failure]
    assert "No space left on device" in failure.step_failure_data.error.to_string()


def test_the_champion_step_fails_at_once_on_an_invalid_parameter_from_the_registry(two_batches):
    """MLflow refuses a registered model name with a '/' (INVALID_PARAMETER_VALUE): retrying twice
    (2 s, then 4 s later) used to fail the same way."""
    config = small_config(**{"promotion.registered_model_name": "churn/classifier"})
    result = two_batches.materialize("batch_0002", config=config, selection=["champion_model"], raise_on_error=False)
    assert not result.success
    assert attempts_of(result, "champion_model") == 1
    [failure] = [event for event in result.all_events if event.is_step_failure]
    assert "Names cannot contain '/' or ':'" in failure.step_failure_data.error.to_string()
