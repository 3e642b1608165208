"""Parametrisation and fixtures of the hardware performance suites.

From ``--devices`` at collection time, for the tests that take them:

- ``gpu``: each distinct GPU once (``cuda:0,0`` is one GPU), ids ``cuda:0``; the value is the
  GPU's identity (``harness.gpus.Gpu``: both indices, UUID, bus id, name);
- ``gpu_pair``: each ordered (source, destination) pair of distinct GPUs, ids
  ``cuda:0-cuda:1``: both directions of every link are measured, since a link can be
  degraded one way only.

Where there is nothing to measure (CPU devices, fewer than two GPUs for a pair, or a torchrun
world) the test gets one parameter that skips saying why; under ``--acceptance`` a skipped
required check fails, as it should on a GPU profile. The GPUs a test runs on own its figures
(``harness.plugin.figures.on_gpus``).
"""

from collections.abc import Iterator

import pytest
import torch

from harness.devices import DeviceSet
from harness.gpus import Gpu
from harness.perf.gpus import distinct_gpus, needs_gpus, ordered_pairs
from harness.plugin.figures import on_gpus
from harness.plugin.node import node_gpus
from harness.plugin.options import chosen_devices


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    devices = chosen_devices(metafunc.config)
    found = distinct_gpus(devices)
    if "gpu" in metafunc.fixturenames:
        _parametrize(metafunc, "gpu", found, needs_gpus(devices, 1), str)
    if "gpu_pair" in metafunc.fixturenames:
        pairs = ordered_pairs(found)
        _parametrize(metafunc, "gpu_pair", pairs, needs_gpus(devices, 2), _pair_id)


def _parametrize(metafunc, name, values, skip_reason, make_id) -> None:
    if skip_reason is not None:
        values = [pytest.param(None, id="no-gpu", marks=pytest.mark.skip(reason=skip_reason))]
    metafunc.parametrize(name, values, ids=make_id, indirect=True)


def _pair_id(pair: tuple[torch.device, torch.device]) -> str:
    return f"{pair[0]}-{pair[1]}"


@pytest.fixture
def gpu(request: pytest.FixtureRequest) -> Iterator[Gpu]:
    """The GPU under test; its label is the test's ``gpu`` property."""
    found = node_gpus(request.config).of(request.param)
    on_gpus(request.node, found)
    yield found
    release_cached_memory()


@pytest.fixture
def gpu_pair(request: pytest.FixtureRequest) -> Iterator[tuple[Gpu, Gpu]]:
    """(source, destination); both labelled in the JUnit properties."""
    gpus = node_gpus(request.config)
    pair = tuple(gpus.of(device) for device in request.param)
    on_gpus(request.node, *pair)
    yield pair
    release_cached_memory()


def release_cached_memory() -> None:
    # The measurements' buffers (hundreds of MiB each) go back to the driver, not to the
    # caching allocator, so later suites (memory) see the GPU as the node has it.
    torch.cuda.empty_cache()


@pytest.fixture
def gpu_world(devices: DeviceSet) -> int:
    """One rank per distinct GPU: the world size of the collective measurements."""
    reason = needs_gpus(devices, 2)
    if reason is not None:
        pytest.skip(reason)
    return len(distinct_gpus(devices))


@pytest.fixture
def device_labels(pytestconfig: pytest.Config, devices: DeviceSet) -> dict[str, str]:
    """How messages name each CUDA device of ``--devices``: ``{"cuda:0": label}``."""
    gpus = node_gpus(pytestconfig)
    return {str(device): gpus.of(device).label for device in distinct_gpus(devices)}
