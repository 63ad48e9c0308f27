"""Pure, Dagster-free logic of the platform: config, data contract, demo data, training, evaluation."""
