"""TaskScheduler: cron schedules for training, backtests and pipelines, added from code or the CLI.

The schedules live in a YAML file under ML_PLATFORM_HOME (`automation.schedules_file`); the code
location reads it when it loads, so a schedule added here shows in the Dagster UI after "Reload
definitions" and runs under the daemon like the platform's own schedules.

    scheduler = TaskScheduler()
    scheduler.schedule_training("configs/experiment.yaml", "0 5 * * *", overrides=["model=gradient_boosting"])
    scheduler.schedule_backtest("churn_classifier", "0 6 * * 1")
    scheduler.schedule_pipeline("batch_pipeline_parallel", "0 */6 * * *")
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from filelock import FileLock
from pydantic import Field, ValidationError

from ml_platform.lib.config import (
    ConfigError,
    ExperimentConfig,
    PlatformConfig,
    StrictModel,
    fingerprint,
    format_validation_error,
    load_experiment_config,
)
from ml_platform.lib.settings import DEFAULT_EXPERIMENT_CONFIG_PATH, Settings

PIPELINE_JOBS = ("batch_pipeline", "batch_pipeline_parallel")
# The platform's own schedules (from `automation.schedules`) take these names.
BUILT_IN_SCHEDULES = ("retraining_schedule", "backtest_schedule", "pipeline_schedule")
NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_]{0,63}$"


class SchedulerError(ValueError):
    pass


class _Task(StrictModel):
    name: str = Field(pattern=NAME_PATTERN)
    cron: str
    timezone: str = "UTC"


class TrainingTask(_Task):
    """Train one experiment's model on the newest batch with features, into the experiment."""

    kind: Literal["training"] = "training"
    experiment_id: str
    experiment_name: str
    # The validated config, as it was when scheduled: later edits of the YAML change no schedule.
    config: dict[str, Any]


class BacktestTask(_Task):
    """Score a registered model's alias on every batch after the one it was trained on."""

    kind: Literal["backtest"] = "backtest"
    model: str
    alias: str = "champion"


class PipelineTask(_Task):
    """Run a pipeline job for every batch that is stale or was never run."""

    kind: Literal["pipeline"] = "pipeline"
    pipeline: Literal["batch_pipeline", "batch_pipeline_parallel"]


ScheduledTask = Annotated[TrainingTask | BacktestTask | PipelineTask, Field(discriminator="kind")]


class ScheduleFile(StrictModel):
    tasks: list[ScheduledTask] = Field(default_factory=list)


def load_scheduled_tasks(path: Path) -> list[TrainingTask | BacktestTask | PipelineTask]:
    """The tasks in the schedules file (none when it does not exist), validated, cron included."""
    if not path.exists():
        return []
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        tasks = ScheduleFile.model_validate(raw).tasks
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(error).split())}") from None
    except ValidationError as error:
        raise ConfigError(f"{path}: {format_validation_error(error)}") from None
    for index, task in enumerate(tasks):
        problem = cron_problem(task.cron, task.timezone)
        if problem:
            raise ConfigError(f"{path}: tasks.{index}.cron: {problem}")
    return tasks


def cron_problem(cron: str, timezone: str = "UTC") -> str | None:
    """Why Dagster would refuse this cron expression or timezone, or None."""
    import dagster as dg

    try:
        dg.ScheduleDefinition(name="check", cron_schedule=cron, execution_timezone=timezone, job_name="check")
    except dg.DagsterInvalidDefinitionError as error:
        return f"{cron!r} is not a valid cron schedule: {str(error).splitlines()[0]}"
    except Exception as error:  # an unknown timezone fails in the time-zone database
        return f"timezone {timezone!r}: {type(error).__name__}: {error}"
    return None


