"""``--profile``, ``--acceptance`` and ``required_check`` end to end, on a throwaway suite.

All runs start together once per module (each imports torch); the tests read their results.
"""

import json
import subprocess
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.pytest_run import (
    REPO,
    assert_one_usage_error,
    junit_case_properties,
    junit_outcomes,
    junit_suite_properties,
    run_pytest,
)

SNAPSHOTS = REPO / "harness" / "profiles" / "shipped" / "snapshots"

SUITE = """
import pytest


@pytest.mark.required_check("health.ecc")
def test_skips_in_body():
    pytest.skip("ECC mode: NotSupported")


@pytest.mark.required_check("health.ecc")
@pytest.mark.skip(reason="skipped by marker")
def test_skips_by_marker():
    pass


@pytest.fixture
def no_nvml():
    pytest.skip("NVML: library not found")


@pytest.mark.required_check("health.row_remap")
def test_skips_in_setup(no_nvml):
    pass


@pytest.mark.required_check("health.nvlink")
def test_not_required_by_profile():
    pytest.skip("NVLink: NotSupported")


def test_unmarked_skip():
    pytest.skip("not a check")


@pytest.mark.required_check("health.ecc")
def test_runs():
    pass


@pytest.mark.xfail(reason="expected", strict=True)
def test_xfails():
    assert False


@pytest.mark.required_check("performance.d2d_copy_bandwidth")
@pytest.mark.parametrize("measured", [100.0, 92.0, 80.0], ids=["pass", "warn", "fail"])
def test_metric(figures, measured):
    figures.record("d2d_copy_bandwidth", measured, "GB/s")


@pytest.mark.required_check("performance.p2p_bandwidth")
def test_metric_without_reference(figures):
    assert figures.record("p2p_bandwidth", 1.0, "GB/s") is None


def test_fixtures(profile, acceptance):
    assert profile.name == "accept"
    assert acceptance in (True, False)
"""

PROFILE = """
name = "accept"
description = "profile for the end-to-end test"

[inventory]
gpu_count = 0

[performance.d2d_copy_bandwidth]
value = 100
unit = "GB/s"
lower_pct = 15
upper_pct = 10
warn_pct = 5

[required]
checks = ["health.ecc", "health.row_remap"]
"""

RUNS = {
    "no profile": [],
    "auto": ["--profile", "auto", "--fake-node", "h100-sxm-x8", "-k", "runs"],
    "profile": ["--profile", "PROFILE"],
    "acceptance": ["--profile", "PROFILE", "--acceptance"],
    "acceptance xdist": ["--profile", "PROFILE", "--acceptance", "-n", "2"],
    "shipped": ["--profile", "cpu-virtual", "--acceptance", "-k", "runs"],
    "profile, checks left out": ["--profile", "PROFILE", "-k", "runs"],
    "acceptance, checks left out": ["--profile", "PROFILE", "--acceptance", "-k", "runs"],
    "acceptance xdist, checks left out": [
        *("--profile", "PROFILE", "--acceptance", "-k", "runs", "-n", "2"),
    ],
}
LEFT_OUT = (
    "profile accept requires 2 check(s) no selected test implements: "
    "health.row_remap, performance.d2d_copy_bandwidth"
)

