"""ml/ is a plain library: nothing under it imports dagster, mlflow, dvc, `assets` or `dagster_project`,
and nothing under it starts a service (redis-server, a Dask LocalCluster, an HTTP server): those are
started by resources in dagster_project/services, and ml/ receives clients and URLs."""

import ast
from pathlib import Path

FORBIDDEN = {"dagster", "mlflow", "dvc", "assets", "dagster_project"}
ML = Path(__file__).resolve().parent.parent / "ml"
# names whose use means "this module runs a server", and programs it must not launch
SERVICE_NAMES = {"LocalCluster", "ThreadingHTTPServer", "HTTPServer"}
SERVICE_PROGRAMS = ("redis-server",)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _service_starts(path: Path) -> list[str]:
    """``line: what`` for each use of a server class and each string naming a server program
    (docstrings and other bare string statements are not code and are skipped)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    prose = {
        id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)
    }
    found = []
    for node in ast.walk(tree):
        name = None
        if isinstance(node, ast.Name):
            name = node.id
        elif isinstance(node, ast.Attribute):
            name = node.attr
        elif isinstance(node, ast.alias):
            name = node.name.split(".")[-1]
        if name in SERVICE_NAMES:
            found.append(f"{node.lineno}: {name}")
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in prose:
            found += [f"{node.lineno}: {p}" for p in SERVICE_PROGRAMS if p in node.value]
    return sorted(set(found), key=lambda s: (int(s.split(":")[0]), s))


def test_ml_never_imports_orchestration_or_tracking():
    files = sorted(ML.rglob("*.py"))
    assert len(files) > 5
    offenders = {str(p.relative_to(ML.parent)): sorted(_imports(p) & FORBIDDEN) for p in files}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_layering_check_catches_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom mlflow import log_metric\n")
    assert _imports(bad) & FORBIDDEN == {"mlflow"}


def test_layering_check_catches_imports_of_the_orchestration_packages(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from dagster_project.resources import X\nimport assets.data\nfrom ml.io import atomic_dir\n"
    )
    assert _imports(bad) & FORBIDDEN == {"dagster_project", "assets"}


def test_ml_starts_no_service():
    offenders = {str(p.relative_to(ML.parent)): _service_starts(p) for p in sorted(ML.rglob("*.py"))}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_service_check_catches_a_server_start(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        '"""Mentions redis-server and LocalCluster in prose only."""\n'
        "import subprocess\n"
        "from dask.distributed import LocalCluster\n"
        "from http import server\n"
        "subprocess.Popen(['redis-server', '--port', '0'])\n"
        "srv = server.ThreadingHTTPServer(('127.0.0.1', 0), None)\n"
        "subprocess.run(['groff', '-mandoc'])\n"
    )
    assert _service_starts(bad) == ["3: LocalCluster", "5: redis-server", "6: ThreadingHTTPServer"]


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
