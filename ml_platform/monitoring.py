"""MonitoringHook: code of your own that runs when a pipeline or experiment run starts, ends or fails.

Subclass `MonitoringHook`, override what you need, and name the class in the config:

    monitoring:
      hooks: ["my_package.hooks:PagerDutyHook"]

The hooks are called by Dagster run-status sensors (`defs/monitoring/sensors.py`) under the daemon,
once per run and event, with the run's summary derived from Dagster's event log. A hook that raises
is logged and does not stop the other hooks or the sensor.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from ml_platform.lib.config import ConfigError
from ml_platform.lib.run_summary import RunSummary


@dataclass(frozen=True)
class RunInfo:
    """The run a hook is told about."""

    run_id: str
    job_name: str
    partition: str | None
    tags: dict[str, str] = field(default_factory=dict)
    url: str | None = None  # the run in the Dagster UI


@dataclass(frozen=True)
class RunError:
    """What failed: the run, the failed steps and the first lines of the first error."""

    run: RunInfo
    steps: list[str]
    message: str


class MonitoringHook:
    """Override any of the three; the defaults do nothing."""

    def on_experiment_start(self, run: RunInfo) -> None:
        """A run of a pipeline or experiment job has started."""

    def on_experiment_end(self, result: RunSummary) -> None:
        """A run succeeded: its stages with durations, metrics per model, winner and champion decision."""

    def on_error(self, error: RunError) -> None:
        """A run failed."""


def load_hooks(paths: list[str]) -> list[MonitoringHook]:
    """Instantiate `module:Class` hooks; an unknown module or class is a config error naming it."""
    hooks = []
    for index, path in enumerate(paths):
        module_name, class_name = path.split(":", 1)
        where = f"monitoring.hooks.{index} ({path!r})"
        try:
            hook_class = getattr(importlib.import_module(module_name), class_name)
        except ImportError as error:
            raise ConfigError(f"{where}: cannot import {module_name!r}: {error}") from None
        except AttributeError:
            raise ConfigError(f"{where}: module {module_name!r} has no {class_name!r}") from None
        if not (isinstance(hook_class, type) and issubclass(hook_class, MonitoringHook)):
            raise ConfigError(f"{where}: {class_name} is not a subclass of ml_platform.monitoring.MonitoringHook")
        hooks.append(hook_class())
    return hooks
