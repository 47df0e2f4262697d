"""The tuning job: its spec, validation, runner, outputs and the pipeline both entry points call."""
