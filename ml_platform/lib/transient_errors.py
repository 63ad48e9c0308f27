"""Which errors a retry can fix: the rule behind the step retries of the MLflow steps.

A tracking server restarting, a SQLite store locked by another writer, a connection refused or
timed out: worth another attempt. A full disk, a read-only or missing path, a refused permission, a
registry's INVALID_PARAMETER_VALUE or RESOURCE_ALREADY_EXISTS, a bug (`KeyError`, `ValueError`…):
the same attempt fails the same way, only later, so the step fails at once.

The exception and its causes (`raise … from …`, and the exception being handled when it was raised)
are read outermost first; the first that decides, decides. MLflow wraps a SQLite lock in
TEMPORARILY_UNAVAILABLE and anything else in INTERNAL_ERROR (an OSError inside), so INTERNAL_ERROR
only decides when nothing under it does: then it is a server's 500, transient.
"""

from __future__ import annotations

import errno
import sqlite3

# MLflow's error codes (mlflow.protos.databricks_pb2) that say "try again".
TRANSIENT_MLFLOW_CODES = frozenset(
    {"TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "DEADLINE_EXCEEDED", "ABORTED", "SERVICE_UNDER_MAINTENANCE"}
)
UNDECIDED_MLFLOW_CODES = frozenset({"INTERNAL_ERROR"})
TRANSIENT_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.ETIMEDOUT,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.EAGAIN,
        errno.EBUSY,
        errno.EPIPE,
        errno.EINTR,
    }
)
TRANSIENT_HTTP_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
MAX_CHAIN = 20


def is_transient(error: BaseException) -> bool:
    """Whether retrying the operation that raised `error` can succeed."""
    undecided_transient = False
    for current in _chain(error):
        verdict = _verdict(current)
        if verdict == "undecided":
            undecided_transient = True
        elif verdict is not None:
            return verdict == "transient"
    return undecided_transient


def _chain(error: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain and len(chain) < MAX_CHAIN:
        chain.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return chain


def _verdict(error: BaseException) -> str | None:
    """ "transient", "permanent", "undecided" (look deeper; transient if nothing decides) or None (no opinion)."""
    code = getattr(error, "error_code", None)
    if type(error).__name__ == "MlflowException" or (isinstance(code, str) and code.isupper()):
        if code in TRANSIENT_MLFLOW_CODES:
            return "transient"
        if code in UNDECIDED_MLFLOW_CODES:
            return "undecided"
        if isinstance(code, str):
            return "permanent"
    module = type(error).__module__
    if module.startswith("filelock") and type(error).__name__ == "Timeout":  # a lock held by another writer
        return "transient"
    if isinstance(error, sqlite3.OperationalError) or (
        module.startswith("sqlalchemy") and type(error).__name__ == "OperationalError"
    ):
        return "transient" if "locked" in str(error) or "busy" in str(error) else None
    status = getattr(getattr(error, "response", None), "status_code", None)
    if module.startswith(("requests", "urllib3")):
        if isinstance(status, int):
            return "transient" if status in TRANSIENT_HTTP_STATUSES else "permanent"
        return (
            "transient" if isinstance(error, OSError | TimeoutError) or "Connection" in type(error).__name__ else None
        )
    if isinstance(error, ConnectionError | TimeoutError):
        return "transient"
    if isinstance(error, OSError) and error.errno is not None:
        return "transient" if error.errno in TRANSIENT_ERRNOS else "permanent"
    return None
