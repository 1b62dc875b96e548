"""ml: the pure library behind the llama-lifecycle assets (no dagster, mlflow or dvc imports here)."""
