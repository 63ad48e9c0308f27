"""Shared fixtures: a platform under test with its own home, Dagster instance and MLflow store.

Every test that runs the pipeline gets a temporary ML_PLATFORM_HOME (incoming batches,
warehouse, reports, SQLite MLflow store) and a temporary DAGSTER_HOME, so tests never touch the
project's own state and can run in any order.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import dagster as dg
import duckdb
import pytest
import yaml
from dagster._core.storage.defs_state.base import set_defs_state_storage

from ml_platform.lib.config import DataConfig, PlatformConfig, load_config
from ml_platform.lib.demo_data import write_demo_batches
from ml_platform.lib.settings import DEFAULT_CONFIG_PATH, PROJECT_ROOT, Settings
from ml_platform_tests.servers import RecordingHTTPServer, http_servers

ML_PLATFORM = str(Path(sys.executable).parent / "ml-platform")


def small_config(**changes) -> PlatformConfig:
    """The default config with small models, so a whole pipeline run takes seconds."""
    raw = load_config(DEFAULT_CONFIG_PATH).model_dump(mode="json")
    raw["models"]["random_forest"]["params"].update(n_estimators=25, max_depth=6)
    raw["models"]["gradient_boosting"]["params"].update(n_estimators=40)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split(".")
        node = raw
        for part in parents:
            node = node[part]
        node[leaf] = value
    return PlatformConfig.model_validate(raw)


def inherited_environment() -> dict[str, str]:
    """This process's environment for a subprocess, without a tracking URI that would point it elsewhere
    (MLflow writes MLFLOW_TRACKING_URI into the environment of whoever used its fluent API)."""
    return {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}


def subprocess_environment(directory: Path, config: PlatformConfig, platform_home: Path) -> dict[str, str]:
    """The environment for `ml-platform` and Dagster commands run as subprocesses on `config`.

    Writes the config to `directory/platform.yaml` and a DAGSTER_HOME at `directory/dagster_home`
    holding the project's dagster.yaml; MLflow is the platform's own SQLite store under `platform_home`.
    """
    config_path = directory / "platform.yaml"
    config_path.write_text(yaml.safe_dump(config.model_dump(mode="json", by_alias=True)))
    dagster_home = directory / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    return {
        **inherited_environment(),
        "ML_PLATFORM_HOME": str(platform_home),
        "ML_PLATFORM_CONFIG": str(config_path),
        "DAGSTER_HOME": str(dagster_home),
    }


@dataclass(frozen=True)
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


class Cli:
    """`ml-platform` in one home (ML_PLATFORM_HOME, DAGSTER_HOME, a SQLite MLflow store), on `small_config`.

    Calling it runs a command in this process through typer's CliRunner: the same code and exit codes
    at a fraction of a subprocess's start-up (seconds of imports each). `installed(...)` runs the
    console script itself, for what is about the entry point: its environment, its real stdout and stderr.
    """

    def __init__(self, root: Path, config: PlatformConfig | None = None):
        root.mkdir(parents=True, exist_ok=True)
        config_path = root / "platform.yaml"
        config_path.write_text(yaml.safe_dump((config or small_config()).model_dump(mode="json")))
        self.root = root
        self.home = root / "home"
        self.overrides = {
            "ML_PLATFORM_HOME": str(self.home),
            "ML_PLATFORM_CONFIG": str(config_path),
            "DAGSTER_HOME": str(root / "dagster_home"),
            "COLUMNS": "250",
        }

    @property
    def env(self) -> dict[str, str]:
        """The environment of `installed` commands: this process's, with the home's settings."""
        return {**inherited_environment(), **self.overrides}

    def __call__(self, *args: str, exit_code: int = 0) -> CliResult:
        from typer.testing import CliRunner

        from ml_platform.cli import app

        # The environment is put back as it was: `--deployment cluster` points the command's process at the cluster.
        with pytest.MonkeyPatch.context() as monkeypatch, mock.patch.dict(os.environ):
            monkeypatch.chdir(self.root)  # as `installed` runs: a stray relative path lands in the test's folder
            monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
            result = CliRunner().invoke(app, list(args), env=self.overrides, catch_exceptions=False)
        return _expected(CliResult(result.exit_code, result.stdout, result.stderr), exit_code)

    def installed(self, *args: str, exit_code: int = 0) -> CliResult:
        result = subprocess.run(
            [ML_PLATFORM, *args], env=self.env, cwd=self.root, capture_output=True, text=True, timeout=600
        )
        return _expected(CliResult(result.returncode, result.stdout, result.stderr), exit_code)

    def json(self, *args: str):
        return json.loads(self(*args, "--json").stdout)


def _expected(outcome: CliResult, exit_code: int) -> CliResult:
    assert outcome.exit_code == exit_code, f"exit {outcome.exit_code}\n{outcome.stdout}\n{outcome.stderr}"
    return outcome


def overlapping_entries(lock: Callable[[], AbstractContextManager], threads: int = 4) -> int:
    """How often a thread entered `lock()` while another was inside: 0 for a working lock."""
    inside, overlaps = [], []

    def enter() -> None:
        with lock():
            if inside:
                overlaps.append(True)
            inside.append(True)
            time.sleep(0.05)
            inside.pop()

    workers = [threading.Thread(target=enter) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return len(overlaps)


@dataclass
class PlatformUnderTest:
    settings: Settings
    config: PlatformConfig
    instance: dg.DagsterInstance

    @property
    def incoming_dir(self) -> Path:
        return self.settings.incoming_dir(self.config)

    def write_batches(self, count: int, rows: int = 2000, first: int = 1, **kwargs) -> list[str]:
        paths = write_demo_batches(self.incoming_dir, count, rows, first_batch=first, **kwargs)
        batch_ids = [path.stem for path in paths]
        self.instance.add_dynamic_partitions("batches", batch_ids)
        return batch_ids

    def add_batch_file(self, batch_id: str, content: bytes) -> Path:
        path = self.incoming_dir / f"{batch_id}.{self.config.data.file_format}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        self.instance.add_dynamic_partitions("batches", [batch_id])
        return path

    def materialize(self, batch_id: str, config: PlatformConfig | None = None, **kwargs) -> dg.ExecuteInProcessResult:
        from ml_platform.defs.definitions import build_batch_assets, build_resources

        config = config or self.config
        # Definitions load against this instance's state storage, whatever another test left current.
        with set_defs_state_storage(self.instance.defs_state_storage):
            return dg.materialize(
                build_batch_assets(config),
                resources=build_resources(config, self.settings),
                partition_key=batch_id,
                instance=self.instance,
                **kwargs,
            )

    def mlflow(self, config: PlatformConfig | None = None):
        from ml_platform.defs.definitions import build_resources

        return build_resources(config or self.config, self.settings)["mlflow"].process_config_and_initialize().store


@pytest.fixture(scope="module")
def data() -> DataConfig:
    """The default config's data set and its contract (the demo churn data)."""
    return load_config(DEFAULT_CONFIG_PATH).data


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB connection, closed after the test."""
    with duckdb.connect() as connection:
        yield connection


@pytest.fixture(scope="session")
def empty_mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated, empty MLflow SQLite store: migrating one takes seconds, a copy starts each platform's."""
    from mlflow import MlflowClient

    folder = tmp_path_factory.mktemp("empty-mlflow")
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(folder)  # MLflow's own "Default" experiment keeps artifacts under ./mlruns
        MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}").search_experiments()
    return folder / "mlflow.db"


