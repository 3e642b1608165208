"""The node under test: ``--fake-node``, its NVML, its GPUs, and the fixtures of the hardware
suites.

With ``--fake-node`` every NVML reading comes from that snapshot (a file, or the name of a
shipped example) through ``FakeNvml``; otherwise from the real NVML; where there is none, the
``nvml`` fixture is an object whose every use skips the test, naming why. Each is opened once
per process.

The node's GPUs (``node_gpus(config)``) are built once per process from NVML's list, each
matched by UUID to its CUDA index (``harness.gpus.identify``): torch's own numbering when the
run uses CUDA devices (a ``--fake-node``'s GPUs then match none of them, and this machine's
CUDA devices are listed as GPUs of their own), else what CUDA would show under
``CUDA_VISIBLE_DEVICES``. Every part of the plugin names a GPU through them.

When any selected test uses ``nvml``, this process starts watching XID events before the first
test runs, so a test marked ``run_last`` (moved after the others of its process) sees the XIDs
of the whole run. Under pytest-xdist each worker watches on its own and its ``run_last`` test
runs after that worker's tests only, not after the other workers'.
"""

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, NoReturn

import pytest

from harness.gpus import (
    CudaUnusableError,
    Gpu,
    NodeGpus,
    cuda_from_environment,
    cuda_from_torch,
    identify,
    nvml_gpus,
)
from harness.hardware.load import load_for
from harness.nvml import FakeNvml, Nvml, NvmlUnavailableError, RealNvml, Snapshot
from harness.nvml.snapshot import SnapshotError
from harness.plugin.options import chosen_devices
from harness.profiles import load_node_snapshot

fake_node_key = pytest.StashKey[Snapshot | None]()
nvml_key = pytest.StashKey[Nvml]()
node_gpus_key = pytest.StashKey[NodeGpus]()

RUN_LAST_HELP = (
    "run_last: run after the other tests of this process (the XID check sees what they did)"
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gpu harness")
    group.addoption(
        "--fake-node",
        default=None,
        metavar="NAME|FILE",
        help="read NVML from this node snapshot (python -m harness inventory --json) instead of "
        "the real NVML: a file, or a shipped example by name (h100-sxm-x8, h200x1).",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", RUN_LAST_HELP)
    fake_node(config)  # a bad snapshot is a usage error before anything runs


def fake_node(config: pytest.Config) -> Snapshot | None:
    """The ``--fake-node`` snapshot, read once; a bad one is a ``pytest.UsageError``."""
    if fake_node_key not in config.stash:
        spec = config.getoption("fake_node")
        snapshot = None
        if spec is not None:
            try:
                snapshot = load_node_snapshot(spec)
            except SnapshotError as err:
                raise pytest.UsageError(f"--fake-node {err}") from None
        config.stash[fake_node_key] = snapshot
    return config.stash[fake_node_key]


class NoNvml(Nvml):
    """Stands in for NVML where there is none: any use skips the test with the reason."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def skip(self, *_: Any) -> NoReturn:
        pytest.skip(f"NVML unavailable: {self.reason}")

    driver_version = cuda_version = gpu_uuids = read = topology = readings = xid_events = skip


def node_nvml(config: pytest.Config) -> Nvml:
    """This process's NVML: the ``--fake-node`` snapshot's, the real one, or ``NoNvml``."""
    handle = config.stash.get(nvml_key, None)
    if handle is None:
        snapshot = fake_node(config)
        if snapshot is not None:
            handle = FakeNvml(snapshot)
        else:
            try:
                handle = RealNvml()
            except NvmlUnavailableError as err:
                handle = NoNvml(str(err))
        config.stash[nvml_key] = handle
    return handle


def node_gpus(config: pytest.Config) -> NodeGpus:
    """The node's GPUs, built once per process; see the module's docstring."""
    found = config.stash.get(node_gpus_key, None)
    if found is None:
        nvml = node_nvml(config)
        listed = [] if isinstance(nvml, NoNvml) else nvml_gpus(nvml)
        devices = chosen_devices(config)
        if devices.kind == "cuda":
            try:
                cuda = cuda_from_torch()
            except CudaUnusableError as err:
                raise pytest.UsageError(f"--devices {devices.spec}: CUDA unusable: {err}") from None
            missing = sorted({i for i in devices.device_ids if i >= len(cuda)})
            if missing:
                raise pytest.UsageError(
                    f"--devices {devices.spec}: CUDA shows {len(cuda)} device(s) here, no "
                    + ", ".join(f"cuda:{i}" for i in missing)
                )
            found = NodeGpus(tuple(identify(listed, cuda)), "torch")
        else:
            cuda = cuda_from_environment(listed)
            source = "CUDA_VISIBLE_DEVICES" if cuda is not None else "unknown"
            found = NodeGpus(tuple(identify(listed, cuda)), source)
        config.stash[node_gpus_key] = found
    return found


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    last = [item for item in items if item.get_closest_marker("run_last") is not None]
    items[:] = [item for item in items if item.get_closest_marker("run_last") is None] + last
    uses_nvml = any("nvml" in getattr(item, "fixturenames", ()) for item in items)
    if uses_nvml and not config.option.collectonly:
        node_nvml(config).watch_xid()


def pytest_unconfigure(config: pytest.Config) -> None:
    handle = config.stash.get(nvml_key, None)
    if handle is not None:
        handle.close()


@pytest.fixture(scope="session")
def nvml(pytestconfig: pytest.Config) -> Nvml:
    """NVML readings of the node under test: the ``--fake-node`` snapshot, the real NVML, or
    an object whose use skips the test with the reason NVML is unavailable."""
    return node_nvml(pytestconfig)


@pytest.fixture(scope="session", name="node_gpus")
def node_gpus_fixture(pytestconfig: pytest.Config, nvml: Nvml) -> list[Gpu]:
    """The GPUs NVML lists, in its order (``Gpu.label`` names each in messages)."""
    nvml.gpu_uuids()  # skips, naming why, where there is no NVML
    return node_gpus(pytestconfig).in_nvml_order


@pytest.fixture(scope="session")
def gpu_load(nvml: Nvml) -> Callable[[Gpu], AbstractContextManager[Any]]:
    """``gpu_load(gpu)``: a context keeping that GPU busy (a short CUDA load) on a real node;
    a no-op for a snapshot or a GPU CUDA cannot reach."""
    return load_for(nvml)
