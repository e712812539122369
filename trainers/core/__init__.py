"""The framework-free core of the trainers: configuration, run loop, run directory, resume
bookkeeping, sampler, schedule, metrics, plots, probes and datasets (imports no framework)."""
