"""The platform's configuration: a pydantic schema, loaded from YAML and validated as a whole.

One `PlatformConfig` describes the data set (where batches arrive, the target, the task and the
data contract), the training split, the candidate models with their hyperparameters, how the
champion is chosen, and where MLflow records runs. Every error names the key that is wrong.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

Task = Literal["classification", "regression"]


class StrictModel(BaseModel):
    """Unknown keys are errors: a typo in a config must never be silently ignored."""

    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- data contract


class ColumnSpec(StrictModel):
    type: Literal["string", "integer", "float", "category", "boolean"]
    nullable: bool = True
    # Labels of a category column (text), or the values an integer column may hold (whole numbers).
    allowed: list[StrictInt | str] | None = None
    min: float | None = None
    max: float | None = None
    # identifier (a code such as a customer number) and ignore (any other column a model must not
    # use, e.g. free text) are stored and checked like every column, but never given to a model.
    role: Literal["feature", "identifier", "ignore"] = "feature"

    @field_validator("allowed", mode="before")
    @classmethod
    def _labels_yaml_read_as_booleans(cls, value: Any) -> Any:
        """YAML 1.1 reads unquoted No/Yes/on/off as booleans: say so, instead of pydantic's
        "Input should be a valid string", which gives no hint of the fix."""
        if isinstance(value, list) and (booleans := [item for item in value if isinstance(item, bool)]):
            raise ValueError(
                f"YAML read {len(booleans)} label(s) of 'allowed' as a boolean ({', '.join(map(str, booleans))}): "
                'quote labels such as No/Yes/on/off, e.g. allowed: ["No", "Yes"]'
            )
        return value

    @model_validator(mode="after")
    def _allowed_only_for_categories(self) -> ColumnSpec:
        if self.allowed is not None and self.type not in ("category", "integer"):
            raise ValueError("'allowed' is only valid for columns of type 'category' or 'integer'")
        if self.allowed and self.type == "integer" and not all(isinstance(value, int) for value in self.allowed):
            raise ValueError(f"'allowed' of an integer column must be whole numbers, got {self.allowed}")
        if self.allowed and self.type == "category" and not all(isinstance(value, str) for value in self.allowed):
            raise ValueError(
                f"'allowed' of a category column must be text labels, got {self.allowed}: quote a number "
                "in YAML ('1') or declare the column type: integer"
            )
        if self.allowed is not None and len(set(self.allowed)) != len(self.allowed):
            raise ValueError(f"'allowed' names a value twice: {self.allowed}")
        if self.type == "category" and not self.allowed:
            raise ValueError("a 'category' column needs a non-empty 'allowed' list")
        if (self.min is not None or self.max is not None) and self.type not in ("integer", "float"):
            raise ValueError("'min'/'max' are only valid for 'integer' and 'float' columns")
        return self


class DataConfig(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")
    incoming_dir: str = "data/incoming"
    file_format: Literal["csv", "parquet"] = "csv"
    task: Task
    target: str
    id_column: str
    # Ids that another stored batch of this data set delivered already: reject the batch, drop those
    # rows, or let them update (replace) the earlier rows. See lib/redelivery.py.
    redelivered_ids: Literal["reject", "drop", "update"] = "reject"
    # Column names reach SQL and dbt as identifiers: plain names only.
    columns: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], ColumnSpec]

    @model_validator(mode="after")
    def _target_and_id_are_columns(self) -> DataConfig:
        for role in ("target", "id_column"):
            name = getattr(self, role)
            if name not in self.columns:
                raise ValueError(f"{role} {name!r} is not one of the contract's columns")
        target = self.columns[self.target]
        if self.task == "regression" and target.type not in ("integer", "float"):
            raise ValueError(f"a regression target must be integer or float, {self.target!r} is {target.type}")
        if self.task == "classification":
            target_classes(self.target, target)  # raises naming the target when it has no usable labels
        if target.nullable:
            raise ValueError(f"the target {self.target!r} must be declared nullable: false")
        return self

    @property
    def classes(self) -> list | None:
        """The classification target's labels in the contract's order (None for regression); see `target_classes`."""
        return target_classes(self.target, self.columns[self.target]) if self.task == "classification" else None


# A classifier over more labels than this is a regression or a text column in disguise; and every
# per-class metric, plot and matrix grows with the count.
MAX_CLASSES = 100


def target_classes(name: str, spec: ColumnSpec) -> list:
    """The labels a classification target may take, in order: what the metrics, the probability
    matrix and the plots are laid out by, whether or not a batch holds every one of them.

    boolean: [False, True]; category: its `allowed` labels; integer: its `allowed` values, else
    every whole number from `min` to `max`. Two labels make the task binary, more multi-class.
    The positive class of a binary target (the one ROC AUC, precision and recall are about) is the
    LAST label: True, 1 of 0/1, `Yes` of `allowed: [No, Yes]`; order `allowed` to choose it.
    """
    if spec.type == "boolean":
        labels: list = [False, True]
    elif spec.type in ("category", "integer") and spec.allowed:
        labels = list(spec.allowed)
    elif spec.type == "integer" and spec.min is not None and spec.max is not None:
        if spec.max - spec.min + 1 > MAX_CLASSES:
            raise ValueError(
                f"the classification target {name!r} spans {spec.min:g} to {spec.max:g}, more than "
                f"{MAX_CLASSES} classes; list its labels in 'allowed' or use task: regression"
            )
        labels = list(range(math.ceil(spec.min), math.floor(spec.max) + 1))
    else:
        raise ValueError(
            f"a classification target must be a boolean, a category with 'allowed' labels, or an integer "
            f"with 'allowed' values or min and max; {name!r} is {spec.type} without labels"
        )
    if len(labels) < 2:
        raise ValueError(
            f"the classification target {name!r} has {len(labels)} label(s) {labels}; a classifier needs at least two"
        )
    if len(labels) > MAX_CLASSES:
        raise ValueError(f"the classification target {name!r} has {len(labels)} labels, more than {MAX_CLASSES}")
    return labels


# ---------------------------------------------------------------- models

CLASSIFICATION_METRICS = {"f1": "max", "roc_auc": "max", "precision": "max", "recall": "max", "accuracy": "max"}
REGRESSION_METRICS = {"rmse": "min", "mae": "min", "r2": "max"}
METRIC_DIRECTIONS = {"classification": CLASSIFICATION_METRICS, "regression": REGRESSION_METRICS}
KNOWN_METRICS = {**CLASSIFICATION_METRICS, **REGRESSION_METRICS}
DEFAULT_PRIMARY_METRIC = {"classification": "roc_auc", "regression": "rmse"}


class RandomForestParams(StrictModel):
    n_estimators: PositiveInt = 200
    max_depth: PositiveInt | None = None
    min_samples_leaf: PositiveInt = 1
    max_features: Literal["sqrt", "log2"] | float | None = "sqrt"
    n_jobs: int | None = None


class GradientBoostingParams(StrictModel):
    """scikit-learn's histogram gradient boosting: the one that scales to a million rows."""

    # `n_estimators` is accepted too: it is the name people know from other boosting libraries.
    max_iter: PositiveInt = Field(200, validation_alias=AliasChoices("max_iter", "n_estimators"))
    learning_rate: Annotated[float, Field(gt=0)] = 0.1
    max_depth: PositiveInt | None = None
    max_leaf_nodes: PositiveInt | None = 31
    l2_regularization: Annotated[float, Field(ge=0)] = 0.0


