import pytest


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh project home: artifacts, MLflow store, DVC repo and Dagster instance all under tmp."""
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("LIFECYCLE_HOME", str(h))
    monkeypatch.setenv("DAGSTER_HOME", str(h / ".dagster"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("LIFECYCLE_DVC", raising=False)
    (h / ".dagster").mkdir()
    return h
