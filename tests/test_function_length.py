"""No function or method under ml/ or assets/ is longer than 80 lines.

Rule: a function's length is counted from its `def` line to its last line (`end_lineno`), both
included; decorators are not counted, blank lines and comments inside the body are. Nested functions
are checked on their own and also count toward the function that encloses them.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECKED = ("ml", "assets")
MAX_LINES = 80


def long_functions(path: Path, root: Path = ROOT, max_lines: int = MAX_LINES) -> list[str]:
    """`path:line name (N lines)` for every function in `path` longer than `max_lines`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    rel = path.relative_to(root) if path.is_relative_to(root) else path
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            if n > max_lines:
                found.append((node.lineno, f"{rel}:{node.lineno} {node.name} ({n} lines)"))
    return [text for _, text in sorted(found)]


def offenders(dirs=CHECKED, root: Path = ROOT) -> list[str]:
    return [o for d in dirs for p in sorted((root / d).rglob("*.py")) for o in long_functions(p, root)]


def test_no_function_longer_than_80_lines():
    assert sum(1 for d in CHECKED for _ in (ROOT / d).rglob("*.py")) > 10
    found = offenders()
    assert found == [], "functions longer than 80 lines:\n" + "\n".join(found)


def test_checker_catches_an_81_line_function(tmp_path):
    body = "".join(f"    x{i} = {i}\n" for i in range(79))
    src = f"import functools\n\n\n@functools.cache\ndef too_long():\n{body}    return 0\n\n\ndef short():\n    return 1\n"
    (tmp_path / "pkg").mkdir()
    bad = tmp_path / "pkg" / "bad.py"
    bad.write_text(src)
    assert offenders(("pkg",), tmp_path) == ["pkg/bad.py:5 too_long (81 lines)"]


def test_checker_allows_exactly_80_lines(tmp_path):
    body = "".join(f"    x{i} = {i}\n" for i in range(78))
    ok = tmp_path / "ok.py"
    ok.write_text(f"class C:\n    def fits(self):\n{body.replace('    ', '        ')}        return 0\n")
    assert long_functions(ok, tmp_path) == []
    assert long_functions(ok, tmp_path, max_lines=79) == ["ok.py:2 fits (80 lines)"]
