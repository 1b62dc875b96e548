"""The MLflow model registry: every model asset's current version is an MLflow model, registered, and the
aliases ``candidate`` and ``champion`` say which version may be served.

* A model asset declares ``stage_asset(..., registered=Registered("llama-lifecycle-base", "hf"))``. When a
  new version becomes current (its blocking checks passed), ``StageRun.result`` logs the version's
  ``hf/`` (or ``fp8/``) directory as a pyfunc model in the asset's MLflow run (``model/``), registers it
  under the name, tags it with the asset, partition, artifact version and DVC md5, and moves ``candidate``
  to it. A version whose checks failed is never registered.
* ``champion`` moves only in the promotion assets (assets/registry/promotion.py), when every evaluation
  the promotion requires (safety, forecast, evals) evaluated exactly this version and passed its checks.

The logged model's code is ``dagster_project/serving_model.py`` (MLflow "models from code"). Load a
registered model anywhere the project is installed::

    model = mlflow.pyfunc.load_model("models:/llama-lifecycle-chat@champion")
    model.predict(["Solve for x: 3x + 4 = 10."], params={"max_new_tokens": 32})   # -> list of replies

The directory holds ``config.json`` + ``model.safetensors`` + the tokenizer in HF format, so the bf16
models also load with ``transformers`` from the model's ``artifacts/model`` path.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

CANDIDATE, CHAMPION = "candidate", "champion"
PIP_REQUIREMENTS = ["torch", "safetensors", "tokenizers"]  # the project itself must be importable
SERVING_MODEL = Path(__file__).with_name("serving_model.py")


@dataclasses.dataclass(frozen=True)
class Registered:
    """name: the registered model; subdir: the model directory inside the artifact; flavor: ``hf`` (HF
    Llama weights) or ``fp8`` (ml/infer/fp8_model.py's format)."""

    name: str
    subdir: str = "hf"
    flavor: str = "hf"

    def __post_init__(self) -> None:
        if self.flavor not in ("hf", "fp8"):
            raise ValueError(f"Registered.flavor must be hf | fp8, got {self.flavor!r}")


def log_and_register(
    tracking_uri: str, run_id: str, reg: Registered, model_dir: Path, tags: dict[str, str]
) -> int:
    """Log ``model_dir`` as the pyfunc model ``model/`` of run ``run_id``, register it as a new version of
    ``reg.name`` tagged with ``tags``, move ``candidate`` to it; returns the version number."""
    import mlflow
    import mlflow.pyfunc
    from mlflow.models import infer_signature

    client = mlflow.MlflowClient(tracking_uri)
    signature = infer_signature(["a prompt"], ["a reply"], params={"max_new_tokens": 64})
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "model"
        mlflow.pyfunc.save_model(
            path=str(local),
            python_model=str(SERVING_MODEL),  # models from code: a path, so no asset imports it
            model_config={"flavor": reg.flavor},
            artifacts={"model": str(model_dir)},
            signature=signature,
            pip_requirements=PIP_REQUIREMENTS,
        )
        client.log_artifacts(run_id, str(local), "model")
    if not client.search_registered_models(filter_string=f"name = '{reg.name}'"):
        client.create_registered_model(reg.name, description=f"Model asset versions of {tags.get('asset')}")
    mv = client.create_model_version(reg.name, f"runs:/{run_id}/model", run_id=run_id, tags=tags)
    client.set_registered_model_alias(reg.name, CANDIDATE, mv.version)
    return int(mv.version)


def version_for(tracking_uri: str, name: str, md5: str) -> int | None:
    """The newest registered version of ``name`` whose ``dvc_md5`` tag is ``md5``."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    found = [
        int(v.version)
        for v in client.search_model_versions(f"name = '{name}'")
        if v.tags.get("dvc_md5") == md5
    ]
    return max(found) if found else None


def set_alias(tracking_uri: str, name: str, alias: str, version: int) -> None:
    import mlflow

    mlflow.MlflowClient(tracking_uri).set_registered_model_alias(name, alias, str(version))


def alias_version(tracking_uri: str, name: str, alias: str) -> int | None:
    """The version ``alias`` points at, or None."""
    import mlflow

    try:
        return int(mlflow.MlflowClient(tracking_uri).get_model_version_by_alias(name, alias).version)
    except mlflow.exceptions.MlflowException:
        return None