BAD_RUNS = {
    "acceptance alone": (["--acceptance"], "--acceptance needs --profile NAME|PATH|auto"),
    "auto, a GPU gone": (
        ["--profile", "auto", "--fake-node", "SEVEN"],
        "--profile auto: no shipped profile matches: this node has 7x NVIDIA H100 80GB HBM3 "
        "(fake-node SEVEN) (h100-sxm-8x expects 8: a GPU missing?",
    ),
    "check name typo": (
        ["TYPO"],
        "test_typo.py::test_typo: @pytest.mark.required_check: unknown check 'healt.ecc' "
        "(did you mean 'health.ecc'?)",
    ),
    "required check marked xfail": (
        ["XFAIL"],
        "test_xfail.py::test_xfail: a required check cannot be marked xfail",
    ),
    "unknown name": (["--profile", "h300"], "--profile h300: no such profile (shipped: "),
    "broken profile": (["--profile", "BROKEN"], "broken.toml: inventory.gpu_count: must be >= 0"),
}


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    suite = tmp_path_factory.mktemp("suite")
    (suite / "pytest.ini").write_text("[pytest]\njunit_family = xunit2\n")
    (suite / "test_checks.py").write_text(SUITE)
    (suite / "accept.toml").write_text(PROFILE)
    (suite / "broken.toml").write_text(PROFILE.replace("gpu_count = 0", "gpu_count = -1"))
    snapshot = json.loads((SNAPSHOTS / "h100-sxm-x8.json").read_text())
    gone = snapshot["gpus"].pop()["uuid"]
    snapshot["topology"] = [pair for pair in snapshot["topology"] if gone not in pair["gpus"]]
    (suite / "h100x7.json").write_text(json.dumps(snapshot))
    for name, marks in LONE.items():
        lone(suite, name).mkdir()
        (lone(suite, name) / f"test_{name}.py").write_text(
            f"import pytest\n\n{marks}\ndef test_{name}():\n    pass\n"
        )
    return suite


# Suites of one test each, beside the main one: a marker that names no known check, and a
# required check marked xfail.
LONE = {
    "typo": "@pytest.mark.required_check('healt.ecc')",
    "xfail": "@pytest.mark.required_check('health.ecc')\n@pytest.mark.xfail(reason='known')",
}


def lone(suite: Path, name: str) -> Path:
    return suite.parent / f"{suite.name}-{name}"


def command(suite: Path, name: str, args: list[str]) -> list[str]:
    paths = {
        "PROFILE": str(suite / "accept.toml"),
        "BROKEN": str(suite / "broken.toml"),
        "SEVEN": str(suite / "h100x7.json"),
    }
    where = next((str(lone(suite, n)) for n in LONE if n.upper() in args), str(suite))
    args = [paths.get(arg, arg) for arg in args if arg.lower() not in LONE]
    return [where, "-rA", *args, "--junitxml", str(suite / f"{name}.xml")]


@pytest.fixture(scope="module")
def runs(suite: Path) -> Iterator[dict[str, Future[subprocess.CompletedProcess[str]]]]:
    commands = {name: command(suite, name, args) for name, args in RUNS.items()}
    commands |= {name: command(suite, name, args) for name, (args, _) in BAD_RUNS.items()}
    with ThreadPoolExecutor(max_workers=len(commands)) as pool:
        yield {name: pool.submit(run_pytest, args) for name, args in commands.items()}


def outcomes(suite: Path, name: str) -> dict[str, tuple[str, str]]:
    return junit_outcomes(suite / f"{name}.xml")


def case_properties(suite: Path, name: str, test: str) -> dict[str, str]:
    return junit_case_properties(suite / f"{name}.xml", test, "metric.")


def suite_properties(suite: Path, name: str) -> dict[str, str]:
    return junit_suite_properties(suite / f"{name}.xml")


@pytest.mark.parametrize("name", BAD_RUNS)
def test_bad_profile_option_is_one_usage_error(runs, suite, name):
    done = runs[name].result()
    _, message = BAD_RUNS[name]
    assert_one_usage_error(done, message.replace("SEVEN", str(suite / "h100x7.json")))


def test_without_profile_skips_stay_skips(runs, suite):
    done = runs["no profile"].result()
    assert done.returncode == 0, done.stdout + done.stderr
    result = outcomes(suite, "no profile")
    assert result["test_skips_in_setup"][0] == "skipped"
    assert "no node profile" in result["test_fixtures"][1]
    assert "profile" not in suite_properties(suite, "no profile")


