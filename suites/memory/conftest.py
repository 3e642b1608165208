"""What the memory suites share: one case per GPU, and the skip without CUDA.

``gpu_index`` is parametrised (session scope) with each distinct GPU of ``--devices`` (ids
``cuda:0`` ...); on CPU devices with one case, ``no-gpu``, whose ``gpu`` fixture skips naming
why. ``capped_gpu`` is ``gpu`` where its allocator can be capped. ``cuda_devices`` is
``--devices`` for claims over all of them, skipping likewise. ``memory_spec`` is parametrised
with the models of the largest-batch search (``--memory-model``, else ``MEMORY_ZOO``).
"""

import pytest

from harness.devices import DeviceSet
from harness.memory.device import Gpu, cap_unsupported, distinct_gpus
from harness.plugin.memory import memory_models
from harness.plugin.options import chosen_devices
from harness.plugin.rank_tests import pools_key


def needs_cuda(devices: DeviceSet) -> str:
    return (
        "needs a CUDA GPU: torch.cuda's memory accounting (mem_get_info, memory_allocated, "
        f"set_per_process_memory_fraction) has no CPU counterpart; --devices is {devices.label}"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "gpu_index" in metafunc.fixturenames:
        indices: list[int | None] = list(distinct_gpus(chosen_devices(metafunc.config)))
        ids = [f"cuda:{index}" for index in indices]
        metafunc.parametrize("gpu_index", indices or [None], ids=ids or ["no-gpu"], scope="session")
    if "memory_spec" in metafunc.fixturenames:
        specs = memory_models(metafunc.config)
        metafunc.parametrize("memory_spec", specs, ids=[spec.name for spec in specs])


@pytest.fixture(autouse=True)
def no_rank_pool(pytestconfig: pytest.Config) -> None:
    """Memory claims are about what one process can get. A rank pool left by earlier distributed
    tests holds a CUDA context on each GPU it used, so it is closed first (it restarts for the
    next distributed test that needs it)."""
    pytestconfig.stash[pools_key].close()


@pytest.fixture(scope="session")
def gpu(gpu_index: int | None, devices: DeviceSet) -> Gpu:
    """The GPU of this case: index, label (index, UUID, PCI bus id) and memory."""
    if gpu_index is None:
        pytest.skip(needs_cuda(devices))
    return Gpu.of(devices, gpu_index)


@pytest.fixture(scope="session")
def capped_gpu(gpu: Gpu) -> Gpu:
    """``gpu``, where ``set_per_process_memory_fraction`` can cap its allocator."""
    reason = cap_unsupported()
    if reason is not None:
        pytest.skip(f"{gpu.label}: {reason}")
    return gpu


@pytest.fixture(scope="session")
def cuda_devices(devices: DeviceSet) -> DeviceSet:
    """``--devices`` when they are GPUs."""
    if devices.kind != "cuda":
        pytest.skip(needs_cuda(devices))
    return devices