class LogisticRegressionParams(StrictModel):
    C: Annotated[float, Field(gt=0)] = 1.0
    max_iter: PositiveInt = 1000
    class_weight: Literal["balanced"] | None = None


class RidgeParams(StrictModel):
    alpha: Annotated[float, Field(ge=0)] = 1.0


PARAMS_BY_MODEL_TYPE: dict[str, type[StrictModel]] = {
    "random_forest": RandomForestParams,
    "gradient_boosting": GradientBoostingParams,
    "logistic_regression": LogisticRegressionParams,
    "ridge": RidgeParams,
}
MODEL_TYPES_BY_TASK: dict[str, tuple[str, ...]] = {
    "classification": ("random_forest", "gradient_boosting", "logistic_regression"),
    "regression": ("ridge", "random_forest", "gradient_boosting"),
}


class IntRange(StrictModel):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> IntRange:
        return _ordered_range(self)


class FloatRange(StrictModel):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> FloatRange:
        return _ordered_range(self)


def _ordered_range(search_range: IntRange | FloatRange):
    if search_range.low >= search_range.high:
        raise ValueError(f"low ({search_range.low}) must be below high ({search_range.high})")
    if search_range.log and search_range.low <= 0:
        raise ValueError(f"a log range needs low > 0, got {search_range.low}")
    return search_range


