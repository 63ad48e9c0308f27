"""ml_platform."""
