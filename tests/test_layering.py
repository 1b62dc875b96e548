"""ml/ is a plain library: nothing under it imports dagster, mlflow or dvc."""

import ast
from pathlib import Path

FORBIDDEN = {"dagster", "mlflow", "dvc"}
ML = Path(__file__).resolve().parent.parent / "ml"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_ml_never_imports_orchestration_or_tracking():
    files = sorted(ML.rglob("*.py"))
    assert len(files) > 5
    offenders = {str(p.relative_to(ML.parent)): sorted(_imports(p) & FORBIDDEN) for p in files}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_layering_check_catches_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom mlflow import log_metric\n")
    assert _imports(bad) & FORBIDDEN == {"mlflow"}


def _ml_modules(path: Path, root: Path = ML.parent) -> set[str]:
    """Every ``ml.*`` module a file under ``root`` imports, absolute or relative (``ml.train.dist``, ...)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(root).parts[:-1])
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            names.update([module, *(f"{module}.{a.name}" for a in node.names)])
    return {n for n in names if n == "ml" or n.startswith("ml.")}


def _training_imports(path: Path, root: Path = ML.parent) -> list[str]:
    return sorted(m for m in _ml_modules(path, root) if m == "ml.train" or m.startswith("ml.train."))


def test_the_model_never_imports_training_code():
    files = sorted((ML / "model").rglob("*.py"))
    assert {p.name for p in files} >= {"llama.py", "attention.py", "flex_tuning.py", "loss.py", "hf.py"}
    offenders = {str(p.relative_to(ML.parent)): _training_imports(p) for p in files}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_model_layering_check_catches_a_violation(tmp_path):
    bad = tmp_path / "ml" / "model" / "bad.py"
    bad.parent.mkdir(parents=True)
    for source, found in [
        ("from ml.train.dist import apply_compile\n", ["ml.train.dist", "ml.train.dist.apply_compile"]),
        ("from ..train import loop\n", ["ml.train", "ml.train.loop"]),
        ("import ml.train.engine\n", ["ml.train.engine"]),
        ("from . import loss\nfrom ml.model.llama import Llama\n", []),
    ]:
        bad.write_text(source)
        assert _training_imports(bad, tmp_path) == found, source
