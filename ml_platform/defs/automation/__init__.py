"""What starts runs without a person: the new-batch sensor and the cron schedules."""
