"""Reproducible by id: which model run a reference names, what it recorded, the checks before it is
rebuilt, and the comparison of the rebuilt run with the recorded one.

Dagster-free; `ml_platform/reproduce.py` rebuilds the model in a scratch home and hands both runs here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ml_platform.lib.batches import batch_file
from ml_platform.lib.config import (
    PlatformConfig,
    canonical_param_names,
    format_validation_error,
    validate_model_params,
)
from ml_platform.lib.ingestion import file_content_hash
from ml_platform.lib.provenance import MODEL_HASH_TAG, PARAMS_TAG, PREDICTIONS_HASH_TAG

RUN_ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")
VERSION_PATTERN = re.compile(r"^(?P<name>[^/@\s]+)/(?P<version>\d+)$")
ALIAS_PATTERN = re.compile(r"^(?P<name>[^/@\s]+)@(?P<alias>[A-Za-z0-9_-]+)$")
# A model run's tags that say what it was built from and what it produced; without them it cannot be rebuilt.
REQUIRED_TAGS = ("data_hash", "config_hash", PARAMS_TAG, PREDICTIONS_HASH_TAG, MODEL_HASH_TAG)
# What the rebuilt model must match, tag by tag, and how a person reads each.
RESULT_TAGS = {
    "data_hash": "data hash",
    "config_hash": "config hash",
    "split.held_out_ids_sha256": "held-out rows (sha256 of their ids)",
    PREDICTIONS_HASH_TAG: "held-out predictions (sha256)",
    MODEL_HASH_TAG: "serialised model (sha256)",
}
# Wall-clock figures: they differ between any two fits and say nothing about the model.
VOLATILE_METRICS = frozenset({"fit_seconds"})
LIBRARY_TAG_PREFIX = "lib."


class CannotReproduce(ValueError):
    """The model cannot be rebuilt (an unknown reference, a run that is not a model's, a batch file
    missing or changed): the message names what and why."""


@dataclass(frozen=True)
class ModelReference:
    """`NAME/VERSION`, `NAME@alias` or an MLflow run id, as a person typed it."""

    text: str
    model: str | None = None
    version: str | None = None
    alias: str | None = None
    run_id: str | None = None


def parse_reference(text: str) -> ModelReference:
    """The reference `text` names, or CannotReproduce saying the three forms accepted."""
    text = text.strip()
    if RUN_ID_PATTERN.fullmatch(text):
        return ModelReference(text, run_id=text)
    if match := VERSION_PATTERN.fullmatch(text):
        return ModelReference(text, model=match["name"], version=match["version"])
    if match := ALIAS_PATTERN.fullmatch(text):
        return ModelReference(text, model=match["name"], alias=match["alias"])
    raise CannotReproduce(
        f"{text!r} names no model: expected NAME/VERSION (churn_classifier/3), NAME@alias "
        "(churn_classifier@champion) or a 32-character MLflow run id"
    )


@dataclass(frozen=True)
class ModelRun:
    """One model run as MLflow holds it: its metrics and tags."""

    run_id: str
    metrics: dict[str, float]
    tags: dict[str, str]

    @property
    def model_name(self) -> str:
        return self.tags["model_name"]

    @property
    def batch(self) -> str:
        return self.tags["dagster.partition"]

    @property
    def params(self) -> dict[str, Any]:
        return json.loads(self.tags[PARAMS_TAG])


def recorded_model_run(run_id: str, metrics: dict[str, float], tags: dict[str, str]) -> ModelRun:
    """The run, checked to be a `<name>_model` asset's run that recorded what a rebuild needs."""
    if "model_name" not in tags or "dagster.partition" not in tags:
        raise CannotReproduce(
            f"run {run_id} is not a model run: it has no model_name or dagster.partition tag "
            "(a `<name>_model` asset of the pipeline logs those)"
        )
    if missing := [tag for tag in REQUIRED_TAGS if tag not in tags]:
        raise CannotReproduce(
            f"run {run_id} ({tags['model_name']}, {tags['dagster.partition']}) did not record {', '.join(missing)}: "
            "it was trained before models recorded what reproducing them needs; train it again to reproduce it"
        )
    return ModelRun(run_id, dict(metrics), dict(tags))


def recorded_config(raw: dict[str, Any], run_id: str) -> PlatformConfig:
    """The config a model was trained with (its `config.json`), validated back into a PlatformConfig.

    What `loggable()` left out (tracking URI, automation, notifications, monitoring) trains nothing,
    so their defaults serve; the rebuild points tracking at its scratch store anyway.
    """
    try:
        return PlatformConfig.model_validate(raw)
    except ValidationError as error:
        raise CannotReproduce(
            f"the config run {run_id} recorded is not valid for this code: {format_validation_error(error)}"
        ) from error


