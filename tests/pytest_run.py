"""pytest in a subprocess, with the harness plugin, as a user starts it."""

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def clean_env() -> dict[str, str]:
    """This environment less the outer pytest's own settings (PYTEST_ADDOPTS, xdist ids)."""
    return {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}


def run_pytest(
    args: list[str],
    *,
    cwd: Path = REPO,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pytest", "-p", "harness.plugin", "-p", "no:cacheprovider"]
    return subprocess.run(
        [*command, *args],
        cwd=cwd,
        env=clean_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def junit_outcomes(path: Path) -> dict[str, tuple[str, str]]:
    """test name -> (outcome, message) from a JUnit file; outcome is ``passed`` or the result
    element's tag: ``failure``, ``error``, ``skipped``."""
    result = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        child = next(iter(c for c in case if c.tag in ("failure", "error", "skipped")), None)
        outcome = "passed" if child is None else child.tag
        result[case.get("name")] = (outcome, "" if child is None else child.get("message", ""))
    return result


def junit_case_properties(path: Path, test: str, prefix: str = "") -> dict[str, str]:
    """The properties of the test named ``test`` whose names start with ``prefix``."""
    case = next(c for c in ET.parse(path).getroot().iter("testcase") if c.get("name") == test)
    properties = ((p.get("name"), p.get("value")) for p in case.iter("property"))
    return {name: value for name, value in properties if name.startswith(prefix)}


def junit_suite_properties(path: Path) -> dict[str, str]:
    root = ET.parse(path).getroot()
    return {p.get("name"): p.get("value") for p in root.find("testsuite/properties") or []}


def undocumented_properties(path: Path) -> list[str]:
    """The properties of a JUnit file that ``harness.properties.TABLE`` does not document at
    their level (suite or test), as ``level:name``."""
    from tests.unit.test_properties import documents

    root = ET.parse(path).getroot()
    found = set()
    for suite in root.iter("testsuite"):
        for prop in suite.findall("properties/property"):
            found.add(("suite", prop.get("name", "")))
        for case in suite.iter("testcase"):
            found |= {("test", prop.get("name", "")) for prop in case.iter("property")}
    return sorted(f"{level}:{name}" for level, name in found if not documents(name, level))


def assert_one_usage_error(done: subprocess.CompletedProcess[str], message: str) -> None:
    """The run stopped with pytest's usage-error exit code, 4, and one ``ERROR:`` line that
    contains ``message``, with no traceback."""
    assert done.returncode == 4, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1, done.stderr
    assert message in errors[0], errors[0]
    assert "Traceback" not in done.stdout + done.stderr
