"""Model Registry aliases with a history: which version a rollback returns to, and the moves on a real store.

The registry tests run on a real SQLite MLflow store; every test registers its own model from one logged run.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.linear_model import LogisticRegression

from ml_platform.lib import registry
from ml_platform.lib.mlflow_store import MlflowStore
from ml_platform.lib.registry import (
    AliasEvent,
    RegistryError,
    alias_history,
    current_holder,
    rollback,
    rollback_target,
    set_alias,
)

# ---------------------------------------------------------------- rollback_target, pure


def promote(version: str) -> AliasEvent:
    return AliasEvent(alias="champion", version=version, action="promote", previous=None, at="2025-01-01T00:00:00")


def rolled_back(to: str) -> AliasEvent:
    return AliasEvent(alias="champion", version=to, action="rollback", previous=None, at="2025-01-01T00:00:00")


def test_a_rollback_returns_to_the_champion_before_the_current_one():
    assert rollback_target([promote("1"), promote("2"), promote("3")]) == "2"


def test_after_a_rollback_the_next_one_goes_a_further_champion_back():
    assert rollback_target([promote("1"), promote("2"), promote("3"), rolled_back("2")]) == "1"


def test_a_promotion_after_a_rollback_stacks_on_the_version_rolled_back_to():
    assert rollback_target([promote("1"), promote("2"), rolled_back("1"), promote("3")]) == "1"


def test_promoting_the_holder_again_is_not_stacked_twice():
    assert rollback_target([promote("1"), promote("2"), promote("2")]) == "1"
    assert rollback_target([promote("1"), promote("2"), promote("2"), rolled_back("1")]) is None


def test_there_is_no_rollback_target_without_two_champions():
    assert rollback_target([]) is None
    assert rollback_target([promote("1")]) is None
    assert rollback_target([rolled_back("1")]) is None


# ---------------------------------------------------------------- on a real store


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MlflowStore, str, str]]:
    """One run with a small fitted model in a temporary SQLite store: (store, run id, model URI)."""
    home = tmp_path_factory.mktemp("registry")
    rng = np.random.default_rng(3)
    features = pd.DataFrame({"x1": rng.normal(size=60), "x2": rng.normal(size=60)})
    model = LogisticRegression().fit(features, (features["x1"] > 0).astype(int))
    store = MlflowStore(f"sqlite:///{home / 'mlflow.db'}", "registry-tests", (home / "artifacts").as_uri())
    with pytest.MonkeyPatch.context() as monkeypatch:
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
            # setenv first, so teardown restores the original even though MLflow itself writes these variables
            monkeypatch.setenv(name, "")
            monkeypatch.delenv(name)
        monkeypatch.chdir(home)
        run_id, model_uri = store.log_model_run(
            run_name="candidate", params={}, metrics={"f1": 0.5}, tags={}, model=model
        )
        yield store, run_id, model_uri
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)


@pytest.fixture
def client(logged) -> MlflowClient:
    return logged[0].client()


_names = itertools.count(1)


@pytest.fixture
def model_name(logged, client) -> str:
    """A new registered model with versions 1, 2 and 3 of the logged model, and no aliases."""
    _, run_id, model_uri = logged
    name = f"churn-{next(_names)}"
    client.create_registered_model(name)
    for _ in range(3):
        client.create_model_version(name, source=model_uri, run_id=run_id)
    return name


def champion(client: MlflowClient, name: str) -> str | None:
    holder = current_holder(client, name, "champion")
    return None if holder is None else str(holder)


def test_registering_through_the_store_gives_the_alias_and_records_the_first_event(logged, client):
    store, run_id, model_uri = logged
    version = store.register("fraud", model_uri, run_id, alias="champion", tags={"promotion_reason": "first"})

    assert version == "1"
    assert champion(client, "fraud") == "1"
    (event,) = alias_history(client, "fraud")
    assert (event.alias, event.version, event.action, event.previous, event.reason) == (
        "champion",
        "1",
        "promote",
        None,
        "first",
    )


def test_set_alias_moves_the_alias_and_records_the_previous_holder(client, model_name):
    first = set_alias(client, model_name, "champion", "1", reason="first model")
    second = set_alias(client, model_name, "champion", "2", reason="better f1")

    assert champion(client, model_name) == "2"
    assert (first.version, first.previous, first.action) == ("1", None, "promote")
    assert (second.version, second.previous, second.action, second.reason) == ("2", "1", "promote", "better f1")
    assert alias_history(client, model_name) == [first, second]


def test_the_previous_holder_is_recorded_as_a_version_string_like_the_version(client, model_name):
    set_alias(client, model_name, "champion", "1")
    event = set_alias(client, model_name, "champion", "2")
    assert event.previous == "1"
    assert alias_history(client, model_name)[-1].previous == "1"


def test_history_of_one_alias_leaves_out_the_others(client, model_name):
    set_alias(client, model_name, "champion", "1")
    set_alias(client, model_name, "challenger", "2")
    set_alias(client, model_name, "champion", "3")

    assert [e.version for e in alias_history(client, model_name, "champion")] == ["1", "3"]
    assert [e.version for e in alias_history(client, model_name, "challenger")] == ["2"]
    assert [e.alias for e in alias_history(client, model_name)] == ["champion", "challenger", "champion"]


def test_rolling_back_twice_goes_two_champions_back(client, model_name):
    for version in ("1", "2", "3"):
        set_alias(client, model_name, "champion", version)

    first = rollback(client, model_name)
    assert champion(client, model_name) == "2"
    assert (first.version, first.previous, first.action) == ("2", "3", "rollback")
    assert first.reason == "rolled back from v3"

    rollback(client, model_name)
    assert champion(client, model_name) == "1"

    with pytest.raises(RegistryError, match=f"'{model_name}': no earlier holder of 'champion'"):
        rollback(client, model_name)
    assert champion(client, model_name) == "1"


def test_a_rollback_without_an_earlier_holder_is_refused_naming_the_model(client, model_name):
    set_alias(client, model_name, "champion", "1")

    with pytest.raises(RegistryError, match=f"'{model_name}': no earlier holder of 'champion' is recorded"):
        rollback(client, model_name)
    assert champion(client, model_name) == "1"
    assert len(alias_history(client, model_name)) == 1


def test_a_rollback_of_an_alias_nobody_holds_is_refused(client, model_name):
    with pytest.raises(RegistryError, match=f"'{model_name}' has no 'champion' alias to roll back"):
        rollback(client, model_name)


def test_giving_the_alias_to_a_missing_version_is_refused_and_changes_nothing(client, model_name):
    set_alias(client, model_name, "champion", "1")

    with pytest.raises(RegistryError, match=f"'{model_name}' has no version '9'"):
        set_alias(client, model_name, "champion", "9")
    assert champion(client, model_name) == "1"
    assert len(alias_history(client, model_name)) == 1


def test_an_unknown_model_is_a_registry_error(client):
    for request in (
        lambda: set_alias(client, "no-such-model", "champion", "1"),
        lambda: rollback(client, "no-such-model"),
        lambda: alias_history(client, "no-such-model"),
        lambda: current_holder(client, "no-such-model", "champion"),
    ):
        with pytest.raises(RegistryError, match="no registered model named 'no-such-model'"):
            request()


def test_the_history_keeps_only_the_newest_max_events(client, model_name, monkeypatch):
    monkeypatch.setattr(registry, "MAX_EVENTS", 3)
    for version in ("1", "2", "3", "1", "2"):
        set_alias(client, model_name, "champion", version)

    history = alias_history(client, model_name)
    assert [e.version for e in history] == ["3", "1", "2"]
    assert champion(client, model_name) == "2"


def test_more_decisions_than_the_history_keeps_with_long_reasons_keep_the_newest_and_never_fail(client, model_name):
    # One growing tag failed at the 306th move of this size (MLflow's 100,000-character limit); the
    # history keeps the newest MAX_EVENTS, so more moves than that show both limits.
    moves = registry.MAX_EVENTS + 150
    reason = "beats the champion on this batch's held-out data: " + "r" * 150
    for decision in range(moves):
        set_alias(client, model_name, "champion", str(decision % 3 + 1), reason=f"{decision} {reason}")

    history = alias_history(client, model_name, "champion")
    assert len(history) == registry.MAX_EVENTS
    assert history[-1].reason.startswith(f"{moves - 1} ")
    assert history[0].reason.startswith(f"{moves - registry.MAX_EVENTS} ")
    assert champion(client, model_name) == str((moves - 1) % 3 + 1)
    event_tags = [key for key in client.get_registered_model(model_name).tags if key.startswith("ml_platform.alias")]
    assert len(event_tags) == registry.MAX_EVENTS


def test_a_history_kept_in_the_old_single_tag_is_read_and_moved_into_event_tags(client, model_name):
    old = [
        {"alias": "champion", "version": "1", "action": "promote", "previous": None, "at": "2026-01-01T00:00:00+00:00"},
        {"alias": "champion", "version": "2", "action": "promote", "previous": "1", "at": "2026-01-02T00:00:00+00:00"},
    ]
    client.set_registered_model_tag(model_name, "ml_platform.alias_history", json.dumps(old))
    assert [e.version for e in alias_history(client, model_name)] == ["1", "2"]

    set_alias(client, model_name, "champion", "3")

    assert [e.version for e in alias_history(client, model_name)] == ["1", "2", "3"]
    assert "ml_platform.alias_history" not in client.get_registered_model(model_name).tags
    assert rollback(client, model_name).version == "2"


def test_a_reason_longer_than_a_tag_allows_is_cut(client, model_name):
    set_alias(client, model_name, "champion", "1", reason="x" * 200_000)

    (event,) = alias_history(client, model_name)
    assert event.reason == "x" * registry.MAX_REASON_CHARS