class TaskScheduler:
    """Add, list and remove scheduled tasks of the three kinds, persisted in the schedules file."""

    def __init__(self, settings: Settings | None = None, config: PlatformConfig | None = None):
        from ml_platform.lib.config import load_config

        self.settings = settings or Settings.from_env()
        self.config = config or load_config(self.settings.config_path)

    @property
    def path(self) -> Path:
        return self.settings.home / self.config.automation.schedules_file

    def list(self) -> list[TrainingTask | BacktestTask | PipelineTask]:
        return load_scheduled_tasks(self.path)

    def schedule_training(
        self,
        config: str | Path | ExperimentConfig = DEFAULT_EXPERIMENT_CONFIG_PATH,
        cron: str = "0 3 * * *",
        *,
        overrides: Sequence[str] = (),
        name: str | None = None,
        timezone: str = "UTC",
    ) -> TrainingTask:
        """Train an experiment (a config file plus Hydra overrides, or a validated config) on cron.

        The experiment is created (or found) now, so a bad config is refused here, not at 3 am.
        """
        from ml_platform.experiments import ExperimentManager

        experiment = config if isinstance(config, ExperimentConfig) else load_experiment_config(Path(config), overrides)
        if experiment.data.name != self.config.data.name:
            raise SchedulerError(
                f"experiment data set {experiment.data.name!r} is not the pipeline's {self.config.data.name!r}"
            )
        experiment_id = ExperimentManager(self.settings).create_experiment(experiment)
        return self._add(
            TrainingTask,
            name or f"training_{_slug(experiment.name)}",
            cron,
            timezone,
            experiment_id=experiment_id,
            experiment_name=experiment.name,
            config=experiment.loggable(),
        )

    def schedule_backtest(
        self, model: str | None = None, cron: str = "0 4 * * *", *, alias: str = "champion", name: str | None = None
    ) -> BacktestTask:
        """Backtest a registered model's alias (default: the pipeline's model and its champion) on cron."""
        model = model or self.config.promotion.registered_model_name
        return self._add(
            BacktestTask, name or f"backtest_{_slug(model)}_{_slug(alias)}", cron, "UTC", model=model, alias=alias
        )

    def schedule_pipeline(
        self, pipeline: str = "batch_pipeline", cron: str = "0 2 * * *", *, name: str | None = None
    ) -> PipelineTask:
        """Run a pipeline job on cron for every batch that is stale or was never run."""
        if pipeline not in PIPELINE_JOBS:
            raise SchedulerError(f"unknown pipeline {pipeline!r}; allowed: {', '.join(PIPELINE_JOBS)}")
        return self._add(PipelineTask, name or f"{pipeline}_{fingerprint(cron)[:6]}", cron, "UTC", pipeline=pipeline)

    def remove(self, name: str) -> TrainingTask | BacktestTask | PipelineTask:
        with self._editing():
            tasks = self.list()
            found = next((task for task in tasks if task.name == name), None)
            if found is None:
                known = ", ".join(task.name for task in tasks) or "none"
                raise SchedulerError(f"no scheduled task named {name!r}; scheduled: {known}")
            self._save([task for task in tasks if task.name != name])
        return found

    def _add(self, kind: type[_Task], name: str, cron: str, timezone: str, **fields):
        problem = cron_problem(cron, timezone)
        if problem:
            raise SchedulerError(problem)
        try:
            task = kind(name=name, cron=cron, timezone=timezone, **fields)
        except ValidationError as error:
            raise SchedulerError(format_validation_error(error)) from None
        with self._editing():
            tasks = self.list()
            if name in BUILT_IN_SCHEDULES or any(existing.name == name for existing in tasks):
                raise SchedulerError(f"a schedule named {name!r} exists already; pass another name")
            self._save([*tasks, task])
        return task

    def _editing(self) -> FileLock:
        """Two commands adding schedules at once must not lose one of them."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(f"{self.path}.lock")

    def _save(self, tasks: list[_Task]) -> None:
        """Replace the file in one step: the code location never reads half a file."""
        content = yaml.safe_dump({"tasks": [task.model_dump(mode="json") for task in tasks]}, sort_keys=False)
        with tempfile.NamedTemporaryFile("w", dir=self.path.parent, suffix=".tmp", delete=False) as handle:
            handle.write(content)
        os.replace(handle.name, self.path)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", text).strip("_")[:40] or "task"
