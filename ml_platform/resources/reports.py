"""The folder of reports people read outside Dagster: JSON copies of evaluation reports."""

import json
import os
from pathlib import Path
from typing import Any

import dagster as dg

from ml_platform.lib.batches import validate_batch_id


class ReportsResource(dg.ConfigurableResource):
    reports_dir: str

    def write_json(self, batch_id: str, name: str, content: dict[str, Any]) -> Path:
        """Write `reports/<batch_id>/<name>.json` atomically (a reader never sees half a report)."""
        path = Path(self.reports_dir) / validate_batch_id(batch_id) / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        partial.write_text(json.dumps(content, indent=2, sort_keys=True))
        partial.replace(path)
        return path