@pytest.fixture
def platform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, empty_mlflow_store: Path) -> Iterator[PlatformUnderTest]:
    yield from _platform(tmp_path, monkeypatch, small_config(), empty_mlflow_store)


@pytest.fixture(scope="module")
def module_platform(tmp_path_factory: pytest.TempPathFactory, empty_mlflow_store: Path) -> Iterator[PlatformUnderTest]:
    """One platform for a module whose tests read the results of the same runs."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield from _platform(tmp_path_factory.mktemp("platform"), monkeypatch, small_config(), empty_mlflow_store)


@dataclass(frozen=True)
class PreparedHome:
    """A home with two demo batches (1,500 rows, drift 0.03) through the whole pipeline on `small_config`:
    batch_0001 crowned the first champion, batch_0002 was compared with it. `results` are the two runs."""

    home: Path
    results: dict[str, dg.ExecuteInProcessResult]


@pytest.fixture(scope="session")
def prepared_home(tmp_path_factory: pytest.TempPathFactory, empty_mlflow_store: Path) -> PreparedHome:
    """Built once per test session; tests get copies of it (`two_batches`), which cost a file copy, not two runs."""
    home = tmp_path_factory.mktemp("prepared-home")
    with pytest.MonkeyPatch.context() as monkeypatch, set_defs_state_storage(None):
        for platform in _platform(home, monkeypatch, small_config(), empty_mlflow_store):
            results = {batch: platform.materialize(batch) for batch in platform.write_batches(2, rows=1500, drift=0.03)}
    assert all(result.success for result in results.values()), results
    return PreparedHome(home, results)


def copy_home(source: Path, target: Path) -> Path:
    """A copy of a platform's home that refers only to itself: absolute paths inside its SQLite
    databases (MLflow's artifact locations, paths in Dagster's event metadata) move to `target`."""
    shutil.copytree(source, target, symlinks=True)
    for database in target.rglob("*.db"):
        with contextlib.closing(sqlite3.connect(database)) as connection, connection:
            tables = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
            for (table,) in tables:
                for column in connection.execute(f'PRAGMA table_info("{table}")').fetchall():
                    connection.execute(
                        f'UPDATE "{table}" SET "{column[1]}" = replace("{column[1]}", ?, ?) '
                        f'WHERE typeof("{column[1]}") = \'text\' AND instr("{column[1]}", ?) > 0',
                        (f"{source}/", f"{target}/", f"{source}/"),
                    )
    return target


@pytest.fixture
def two_batches(prepared_home: PreparedHome, tmp_path: Path, monkeypatch) -> Iterator[PlatformUnderTest]:
    """A copy of the prepared home: two batches through the pipeline, a champion, for this test alone."""
    yield from _platform(copy_home(prepared_home.home, tmp_path / "home"), monkeypatch, small_config())


@pytest.fixture(scope="module")
def module_two_batches(prepared_home: PreparedHome, tmp_path_factory: pytest.TempPathFactory):
    """A copy of the prepared home shared by a module's tests."""
    home = copy_home(prepared_home.home, tmp_path_factory.mktemp("two-batches") / "home")
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield from _platform(home, monkeypatch, small_config())