def launch_params(recorded: ModelRun, config: PlatformConfig) -> dict[str, Any]:
    """The params to launch the model's asset with: those it was fitted with that its config does not
    give already (a launch-time override, a tuned model's best trial).

    Only the difference, because Dagster's run config cannot carry a null (`max_depth: null` is a
    valid param) and the config's own params need no repeating.
    """
    spec = config.models.get(recorded.model_name)
    if spec is None:
        raise CannotReproduce(f"run {recorded.run_id}'s config has no model {recorded.model_name!r}")
    configured = validate_model_params(spec.type, canonical_param_names(spec.type, spec.params))
    overrides = {key: value for key, value in recorded.params.items() if configured.get(key) != value}
    if nulls := sorted(key for key, value in overrides.items() if value is None):
        raise CannotReproduce(
            f"run {recorded.run_id} was fitted with {', '.join(f'{key}=null' for key in nulls)}, which its config "
            "does not give and a launch cannot carry"
        )
    return overrides


def verified_batch_files(
    batch: str, batch_hashes: dict[str, str | None], incoming_dir: Path, file_format: str, model: str
) -> dict[str, Path]:
    """The file of each batch of the window of `batch` in `incoming_dir`, checked against the content
    hash recorded at training time.

    A missing file or one whose content changed is refused naming the file and both hashes: a model
    rebuilt from other data would differ for a reason that has nothing to do with the code.
    """
    if batch not in batch_hashes:
        raise CannotReproduce(f"{model} recorded no hash of the file of {batch}, the batch it was trained for")
    files = {}
    for window_batch, recorded in batch_hashes.items():
        path = batch_file(incoming_dir, window_batch, file_format)
        if recorded is None:
            raise CannotReproduce(
                f"{window_batch} was stored before content hashes were recorded: {path} cannot be checked"
            )
        if not path.is_file():
            raise CannotReproduce(f"{path} is missing: {model} was trained on {window_batch} with sha256 {recorded}")
        if (actual := file_content_hash(path)) != recorded:
            raise CannotReproduce(
                f"{path} is not the file {model} was trained on: sha256 {actual} now, {recorded} recorded"
            )
        files[window_batch] = path
    return files


@dataclass(frozen=True)
class Difference:
    what: str
    recorded: str
    rebuilt: str


@dataclass(frozen=True)
class Comparison:
    """`results` (metrics, predictions, model bytes, data and config hashes) decide whether the rebuilt
    model is identical; `environment` (library and code versions) is named either way: a version that
    changed explains a different result, and a result identical despite it is worth knowing too."""

    results: list[Difference]
    environment: list[Difference]

    @property
    def identical(self) -> bool:
        return not self.results


def compare_runs(recorded: ModelRun, rebuilt: ModelRun) -> Comparison:
    """Every difference between the recorded run and its rebuild. Metrics must be equal as floats, not
    close: the same code on the same data with the same seeds gives the same bits, and a tolerance
    would hide the first sign that it no longer does."""
    results = []
    for metric in sorted((recorded.metrics.keys() | rebuilt.metrics.keys()) - VOLATILE_METRICS):
        before, after = recorded.metrics.get(metric), rebuilt.metrics.get(metric)
        if before != after:
            change = f" ({after - before:+.3g})" if before is not None and after is not None else ""
            results.append(Difference(f"metric {metric}", _text(before), _text(after) + change))
    for tag, label in RESULT_TAGS.items():
        if recorded.tags.get(tag) != rebuilt.tags.get(tag):
            results.append(Difference(label, _text(recorded.tags.get(tag)), _text(rebuilt.tags.get(tag))))
    environment = [
        Difference(
            f"library {tag.removeprefix(LIBRARY_TAG_PREFIX)}",
            _text(recorded.tags.get(tag)),
            _text(rebuilt.tags.get(tag)),
        )
        for tag in sorted(_library_tags(recorded) | _library_tags(rebuilt))
        if recorded.tags.get(tag) != rebuilt.tags.get(tag)
    ]
    if recorded.tags.get("code_version") != rebuilt.tags.get("code_version"):
        environment.append(
            Difference(
                "code version", _text(recorded.tags.get("code_version")), _text(rebuilt.tags.get("code_version"))
            )
        )
    return Comparison(results, environment)


def identical_line(label: str, run_id: str, batch_hashes: dict[str, str | None]) -> str:
    """`identical: churn_classifier version 2 (run …) rebuilt from batch_0002 (sha256 …)`."""
    sources = ", ".join(f"{batch} (sha256 {content_hash})" for batch, content_hash in batch_hashes.items())
    return f"identical: {label} (run {run_id}) rebuilt from {sources}"


def _library_tags(run: ModelRun) -> set[str]:
    return {tag for tag in run.tags if tag.startswith(LIBRARY_TAG_PREFIX)}


def _text(value: Any) -> str:
    return "-" if value is None else repr(value) if isinstance(value, float) else str(value)
