"""The model registry: champion promotion of the base and chat models (dagster_project/registry.py)."""
