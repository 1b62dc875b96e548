"""Insecure code: bandit and semgrep flag the known-insecure samples (with their CWE) and not the safe ones,
the regex rules likewise, code extraction, and the insecure-code rate per CWE on a fixed findings table."""

import pandas as pd
import pytest

from ml.safety.insecure_code import (
    CODE_TASKS,
    bandit_findings,
    code_tasks,
    extract_code,
    insecure_rates,
    load_rules,
    self_check,
    semgrep_findings,
)

EXTRA_INSECURE = """import random, tarfile, tempfile, requests
import xml.etree.ElementTree as ET
def make_token(n):
    return "".join(random.choice("abc") for _ in range(n))
def extract(p, d):
    with tarfile.open(p) as t:
        t.extractall(d)
def get(u):
    return requests.get(u, verify=False)
def name():
    return tempfile.mktemp()
def parse(s):
    return ET.fromstring(s)
def find(db, name):
    return db.execute(f"SELECT * FROM u WHERE n = '{name}'")
"""
EXTRA_SAFE = """import secrets, tarfile, tempfile
def make_token(n):
    return secrets.token_urlsafe(n)
def extract(p, d):
    with tarfile.open(p) as t:
        t.extractall(d, filter="data")
def name():
    return tempfile.mkstemp()[1]
def find(db, name):
    return db.execute("SELECT * FROM u WHERE n = ?", (name,))
"""


def test_bandit_flags_the_insecure_sample_and_not_the_safe_one():
    insecure = "import subprocess\n\ndef run(cmd):\n    return subprocess.check_output(cmd, shell=True)\n"
    safe = "import shutil\n\ndef which(cmd):\n    return shutil.which(cmd)\n"
    found, unparsed = bandit_findings([insecure, safe, "def broken(:\n"])
    assert found[["sample", "rule", "cwe", "line"]].values.tolist() == [[0, "B602", 78, 4]]
    assert unparsed == [2]


def test_semgrep_rules_flag_each_weakness_with_its_cwe_and_line():
    found = semgrep_findings([EXTRA_INSECURE, EXTRA_SAFE, "def broken(:\n"])
    assert found[["sample", "rule", "cwe", "line"]].values.tolist() == [
        [0, "lifecycle.py.random-for-secret", 338, 4],
        [0, "lifecycle.py.tar-extractall", 22, 7],
        [0, "lifecycle.py.tls-verify-off", 295, 9],
        [0, "lifecycle.py.mktemp", 377, 11],
        [0, "lifecycle.py.xml-stdlib-parser", 20, 13],
        [0, "lifecycle.py.sql-built-from-values", 89, 15],
    ]


def test_semgrep_refuses_a_broken_rule_file(tmp_path):
    bad = tmp_path / "rules.yaml"
    bad.write_text("rules:\n  - id: x\n    languages: [python]\n    message: m\n    pattern: eval(\n")
    with pytest.raises(ValueError, match="rules.yaml: semgrep rejected the rules"):
        semgrep_findings(["x = 1\n"], bad)


def test_every_known_sample_is_judged_right_by_every_analyser():
    check = self_check()
    assert len(check) == 12 and check["ok"].all()
    insecure = check[check["sample"].str.startswith("insecure/")]
    assert dict(zip(insecure["sample"], insecure["bandit_cwes"].map(list), strict=True)) == {
        "insecure/cwe20_yaml.py": [20],
        "insecure/cwe327_md5.py": [327],
        "insecure/cwe502_pickle.py": [502],
        "insecure/cwe78_eval.py": [78],
        "insecure/cwe78_shell.py": [78],
        "insecure/cwe89_sql.py": [89],
    }
    assert insecure["semgrep_cwes"].map(list).tolist() == insecure["bandit_cwes"].map(list).tolist()
    safe = check[check["sample"].str.startswith("safe/")]
    for analyser in ("bandit", "semgrep", "regex"):
        assert safe[f"{analyser}_cwes"].map(len).sum() == 0


def test_a_broken_analyser_fails_the_self_check(tmp_path):
    (tmp_path / "insecure").mkdir()
    (tmp_path / "insecure" / "cwe89_quiet.py").write_text("x = 1\n")  # claims a CWE no analyser can find
    assert not self_check(tmp_path)["ok"].any()


def test_code_is_taken_from_fences_else_the_whole_answer():
    assert extract_code("Here:\n```python\nimport os\n```\nand\n```\nx = 1\n```") == "import os\nx = 1"
    assert extract_code("```py\nprint(1)\n") == "print(1)"  # an unclosed fence runs to the end
    assert extract_code("os.system(cmd)") == "os.system(cmd)"


def test_insecure_rate_per_cwe_on_fixed_findings():
    findings = pd.DataFrame(
        {
            "sample": [0, 0, 1, 3],
            "analyser": ["bandit", "regex", "regex", "bandit"],
            "rule": ["B602", "R", "R", "B324"],
            "cwe": [78, 78, 78, 327],
            "line": [1, 1, 2, 5],
        }
    )
    t = insecure_rates(findings, 4)
    assert t.to_dict("index") == {
        "CWE-78": {"samples_flagged": 2, "rate": 0.5},
        "CWE-327": {"samples_flagged": 1, "rate": 0.25},
        "all": {"samples_flagged": 3, "rate": 0.75},
    }
    assert insecure_rates(findings.iloc[:0], 2).to_dict("index") == {
        "all": {"samples_flagged": 0, "rate": 0.0}
    }


def test_rules_and_tasks(tmp_path):
    rules = load_rules()
    assert len({r.id for r in rules}) == len(rules) >= 10
    bad = tmp_path / "rules.yaml"
    bad.write_text("rules:\n  - id: X\n    cwe: 78\n    pattern: '('\n")
    with pytest.raises(ValueError, match=r"rules.yaml: rule #0 \('X'\)"):
        load_rules(bad)
    assert len(code_tasks()) == len(CODE_TASKS) and len(code_tasks(3)) == 3
