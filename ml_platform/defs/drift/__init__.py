"""Drift stage: each batch against the champion's training batch and the previous batch."""
