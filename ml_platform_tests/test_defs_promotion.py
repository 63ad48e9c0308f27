"""The champion decision through real MLflow and a real Dagster instance: time-aware, fair, retry-safe.

Each test starts from a copy of the prepared home (two batches through the pipeline: batch_0001's
winner is v1 @champion, batch_0002's is v2) and re-runs only the steps it is about.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import dagster as dg
import pytest

from ml_platform.defs.registry_guard import REGISTRY_POOL
from ml_platform.lib.registry import EVENT_TAG_PREFIX, alias_history, set_alias
from ml_platform_tests.conftest import ML_PLATFORM, Cli, PlatformUnderTest, _platform, copy_home, small_config

# What a changed model config re-runs: every model, the report and the decision (the split is unchanged).
RETRAINED = ["random_forest_model", "gradient_boosting_model", "logistic_regression_model", "evaluation_report"]
DECISION = ["champion_model"]
# A model-param change, as in the issue: more trees, another C.
CHANGED_MODELS = small_config(
    **{"models.random_forest.params": {"n_estimators": 40, "max_depth": 6}, "models.logistic_regression.params.C": 0.3}
)


def registry(platform: PlatformUnderTest):
    return platform.mlflow().client(), platform.config.promotion.registered_model_name


def versions(platform: PlatformUnderTest) -> list:
    client, name = registry(platform)
    return sorted(client.search_model_versions(f"name = '{name}'"), key=lambda version: int(version.version))


def holder(platform: PlatformUnderTest, alias: str):
    client, name = registry(platform)
    return client.get_model_version_by_alias(name, alias)


def crown_batch_2(platform: PlatformUnderTest) -> str:
    """Make batch_0002's model the champion, as if it had won: the newest batch holds the alias."""
    client, name = registry(platform)
    version = next(v for v in versions(platform) if v.tags["batch"] == "batch_0002")
    set_alias(client, name, "champion", str(version.version), reason="test: batch 2 is the champion")
    return str(version.version)


def test_rerunning_an_older_batch_after_a_model_change_leaves_the_champion_on_the_newest(two_batches, tmp_path):
    platform = two_batches
    champion = crown_batch_2(platform)

    assert platform.materialize("batch_0001", config=CHANGED_MODELS, selection=RETRAINED + DECISION).success

    assert str(holder(platform, "champion").version) == champion
    challenger = holder(platform, "challenger")
    assert challenger.tags["batch"] == "batch_0001" and len(versions(platform)) == 3
    assert challenger.tags["promotion_reason"].startswith(
        f"trained on batch_0001, earlier than the champion's batch batch_0002 (v{champion})"
    )
    cli = Cli(tmp_path / "cli")
    cli.overrides["ML_PLATFORM_HOME"] = str(platform.settings.home)
    history = cli.json("models", "history", platform.config.promotion.registered_model_name, "--alias", "challenger")
    assert history[-1]["version"] == str(challenger.version)
    assert "earlier than the champion's batch batch_0002" in history[-1]["reason"]


def test_the_decision_does_not_depend_on_the_order_the_champion_steps_finish(two_batches, tmp_path, monkeypatch):
    """A backfill re-decides batches 1 and 2 while batch 2 holds the alias; two runs dequeue at a time."""
    crown_batch_2(two_batches)
    for batch in ("batch_0001", "batch_0002"):
        assert two_batches.materialize(batch, config=CHANGED_MODELS, selection=RETRAINED).success

    outcomes = []
    for order in (["batch_0001", "batch_0002"], ["batch_0002", "batch_0001"]):
        home = copy_home(two_batches.settings.home, tmp_path / "-then-".join(order))
        for platform in _platform(home, monkeypatch, small_config()):
            for batch in order:
                assert platform.materialize(batch, config=CHANGED_MODELS, selection=DECISION).success
            champion = holder(platform, "champion")
            outcomes.append((champion.run_id, champion.tags["batch"], len(versions(platform))))

    assert outcomes[0] == outcomes[1]
    assert outcomes[0][1] == "batch_0002"  # the older batch's new model never took it


def test_a_retried_decision_registers_nothing_new_and_compares_no_model_with_itself(two_batches):
    """The step runs again on the same winner, as a run retry does after a failure late in the step."""
    platform = two_batches
    client, name = registry(platform)
    before = [(v.version, v.run_id) for v in versions(platform)]
    champion_events = len(alias_history(client, name, "champion"))

    assert platform.materialize("batch_0001", selection=DECISION).success

    assert [(v.version, v.run_id) for v in versions(platform)] == before
    champion = holder(platform, "champion")
    assert str(champion.version) == "1"
    assert champion.tags["promotion_reason"].startswith("no current champion")  # the recorded decision stood
    assert len(alias_history(client, name, "champion")) == champion_events


