"""The config schema: the default file loads, and every bad config is refused naming its key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from ml_platform.lib.config import (
    PARAMS_BY_MODEL_TYPE,
    ConfigError,
    DataConfig,
    PlatformConfig,
    canonical_param_names,
    compose_config,
    format_validation_error,
    load_config,
    load_experiment_config,
    validate_model_params,
)
from ml_platform.lib.settings import DEFAULT_CONFIG_PATH, DEFAULT_EXPERIMENT_CONFIG_PATH


def default_raw() -> dict:
    """The default config composed into one standalone mapping, with the seed interpolation restored."""
    raw = compose_config(DEFAULT_CONFIG_PATH)
    raw["training"]["random_state"] = "${seed}"
    return raw


def write_config(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "platform.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_default_config_loads_and_resolves_seed_interpolation():
    config = load_config(DEFAULT_CONFIG_PATH)

    assert config.seed == 42
    assert config.training.random_state == 42
    assert config.data.task == "classification"
    assert set(config.models) == {"random_forest", "gradient_boosting", "logistic_regression"}
    assert config.promotion.primary_metric == "roc_auc"
    assert config.primary_metric_mode == "max"


def test_changing_the_seed_changes_the_interpolated_random_state(tmp_path):
    raw = default_raw()
    raw["seed"] = 7

    config = load_config(write_config(tmp_path, raw))

    assert config.training.random_state == 7


def churn_data_with(column: str, spec: dict) -> dict:
    """The churn data contract with one column replaced (read as plain YAML: no Hydra, milliseconds)."""
    raw = yaml.safe_load((DEFAULT_CONFIG_PATH.parent / "data" / "churn.yaml").read_text())
    raw["columns"][column] = spec
    return raw


def contract_error(raw: dict) -> str:
    with pytest.raises(ValidationError) as error:
        DataConfig.model_validate(raw)
    return format_validation_error(error.value)


@pytest.mark.parametrize(
    "target, classes",
    [
        ({"type": "integer", "min": 0, "max": 1}, [0, 1]),
        ({"type": "boolean"}, [False, True]),
        ({"type": "category", "allowed": ["stayed", "churned"]}, ["stayed", "churned"]),
        ({"type": "category", "allowed": ["bronze", "silver", "gold"]}, ["bronze", "silver", "gold"]),
        ({"type": "integer", "allowed": [3, 1, 2]}, [3, 1, 2]),
        ({"type": "integer", "min": 1, "max": 4}, [1, 2, 3, 4]),
    ],
)
def test_a_classification_target_takes_its_labels_from_the_contract(target, classes):
    data = DataConfig.model_validate(churn_data_with("churned", {**target, "nullable": False}))

    assert data.classes == classes


@pytest.mark.parametrize(
    "target, message",
    [
        (
            {"type": "category", "allowed": ["yes"]},
            "the classification target 'churned' has 1 label(s) ['yes']; a classifier needs at least two",
        ),
        ({"type": "integer", "min": 1, "max": 1}, "the classification target 'churned' has 1 label(s) [1]"),
        ({"type": "integer"}, "'churned' is integer without labels"),
        ({"type": "string"}, "'churned' is string without labels"),
        ({"type": "integer", "min": 0, "max": 500}, "spans 0 to 500, more than 100 classes"),
    ],
)
def test_a_classification_target_without_two_labels_is_refused_by_name(target, message):
    assert message in contract_error(churn_data_with("churned", {**target, "nullable": False}))


@pytest.mark.parametrize(
    "column, message",
    [
        ({"type": "integer", "allowed": ["1", "2"]}, "columns.region: 'allowed' of an integer column must be"),
        ({"type": "float", "allowed": [1, 2]}, "'allowed' is only valid for columns of type 'category' or 'integer'"),
        ({"type": "category", "allowed": ["a", "b", "a"]}, "'allowed' names a value twice: ['a', 'b', 'a']"),
    ],
)
def test_allowed_values_must_fit_the_column_type(column, message):
    assert message in contract_error(churn_data_with("region", column))


def test_column_names_must_be_plain_identifiers(tmp_path):
    raw = default_raw()
    raw["data"]["columns"]['age"; drop table x; --'] = {"type": "integer"}

    with pytest.raises(ConfigError, match=r"data.columns.*should match pattern"):
        load_config(write_config(tmp_path, raw))


def test_logged_config_leaves_out_the_tracking_uri_and_so_does_its_hash(tmp_path):
    raw = default_raw()
    raw["tracking"]["tracking_uri"] = "https://bob:s3cret@mlflow.example.com"
    with_server = load_config(write_config(tmp_path, raw))

    assert "s3cret" not in str(with_server.loggable())
    assert with_server.config_hash() == load_config(DEFAULT_CONFIG_PATH).config_hash()


def test_missing_config_file_is_refused_naming_the_path(tmp_path):
    missing = tmp_path / "nowhere" / "platform.yaml"

    with pytest.raises(ConfigError, match="config file not found") as error:
        load_config(missing)

    assert str(missing) in str(error.value)


def test_unknown_model_type_lists_the_allowed_types(tmp_path):
    raw = default_raw()
    raw["models"]["random_forest"]["type"] = "xgboost"

    with pytest.raises(ConfigError) as error:
        load_config(write_config(tmp_path, raw))

    message = str(error.value)
    assert "models.random_forest" in message
    assert "'xgboost'" in message
    for model_type in PARAMS_BY_MODEL_TYPE:
        assert model_type in message


def test_negative_n_estimators_is_refused_naming_the_key(tmp_path):
    raw = default_raw()
    raw["models"]["random_forest"]["params"]["n_estimators"] = -5

    with pytest.raises(ConfigError) as error:
        load_config(write_config(tmp_path, raw))

    assert "models.random_forest" in str(error.value)
    assert "n_estimators" in str(error.value)


@pytest.mark.parametrize(
    ("section", "typo"),
    [
        (None, "sed"),
        ("data", "targte"),
        ("training", "test_sise"),
        ("promotion", "min_improvment"),
    ],
)
def test_unknown_key_is_refused_naming_it(tmp_path, section, typo):
    raw = default_raw()
    (raw if section is None else raw[section])[typo] = 1

    with pytest.raises(ConfigError, match="Extra inputs are not permitted") as error:
        load_config(write_config(tmp_path, raw))

    assert typo in str(error.value)
    assert str(tmp_path / "platform.yaml") in str(error.value)


def test_misspelled_model_param_is_refused_naming_it(tmp_path):
    raw = default_raw()
    raw["models"]["random_forest"]["params"]["max_dept"] = 3

    with pytest.raises(ConfigError) as error:
        load_config(write_config(tmp_path, raw))

    assert "max_dept" in str(error.value)


def test_model_type_that_does_not_fit_the_task_is_refused(tmp_path):
    raw = default_raw()
    raw["models"]["ridge"] = {"type": "ridge", "params": {"alpha": 1.0}}

    with pytest.raises(ConfigError) as error:
        load_config(write_config(tmp_path, raw))

    message = str(error.value)
    assert "models.ridge" in message
    assert "does not fit task 'classification'" in message
    assert "logistic_regression" in message


def test_primary_metric_not_of_the_task_is_refused(tmp_path):
    raw = default_raw()
    raw["promotion"]["primary_metric"] = "rmse"

    with pytest.raises(ConfigError) as error:
        load_config(write_config(tmp_path, raw))

    message = str(error.value)
    assert "promotion.primary_metric 'rmse'" in message
    assert "roc_auc" in message


def test_regression_config_gets_rmse_and_derived_names_by_default(tmp_path):
    raw = default_raw()
    raw["data"]["task"] = "regression"
    raw["data"]["target"] = "monthly_charges"
    raw["models"] = {"ridge": {"type": "ridge"}, "forest": {"type": "random_forest"}}
    raw["promotion"] = {}
    raw["tracking"] = {}

    config = load_config(write_config(tmp_path, raw))

    assert config.promotion.primary_metric == "rmse"
    assert config.primary_metric_mode == "min"
    assert config.promotion.registered_model_name == "churn_regression"
    assert config.tracking.experiment_name == "ml_platform/churn"


def test_target_must_be_a_contract_column(tmp_path):
    raw = default_raw()
    raw["data"]["target"] = "left_us"

    with pytest.raises(ConfigError, match="target 'left_us' is not one of the contract's columns"):
        load_config(write_config(tmp_path, raw))


def test_invalid_yaml_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("seed: 42\ndata: [unclosed\n")

    with pytest.raises(ConfigError) as error:
        load_config(path)

    assert str(path) in str(error.value)


def test_gradient_boosting_accepts_n_estimators_as_alias_of_max_iter():
    assert validate_model_params("gradient_boosting", {"n_estimators": 77})["max_iter"] == 77
    assert validate_model_params("gradient_boosting", {"max_iter": 77})["max_iter"] == 77


def test_validate_model_params_fills_in_defaults():
    params = validate_model_params("logistic_regression", {"C": 0.5})

    assert params == {"C": 0.5, "max_iter": 1000, "class_weight": None}


def test_validate_model_params_refuses_a_non_positive_value_naming_the_key():
    with pytest.raises(ValidationError) as error:
        validate_model_params("random_forest", {"n_estimators": 0})

    assert "n_estimators" in str(error.value)


def test_config_hash_is_stable_across_loads():
    first = load_config(DEFAULT_CONFIG_PATH).config_hash()
    second = load_config(DEFAULT_CONFIG_PATH).config_hash()

    assert first == second
    assert len(first) == 16
    assert all(char in "0123456789abcdef" for char in first)


def test_config_hash_changes_when_a_model_param_changes():
    raw = load_config(DEFAULT_CONFIG_PATH).model_dump(mode="json")
    original = PlatformConfig.model_validate(raw).config_hash()
    raw["models"]["random_forest"]["params"]["max_depth"] = 11

    assert PlatformConfig.model_validate(raw).config_hash() != original


def test_alias_and_field_names_merge_as_one_param():
    from_file = canonical_param_names("gradient_boosting", {"n_estimators": 150, "learning_rate": 0.1})
    override = canonical_param_names("gradient_boosting", {"max_iter": 50})
    assert validate_model_params("gradient_boosting", {**from_file, **override})["max_iter"] == 50
    assert canonical_param_names("random_forest", {"n_estimators": 5}) == {"n_estimators": 5}


# ---------------------------------------------------------------- composition (Hydra) and experiments


def test_the_platform_config_composes_its_models_from_the_model_group():
    config = load_config(DEFAULT_CONFIG_PATH)
    group_file = yaml.safe_load((DEFAULT_CONFIG_PATH.parent / "model" / "gradient_boosting.yaml").read_text())

    assert config.models["gradient_boosting"].model_dump() == group_file


def test_overrides_apply_to_the_platform_config():
    config = load_config(DEFAULT_CONFIG_PATH, ["models.random_forest.params.n_estimators=7", "seed=3"])

    assert config.models["random_forest"].params["n_estimators"] == 7
    assert config.training.random_state == 3  # ${seed} resolves after the override


def test_experiment_config_takes_defaults_then_overrides():
    config = load_experiment_config(
        DEFAULT_EXPERIMENT_CONFIG_PATH,
        ["model=gradient_boosting", "model.params.n_estimators=200", "training.test_size=0.25"],
    )

    assert config.model.type == "gradient_boosting"
    assert config.model.params == {"n_estimators": 200, "learning_rate": 0.1}
    assert config.training.test_size == 0.25
    assert config.training.random_state == config.seed == 42
    assert config.data == load_config(DEFAULT_CONFIG_PATH).data  # the same data group as the pipeline


def test_experiment_hash_ignores_name_and_description_but_not_settings():
    base = load_experiment_config(DEFAULT_EXPERIMENT_CONFIG_PATH, ["name=a"])
    renamed = load_experiment_config(DEFAULT_EXPERIMENT_CONFIG_PATH, ["name=b", "description=another try"])
    changed = load_experiment_config(DEFAULT_EXPERIMENT_CONFIG_PATH, ["name=a", "training.test_size=0.3"])

    assert base.config_hash() == renamed.config_hash() != changed.config_hash()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model=xgboost"], "model=xgboost: unknown model 'xgboost'; allowed: gradient_boosting, logistic_regression"),
        (["model.params.n_estimators=-1"], "model: params of random_forest: n_estimators: Input should be greater"),
        (["model.params.n_estimators=ten"], "n_estimators: Input should be a valid integer"),
        (["model.params.depth=4"], "Could not override 'model.params.depth': Key 'depth' is not in struct"),
        (["+model.params.depth=4"], "depth: Extra inputs are not permitted"),
        (["training=weekly"], "training=weekly: unknown training 'weekly'; allowed: default"),
        (["model=ridge"], "model: type 'ridge' does not fit task 'classification'"),
        (["name=../escape"], "name: String should match pattern"),
        (["training.test_size"], "Error parsing override 'training.test_size'"),
    ],
)
def test_bad_experiment_overrides_are_one_line_naming_the_key(overrides, message):
    with pytest.raises(ConfigError) as error:
        load_experiment_config(DEFAULT_EXPERIMENT_CONFIG_PATH, overrides)

    assert message in str(error.value)
    assert str(DEFAULT_EXPERIMENT_CONFIG_PATH) in str(error.value)
    assert "\n" not in str(error.value)


def test_a_config_that_is_not_yaml_is_refused(tmp_path):
    path = tmp_path / "experiment.json"
    path.write_text("{}")

    with pytest.raises(ConfigError, match="expected a .yaml file"):
        load_experiment_config(path)


def test_unquoted_yes_no_labels_are_refused_saying_yaml_read_them_as_booleans_and_to_quote_them(tmp_path):
    path = tmp_path / "platform.yaml"
    raw = default_raw()
    raw["data"]["columns"]["region"] = "REGION"
    path.write_text(
        yaml.safe_dump(raw, sort_keys=False).replace("region: REGION", "region: {type: category, allowed: [No, Yes]}")
    )

    with pytest.raises(ConfigError) as error:
        load_config(path)

    assert "data.columns.region.allowed" in str(error.value)
    assert "YAML read 2 label(s) of 'allowed' as a boolean (False, True)" in str(error.value)
    assert 'allowed: ["No", "Yes"]' in str(error.value)


@pytest.mark.parametrize(
    ("split", "message"),
    [
        ({"strategy": "time"}, "time_column is required by strategy 'time'"),
        ({"strategy": "random", "time_column": "age"}, "time_column is required by strategy 'time', and only valid"),
        ({"strategy": "time", "time_column": "signup"}, "time_column 'signup' is not one of the contract's columns"),
        ({"strategy": "time", "time_column": "region"}, "'region' must be an integer or float column"),
        ({"strategy": "time", "time_column": "age"}, "'age' must be nullable: false"),
    ],
)
def test_a_time_split_needs_a_number_column_of_the_contract(tmp_path, split, message):
    raw = default_raw()
    raw["training"]["split"] = split

    with pytest.raises(ConfigError, match=message):
        load_config(write_config(tmp_path, raw))


def test_a_time_split_on_a_number_column_loads(tmp_path):
    raw = default_raw()
    raw["training"]["split"] = {"strategy": "time", "time_column": "tenure_months"}

    assert load_config(write_config(tmp_path, raw)).training.split.time_column == "tenure_months"
