"""Dagster wiring: one folder per stage of the pipeline, assembled by `defs.definitions.build_definitions`.

This package's own import is empty on purpose: commands that only read the instance (partitions,
run records) import `defs.partitions` or `defs.runs` without loading every asset and dbt's manifest.
"""
