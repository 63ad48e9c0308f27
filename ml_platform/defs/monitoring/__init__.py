"""Monitoring: what the pipeline's runs did, read back from Dagster's event log."""
