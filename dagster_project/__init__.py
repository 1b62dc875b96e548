"""Dagster wiring for llama-lifecycle: definitions, resources, configs, jobs, schedules, checks."""