class Choices(StrictModel):
    type: Literal["categorical"]
    # Optuna stores choices as they are: plain values only (null means the model's "none", e.g. max_depth).
    choices: list[str | int | float | bool | None] = Field(min_length=1)


SearchRange = Annotated[IntRange | FloatRange | Choices, Field(discriminator="type")]


class SearchConfig(StrictModel):
    """A model's hyperparameter search (Optuna, TPE sampler seeded from `training.random_state`).

    Trials are scored on the training rows only: `cv_folds`-fold cross-validation, or with
    `cv_folds: null` fitted on the training rows and scored on the validation split. The held-out
    rows of the promotion gate are never seen. The best trial's params train the candidate.
    """

    params: dict[str, SearchRange] = Field(min_length=1)
    n_trials: Annotated[int, Field(ge=1, le=500)] = 20
    # A study cut short by the clock is not reproducible: which trials ran depends on the machine.
    timeout_seconds: Annotated[float, Field(gt=0, le=86_400)] | None = None
    cv_folds: Annotated[int, Field(ge=2, le=10)] | None = 3
    # Default: the promotion's primary metric, in its direction.
    metric: str | None = None


class ModelSpec(StrictModel):
    type: str
    params: dict[str, Any] = Field(default_factory=dict)
    # Tuned params replace the same params' values in `params`. Left out of dumps when absent, so an
    # untuned model's code version and the config hash are what they were before tuning existed.
    search: SearchConfig | None = Field(None, exclude_if=lambda search: search is None)

    @model_validator(mode="after")
    def _known_type_and_params(self) -> ModelSpec:
        if self.type not in PARAMS_BY_MODEL_TYPE:
            raise ValueError(f"unknown model type {self.type!r}; allowed: {', '.join(sorted(PARAMS_BY_MODEL_TYPE))}")
        try:
            validate_model_params(self.type, self.params)
        except ValidationError as error:
            raise ValueError(f"params of {self.type}: {format_validation_error(error)}") from None
        if self.search is not None:
            self.search.params = canonical_param_names(self.type, self.search.params)
            for name, search_range in self.search.params.items():
                _check_search_range(self.type, name, search_range)
            if self.search.metric is not None and self.search.metric not in KNOWN_METRICS:
                raise ValueError(
                    f"search.metric {self.search.metric!r} is unknown; allowed: {', '.join(sorted(KNOWN_METRICS))}"
                )
        return self


def _check_search_range(model_type: str, name: str, search_range: IntRange | FloatRange | Choices) -> None:
    """Every value the range can give must be a valid param: its ends, or each of its choices."""
    fields = PARAMS_BY_MODEL_TYPE[model_type].model_fields
    if name not in fields:
        raise ValueError(f"search.params.{name}: not a param of {model_type}; allowed: {', '.join(sorted(fields))}")
    values = search_range.choices if isinstance(search_range, Choices) else [search_range.low, search_range.high]
    for value in values:
        try:
            validate_model_params(model_type, {name: value})
        except ValidationError as error:
            raise ValueError(f"search.params.{name}: {value!r} is refused: {format_validation_error(error)}") from None


def canonical_param_names(model_type: str, params: dict[str, Any]) -> dict[str, Any]:
    """`params` with alias names replaced by the field names (`n_estimators` -> `max_iter`), so
    that config-file params and launch-time overrides merge key by key."""
    fields = PARAMS_BY_MODEL_TYPE[model_type].model_fields
    renamed = {}
    for key, value in params.items():
        name = next(
            (
                field_name
                for field_name, field in fields.items()
                if isinstance(field.validation_alias, AliasChoices) and key in field.validation_alias.choices
            ),
            key,
        )
        renamed[name] = value
    return renamed


def validate_model_params(model_type: str, params: dict[str, Any]) -> dict[str, Any]:
    """The params with defaults filled in; raises ValueError naming a bad key."""
    return PARAMS_BY_MODEL_TYPE[model_type].model_validate(params).model_dump()


# ---------------------------------------------------------------- training, promotion, tracking


