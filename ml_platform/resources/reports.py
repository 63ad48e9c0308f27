"""The folder of reports people read outside Dagster: evaluation reports as JSON, markdown and PNG plots."""

import json
import os
from pathlib import Path
from typing import Any

import dagster as dg

from ml_platform.lib.batches import validate_batch_id


class ReportsResource(dg.ConfigurableResource):
    reports_dir: str

    def path_for(self, batch_id: str | None, filename: str) -> Path:
        """`reports/<batch_id>/<filename>`, or `reports/<filename>` for a file about every batch."""
        if not filename or Path(filename).name != filename or filename in (".", ".."):
            raise ValueError(f"invalid report file name {filename!r}: expected a plain file name")
        folder = Path(self.reports_dir) if batch_id is None else Path(self.reports_dir) / validate_batch_id(batch_id)
        return folder / filename

    def write_json(self, batch_id: str, name: str, content: dict[str, Any]) -> Path:
        """Write `reports/<batch_id>/<name>.json` atomically (a reader never sees half a report)."""
        return self.write_bytes(batch_id, f"{name}.json", json.dumps(content, indent=2, sort_keys=True).encode())

    def read_json(self, batch_id: str, name: str) -> dict[str, Any] | None:
        """`reports/<batch_id>/<name>.json`, or None when that batch has no such report."""
        path = self.path_for(batch_id, f"{name}.json")
        return json.loads(path.read_text()) if path.exists() else None

    def write_bytes(self, batch_id: str | None, filename: str, content: bytes) -> Path:
        """Write a file (a plot, a markdown report) atomically, where `path_for` puts it."""
        path = self.path_for(batch_id, filename)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        partial.write_bytes(content)
        partial.replace(path)
        return path
