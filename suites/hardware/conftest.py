"""Parametrisation and fixtures of the hardware performance suites.

From ``--devices`` at collection time, for the tests that take them:

- ``gpu_device``: each distinct GPU once (``cuda:0,0`` is one GPU), ids ``cuda:0``;
- ``gpu_pair``: each ordered (source, destination) pair of distinct GPUs, ids
  ``cuda:0-cuda:1``: both directions of every link are measured, since a link can be
  degraded one way only.

Where there is nothing to measure (CPU devices, fewer than two GPUs for a pair, or a torchrun
world) the test gets one parameter that skips saying why; under ``--acceptance`` a skipped
required check fails, as it should on a GPU profile.

``report_metric(metric, measurement)`` turns a figure into JUnit properties: judged by
``check_metric`` when the ``--profile`` has a reference for it, else recorded with
``record_metric``, so a run without a profile still reports its numbers.
"""

from collections.abc import Callable, Iterator

import pytest
import torch

from harness.devices import DeviceSet
from harness.perf.gpus import distinct_gpus, gpu_label, needs_gpus, ordered_pairs
from harness.perf.measurement import Measurement
from harness.plugin.options import chosen_devices
from harness.plugin.profile import chosen_profile
from harness.profiles import METRICS


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    devices = chosen_devices(metafunc.config)
    gpus = distinct_gpus(devices)
    if "gpu_device" in metafunc.fixturenames:
        _parametrize(metafunc, "gpu_device", gpus, needs_gpus(devices, 1), str)
    if "gpu_pair" in metafunc.fixturenames:
        pairs = ordered_pairs(gpus)
        _parametrize(metafunc, "gpu_pair", pairs, needs_gpus(devices, 2), _pair_id)


def _parametrize(metafunc, name, values, skip_reason, make_id) -> None:
    if skip_reason is not None:
        values = [pytest.param(None, id="no-gpu", marks=pytest.mark.skip(reason=skip_reason))]
    metafunc.parametrize(name, values, ids=make_id, indirect=True)


def _pair_id(pair: tuple[torch.device, torch.device]) -> str:
    return f"{pair[0]}-{pair[1]}"


@pytest.fixture
def gpu_device(request: pytest.FixtureRequest) -> Iterator[torch.device]:
    """The GPU under test; its label (index, name, UUID, PCI bus id) is a JUnit property."""
    gpu = request.param
    request.node.user_properties.append(("gpu", gpu_label(gpu)))
    yield gpu
    release_cached_memory()


@pytest.fixture
def gpu_pair(request: pytest.FixtureRequest) -> Iterator[tuple[torch.device, torch.device]]:
    """(source, destination); both labelled in the JUnit properties."""
    source, destination = request.param
    request.node.user_properties += [
        ("gpu.source", gpu_label(source)),
        ("gpu.destination", gpu_label(destination)),
    ]
    yield source, destination
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
def report_metric(
    request: pytest.FixtureRequest, pytestconfig: pytest.Config, record_metric
) -> Callable[[str, Measurement], None]:
    """Record ``measurement`` as ``metric``: judged when the profile has a reference for it."""
    profile = chosen_profile(pytestconfig)

    def report(metric: str, measurement: Measurement) -> None:
        unit = METRICS[metric]
        if measurement.unit != unit:
            raise ValueError(f"{metric} is in {unit}, the measurement in {measurement.unit}")
        request.node.user_properties += measurement.properties(metric)
        if profile is not None and metric in profile.performance:
            request.getfixturevalue("check_metric")(metric, measurement.value)
        else:
            record_metric(metric, measurement.value, unit)

    return report