class SplitConfig(StrictModel):
    """How the current batch's rows are divided into training, validation and held-out rows."""

    # stratified: seeded, keeping the classes' shares (a regression target has no classes: random);
    # random: seeded, ignoring the classes; time: the newest rows by `time_column` are held out
    # (and the newest training rows validate), as a model meets the future.
    strategy: Literal["stratified", "random", "time"] = "stratified"
    time_column: str | None = None

    @model_validator(mode="after")
    def _time_needs_its_column(self) -> SplitConfig:
        if (self.strategy == "time") != (self.time_column is not None):
            raise ValueError("time_column is required by strategy 'time', and only valid with it")
        return self

    def stratifies(self, task: str) -> bool:
        return task == "classification" and self.strategy == "stratified"


class TrainingConfig(StrictModel):
    test_size: Annotated[float, Field(gt=0, lt=1)] = 0.2
    # Of the batch's training rows, the share the candidates are compared on to pick the winner
    # (the held-out rows are kept for the promotion gate).
    validation_size: Annotated[float, Field(gt=0, lt=1)] = 0.25
    window: Literal["batch", "cumulative"] = "batch"
    random_state: int = 42
    split: SplitConfig = Field(default_factory=SplitConfig)


def check_split_column(data: DataConfig, training: TrainingConfig) -> None:
    """A time split orders rows by a column of the contract that holds numbers (epoch seconds, a
    yyyymmdd date, a period number): text would sort '10' before '9'."""
    column = training.split.time_column
    if column is None:
        return
    if column not in data.columns:
        raise ValueError(f"training.split.time_column {column!r} is not one of the contract's columns")
    if (kind := data.columns[column].type) not in ("integer", "float"):
        raise ValueError(
            f"training.split.time_column {column!r} must be an integer or float column (it orders the rows), "
            f"it is {kind}"
        )
    if data.columns[column].nullable:
        raise ValueError(
            f"training.split.time_column {column!r} must be nullable: false (a row needs a time to be placed)"
        )


class PromotionConfig(StrictModel):
    primary_metric: str | None = None
    # The smallest improvement worth a new champion, in the metric's units: the lower end of the
    # improvement's interval must be above it.
    min_improvement: Annotated[float, Field(ge=0)] = 0.0
    # How sure the gate must be: the two-sided interval of the paired bootstrap.
    confidence: Annotated[float, Field(gt=0.5, lt=1)] = 0.95
    bootstrap_samples: Annotated[int, Field(ge=200, le=100_000)] = 2000
    # Fewer held-out rows than this decide nothing: the winner stays a challenger.
    min_held_out_rows: PositiveInt = 200
    registered_model_name: str | None = None


class TrackingConfig(StrictModel):
    tracking_uri: str | None = None
    experiment_name: str | None = None
    # Where new experiments keep artifacts (a folder or URI); by default `mlflow/artifacts/` for
    # the embedded store, and the server's own default for a tracking server.
    artifact_location: str | None = None
    # Where each model run is logged: always MLflow (its registry holds the champion), and ClearML
    # beside it when listed (a server from CLEARML_API_HOST and keys, else offline sessions).
    backends: list[Literal["mlflow", "clearml"]] = Field(default_factory=lambda: ["mlflow"])

    @field_validator("backends")
    @classmethod
    def _mlflow_is_kept(cls, backends: list[str]) -> list[str]:
        if "mlflow" not in backends:
            raise ValueError("must include mlflow: the champion decision and the Model Registry are MLflow's")
        if len(set(backends)) != len(backends):
            raise ValueError(f"lists a backend twice: {backends}")
        return backends


# ---------------------------------------------------------------- automation, notifications, monitoring


class NewBatchSensorConfig(StrictModel):
    """The sensor that turns a file landing in the incoming folder into a partition and a run."""

    enabled: bool = True
    minimum_interval_seconds: PositiveInt = 10
    # New partitions (and runs) per tick at most; the rest wait for the next tick.
    max_batches: PositiveInt = 10
    # A file modified more recently than this may still be being written: it waits a tick.
    settle_seconds: Annotated[float, Field(ge=0)] = 2.0
    job: Literal["batch_pipeline", "batch_pipeline_parallel"] = "batch_pipeline"


