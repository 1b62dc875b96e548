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