def test_a_step_that_died_before_moving_the_alias_moves_it_once_on_retry(two_batches):
    platform = two_batches
    client, name = registry(platform)
    batch_2 = next(v for v in versions(platform) if v.tags["batch"] == "batch_0002")
    version, alias = str(batch_2.version), batch_2.tags["decision.alias"]
    # As if the step had died right after registering: the alias was not moved, its event not written.
    tags = client.get_registered_model(name).tags
    events = {key: json.loads(value) for key, value in tags.items() if key.startswith(EVENT_TAG_PREFIX)}
    key, event = next((k, e) for k, e in events.items() if (e["alias"], e["version"]) == (alias, version))
    client.delete_registered_model_tag(name, key)
    if event["previous"]:
        client.set_registered_model_alias(name, alias, event["previous"])
    else:
        client.delete_registered_model_alias(name, alias)

    assert platform.materialize("batch_0002", selection=DECISION).success

    assert len(versions(platform)) == 2
    assert str(holder(platform, alias).version) == version
    moves = [e.version for e in alias_history(client, name, alias)]
    assert moves.count(version) == 1 and moves[-1] == version


def test_a_champion_that_trained_on_the_new_held_out_rows_is_not_compared_on_them(two_batches):
    """batch_0001 again with a larger test size: some of its new held-out rows trained the champion."""
    platform = two_batches
    wider = small_config(**{"training.test_size": 0.3})

    assert platform.materialize("batch_0001", config=wider, selection=["training_data", *RETRAINED, *DECISION]).success

    assert str(holder(platform, "champion").version) == "1"
    reason = holder(platform, "challenger").tags["promotion_reason"]
    assert reason.startswith("the champion (v1) trained on ")
    assert "of batch_0001's held-out rows: no fair comparison on them" in reason


@pytest.fixture
def recorded(two_batches: PlatformUnderTest) -> Path:
    return two_batches.settings.reports_dir


def test_the_decision_is_recorded_in_the_report_and_the_version_with_its_interval(two_batches, recorded):
    decision = json.loads((recorded / "batch_0002" / "promotion_decision.json").read_text())
    version = next(v for v in versions(two_batches) if v.tags["batch"] == "batch_0002")

    assert decision["version"] == str(version.version) and decision["against"] == "1"
    comparison = decision["comparison"]
    assert comparison["rows"] == 300 and comparison["samples"] == 2000
    assert comparison["low"] <= comparison["improvement"] <= comparison["high"]
    assert version.tags["decision.comparison.rows"] == "300"
    assert version.tags["split.held_out_rows"] == "300" and len(version.tags["split.held_out_ids_sha256"]) == 64
    assert decision["reason"] == version.tags["promotion_reason"]


def test_a_manual_promotion_waits_while_a_champion_step_holds_the_registry_pool(two_batches, tmp_path):
    """`models promote` takes the pipeline's guard: it cannot land between a step's read and its write."""
    platform = two_batches
    storage = platform.instance.event_log_storage
    storage.set_concurrency_slots(REGISTRY_POOL, 1)
    assert storage.claim_concurrency_slot(REGISTRY_POOL, "a-pipeline-run", "champion_model").is_claimed
    cli = Cli(tmp_path / "cli")
    cli.overrides.update(ML_PLATFORM_HOME=str(platform.settings.home), DAGSTER_HOME=platform.instance.root_directory)
    _, name = registry(platform)
    before = str(holder(platform, "champion").version)
    target = "2" if before == "1" else "1"
    promoting = subprocess.Popen(
        [ML_PLATFORM, "models", "promote", name, target], env=cli.env, stdout=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while not platform.instance.get_runs(dg.RunsFilter(job_name="registry_change")):
            assert promoting.poll() is None and time.monotonic() < deadline, "the promotion neither waited nor ran"
            time.sleep(0.5)
        time.sleep(3)  # the run is there and waiting for the slot

        assert promoting.poll() is None
        assert str(holder(platform, "champion").version) == before

        storage.free_concurrency_slot_for_step("a-pipeline-run", "champion_model")
        stdout, _ = promoting.communicate(timeout=120)
    finally:
        promoting.kill()
    assert promoting.returncode == 0
    assert f"v{target} is now @champion (was v{before})" in stdout
    assert str(holder(platform, "champion").version) == target
