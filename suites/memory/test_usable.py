"""Claim: each GPU gives a process at least the profile's memory, less the driver's and the
CUDA context's share.

The whole GPU is allocated in blocks (1 GiB, halving after each refusal down to 2 MiB) until it
runs out; the sum is what a job can use. The figure ``usable_memory`` is judged through the
profile like every other figure: its reference is ``inventory.min_memory_mib``, the card's
memory as NVML reports it, and it may fall below it by
``harness.profiles.USABLE_MEMORY_ALLOWANCE_MIB`` (see there for why 1.5 GiB). Memory held by
anything else, or a card with less memory, falls below that.
"""

import pytest

from harness.checks import USABLE_MEMORY, Check
from harness.gpus import Gpu
from harness.memory.device import CudaMemory
from harness.memory.sizes import MIB
from harness.memory.usable import allocatable_bytes
from harness.profiles import Profile


@pytest.mark.required_check(Check.MEMORY_USABLE)
def test_usable_memory_meets_the_profile(
    gpu: Gpu, gpu_memory: CudaMemory, profile: Profile, figures
) -> None:
    if profile.reference(USABLE_MEMORY) is None:
        pytest.skip(f"profile {profile.name} sets no inventory.min_memory_mib")
    gpu_memory.release()
    free, total = gpu_memory.free_and_total()
    # Tensors this process still holds (session fixtures, caches) are memory it was given.
    held = gpu_memory.allocated()
    usable = (held + allocatable_bytes(gpu_memory)) / MIB
    figures.record("memory_total", round(total / MIB), "MiB", gpu=gpu)
    # The CUDA context and any other process, before this test allocated anything.
    figures.record("memory_in_use_before", round((total - free) / MIB), "MiB", gpu=gpu)
    figures.record(USABLE_MEMORY, round(usable), "MiB", gpu=gpu)
