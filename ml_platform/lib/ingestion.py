"""Ingestion of one batch file: read it, check it against the data contract, load it typed.

Reading and checking happen in DuckDB, so a million-row batch is checked in a second or two.
Every problem is reported with the file, the column, a row number and what was expected; the
caller decides where the typed table goes, and nothing is written when a check fails.

`ingest_delivery` adds what one batch cannot see alone: whether its content or its ids were
delivered by another stored batch (`lib/redelivery.py` decides, by `data.redelivered_ids`), and it
records what the batch delivered beside its rows.
"""

from __future__ import annotations

import csv
import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.parquet as pq

from ml_platform.lib.config import ColumnSpec, DataConfig, TrainingConfig, code_version
from ml_platform.lib.redelivery import StoredDelivery, decide_redelivery
from ml_platform.lib.warehouse import DELIVERY_TABLE

SQL_TYPES = {
    "string": "VARCHAR",
    "category": "VARCHAR",
    "integer": "BIGINT",
    "float": "DOUBLE",
    "boolean": "BOOLEAN",
}
MAX_PROBLEMS = 20
NUMERIC_TYPES = ("integer", "float")
# A text column unique per row in a batch this large is most likely an identifier, not a feature.
IDENTIFIER_LIKE_MIN_ROWS = 20


class BatchRejected(ValueError):
    """A batch refused for what its file holds: the same file and config are refused again, every time
    (so a failure with this error quarantines the batch until one of them changes)."""

    def __init__(self, path: Path, message: str):
        self.path = path
        super().__init__(message)


class RedeliveryError(BatchRejected):
    """A batch whose content, or ids, other stored batches delivered already (`lib/redelivery.py`)."""


class BatchValidationError(BatchRejected):
    """A batch that breaks its data contract; `problems` holds one line per broken rule."""

    def __init__(self, path: Path, problems: list[str]):
        self.problems = problems
        shown = problems[:MAX_PROBLEMS]
        more = f"\n  ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
        super().__init__(
            path,
            f"{path}: batch rejected, it does not match the data contract:\n"
            + "\n".join(f"  - {problem}" for problem in shown)
            + more,
        )


@dataclass(frozen=True)
class BatchSummary:
    """What a person wants to know about an ingested batch."""

    rows: int
    columns: list[str]
    content_hash: str
    null_counts: dict[str, int] = field(default_factory=dict)
    # Fields of integer and float columns that were empty or only spaces: read as missing values.
    blank_counts: dict[str, int] = field(default_factory=dict)
    # Text feature columns unique per row: identifiers a model would learn nothing general from.
    identifier_like_columns: tuple[str, ...] = ()
    # What the re-delivery rule did (`ingest_delivery`): rows left out or replacing others', and why.
    dropped_rows: int = 0
    replacing_rows: int = 0
    redelivered_from: tuple[str, ...] = ()
    redelivery_warning: str | None = None


# The stored batches' deliveries for the incoming ids (column `id`): `Warehouse.stored_deliveries`.
StoredDeliveries = Callable[[pd.DataFrame], Sequence[StoredDelivery]]


def ingestion_code_version(data: DataConfig, training: TrainingConfig) -> str:
    """The code version of ingesting a batch of `data` (the `raw_batch` asset's): what a failed
    ingestion records, so a changed contract or policy lets a quarantined batch run again. With
    `training`, whose split decides whether a batch has rows enough (`minimum_rows_to_split`)."""
    return code_version(data, training)


