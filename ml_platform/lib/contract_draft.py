"""A starting data contract drafted from a sample file, for `ml-platform init-config` to write.

The types are DuckDB's CSV sniffer's, run on the sample as ingestion reads it (padding stripped,
a blank number missing), so a column the platform will accept is drafted with the type it accepts.
What only a person can judge (the id column guessed, the roles, the limits) is written as comments
marked REVIEW in the YAML.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import duckdb

from ml_platform.lib.config import MODEL_TYPES_BY_TASK, Task
from ml_platform.lib.ingestion import IDENTIFIER_LIKE_MIN_ROWS

# Text with at most this many distinct values is drafted as a category with its `allowed` labels.
MAX_CATEGORY_LEVELS = 20
# Names people give an id column: `id`, `customer_id`, `CUSTOMER_ID`, `customerID`, `AccountCode`,
# `key` (but not `paid` or `valid`).
ID_NAME = re.compile(r"(^|_)(id|code|key|ID|CODE|KEY)$|[a-z0-9](ID|Id|Code|Key)$")
CONTRACT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# The sniffer's own candidates (auto_type_candidates) that the contract has a type for; DATE, TIME
# and TIMESTAMP are drafted as text (with a note).
SNIFFED_TYPES = {"BOOLEAN": "boolean", "BIGINT": "integer", "DOUBLE": "float"}


class DraftError(ValueError):
    """A sample file a contract cannot be drafted from; the message names the file and why."""


@dataclass(frozen=True)
class DraftedColumn:
    name: str
    type: str
    nullable: bool
    role: str
    allowed: tuple[str, ...] | None
    note: str
    # Only for a 0/1 integer target: the bounds that make it a binary target.
    binary: bool = False


@dataclass(frozen=True)
class ContractDraft:
    source: Path
    rows: int
    task: Task
    target: str
    id_column: str
    columns: tuple[DraftedColumn, ...]

    def to_yaml(self) -> str:
        """A platform config (data contract, default split and models) with comments to review.

        Written as text, not dumped, so the comments sit beside the lines they are about; every
        label is a JSON string (valid YAML), so `No`/`Yes` stay strings.
        """
        name = re.sub(r"\W+", "_", self.source.stem).strip("_") or "dataset"
        if not name[0].isalpha():
            name = f"data_{name}"
        lines = [
            f"# A starting config drafted by `ml-platform init-config` from {self.source.name} ({self.rows} rows).",
            "# Review every line marked REVIEW, then point ML_PLATFORM_CONFIG at this file.",
            "# Types are what DuckDB's sniffer found once padding was stripped and blank numbers read as missing;",
            "# min/max are left out (the observed range is in a comment): add them to refuse values outside.",
            "data:",
            f"  name: {name}",
            "  incoming_dir: data/incoming",
            "  file_format: csv",
            f"  task: {self.task}",
            f"  target: {json.dumps(self.target)}",
            f"  id_column: {json.dumps(self.id_column)}          # REVIEW: guessed (unique per row, named like an id)",
            "  columns:",
        ]
        for column in self.columns:
            fields = [f"type: {column.type}", f"nullable: {'true' if column.nullable else 'false'}"]
            if column.allowed is not None:
                fields.append(f"allowed: [{', '.join(json.dumps(label) for label in column.allowed)}]")
            if column.binary:
                fields += ["min: 0", "max: 1"]
            if column.role != "feature":
                fields.append(f"role: {column.role}")
            note = f"  # {column.note}" if column.note else ""
            # The name quoted too: a column called `No` or `null` is a string to YAML only so.
            lines.append(f"    {json.dumps(column.name)}: {{{', '.join(fields)}}}{note}")
        lines += [
            "training:",
            "  test_size: 0.2",
            "  validation_size: 0.25",
            "  split: {strategy: stratified}   # or random, or {strategy: time, time_column: <a number column>}",
            "models:",
            *(f"  {model}: {{type: {model}}}" for model in MODEL_TYPES_BY_TASK[self.task]),
        ]
        return "\n".join(lines) + "\n"


def draft_contract(source: Path, target: str, task: Task = "classification") -> ContractDraft:
    """Draft the contract of the CSV file at `source`, whose target column is `target`."""
    if not source.is_file():
        raise DraftError(f"{source}: file not found")
    with duckdb.connect() as con, tempfile.TemporaryDirectory() as scratch:
        try:
            con.execute(
                "CREATE TABLE sample AS SELECT * FROM read_csv(?, all_varchar=true, header=true, sample_size=-1)",
                [str(source)],
            )
        except duckdb.Error as error:
            raise DraftError(f"{source}: not a readable CSV file ({str(error).splitlines()[0]})") from None
        names = [row[0] for row in con.execute("SELECT column_name FROM (DESCRIBE sample)").fetchall()]
        _check_names(source, names, target)
        # The sniffer guesses types from text as ingestion will see it: stripped, blanks missing.
        cleaned = Path(scratch) / "cleaned.csv"
        stripped = ", ".join(f'nullif(trim("{name}"), \'\') AS "{name}"' for name in names)
        con.execute(f"COPY (SELECT {stripped} FROM sample) TO '{cleaned}' (HEADER, DELIMITER ',')")
        con.execute(f"CREATE TABLE cleaned AS SELECT * FROM read_csv('{cleaned}', header=true, sample_size=-1)")
        sniffed = dict(con.execute("SELECT column_name, column_type FROM (DESCRIBE cleaned)").fetchall())
        rows = con.execute("SELECT count(*) FROM cleaned").fetchone()[0]
        if rows == 0:
            raise DraftError(f"{source}: the file has a header but no data rows to draft a contract from")
        stats = {name: _column_stats(con, name) for name in names}
    id_column = _guess_id_column(source, names, stats, rows, target)
    columns = tuple(
        _draft_column(name, sniffed[name], stats[name], rows, required=name in (target, id_column)) for name in names
    )
    if task == "classification":
        columns = tuple(
            _as_binary_target(column, stats[target]) if column.name == target else column for column in columns
        )
    return ContractDraft(source, rows, task, target, id_column, columns)


@dataclass(frozen=True)
class _Stats:
    nulls: int
    distinct: int
    low: object
    high: object
    labels: tuple[str, ...]


def _column_stats(con: duckdb.DuckDBPyConnection, name: str) -> _Stats:
    nulls, distinct, low, high = con.execute(
        f'SELECT count(*) - count("{name}"), count(DISTINCT "{name}"), min("{name}"), max("{name}") FROM cleaned'
    ).fetchone()
    labels = ()
    if distinct <= MAX_CATEGORY_LEVELS:
        labels = tuple(
            str(row[0])
            for row in con.execute(
                f'SELECT DISTINCT CAST("{name}" AS VARCHAR) FROM cleaned WHERE "{name}" IS NOT NULL ORDER BY 1'
            ).fetchall()
        )
    return _Stats(nulls, distinct, low, high, labels)


def _check_names(source: Path, names: list[str], target: str) -> None:
    if target not in names:
        raise DraftError(f"{source}: --target {target!r} is not a column; the columns are {', '.join(names)}")
    if bad := [name for name in names if not CONTRACT_NAME.match(name)]:
        raise DraftError(
            f"{source}: column name(s) {', '.join(map(repr, bad))} cannot be contract columns (they reach SQL and "
            "dbt as identifiers): rename them to letters, digits and underscores, not starting with a digit"
        )


def _guess_id_column(source: Path, names: list[str], stats: dict[str, _Stats], rows: int, target: str) -> str:
    """The column unique per row with no blanks, preferring one named like an id, then the first."""
    unique = [name for name in names if name != target and stats[name].nulls == 0 and stats[name].distinct == rows]
    if not unique:
        raise DraftError(
            f"{source}: no column has a different value in every row, so none can be the id column; "
            "add one (the platform needs an id to keep held-out rows apart from training rows)"
        )
    return next((name for name in unique if ID_NAME.search(name)), unique[0])


def _as_binary_target(column: DraftedColumn, stats: _Stats) -> DraftedColumn:
    """A 0/1 integer target is binary with the bounds that say so (min: 0, max: 1)."""
    if column.type == "integer" and set(stats.labels) <= {"0", "1"}:
        return replace(column, binary=True)
    return column


def _draft_column(name: str, sniffed_type: str, stats: _Stats, rows: int, *, required: bool) -> DraftedColumn:
    nullable = stats.nulls > 0 and not required
    notes = [f"{stats.nulls} blank or empty field(s)"] if stats.nulls else []
    sniffed = SNIFFED_TYPES.get(sniffed_type, "string")
    if sniffed_type not in SNIFFED_TYPES and sniffed_type != "VARCHAR":
        notes.append(f"REVIEW: sniffed as {sniffed_type}, kept as text (derive numbers from it in dbt)")
    kind, role, allowed = sniffed, "feature", None
    if sniffed in ("integer", "float"):
        notes.append(f"observed {stats.low} to {stats.high}")
    elif sniffed == "string" and stats.labels and stats.distinct < rows:
        kind, allowed = "category", stats.labels
        notes.append("REVIEW: the labels in the sample; any other refuses a batch")
    elif sniffed == "string" and stats.distinct == rows >= IDENTIFIER_LIKE_MIN_ROWS and not required:
        role = "identifier"
        notes.append("REVIEW: unique per row, so kept out of the features")
    if stats.nulls and required:
        notes.append("REVIEW: the target and the id must be in every row; this sample would be refused")
    return DraftedColumn(name, kind, nullable, role, allowed, "; ".join(notes))
