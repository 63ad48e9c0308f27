"""Dagster resources: one per external system the assets talk to."""