def _platform(
    home: Path, monkeypatch: pytest.MonkeyPatch, config: PlatformConfig, empty_mlflow_store: Path | None = None
) -> Iterator[PlatformUnderTest]:
    monkeypatch.setenv("ML_PLATFORM_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster_home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("ML_PLATFORM_CONFIG", raising=False)
    settings = Settings(home=home, config_path=DEFAULT_CONFIG_PATH)
    (home / "dagster_home").mkdir(parents=True, exist_ok=True)
    if empty_mlflow_store is not None:
        settings.mlflow_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(empty_mlflow_store, settings.mlflow_dir / "mlflow.db")
    with dg.instance_for_test(temp_dir=str(home / "dagster_home")) as instance:
        yield PlatformUnderTest(settings, config, instance)


@pytest.fixture
def start_http_server() -> Iterator[Callable[..., RecordingHTTPServer]]:
    """Start real HTTP servers on 127.0.0.1 that record every POST (`start(status=200)`)."""
    with http_servers() as start:
        yield start


@pytest.fixture
def http_server(start_http_server) -> RecordingHTTPServer:
    return start_http_server(200)


@pytest.fixture(autouse=True)
def definitions_state_storage_ends_with_the_test() -> Iterator[None]:
    """Each test starts with no current definitions-state storage and leaves none behind.

    Entering a DagsterInstance makes its storage the current one and disposing it does not undo
    that (dagster 1.13), so a later test would load definitions against a disposed instance and
    fail with "Attempted to resolve undefined DagsterInstance weakref".
    """
    with set_defs_state_storage(None):
        yield