class ScheduleSpec(StrictModel):
    cron: str
    enabled: bool = True
    timezone: str = "UTC"


class SchedulesConfig(StrictModel):
    """The platform's own cron schedules; `ml-platform schedules add` adds more (see TaskScheduler)."""

    # Retrain what is stale or missing for the latest batch (a changed model config, a failed run).
    retraining: ScheduleSpec = Field(default_factory=lambda: ScheduleSpec(cron="0 3 * * *"))
    # Score the champion on every batch that came after it was trained.
    backtest: ScheduleSpec = Field(default_factory=lambda: ScheduleSpec(cron="0 4 * * *"))
    # Run the whole pipeline for every batch that is stale or was never run.
    pipeline: ScheduleSpec = Field(default_factory=lambda: ScheduleSpec(cron="0 2 * * *"))


class AutomationConfig(StrictModel):
    new_batch_sensor: NewBatchSensorConfig = Field(default_factory=NewBatchSensorConfig)
    schedules: SchedulesConfig = Field(default_factory=SchedulesConfig)
    # Schedules added with `ml-platform schedules add`, relative to ML_PLATFORM_HOME.
    schedules_file: str = "schedules.yaml"


class EmailChannelConfig(StrictModel):
    smtp_host: str
    smtp_port: PositiveInt = 25
    sender: str
    recipients: list[str] = Field(min_length=1)
    starttls: bool = False
    # Names of environment variables, never the secrets themselves.
    username_env: str | None = None
    password_env: str | None = None


class NotificationChannelsConfig(StrictModel):
    """Where notifications go besides the log (always on). URLs with tokens come from the environment."""

    slack_webhook_url_env: str | None = None
    webhook_url: str | None = None
    webhook_url_env: str | None = None
    email: EmailChannelConfig | None = None

    @model_validator(mode="after")
    def _one_webhook_source(self) -> NotificationChannelsConfig:
        if self.webhook_url and self.webhook_url_env:
            raise ValueError("give webhook_url or webhook_url_env, not both")
        return self


class QualityAlertConfig(StrictModel):
    """When a trained winner notifies: below an absolute floor, or worse than the champion by a margin."""

    # The worst acceptable primary metric: a floor for roc_auc or f1, a ceiling for rmse.
    primary_metric_threshold: float | None = None
    max_drop_vs_champion: Annotated[float, Field(ge=0)] | None = None


class OutboxConfig(StrictModel):
    """Where a message waits while its channel is down: `notifications/outbox.json` under the home."""

    # The most messages kept; beyond it the oldest is dropped, with a warning in the log.
    max_messages: Annotated[int, Field(ge=1)] = 100
    # A message not delivered by then is dropped, with a warning in the log.
    max_age_hours: Annotated[float, Field(gt=0)] = 72.0
    # How often the `notification_outbox` sensor sends what waits (each new notification does too).
    flush_interval_seconds: Annotated[int, Field(ge=1)] = 30


class NotificationsConfig(StrictModel):
    channels: NotificationChannelsConfig = Field(default_factory=NotificationChannelsConfig)
    quality: QualityAlertConfig = Field(default_factory=QualityAlertConfig)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    # Links in messages point here (the Dagster UI).
    dagster_ui_url: str = "http://127.0.0.1:3000"
    timeout_seconds: Annotated[float, Field(gt=0)] = 10.0


