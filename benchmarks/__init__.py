"""Performance benchmark of the platform against a plain-script floor (run on demand: `python -m benchmarks.run`)."""
