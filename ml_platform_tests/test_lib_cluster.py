"""The cluster on paper: its layout, secrets and the configuration each part reads (`lib/cluster.py`)."""

from pathlib import Path

import pytest
import yaml

from ml_platform.defs.definitions import executor_for
from ml_platform.lib.cluster import (
    SECRET_VARIABLES,
    ClusterLayout,
    ClusterPorts,
    cluster_environment,
    dagster_yaml,
    generate_secrets,
    postgres_version_problem,
    read_env_file,
    redis_conf,
    supervisord_conf,
    taken_ports,
    write_env_file,
)
from ml_platform.lib.settings import PROJECT_ROOT, Settings


@pytest.fixture
def layout(tmp_path: Path) -> ClusterLayout:
    return ClusterLayout(
        root=tmp_path / "cluster",
        project_root=PROJECT_ROOT,
        venv_bin=Path("/venv/bin"),
        home=tmp_path / "home",
        config_path=tmp_path / "platform.yaml",
        ports=ClusterPorts(postgres=15432, redis=16379, mlflow=15000, dagster=13000),
        workers=3,
    )


def test_secrets_are_fresh_and_written_for_the_owner_only(tmp_path: Path) -> None:
    first, second = generate_secrets(), generate_secrets()
    assert first != second
    assert all(len(value) == 32 and int(value, 16) >= 0 for value in first.values())

    write_env_file(tmp_path / "secrets.env", first)

    assert (tmp_path / "secrets.env").stat().st_mode & 0o777 == 0o600
    assert read_env_file(tmp_path / "secrets.env") == first


def test_an_env_file_line_without_a_value_names_the_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "secrets.env").write_text("A=1\nbroken\n")
    with pytest.raises(ValueError, match=r"secrets.env: line 2: expected KEY=value"):
        read_env_file(tmp_path / "secrets.env")


def test_every_part_and_client_shares_one_environment(layout: ClusterLayout) -> None:
    env = cluster_environment(layout, {"ML_PLATFORM_PG_PASSWORD": "pg", "ML_PLATFORM_REDIS_PASSWORD": "rd"})

    assert env["ML_PLATFORM_DEPLOYMENT"] == "cluster"
    assert env["DAGSTER_HOME"] == str(layout.dagster_home)
    assert env["ML_PLATFORM_DATA_DIR"] == str(layout.shared_dir)
    assert env["ML_PLATFORM_HOME"] == str(layout.home)
    assert env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:15000"
    assert env["ML_PLATFORM_CELERY_BROKER"] == "redis://:rd@127.0.0.1:16379/0"
    assert env["MLFLOW_BACKEND_STORE_URI"] == "postgresql+psycopg2://ml_platform:pg@127.0.0.1:15432/mlflow"
    assert set(SECRET_VARIABLES) <= set(env)


def test_the_clusters_dagster_yaml_keeps_the_embedded_policies_on_postgres_without_a_password(
    layout: ClusterLayout,
) -> None:
    embedded = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())

    config = dagster_yaml(embedded, layout)

    assert config["concurrency"] == embedded["concurrency"]  # one run per batch, the registry pool
    assert config["run_retries"] == embedded["run_retries"]
    assert config["run_monitoring"]["max_runtime_seconds"] == layout.max_run_seconds
    database = config["storage"]["postgres"]["postgres_db"]
    assert database["password"] == {"env": "ML_PLATFORM_PG_PASSWORD"}
    assert database["scheme"] == "postgresql+psycopg2"


def test_supervisord_runs_each_part_on_localhost_started_in_order_and_bounded_logs(layout: ClusterLayout) -> None:
    conf = supervisord_conf(layout, Path("/pg/bin"), Path("/usr/bin/redis-server"), run_as="postgres")

    programs = [
        line.removeprefix("[program:").rstrip("]") for line in conf.splitlines() if line.startswith("[program:")
    ]
    assert programs == layout.part_names()
    assert layout.start_stages()[0] == ["postgres", "redis"]
    assert conf.count("autostart=false") == len(programs)  # the cluster starts them, stage by stage
    assert conf.count("stdout_logfile_maxbytes=10MB") == len(programs)
    assert "-c listen_addresses=127.0.0.1" in conf
    assert "server --host 127.0.0.1 --port 15000" in conf
    assert "-h 127.0.0.1 -p 13000" in conf
    assert conf.count("user=postgres") == 1
    for number in (1, 2, 3):
        assert f"TMPDIR={layout.worker_dir(number) / 'tmp'}" in conf
        assert f"directory={layout.worker_dir(number)}" in conf


def test_a_cluster_started_by_another_user_runs_postgres_as_that_user(layout: ClusterLayout) -> None:
    assert "user=" not in supervisord_conf(layout, Path("/pg/bin"), Path("/usr/bin/redis-server"), run_as=None)


def test_redis_listens_on_localhost_with_a_password_and_keeps_its_queue_on_disk(layout: ClusterLayout) -> None:
    conf = redis_conf(layout, "secret").splitlines()
    assert {"bind 127.0.0.1", "port 16379", "requirepass secret", "appendonly yes"} <= set(conf)


def test_a_taken_port_is_one_line_naming_the_part_and_the_option(layout: ClusterLayout) -> None:
    problems = taken_ports(layout.ports, lambda port: port != 13000)
    assert problems == [
        "port 13000 (dagster-webserver) is taken by another process: stop it, or start the cluster with --dagster-port"
    ]


def test_a_postgres_folder_from_another_version_is_refused_before_starting(tmp_path: Path) -> None:
    assert postgres_version_problem(tmp_path, 15) is None  # no cluster yet
    (tmp_path / "PG_VERSION").write_text("15\n")
    assert postgres_version_problem(tmp_path, 15) is None
    (tmp_path / "PG_VERSION").write_text("13\n")
    assert "made by PostgreSQL 13, this machine has 15" in postgres_version_problem(tmp_path, 15)


def test_the_data_dir_moves_what_the_pipeline_writes_and_leaves_the_incoming_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ML_PLATFORM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ML_PLATFORM_DATA_DIR", str(tmp_path / "shared"))

    settings = Settings.from_env()

    for written in (settings.warehouse_dir, settings.reports_dir, settings.step_outputs_dir, settings.dbt_runs_dir):
        assert written.is_relative_to(tmp_path / "shared")
    assert settings.mlflow_dir.is_relative_to(tmp_path / "home")


def test_an_unknown_deployment_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ML_PLATFORM_DEPLOYMENT", "kubernetes")
    with pytest.raises(ValueError, match="ML_PLATFORM_DEPLOYMENT='kubernetes': expected one of embedded, cluster"):
        Settings.from_env()


def test_the_cluster_runs_steps_on_celery_and_the_embedded_deployment_in_process(tmp_path: Path) -> None:
    embedded = Settings(home=tmp_path, config_path=tmp_path / "x.yaml")
    cluster = Settings(home=tmp_path, config_path=tmp_path / "x.yaml", deployment="cluster")

    assert executor_for(embedded).name == "in_process"
    assert executor_for(cluster).name == "celery_on_cluster"