class MonitoringConfig(StrictModel):
    # `module:Class` of MonitoringHook subclasses, called on every run's start, success and failure.
    hooks: list[Annotated[str, Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")]] = Field(default_factory=list)


class DriftConfig(StrictModel):
    """When a batch has drifted from the champion's training batch (`lib/drift.py`), and what follows."""

    # A feature drifts when its PSI is at least this (0.1 is a moderate shift, 0.25 a large one)...
    psi_threshold: Annotated[float, Field(gt=0)] = 0.2
    # ...and its test (KS, chi-squared) rejects "same distribution" at this level after the
    # Bonferroni correction over every test of the batch.
    p_value: Annotated[float, Field(gt=0, lt=1)] = 0.05
    # Fewer rows than this on either side: "not enough rows", no verdict for that feature.
    min_rows: Annotated[int, Field(ge=2)] = 30
    # Quantile bins of the reference for a numeric feature's PSI.
    bins: Annotated[int, Field(ge=2, le=100)] = 10
    # A share of drifted features above this notifies (and, with retrain_on_drift, retrains).
    share_bar: Annotated[float, Field(ge=0, lt=1)] = 0.1
    retrain_on_drift: bool = False


class PlatformConfig(StrictModel):
    seed: int = 42
    data: DataConfig
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    models: dict[str, ModelSpec]
    promotion: PromotionConfig = Field(default_factory=PromotionConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    automation: AutomationConfig = Field(default_factory=AutomationConfig)
    notifications: NotificationsConfig = Field(default_factory=NotificationsConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)

    @model_validator(mode="after")
    def _models_fit_the_task(self) -> PlatformConfig:
        check_split_column(self.data, self.training)
        if not self.models:
            raise ValueError("'models' must name at least one model")
        allowed = MODEL_TYPES_BY_TASK[self.data.task]
        for name, spec in self.models.items():
            if not name.isidentifier():
                raise ValueError(f"model name {name!r} must be a Python identifier (it names an asset)")
            if spec.type not in allowed:
                raise ValueError(
                    f"models.{name}: type {spec.type!r} does not fit task {self.data.task!r}; "
                    f"allowed: {', '.join(allowed)}"
                )
        metrics = METRIC_DIRECTIONS[self.data.task]
        if self.promotion.primary_metric is None:
            self.promotion.primary_metric = DEFAULT_PRIMARY_METRIC[self.data.task]
        if self.promotion.primary_metric not in metrics:
            raise ValueError(
                f"promotion.primary_metric {self.promotion.primary_metric!r} is not a {self.data.task} metric; "
                f"allowed: {', '.join(metrics)}"
            )
        for name, spec in self.models.items():
            if spec.search is not None:
                spec.search.metric = spec.search.metric or self.promotion.primary_metric
                if spec.search.metric not in metrics:
                    raise ValueError(
                        f"models.{name}.search.metric {spec.search.metric!r} is not a {self.data.task} metric; "
                        f"allowed: {', '.join(metrics)}"
                    )
        if self.promotion.registered_model_name is None:
            self.promotion.registered_model_name = f"{self.data.name}_{self.data.task}"
        if self.tracking.experiment_name is None:
            self.tracking.experiment_name = f"ml_platform/{self.data.name}"
        return self

    @property
    def primary_metric_mode(self) -> str:
        return METRIC_DIRECTIONS[self.data.task][self.promotion.primary_metric]

    def loggable(self) -> dict[str, Any]:
        """The resolved config as recorded with every model, without what changes no model: the
        tracking URI (a server URI may carry credentials) and backends, automation, notifications,
        monitoring, drift."""
        return self.model_dump(
            mode="json",
            exclude={
                "tracking": {"tracking_uri", "backends"},
                "automation": True,
                "notifications": True,
                "monitoring": True,
                "drift": True,
            },
        )

    def config_hash(self) -> str:
        """A short, stable fingerprint of the resolved config, recorded with every model."""
        return fingerprint(self.loggable())


def code_version(*sections: BaseModel) -> str:
    """An asset's code version: the asset code's own revision plus the config sections it reads,
    so changing a model's params makes that model (and what depends on it) stale, nothing else."""
    return f"{ASSET_CODE_REVISION}-{fingerprint([section.model_dump(mode='json') for section in sections])}"


# Bump when an asset's code changes what it produces; every asset then shows as stale.
ASSET_CODE_REVISION = "3"


def fingerprint(content: Any) -> str:
    """A short, stable hash of JSON-like content."""
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]


class ExperimentConfig(StrictModel):
    """One experiment: one model on one data set with one split, composed from `configs/experiment.yaml`
    and its groups. `ml-platform experiment create` records it; every run of it logs it to MLflow."""

    seed: int = 42
    # Names an MLflow experiment; by default `<model type>-<config hash>`.
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
    description: str = ""
    data: DataConfig
    model: ModelSpec
    training: TrainingConfig = Field(default_factory=TrainingConfig)

    @model_validator(mode="after")
    def _model_fits_the_task(self) -> ExperimentConfig:
        check_split_column(self.data, self.training)
        allowed = MODEL_TYPES_BY_TASK[self.data.task]
        if self.model.type not in allowed:
            raise ValueError(
                f"model: type {self.model.type!r} does not fit task {self.data.task!r}; allowed: {', '.join(allowed)}"
            )
        if self.model.search is not None:
            # Refused rather than ignored: the experiment job trains the params as given.
            raise ValueError("model.search: an experiment trains its params as given; tune with `ml-platform tune`")
        if self.name is None:
            self.name = f"{self.model.type}-{self.config_hash()[:8]}"
        return self

    def loggable(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def config_hash(self) -> str:
        """The fingerprint of what decides the model: name and description left out, so two
        experiments with the same settings share a hash."""
        return fingerprint(self.model_dump(mode="json", exclude={"name", "description"}))


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file and the key."""


def compose_config(path: Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Compose a config file with Hydra: its defaults list pulls in the groups beside it (`data/`,
    `model/`, `training/`), then command-line style `overrides` apply (`model=gradient_boosting`,
    `model.params.n_estimators=200`); interpolations such as `${seed}` are resolved."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException, MissingConfigException

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    if path.suffix != ".yaml":
        raise ConfigError(f"{path}: expected a .yaml file (configs compose from .yaml files)")
    try:
        with initialize_config_dir(config_dir=str(path.parent.resolve())):
            composed = compose(config_name=path.stem, overrides=list(overrides))
        raw = OmegaConf.to_container(composed, resolve=True)
    except MissingConfigException as error:
        raise ConfigError(f"{path}: {_missing_option_message(error, overrides)}") from None
    except (HydraException, yaml.YAMLError, OmegaConfBaseException) as error:
        raise ConfigError(f"{path}: {_one_line(error)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    return raw


def _missing_option_message(error, overrides: Sequence[str]) -> str:
    """Hydra's "could not find 'model/xgboost'" as the override that asked for it and the options."""
    missing = error.missing_cfg_file or ""
    if error.options and "/" in missing:
        group, option = missing.rsplit("/", 1)
        asked = next((o for o in overrides if o.split("=", 1)[0].lstrip("+~").split("@")[0] == group), None)
        return f"{asked or missing}: unknown {group} {option!r}; allowed: {', '.join(sorted(error.options))}"
    return _one_line(error)


def _one_line(error: Exception) -> str:
    """An error's message on one line, without Hydra's config search path listing."""
    message = str(error).split("Config search path")[0]
    if error.__cause__ is not None and "Could not override" in message:
        # Hydra's own hint follows on the next lines; the cause says which key was unknown.
        message = f"{message.splitlines()[0].rstrip('.')}: {str(error.__cause__).splitlines()[0]}"
    return " ".join(message.split())


def load_config(path: Path, overrides: Sequence[str] = ()) -> PlatformConfig:
    """Compose and validate a platform config; every problem is reported with its key path."""
    return _validated(PlatformConfig, compose_config(path, overrides), path)


def load_experiment_config(path: Path, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Compose and validate an experiment config (`configs/experiment.yaml` plus overrides)."""
    return _validated(ExperimentConfig, compose_config(path, overrides), path)


def validated_config(cfg: Any) -> PlatformConfig | ExperimentConfig:
    """The platform's or an experiment's config from either form people hold: the validated object,
    or the composed one (Hydra's OmegaConf object, or a plain mapping), validated here. An
    experiment's has one `model`, the platform's `models`."""
    if isinstance(cfg, PlatformConfig | ExperimentConfig):
        return cfg
    if OmegaConf.is_config(cfg):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    if not isinstance(cfg, Mapping):
        raise ConfigError(
            "expected a PlatformConfig, an ExperimentConfig or a composed config (OmegaConf or a mapping), "
            f"got {type(cfg).__name__}"
        )
    schema = ExperimentConfig if "model" in cfg and "models" not in cfg else PlatformConfig
    try:
        return schema.model_validate(dict(cfg))
    except ValidationError as error:
        raise ConfigError(f"{schema.__name__}: {format_validation_error(error)}") from None


def _validated(schema: type[StrictModel], raw: dict[str, Any], path: Path):
    try:
        return schema.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(f"{path}: {format_validation_error(error)}") from None


def format_validation_error(error: ValidationError) -> str:
    """Pydantic's errors as `key.path: message` lines, one per problem."""
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        # A check of the whole config names its keys in the message itself.
        lines.append(f"{key}: {message}" if key else message)
    return "; ".join(lines)
