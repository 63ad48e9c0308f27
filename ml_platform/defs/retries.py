"""Retry policy for steps that call external systems (the MLflow tracking store and registry).

A tracking server restarting or a locked SQLite store is worth a couple of retries with backoff;
the run-level retries in dagster.yaml are set so that a failed step is never retried twice over.
"""

import dagster as dg

EXTERNAL_SYSTEM_RETRY = dg.RetryPolicy(
    max_retries=2, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)
