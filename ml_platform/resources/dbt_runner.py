"""dbt as a Dagster resource that builds in the step's own process, through dbt's Python API.

dagster-dbt's `DbtCliResource` starts `dbt --version`, loads dbt's macros into the step for an
adapter handle this project never uses, and then starts `dbt build`, which parses the project
again because every batch has its own vars: 11 s of a 100,000-row run, for 0.5 s of SQL
(measured with pyinstrument; see benchmarks/). This resource runs `dbt build` with `dbtRunner` on
a manifest parsed once per process (dbt's documented way to reuse one), and lets dagster-dbt do the rest:
the same subset selection and the same conversion of dbt's result events into materializations
and asset checks as `DbtCliResource.cli(...).stream()`.

One build at a time per process: dbt keeps global state, and the platform's executors run one
step per process at a time (in-process executor) or one process per step (multiprocess).
"""

from __future__ import annotations

import functools
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator
from dagster_dbt.asset_utils import get_updated_cli_invocation_params_for_context
from dagster_dbt.core.dbt_cli_event import DbtCoreCliEventMessage

# dbt's events for a finished node: the ones dagster-dbt turns into Dagster events.
RESULT_EVENTS = frozenset({"LogModelResult", "LogTestResult", "LogSeedResult", "LogSnapshotResult"})


class DbtRunnerResource(dg.ConfigurableResource):
    project_dir: str
    profiles_dir: str
    # Each build writes its run artifacts (run_results.json, compiled SQL, dbt.log) in its own folder.
    runs_dir: str

    def build(
        self,
        context: dg.AssetExecutionContext,
        variables: dict[str, str],
        translator: DagsterDbtTranslator,
    ) -> Iterator[Any]:
        """`dbt build` of the step's selected models and tests; yields their Dagster events.

        Raises `dg.Failure` naming the failed nodes, after their events, when a model or test fails.
        """
        import json

        from dbt_common.events.functions import msg_to_dict

        manifest_path = Path(self.project_dir) / "target" / "manifest.json"
        manifest_json = json.loads(manifest_path.read_text())
        params = get_updated_cli_invocation_params_for_context(
            context=context, manifest=manifest_json, dagster_dbt_translator=translator
        )
        target_path = Path(self.runs_dir) / f"{context.run.run_id[:8]}-{uuid.uuid4().hex[:7]}"
        selection = [
            *params.selection_args,
            *(["--indirect-selection", params.indirect_selection] if params.indirect_selection else []),
        ]
        raw_events: list[dict] = []

        def keep_results(event) -> None:
            if event.info.name in RESULT_EVENTS:
                raw_events.append(msg_to_dict(event))

        result = self._invoke(selection, variables, target_path, callbacks=[keep_results])
        for raw in raw_events:
            yield from DbtCoreCliEventMessage(raw_event=raw, event_history_metadata={}).to_default_asset_events(
                manifest=manifest_json, dagster_dbt_translator=translator, context=context, target_path=target_path
            )
        if problem := _build_problem(result, target_path):
            raise dg.Failure(problem)
        # Keep the artifacts of failed builds to debug; successful ones are in the event log.
        shutil.rmtree(target_path, ignore_errors=True)

    def build_all(self, variables: dict[str, str], exclude: tuple[str, ...] = ()) -> None:
        """`dbt build` of every model and test but `exclude`, with no Dagster run around it (`ml-platform
        predict` builds a file's features this way, in a scratch warehouse).

        Raises DbtBuildError naming the failed nodes.
        """
        target_path = Path(self.runs_dir) / f"build-{uuid.uuid4().hex[:7]}"
        result = self._invoke(["--exclude", *exclude] if exclude else [], variables, target_path, callbacks=[])
        if problem := _build_problem(result, target_path):
            raise DbtBuildError(problem)
        shutil.rmtree(target_path, ignore_errors=True)

    def _invoke(self, selection: list[str], variables: dict[str, str], target_path: Path, callbacks: list):
        """`dbt build` with `selection` on the manifest parsed once per process; its connections closed after."""
        import json

        from dbt.cli.main import dbtRunner

        manifest_path = Path(self.project_dir) / "target" / "manifest.json"
        args = [
            "build",
            *selection,
            "--vars",
            json.dumps(variables),
            "--project-dir",
            self.project_dir,
            "--profiles-dir",
            self.profiles_dir,
            "--target-path",
            str(target_path),
            "--log-path",
            str(target_path),
            "--quiet",
            "--no-use-colors",
            "--no-send-anonymous-usage-stats",
        ]
        manifest = _parsed_manifest(
            self.project_dir, self.profiles_dir, self.runs_dir, manifest_path.stat().st_mtime_ns
        )
        try:
            return dbtRunner(manifest=manifest, callbacks=callbacks).invoke(args)
        finally:
            _close_dbt_connections()


class DbtBuildError(RuntimeError):
    """A `dbt build` outside Dagster that did not run, or whose models or tests failed."""


def _build_problem(result, target_path: Path) -> str | None:
    """What went wrong in a `dbt build`, naming the failed nodes; None when everything passed."""
    if result.exception is not None:
        return f"dbt build did not run: {result.exception}"
    failed = [r for r in result.result.results if str(r.status) in ("error", "fail")]
    if not failed:
        return None
    return (
        "dbt build failed: "
        + "; ".join(f"{r.node.resource_type} {r.node.name}: {r.message}" for r in failed)
        + f" (run artifacts in {target_path})"
    )


@functools.lru_cache(maxsize=2)
def _parsed_manifest(project_dir: str, profiles_dir: str, runs_dir: str, manifest_mtime_ns: int):
    """dbt's Manifest, parsed once per process (and again when `make prepare` rewrites the project's).

    The parse starts from the partial-parse state `make prepare` left, in a folder of its own, so it
    takes under a second and never writes the project's target folder while other processes read it.
    """
    from dbt.cli.main import dbtRunner

    # Named after this process, so a parse killed with it is found and removed (`lib/liveness.py`).
    parse_dir = Path(runs_dir) / f"parse-{os.getpid()}-{uuid.uuid4().hex[:7]}"
    parse_dir.mkdir(parents=True)
    prepared = Path(project_dir) / "target" / "partial_parse.msgpack"
    if prepared.exists():
        shutil.copy(prepared, parse_dir)
    try:
        result = dbtRunner().invoke(
            [
                "parse",
                "--project-dir",
                project_dir,
                "--profiles-dir",
                profiles_dir,
                "--target-path",
                str(parse_dir),
                "--log-path",
                str(parse_dir),
                "--quiet",
                "--no-send-anonymous-usage-stats",
            ]
        )
        if not result.success:
            raise dg.Failure(f"dbt could not parse the project in {project_dir}: {result.exception}")
        return result.result
    finally:
        shutil.rmtree(parse_dir, ignore_errors=True)


def _close_dbt_connections() -> None:
    """Let go of the batch's database file: dbt-duckdb keeps its connection for the process's life,
    and DuckDB refuses a second handle on the same file within one process."""
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager
    from dbt.adapters.factory import reset_adapters

    reset_adapters()
    DuckDBConnectionManager.close_all_connections()
