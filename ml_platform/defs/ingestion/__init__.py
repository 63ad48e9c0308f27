"""Ingestion stage: batch files checked against the data contract and stored per batch."""
