"""The node under test as NVML sees it: ``--fake-node FILE``, the ``nvml`` and ``node_gpus``
fixtures, and what the hardware suites need around them.

With ``--fake-node`` every NVML reading comes from that snapshot (see README, "Node snapshots")
through ``FakeNvml``; otherwise from the real NVML; where there is none, the ``nvml`` fixture is
an object whose every use skips the test, naming why.

When any selected test uses ``nvml``, this process opens NVML before the first test runs and
starts watching XID events there, so a test marked ``run_last`` (moved after the others of its
process) sees the XIDs of the whole run. Under pytest-xdist each worker watches on its own and
its ``run_last`` test runs after that worker's tests only, not after the other workers'.
"""

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, NoReturn

import pytest

from harness.hardware import Findings, Gpu, list_gpus
from harness.hardware.load import load_for
from harness.nvml import FakeNvml, Nvml, NvmlUnavailableError, RealNvml, Snapshot
from harness.nvml.snapshot import SnapshotError, load_snapshot
from harness.plugin.profile import chosen_profile
from harness.profiles import Profile

fake_node_key = pytest.StashKey[Snapshot | None]()
nvml_key = pytest.StashKey[Nvml]()

RUN_LAST_HELP = (
    "run_last: run after the other tests of this process (the XID check sees what they did)"
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gpu harness")
    group.addoption(
        "--fake-node",
        default=None,
        metavar="FILE",
        help="read NVML from this node snapshot (python -m harness inventory --json) instead of "
        "the real NVML, e.g. profiles/snapshots/h200x1.json.",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", RUN_LAST_HELP)
    path = config.getoption("fake_node")
    snapshot = None
    if path is not None:
        try:
            snapshot = load_snapshot(path)
        except SnapshotError as err:
            raise pytest.UsageError(f"--fake-node {err}") from None
    config.stash[fake_node_key] = snapshot


class NoNvml(Nvml):
    """Stands in for NVML where there is none: any use skips the test with the reason."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def skip(self, *_: Any) -> NoReturn:
        pytest.skip(f"NVML unavailable: {self.reason}")

    driver_version = cuda_version = gpu_uuids = read = topology = readings = xid_events = skip


def open_nvml(config: pytest.Config) -> Nvml:
    snapshot = config.stash.get(fake_node_key, None)
    if snapshot is not None:
        return FakeNvml(snapshot)
    try:
        return RealNvml()
    except NvmlUnavailableError as err:
        return NoNvml(str(err))


def node_nvml(config: pytest.Config) -> Nvml:
    """This process's NVML, opened once and watching XID events from then on."""
    handle = config.stash.get(nvml_key, None)
    if handle is None:
        handle = open_nvml(config)
        handle.watch_xid()
        config.stash[nvml_key] = handle
    return handle


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    last = [item for item in items if item.get_closest_marker("run_last") is not None]
    items[:] = [item for item in items if item.get_closest_marker("run_last") is None] + last
    uses_nvml = any("nvml" in getattr(item, "fixturenames", ()) for item in items)
    if uses_nvml and not config.option.collectonly:
        node_nvml(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    handle = config.stash.get(nvml_key, None)
    if handle is not None:
        handle.close()


@pytest.fixture(scope="session")
def nvml(pytestconfig: pytest.Config) -> Nvml:
    """NVML readings of the node under test: the ``--fake-node`` snapshot, the real NVML, or
    an object whose use skips the test with the reason NVML is unavailable."""
    return node_nvml(pytestconfig)


@pytest.fixture(scope="session")
def node_gpus(nvml: Nvml) -> list[Gpu]:
    """The GPUs NVML lists, in its order, with index, UUID and PCI bus id (``Gpu.label``)."""
    return list_gpus(nvml)


@pytest.fixture(scope="session")
def node_profile(pytestconfig: pytest.Config) -> Profile | None:
    """The ``--profile`` in force, or None: for checks that judge without one too."""
    return chosen_profile(pytestconfig)


@pytest.fixture(scope="session")
def gpu_load(nvml: Nvml) -> Callable[[Gpu], AbstractContextManager[Any]]:
    """``gpu_load(gpu)``: a context keeping that GPU busy (a short CUDA load) on a real node;
    a no-op for a snapshot or a GPU torch cannot reach."""
    return load_for(nvml)


@pytest.fixture
def judged(
    request: pytest.FixtureRequest, record_metric: Callable[..., None]
) -> Callable[[Findings], None]:
    """``judged(findings)``: record their figures as JUnit properties, then fail on any
    problem, else skip naming any reading NVML could not give."""

    def conclude(findings: Findings) -> None:
        for name, value, unit in findings.metrics:
            record_metric(name, value, unit)
        request.node.user_properties += findings.properties
        if findings.problems:
            pytest.fail("\n".join(findings.problems), pytrace=False)
        if findings.unavailable:
            pytest.skip("; ".join(findings.unavailable))

    return conclude
