"""`ml-platform experiment|experiments|models` against temporary homes, in this process."""

from __future__ import annotations

import json

import pytest

from ml_platform_tests.conftest import Cli, PreparedHome, copy_home, small_config


@pytest.fixture(scope="module")
def cli(prepared_home: PreparedHome, tmp_path_factory: pytest.TempPathFactory) -> Cli:
    """A copy of the prepared home: two batches through the pipeline, so experiments have features
    and the registry two versions."""
    cli = Cli(tmp_path_factory.mktemp("cli_experiments"))
    copy_home(prepared_home.home, cli.home)
    cli.overrides["DAGSTER_HOME"] = str(cli.home / "dagster_home")
    return cli


@pytest.fixture(scope="module")
def session(cli: Cli) -> dict:
    """The README's session: two experiments with different models, both run."""
    boosting = cli.json("experiment", "create", "model=gradient_boosting", "model.params.n_estimators=30")
    logreg = cli.json(
        "experiment", "create", "experiment", "model=logistic_regression", "name=logreg-c05", "model.params.C=0.5"
    )
    runs = {
        "boosting": cli.json("experiment", "run", boosting["experiment_id"], "--batch", "batch_0001"),
        "logreg": cli.json("experiment", "run", logreg["experiment_id"]),
    }
    return {"boosting": boosting, "logreg": logreg, "runs": runs}


def test_create_validates_and_records_the_composed_config(session):
    boosting = session["boosting"]

    assert boosting["model_type"] == "gradient_boosting"
    assert boosting["params"] == {"n_estimators": 30, "learning_rate": 0.1}
    assert boosting["name"] == f"gradient_boosting-{boosting['config_hash'][:8]}"
    assert session["logreg"]["name"] == "logreg-c05"


def test_run_trains_on_the_named_or_the_newest_batch_and_reports_metrics(session):
    runs = session["runs"]

    assert runs["boosting"]["success"] and runs["boosting"]["batch"] == "batch_0001"
    assert runs["logreg"]["success"] and runs["logreg"]["batch"] == "batch_0002"
    assert 0 < runs["logreg"]["metrics"]["roc_auc"] <= 1


def test_list_status_compare_and_best_read_what_the_runs_recorded(cli, session, tmp_path):
    ids = [session["boosting"]["experiment_id"], session["logreg"]["experiment_id"]]

    listed = {row["experiment_id"]: row for row in cli.json("experiments", "list")}
    assert {listed[i]["runs"] for i in ids} == {1}

    status = cli.json("experiment", "status", ids[1])
    assert [(run["batch"], run["status"]) for run in status["runs"]] == [("batch_0002", "SUCCESS")]
    assert status["runs"][0]["dagster_run_id"] == session["runs"]["logreg"]["dagster_run_id"]

    plot = tmp_path / "compare.png"
    table = cli("experiment", "compare", *ids, "--plot", str(plot)).stdout
    assert "gradient_boosting-" in table and "logreg-c05" in table and "metrics.f1" in table
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    compared = cli.json("experiment", "compare", *ids)
    assert {row["run_id"] for row in compared} == {run["mlflow_run_id"] for run in session["runs"].values()}

    best = cli.json("experiment", "best", "--metric", "f1")
    f1 = {run["mlflow_run_id"]: run["metrics"]["f1"] for run in session["runs"].values()}
    assert best["run_id"] == max(f1, key=f1.get)
    worst = cli.json("experiment", "best", "--metric", "f1", "--mode", "min")
    assert worst["run_id"] == min(f1, key=f1.get)
    assert f"best by f1: experiment {best['experiment_id']}" in cli("experiment", "best", "--metric", "f1").stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["create", "model=xgboost"], "unknown model 'xgboost'; allowed: gradient_boosting, logistic_regression"),
        (["create", "model.params.n_estimators=-5"], "n_estimators: Input should be greater than 0"),
        (["create", "model.params.n_estimators=many"], "n_estimators: Input should be a valid integer"),
        (["create", "model.params.depth=3"], "Could not override 'model.params.depth'"),
        (["create", "+model.params.depth=3"], "depth: Extra inputs are not permitted"),
        (["create", "training.test_size=1.5"], "training.test_size: Input should be less than 1"),
        (["create", "no_such_config"], "no_such_config.yaml: config file not found"),
        (["create", "model=ridge"], "type 'ridge' does not fit task 'classification'"),
        (["run", "4242"], "no experiment '4242'"),
        (["status", "nope"], "no experiment 'nope'"),
        (["compare", "4242"], "no experiment '4242'"),
        (["best", "--metric", "loss"], "metric 'loss' has no known direction"),
    ],
)
def test_mistakes_get_one_clear_line_and_exit_2(cli, args, message):
    result = cli("experiment", *args, exit_code=2)

    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_refused_config_records_nothing(cli, session):
    before = cli.json("experiments", "list")

    for override in ("model=xgboost", "model.params.n_estimators=-5", "+model.params.depth=3"):
        cli("experiment", "create", override, exit_code=2)

    assert cli.json("experiments", "list") == before


def test_a_run_on_an_unknown_batch_or_before_any_run_is_refused(cli, session, tmp_path_factory):
    experiment_id = session["logreg"]["experiment_id"]
    assert (
        "unknown batch 'batch_0042'"
        in cli("experiment", "run", experiment_id, "--batch", "batch_0042", exit_code=2).stderr
    )

    empty = Cli(tmp_path_factory.mktemp("empty_home"))
    assert "no experiments yet" in empty("experiment", "best", "--metric", "f1", exit_code=2).stderr
    created = empty.json("experiment", "create", "model=logistic_regression")
    assert "no finished runs yet" in empty("experiment", "compare", created["experiment_id"], exit_code=2).stderr
    assert "no batch has features yet" in empty("experiment", "run", created["experiment_id"], exit_code=2).stderr


def test_models_list_promote_rollback_and_history(cli):
    name = small_config().promotion.registered_model_name
    models = {row["name"]: row for row in json.loads(cli.installed("models", "list", "--json").stdout)}
    assert models[name]["latest_version"] == "2"
    champion_before = models[name]["aliases"]

    cli("models", "promote", name, "2")
    cli("models", "promote", name, "1")
    assert "champion=v1" in {row["name"]: row for row in cli.json("models", "list")}[name]["aliases"]
    assert "v1 -> v2" in cli("models", "rollback", name).stdout

    history = cli.json("models", "history", name, "--alias", "champion")
    assert [(event["action"], event["version"]) for event in history][-3:] == [
        ("promote", "2"),
        ("promote", "1"),
        ("rollback", "2"),
    ]
    assert champion_before  # the pipeline had crowned a champion before
    assert "has no version '9'" in cli("models", "promote", name, "9", exit_code=2).stderr
    assert "no registered model named 'nope'" in cli("models", "rollback", "nope", exit_code=2).stderr


def test_every_experiment_and_models_command_has_help_with_an_example(cli):
    commands = [["experiment", c] for c in ("create", "run", "status", "compare", "best")]
    commands += [["experiments", "list"], *(["models", c] for c in ("list", "promote", "rollback", "history"))]
    for command in commands:
        assert "Example:" in cli(*command, "--help").stdout