def test_profile_without_acceptance_keeps_skips(runs, suite):
    done = runs["profile"].result()
    assert done.returncode == 1, done.stdout + done.stderr
    result = outcomes(suite, "profile")
    assert result["test_fixtures"][0] == "passed"
    assert result["test_skips_in_body"][0] == "skipped"
    assert result["test_metric[pass]"][0] == "passed"
    assert result["test_metric[warn]"][0] == "passed"
    assert "ReferenceWarning: d2d_copy_bandwidth: 92 GB/s: warn" in done.stdout
    assert result["test_metric[fail]"] == (
        "failure",
        "Failed: d2d_copy_bandwidth: 80 GB/s: fail, below 85 GB/s "
        "(reference 100 GB/s, -15%/+10% (warn beyond 5%))",
    )
    assert result["test_metric_without_reference"][0] == "passed"  # recorded, not judged
    assert case_properties(suite, "profile", "test_metric_without_reference") == {
        "metric.p2p_bandwidth": "1 GB/s"
    }
    assert case_properties(suite, "profile", "test_metric[warn]") == {
        "metric.d2d_copy_bandwidth": "92 GB/s",
        "metric.d2d_copy_bandwidth.reference": "100 GB/s",
        "metric.d2d_copy_bandwidth.tolerance": "-15%/+10% (warn beyond 5%)",
        "metric.d2d_copy_bandwidth.verdict": "warn",
    }
    properties = suite_properties(suite, "profile")
    assert (properties["profile"], properties["acceptance"]) == ("accept", "false")


@pytest.mark.parametrize("name", ["acceptance", "acceptance xdist"])
def test_acceptance_fails_skips_of_required_checks(runs, suite, name):
    done = runs[name].result()
    assert done.returncode == 1, done.stdout + done.stderr
    result = outcomes(suite, name)
    assert result["test_skips_in_body"] == (
        "failure",
        "Failed: required check health.ecc did not run under --acceptance (profile accept): "
        "ECC mode: NotSupported",
    )
    assert result["test_skips_by_marker"][0] == "failure"
    assert result["test_skips_by_marker"][1].endswith(": skipped by marker")
    # A skip in setup (here a fixture's) is a failure too, not an error.
    assert result["test_skips_in_setup"] == (
        "failure",
        "Failed: required check health.row_remap did not run under --acceptance (profile accept): "
        "NVML: library not found",
    )
    assert result["test_not_required_by_profile"][0] == "skipped"
    assert result["test_unmarked_skip"][0] == "skipped"
    assert result["test_runs"][0] == "passed"
    assert result["test_xfails"][0] == "skipped"  # JUnit's form of xfail
    assert result["test_fixtures"][0] == "passed"
    assert result["test_metric_without_reference"][0] == "passed"  # p2p not judged here
    assert suite_properties(suite, name)["acceptance"] == "true"
    # The three skips above and the figure below its tolerance.
    assert "4 failed" in done.stdout
    assert " error" not in done.stdout.splitlines()[-1]


def test_shipped_profile_by_name(runs, suite):
    done = runs["shipped"].result()
    assert done.returncode == 0, done.stdout + done.stderr
    properties = suite_properties(suite, "shipped")
    assert (properties["profile"], properties["profile.chosen_by"]) == ("cpu-virtual", "name")


def test_auto_picks_the_shipped_profile_of_the_nodes_gpus_and_says_so(runs, suite):
    done = runs["auto"].result()
    assert done.returncode == 0, done.stdout + done.stderr
    assert (
        "profile: h100-sxm-8x (auto: 8x NVIDIA H100 80GB HBM3 (fake-node h100-sxm-x8))"
        in done.stdout
    )
    properties = suite_properties(suite, "auto")
    assert (properties["profile"], properties["profile.chosen_by"]) == ("h100-sxm-8x", "auto")


def test_required_checks_left_out_warn(runs, suite):
    done = runs["profile, checks left out"].result()
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"MissingChecksWarning: {LEFT_OUT}" in done.stdout
    assert "required_checks" not in outcomes(suite, "profile, checks left out")


@pytest.mark.parametrize(
    "name", ["acceptance, checks left out", "acceptance xdist, checks left out"]
)
def test_required_checks_left_out_fail_acceptance(runs, suite, name):
    done = runs[name].result()
    assert done.returncode == 1, done.stdout + done.stderr
    result = outcomes(suite, name)
    assert result == {"test_runs": ("passed", ""), "required_checks": ("failure", LEFT_OUT)}
    failed = [line for line in done.stdout.splitlines() if line.startswith("FAILED ")]
    assert len(failed) == 1, failed
    assert "acceptance::required_checks" in failed[0]
    assert LEFT_OUT in done.stdout