def file_content_hash(path: Path) -> str:
    """sha256 of the file's bytes: the batch's data version."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def ingest_batch(
    path: Path,
    data: DataConfig,
    con: duckdb.DuckDBPyConnection,
    table: str = "raw_batch",
    training: TrainingConfig | None = None,
    require_target: bool = True,
) -> BatchSummary:
    """Validate the batch file at `path` and create `table` in `con` with the contract's types.

    Padding is stripped from every field first, and a blank number is a missing value. With
    `training`, a batch with too few rows for its split (`minimum_rows_to_split`) is refused too.

    `require_target=False` is for a file to score (`ml-platform predict`): new data has no labels yet,
    so the target column may be absent (it is then all nulls, so the features SQL that names it still
    builds) or blank, and one class is enough. Every other column is checked as for training.

    Raises BatchValidationError, before `table` exists, on any breach of the contract.
    """
    if not path.is_file():
        raise BatchValidationError(path, ["file not found"])
    if path.stat().st_size == 0:
        raise BatchValidationError(path, ["file is empty (0 bytes); expected a header and data rows"])

    header = _read_header(path, data)
    optional = () if require_target else (data.target,)
    _check_header(path, header, data, optional)
    text_columns = _land(path, header, con, data)
    try:
        if data.target not in header:
            con.execute(f'ALTER TABLE landed ADD COLUMN "{data.target}" VARCHAR')
        rows = con.execute("SELECT count(*) FROM landed").fetchone()[0]
        if rows == 0:
            raise BatchValidationError(path, ["file has a header but no data rows"])
        problems = _contract_problems(con, data, require_target)
        if training is not None and not problems:
            problems = _split_problems(con, data, training, rows)
        if problems:
            raise BatchValidationError(path, problems)
        casts = ", ".join(
            f'CAST("{name}" AS {SQL_TYPES[spec.type]}) AS "{name}"' for name, spec in data.columns.items()
        )
        con.execute(f'CREATE OR REPLACE TABLE "{table}" AS SELECT {casts} FROM landed ORDER BY _row')
    finally:
        con.execute("DROP TABLE IF EXISTS landed")
    null_counts = _null_counts(con, data, table)
    return BatchSummary(
        rows=rows,
        columns=list(data.columns),
        content_hash=file_content_hash(path),
        null_counts=null_counts,
        # A number read as text is missing only where it was blank: anything else failed the rules.
        blank_counts={
            name: null_counts[name]
            for name, spec in data.columns.items()
            if spec.type in NUMERIC_TYPES and name in text_columns
        },
        identifier_like_columns=identifier_like_columns(con, data, table, rows),
    )


def minimum_rows_to_split(training: TrainingConfig, classes: int | None) -> int:
    """The fewest rows of a batch that `split_train_test` and then `carve_validation` can divide.

    Computed with scikit-learn's own arithmetic (a part's size is `ceil(share * rows)`, the rest
    the other part). A stratified split (`classes` given) needs at least one row of each class in
    every part; any other split needs one row per part. A batch below it would pass the contract
    and then fail in `training_data` with scikit-learn's message, which names none of this.
    """
    per_part = classes or 1

    def divisible(rows: int) -> bool:
        held_out = math.ceil(training.test_size * rows)
        training_rows = rows - held_out
        validation = math.ceil(training.validation_size * training_rows)
        return min(held_out, validation, training_rows - validation) >= per_part

    rows = 2 * per_part
    while not divisible(rows):  # ends: both shares are below 1, so large enough batches divide
        rows += 1
    return rows


def _split_requirement(training: TrainingConfig, classes: int | None) -> str:
    """The split `minimum_rows_to_split` is about, in words, for a message."""
    kind = f"with {classes} classes (stratified)" if classes else "(not stratified)"
    return f"test_size {training.test_size:g} and validation_size {training.validation_size:g} {kind}"


def identifier_like_columns(con: duckdb.DuckDBPyConnection, data: DataConfig, table: str, rows: int) -> tuple[str, ...]:
    """Text feature columns with a different value in every row of a batch of at least
    IDENTIFIER_LIKE_MIN_ROWS: a customer code one-hot encoded is one level per row, noise to a model
    (mark it `role: identifier`). A warning, not a refusal: the contract allows it."""
    candidates = [
        name
        for name, spec in data.columns.items()
        if spec.type == "string" and spec.role == "feature" and name not in (data.id_column, data.target)
    ]
    if rows < IDENTIFIER_LIKE_MIN_ROWS or not candidates:
        return ()
    distinct = con.execute(
        "SELECT " + ", ".join(f'count(DISTINCT "{name}")' for name in candidates) + f' FROM "{table}"'
    ).fetchone()
    return tuple(name for name, count in zip(candidates, distinct, strict=True) if count == rows)


def ingest_delivery(
    path: Path,
    data: DataConfig,
    con: duckdb.DuckDBPyConnection,
    batch_id: str,
    stored: StoredDeliveries,
    training: TrainingConfig | None = None,
) -> BatchSummary:
    """`ingest_batch` into `raw_batch`, then the re-delivery rule against the other stored batches
    (`stored`), then the batch's delivery record (`batch_delivery`) beside its rows.

    Raises RedeliveryError, before anything is stored, for a batch whose content another batch
    delivered, or (policy reject) whose ids other batches delivered; under policy drop those rows are
    left out, under update they are kept and replace the others' where batches are read together.
    """
    summary = ingest_batch(path, data, con, training=training)
    incoming_ids = con.execute(f'SELECT "{data.id_column}" AS id FROM raw_batch').df()
    decision = decide_redelivery(
        source=str(path),
        batch_id=batch_id,
        dataset=data.name,
        content_hash=summary.content_hash,
        rows=summary.rows,
        stored=stored(incoming_ids),
        policy=data.redelivered_ids,
    )
    if decision.refused:
        con.execute("DROP TABLE raw_batch")
        raise RedeliveryError(path, decision.refused)
    if decision.drop_ids:
        con.register("dropped_ids", pd.DataFrame({"id": list(decision.drop_ids)}))
        con.execute(f'DELETE FROM raw_batch WHERE "{data.id_column}" IN (SELECT id FROM dropped_ids)')
        con.unregister("dropped_ids")
        rows = con.execute("SELECT count(*) FROM raw_batch").fetchone()[0]
        summary = replace(summary, rows=rows, null_counts=_null_counts(con, data, "raw_batch"))
    summary = replace(
        summary,
        dropped_rows=len(decision.drop_ids),
        replacing_rows=len(decision.replaced_ids),
        redelivered_from=decision.from_batches,
        redelivery_warning=decision.warning,
    )
    con.execute(
        f"""CREATE OR REPLACE TABLE "{DELIVERY_TABLE}" (
            dataset VARCHAR, batch_id VARCHAR, content_hash VARCHAR, id_column VARCHAR, rows BIGINT,
            policy VARCHAR, dropped_rows BIGINT, replacing_rows BIGINT, redelivered_from VARCHAR
        )"""
    )
    con.execute(
        f'INSERT INTO "{DELIVERY_TABLE}" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
        [
            data.name,
            batch_id,
            summary.content_hash,
            data.id_column,
            summary.rows,
            data.redelivered_ids,
            summary.dropped_rows,
            summary.replacing_rows,
            ",".join(summary.redelivered_from),
        ],
    )
    return summary


def identifier_like_warning(columns: Sequence[str]) -> str:
    """What `identifier_like_columns` found, and what to do about it."""
    return (
        f"text column(s) {', '.join(columns)} hold a different value in every row and are used as features: "
        "if they identify rows (a customer code), mark them `role: identifier` in the data contract"
    )


def _null_counts(con: duckdb.DuckDBPyConnection, data: DataConfig, table: str) -> dict[str, int]:
    null_sums = ", ".join(f'count(*) - count("{name}")' for name in data.columns)
    counts = con.execute(f'SELECT {null_sums} FROM "{table}"').fetchone()
    return {name: int(count) for name, count in zip(data.columns, counts, strict=True)}


def _read_header(path: Path, data: DataConfig) -> list[str]:
    if data.file_format == "parquet":
        try:
            return pq.read_schema(path).names
        except Exception as error:  # pyarrow raises several types for a damaged file
            raise BatchValidationError(path, [f"not a readable Parquet file ({error})"]) from None
    # Only the first line is decoded here: a bad byte further down is DuckDB's to report, by line.
    with path.open("rb") as handle:
        first_line = handle.readline()
    try:
        # utf-8-sig: Excel's "CSV UTF-8" starts with a byte-order mark, which is not part of the name.
        return next(csv.reader([first_line.decode("utf-8-sig")]))
    except UnicodeDecodeError as error:
        raise BatchValidationError(
            path, [f"header is not UTF-8 text (byte {error.start}: {error.reason}); expected a UTF-8 CSV"]
        ) from None


def _check_header(path: Path, header: list[str], data: DataConfig, optional: Sequence[str] = ()) -> None:
    problems = []
    missing = [name for name in data.columns if name not in header and name not in optional]
    unexpected = [name for name in header if name not in data.columns]
    repeated = sorted({name for name in header if header.count(name) > 1})
    if missing:
        problems.append(f"missing column(s): {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected column(s) not in the contract: {', '.join(unexpected)}")
    if repeated:
        problems.append(f"column(s) named twice in the header: {', '.join(repeated)}")
    if problems:
        raise BatchValidationError(path, problems + [f"expected columns: {', '.join(data.columns)}"])


def _land(path: Path, header: list[str], con: duckdb.DuckDBPyConnection, data: DataConfig) -> set[str]:
    """Copy the file into the temporary table `landed`, with its data row number in `_row`, padding
    stripped and blank numbers missing (`_stripped`); return the columns that were read as text."""
    if data.file_format == "parquet":
        source = "read_parquet(?)"
    else:
        # The dialect is fixed, not sniffed: sniffing guesses wrong on a damaged file, and a
        # strict parser is what turns a truncated row into an error instead of padding it.
        columns = "{" + ", ".join(f"'{name}': 'VARCHAR'" for name in header) + "}"
        source = (
            f"read_csv(?, auto_detect=false, header=true, delim=',', quote='\"', escape='\"', "
            f"strict_mode=true, null_padding=false, columns={columns})"
        )
    try:
        text = {
            name
            for name, kind in con.execute(
                f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM {source})", [str(path)]
            ).fetchall()
            if kind == "VARCHAR"
        }
        selected = ", ".join(_stripped(name, data.columns[name]) if name in text else f'"{name}"' for name in header)
        con.execute(
            f"CREATE TEMP TABLE landed AS SELECT row_number() OVER () AS _row, {selected} FROM {source}", [str(path)]
        )
    except duckdb.Error as error:
        raise BatchValidationError(path, [_first_lines_of(error)]) from None
    return text


def _stripped(name: str, spec: ColumnSpec) -> str:
    """A text field without its padding, and a blank number or boolean missing.

    Stripped before the rules, so `" Yes "` is the allowed `Yes` and `" 12 "` the integer 12, and
    in the stored table, so a model never sees two spellings of one value. Exports write a missing
    number as an empty or a space-only field (`TotalCharges` in the well-known churn export): that
    is NULL, and `nullable` decides whether it is allowed. A string or category keeps an empty
    value (then `allowed` or the data decide).
    """
    # trim() without a character list: spaces only, and twice as fast as with one.
    stripped = f'trim("{name}")'
    if spec.type not in ("string", "category"):
        stripped = f"nullif({stripped}, '')"
    return f'{stripped} AS "{name}"'


def _first_lines_of(error: duckdb.Error) -> str:
    """DuckDB's message without its generic 'Possible fixes' advice."""
    lines = []
    for line in str(error).splitlines():
        if not line.strip() or line.startswith("Possible"):
            break
        lines.append(line.strip())
    return " ".join(lines)


