"""Tags on Dagster runs that several parts of the platform read: which batch, which experiment.

Dependency-free, so commands that only read run records need not import the jobs that set them.
"""

PARTITION_TAG = "dagster/partition"  # Dagster's own tag for a run's partition
# Ties a run to its experiment (`ml-platform experiment status` reads it).
EXPERIMENT_ID_TAG = "ml_platform/experiment_id"
