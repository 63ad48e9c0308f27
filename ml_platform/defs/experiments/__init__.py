"""Experiments: one configured model on one batch, as a Dagster job."""