def _split_problems(con: duckdb.DuckDBPyConnection, data: DataConfig, training: TrainingConfig, rows: int) -> list[str]:
    """A batch too small for its split: refused here, with the minimum, not in `training_data`.

    A rare class does not refuse the batch: the split then falls back to a seeded shuffle and a class
    missing from the training rows is reported (`lib/training.stratification`).
    """
    classes = None
    if training.split.stratifies(data.task):
        target_type = SQL_TYPES[data.columns[data.target].type]
        distinct = f'SELECT count(DISTINCT CAST("{data.target}" AS {target_type})) FROM landed'
        classes = con.execute(distinct).fetchone()[0]
    if rows < (minimum := minimum_rows_to_split(training, classes)):
        return [f"{rows} rows; at least {minimum} rows are needed to split {_split_requirement(training, classes)}"]
    return []


def _contract_problems(con: duckdb.DuckDBPyConnection, data: DataConfig, require_target: bool = True) -> list[str]:
    problems = []
    for name, spec in data.columns.items():
        if name == data.target and not require_target:
            spec = spec.model_copy(update={"nullable": True})
        for condition, expected in _rules(name, spec):
            count, row, value = con.execute(
                f'SELECT count(*), min(_row), arg_min(CAST("{name}" AS VARCHAR), _row) FROM landed WHERE {condition}'
            ).fetchone()
            if count:
                shown = "empty" if value is None else repr(value)
                problems.append(
                    f"column '{name}': expected {expected}; data row {row} has {shown}"
                    + (f" ({count} rows affected)" if count > 1 else "")
                )
    duplicates = con.execute(
        f'SELECT "{data.id_column}", list(_row ORDER BY _row) FROM landed '
        f'WHERE "{data.id_column}" IS NOT NULL GROUP BY 1 HAVING count(*) > 1 ORDER BY min(_row) LIMIT 3'
    ).fetchall()
    for value, rows in duplicates:
        shown = ", ".join(map(str, rows[:5]))
        problems.append(f"column '{data.id_column}': expected unique ids; {value!r} appears in data rows {shown}")
    if data.task == "classification" and require_target and not problems:
        # Counted after the cast: '0' and '0.0', or 'true' and 'True', are one class to a model.
        target_type = SQL_TYPES[data.columns[data.target].type]
        classes = [
            row[0]
            for row in con.execute(
                f'SELECT DISTINCT CAST("{data.target}" AS {target_type}) FROM landed ORDER BY 1'
            ).fetchall()
        ]
        if len(classes) < 2:
            problems.append(
                f"target '{data.target}': expected at least two classes to train a classifier; found only {classes}"
            )
    return problems


