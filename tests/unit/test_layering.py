"""The library below the pytest plugin runs without pytest: every module outside
``harness/plugin/`` imports, in a fresh interpreter, without loading pytest, and none of them
imports pytest anywhere in its source (a lazy import inside a function included). Skips and
failures are raised by fixtures and hooks in the plugin."""

import ast
import json
import subprocess
import sys
from pathlib import Path

from tests.pytest_run import REPO

HARNESS = REPO / "harness"
# pytest glue: the plugin itself, and the module its pytest11 entry point names.
GLUE = ("harness/plugin/", "harness/entry_point.py")


def library_modules() -> list[str]:
    """Every module of the library, as a dotted name, in a stable order."""
    names = []
    for path in sorted(HARNESS.rglob("*.py")):
        relative = path.relative_to(REPO).as_posix()
        if relative.startswith(GLUE):
            continue
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names.append(".".join(parts))
    return names


PROBE = """
import importlib, json, sys
found = {}
for name in json.loads(sys.argv[1]):
    importlib.import_module(name)
    loaded = sorted(m for m in ("pytest", "_pytest") if m in sys.modules)
    if loaded:
        found[name] = loaded
        break
print(json.dumps(found))
"""


def test_every_library_module_imports_without_loading_pytest():
    modules = library_modules()
    assert "harness.rankpool.worker" in modules
    assert "harness.plugin" not in modules
    run = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(modules)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    first = json.loads(run.stdout.strip().splitlines()[-1])
    assert first == {}, f"importing {first} loads pytest; the library must not"


def imports_of(path: Path) -> list[tuple[int, str]]:
    """Every module an ``import`` or ``from ... import`` in ``path`` names, with its line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.lineno, node.module))
    return found


def test_no_library_module_imports_pytest_even_lazily():
    offenders = [
        f"{path.relative_to(REPO)}:{line}: import {name}"
        for path in sorted(HARNESS.rglob("*.py"))
        if not path.relative_to(REPO).as_posix().startswith(GLUE)
        for line, name in imports_of(path)
        if name.split(".")[0] in ("pytest", "_pytest")
    ]
    assert offenders == []


def test_the_scan_sees_a_lazy_import(tmp_path):
    module = tmp_path / "lazy.py"
    module.write_text("def f():\n    from _pytest.outcomes import Skipped\n    import pytest\n")
    assert imports_of(module) == [(2, "_pytest.outcomes"), (3, "pytest")]
