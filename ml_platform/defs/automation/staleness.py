"""Skip-unchanged: which assets of a batch must run again, and why.

Every asset has a `code_version` that includes its slice of the config, `raw_batch` records the
batch file's content hash as its data version, and the model assets record a data version from
their parameters and training data. Dagster compares those with what each materialization was
built from (the stale status the UI shows); this module asks for that status per batch, adds the
one thing Dagster cannot see (the batch file on disk changed since it was ingested) and gives the
reason for each asset that would run.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleCause, StaleStatus
from dagster._core.loader import LoadingContext

from ml_platform.lib.ingestion import file_content_hash

RAW_BATCH_KEY = dg.AssetKey("raw_batch")
# The run tag that says why a run re-ran what it did (the UI shows it with the run).
STALE_REASON_TAG = "ml_platform/stale_reason"


class _InstanceLoadingContext(LoadingContext):
    """The data-loader cache Dagster's stale-status resolver wants, for one evaluation."""

    def __init__(self, instance: dg.DagsterInstance):
        self._instance = instance
        self._loaders = {}

    @property
    def instance(self) -> dg.DagsterInstance:
        return self._instance

    @property
    def loaders(self) -> dict:
        return self._loaders


def reasons_to_run(
    instance: dg.DagsterInstance,
    asset_graph,
    partition: str,
    keys: list[dg.AssetKey],
    batch_file: Path | None = None,
) -> dict[dg.AssetKey, str]:
    """The assets among `keys` to materialize for `partition`, in graph order, each with why.

    An empty result means the batch is up to date: data, code and config are what its last
    materializations were built from. An asset downstream of one that runs runs too.
    """
    resolver = CachingStaleStatusResolver(instance, asset_graph, _InstanceLoadingContext(instance))
    selected = set(keys)
    reasons: dict[dg.AssetKey, str] = {}
    for key in asset_graph.toposorted_asset_keys:
        if key not in selected:
            continue
        status = resolver.get_status(key, partition)
        if status == StaleStatus.MISSING:
            reasons[key] = "never materialized for this batch"
        elif key == RAW_BATCH_KEY and batch_file is not None and _file_changed(resolver, partition, batch_file):
            reasons[key] = f"{batch_file.name} changed since it was ingested"
        elif status == StaleStatus.STALE:
            reasons[key] = "; ".join(_describe(cause) for cause in resolver.get_stale_root_causes(key, partition))
        elif upstream := sorted(parent for parent in asset_graph.get(key).parent_keys if parent in reasons):
            reasons[key] = f"upstream {', '.join(parent.to_user_string() for parent in upstream)} runs again"
    return reasons


def _file_changed(resolver: CachingStaleStatusResolver, partition: str, batch_file: Path) -> bool:
    if not batch_file.is_file():
        return False  # ingestion reports a missing file; it is not a reason to re-run
    recorded = resolver.get_current_data_version(RAW_BATCH_KEY, partition)
    return recorded.value != file_content_hash(batch_file)


def _describe(cause: StaleCause) -> str:
    what = f"{cause.key.asset_key.to_user_string()} {cause.reason}"
    if cause.dependency is not None:
        what += f" ({cause.dependency.asset_key.to_user_string()})"
    return what


def describe_reasons(reasons: dict[dg.AssetKey, str]) -> str:
    """One line per asset, for logs, run tags and the CLI."""
    return "\n".join(f"{key.to_user_string()}: {reason}" for key, reason in reasons.items())
