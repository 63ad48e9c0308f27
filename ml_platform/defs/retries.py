"""Retry policy for steps that call external systems (the MLflow tracking store and registry).

A tracking server restarting or a locked SQLite store is worth a couple of retries with backoff;
the run-level retries in dagster.yaml are set so that a failed step is never retried twice over.

Dagster's RetryPolicy retries whatever the step raises, except a `dg.Failure(allow_retries=False)`.
So the steps under it are wrapped in `retry_only_transient`: an error that no retry can fix (a full
disk, an INVALID_PARAMETER_VALUE from the registry, a bug; `lib/transient_errors.py` decides) becomes
such a Failure and the step fails at once, with the original error as its cause.
"""

import functools
from collections.abc import Callable
from typing import TypeVar

import dagster as dg

from ml_platform.lib.transient_errors import is_transient

EXTERNAL_SYSTEM_RETRY = dg.RetryPolicy(
    max_retries=2, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)

F = TypeVar("F", bound=Callable)


def retry_only_transient(fn: F) -> F:
    """Let EXTERNAL_SYSTEM_RETRY retry `fn` (an asset or op body) only for errors a retry can fix.

    Put it between the `@dg.asset`/`@dg.op` decorator and the function; the signature Dagster reads
    (context, config, inputs, resources) is the function's own.
    """

    @functools.wraps(fn)
    def function(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as error:
            if (failure := _not_retried(error)) is None:
                raise
            raise failure from error

    return function  # type: ignore[return-value]


def _not_retried(error: Exception) -> dg.Failure | None:
    """None when a retry may fix `error` (or it says itself whether to retry), else a Failure that stops retries."""
    if isinstance(error, dg.Failure | dg.RetryRequested) or is_transient(error):
        return None
    return dg.Failure(
        description=f"{type(error).__name__}: {error} (not retried: retrying cannot fix it)",
        allow_retries=False,
    )
