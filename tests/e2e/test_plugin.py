"""The plugin end to end: pytest in subprocesses on a throwaway suite.

Every run imports torch (about 3 s), so all runs start together once per module
and the tests only read their results.
"""

import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from junitparser import JUnitXml

from tests.pytest_run import assert_one_usage_error, run_pytest

SUITE = """
import os

import pytest
import torch


@pytest.mark.parametrize("n", [1, 2, 3], ids=["one", "same", "same"])
def test_param(n):
    assert n > 0


def test_metric(figures):
    figures.record("step_time", 12.3, "ms", reference=10.0)


CUBLAS_AT_COLLECTION = os.environ.get("CUBLAS_WORKSPACE_CONFIG")


def test_environment_is_set_before_any_test_module_is_imported():
    assert CUBLAS_AT_COLLECTION == ":4096:8"
    assert os.environ["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"


def test_fixtures(devices, device_kind, dp_impl, data_parallel):
    assert device_kind == devices.kind == "cpu"
    module = torch.nn.Linear(4, 2)
    wrapped = data_parallel(module)
    x = torch.randn(6, 4)
    torch.testing.assert_close(wrapped(x), module(x))
    if dp_impl.name == "dpfactory:make":
        assert wrapped.dp_args == (devices.device_ids, None, 0)
"""

# A user factory in the suite's rootdir, which the plugin must be able to import.
FACTORY = """
def make(module, device_ids, output_device, dim):
    module.dp_args = (device_ids, output_device, dim)
    return module
"""

JUNIT_RUNS = {
    "plain": ["--devices", "cpu:3"],
    "xdist": ["--devices", "cpu:2", "--dp-impl", "dpfactory:make", "-n", "2"],
}
EXPECTED = {"plain": ("cpu:3", "reference"), "xdist": ("cpu:2", "dpfactory:make")}

# One run per error class; every form of each is covered by the unit tests.
BAD_RUNS = {
    "devices gpu": (["--devices", "gpu"], "--devices 'gpu' is not a device spec"),
    "dp-impl torch on cpu": (
        ["--devices", "cpu:2", "--dp-impl", "torch"],
        "--dp-impl torch: torch.nn.DataParallel needs CUDA devices",
    ),
}


def run_suite(suite: Path, args: list[str]) -> subprocess.CompletedProcess[str]:
    return run_pytest([str(suite), *args])


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    suite = tmp_path_factory.mktemp("suite")
    (suite / "pytest.ini").write_text("[pytest]\njunit_family = xunit2\n")
    (suite / "test_suite.py").write_text(SUITE)
    (suite / "dpfactory.py").write_text(FACTORY)
    return suite


@pytest.fixture(scope="module")
def runs(suite: Path) -> Iterator[dict[str, Future[subprocess.CompletedProcess[str]]]]:
    commands = {
        name: [*args, "--junitxml", str(suite / f"{name}.xml")] for name, args in JUNIT_RUNS.items()
    }
    commands |= {name: args for name, (args, _) in BAD_RUNS.items()}
    with ThreadPoolExecutor(max_workers=len(commands)) as pool:
        yield {name: pool.submit(run_suite, suite, args) for name, args in commands.items()}


def junit(runs, suite: Path, name: str) -> Path:
    """The JUnit file of a run that passed."""
    done = runs[name].result()
    assert done.returncode == 0, done.stdout + done.stderr
    return suite / f"{name}.xml"


def properties(element: ET.Element) -> dict[str, str]:
    return {prop.get("name"): prop.get("value") for prop in element.iterfind("properties/property")}


@pytest.mark.parametrize("name", BAD_RUNS)
def test_bad_option_is_one_usage_error(runs, name):
    done = runs[name].result()
    _, message = BAD_RUNS[name]
    assert_one_usage_error(done, message)


def test_header_names_devices_impl_and_versions(runs):
    stdout = runs["plain"].result().stdout
    assert "devices: cpu:3 (3 virtual CPU devices)" in stdout
    assert "dp-impl: reference" in stdout
    cuda = torch.version.cuda or "n/a"
    assert f"torch {torch.__version__}, cuda {cuda}, cudnn " in stdout
    assert ", nccl " in stdout
    assert ", driver " in stdout


@pytest.mark.parametrize("name", JUNIT_RUNS)
def test_junit_suite_properties(runs, suite, name):
    [testsuite] = JUnitXml.fromfile(str(junit(runs, suite, name)))
    found = {prop.name: prop.value for prop in testsuite.properties()}
    devices, dp_impl = EXPECTED[name]
    assert found["devices"] == devices
    assert found["dp_impl"] == dp_impl
    assert found["torch"] == torch.__version__
    assert found["cuda"] == (torch.version.cuda or "n/a")
    assert {"host", "cudnn", "nccl", "driver", "harness", "nvidia_ml_py"} <= found.keys()
    assert not [key for key in found if key.startswith("gpu.")]  # CPU devices have no GPU facts
    # Set at configure, before any test (and whatever tests were collected), and recorded.
    assert found["env.CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert found["env.CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"


@pytest.mark.parametrize("name", JUNIT_RUNS)
def test_junit_testcase_properties(runs, suite, name):
    cases = ET.parse(junit(runs, suite, name)).findall(".//testcase")
    assert len(cases) == 6
    devices, dp_impl = EXPECTED[name]
    for case in cases:
        assert case.find("failure") is None
        assert case.find("error") is None
        found = properties(case)
        assert found["devices"] == devices
        assert found["dp_impl"] == dp_impl
    [metric] = [case for case in cases if case.get("name") == "test_metric"]
    assert properties(metric) == {
        "devices": devices,
        "dp_impl": dp_impl,
        "metric.step_time": "12.3 ms",
        "metric.step_time.reference": "10 ms",
    }


@pytest.mark.parametrize("name", JUNIT_RUNS)
def test_junit_testcase_ids_are_unique(runs, suite, name):
    cases = ET.parse(junit(runs, suite, name)).iter("testcase")
    ids = [(case.get("classname"), case.get("name")) for case in cases]
    assert len(ids) == len(set(ids))
    assert sum(1 for _, case in ids if case.startswith("test_param[")) == 3


def test_plugin_loads_once_through_every_route() -> None:
    """``-p harness.plugin``, the checkout's conftest.py and, when the package is
    installed, the ``pytest11`` entry point all register the one module name."""
    done = run_pytest(["--collect-only", "-q", "suites/dp/test_gather.py"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Plugin already registered" not in done.stdout + done.stderr
    assert "tests collected" in done.stdout
