"""What the memory suites share: one case per GPU, and the skip without CUDA.

``gpu`` is parametrised (session scope) with each distinct GPU of ``--devices`` (ids
``cuda:0`` ...); on CPU devices with one case, ``no-gpu``, that skips naming why. Its value is
the GPU's identity (``harness.gpus.Gpu``), which names it in every message and owns the
figures the test records (``gpu=gpu``). ``gpu_memory`` is its memory
(``harness.memory.device.CudaMemory``), and ``capped_gpu`` the GPU where its allocator can be
capped. ``cuda_devices`` is ``--devices`` for claims over all of them, skipping likewise.
The models come from ``harness.plugin.models``: ``model`` (``--model``, else the zoo) and, for
the largest-batch search, ``memory_model`` (``--model``, else the realistic ``MEMORY_ZOO``).
"""

import pytest

from harness.devices import DeviceSet
from harness.gpus import Gpu
from harness.memory.device import CudaMemory, cap_unsupported
from harness.perf.gpus import distinct_gpus
from harness.plugin.node import node_gpus
from harness.plugin.options import chosen_devices
from harness.plugin.rank_tests import pools_key


def needs_cuda(devices: DeviceSet) -> str:
    return (
        "needs a CUDA GPU: torch.cuda's memory accounting (mem_get_info, memory_allocated, "
        f"set_per_process_memory_fraction) has no CPU counterpart; --devices is {devices.label}"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "gpu" in metafunc.fixturenames:
        found = distinct_gpus(chosen_devices(metafunc.config))
        ids = [str(device) for device in found]
        metafunc.parametrize(
            "gpu", found or [None], ids=ids or ["no-gpu"], scope="session", indirect=True
        )


@pytest.fixture(autouse=True)
def no_rank_pool(pytestconfig: pytest.Config) -> None:
    """Memory claims are about what one process can get. A rank pool left by earlier distributed
    tests holds a CUDA context on each GPU it used, so it is closed first (it restarts for the
    next distributed test that needs it)."""
    pytestconfig.stash[pools_key].close()


@pytest.fixture(scope="session")
def gpu(request: pytest.FixtureRequest, devices: DeviceSet) -> Gpu:
    """The GPU of this case."""
    if request.param is None:
        pytest.skip(needs_cuda(devices))
    return node_gpus(request.config).of(request.param)


@pytest.fixture
def gpu_memory(gpu: Gpu) -> CudaMemory:
    """The memory of ``gpu``, through torch's caching allocator."""
    return CudaMemory(gpu.device.index)


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
