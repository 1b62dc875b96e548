"""Thin Dagster adapters, one module per lifecycle stage: read upstream artifacts, call ml/, write, log."""
