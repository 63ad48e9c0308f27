"""ml_platform: an asset-based ML platform on Dagster for batch retraining (see README.md)."""
