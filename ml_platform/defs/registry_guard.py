"""Manual alias moves (`ml-platform models promote/rollback`) as Dagster runs in the registry's pool.

The pipeline's champion step holds the `model_registry` pool's one slot while it reads the champion,
compares and moves the alias. A manual move that took no slot could land between a step's read and
its write and be overwritten without a trace; taking the same slot, it waits for the step, and the
step for it. The pool lives in the Dagster instance, so the guard holds with a tracking server and
with workers on other machines too (a file lock would not), and the move is a run in the UI's history.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import dagster as dg

# The pool of every step that moves a registry alias; dagster.yaml gives each pool one slot.
REGISTRY_POOL = "model_registry"
REGISTRY_CHANGE_TAG = "ml_platform/registry_change"

T = TypeVar("T")


def under_registry_guard(instance: dg.DagsterInstance, label: str, change: Callable[[], T]) -> T:
    """Run `change` as the one step of a `registry_change` run holding the pool's slot; its result
    or its own exception comes back to the caller."""
    outcome: dict[str, object] = {}

    @dg.op(name="change_alias", pool=REGISTRY_POOL)
    def change_alias() -> None:
        try:
            outcome["value"] = change()
        except Exception as error:
            outcome["error"] = error
            raise

    @dg.job(name="registry_change", description="A manual alias move, one at a time with the champion steps.")
    def registry_change() -> None:
        change_alias()

    result = registry_change.execute_in_process(
        instance=instance,
        raise_on_error=False,
        tags={REGISTRY_CHANGE_TAG: label[:200]},
        run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
    )
    if "error" in outcome:
        raise outcome["error"]
    if not result.success:
        raise RuntimeError(f"the registry change {label!r} did not run (run {result.run_id})")
    return outcome["value"]