def _rules(name: str, spec: ColumnSpec) -> list[tuple[str, str]]:
    """(SQL condition selecting offending rows, what was expected) for one column of the contract."""
    column = f'"{name}"'
    sql_type = SQL_TYPES[spec.type]
    typed = f"TRY_CAST({column} AS {sql_type})"
    rules = []
    if not spec.nullable:
        rules.append((f"{column} IS NULL", "a value in every row (nullable: false)"))
    if spec.type == "integer":
        # TRY_CAST would round '3.5' to 4; a whole number is what the contract promises.
        whole = rf"regexp_full_match(CAST({column} AS VARCHAR), '\s*[+-]?\d+(\.0*)?\s*')"
        rules.append((f"{column} IS NOT NULL AND NOT ({whole} AND {typed} IS NOT NULL)", "integer values"))
    elif spec.type == "float":
        finite = f"isfinite(TRY_CAST({column} AS DOUBLE))"
        rules.append((f"{column} IS NOT NULL AND NOT coalesce({finite}, false)", "finite float values"))
    elif sql_type != "VARCHAR":
        rules.append((f"{column} IS NOT NULL AND {typed} IS NULL", f"{spec.type} values"))
    if spec.allowed is not None and spec.type == "integer":
        # Compared as numbers: ' 2' and '2.0' are the value 2.
        allowed = ", ".join(str(value) for value in spec.allowed)
        rules.append((f"{typed} IS NOT NULL AND {typed} NOT IN ({allowed})", f"one of {spec.allowed}"))
    elif spec.allowed is not None:
        allowed = ", ".join("'" + value.replace("'", "''") + "'" for value in spec.allowed)
        rules.append((f"{column} IS NOT NULL AND {column} NOT IN ({allowed})", f"one of {spec.allowed}"))
    if spec.min is not None:
        rules.append((f"{typed} < {spec.min}", f"values >= {spec.min:g}"))
    if spec.max is not None:
        rules.append((f"{typed} > {spec.max}", f"values <= {spec.max:g}"))
    return rules
