"""The platform in one process: `dg.materialize` of every asset of the code location for one batch.

    python benchmarks/platform_inprocess.py --home H --batch batch_0001

Imports `ml_platform.definitions` (the environment gives ML_PLATFORM_HOME, ML_PLATFORM_CONFIG and
DAGSTER_HOME; `--home` sets ML_PLATFORM_HOME), takes the instance from DAGSTER_HOME and materializes
the definitions' assets with their resources, as the tests' `PlatformUnderTest.materialize` does. The
batch's partition must exist already (`ml-platform batches scan`). The last stdout line is JSON: import
and work time, success, and the evaluation report's per-model metrics.
"""

# ruff: noqa: E402  (the clock starts before the heavy imports, to time them)
import time

STARTED = time.perf_counter()

import argparse
import json
import os
import sys
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", required=True, type=Path, help="ML_PLATFORM_HOME: incoming batches, warehouse, ...")
    parser.add_argument("--batch", required=True, help="batch id (partition key), e.g. batch_0001")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    home = args.home.resolve()
    os.environ["ML_PLATFORM_HOME"] = str(home)
    os.environ.setdefault("DAGSTER_HOME", str(home / ".dagster_home"))

    import dagster as dg

    # Imported here, as the floor with tracking imports it before its work clock: the assets import it
    # lazily, and the work-time ratio compares work, not imports.
    import mlflow.sklearn  # noqa: F401

    import ml_platform.definitions as definitions

    imported = time.perf_counter()
    instance = dg.DagsterInstance.get()
    result = dg.materialize(
        definitions.defs.assets,
        resources=definitions.defs.resources,
        partition_key=args.batch,
        instance=instance,
        raise_on_error=False,
    )
    finished = time.perf_counter()

    report = result.output_for_node("evaluation_report") if result.success else {}
    print(
        json.dumps(
            {
                "variant": "inprocess",
                "success": result.success,
                "run_id": result.run_id,
                "import_s": round(imported - STARTED, 4),
                "work_s": round(finished - imported, 4),
                "winner": report.get("winner"),
                "models": {name: c["metrics"] for name, c in report.get("candidates", {}).items()},
            }
        ),
        flush=True,
    )
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())
