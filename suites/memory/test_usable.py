"""Claim: each GPU gives a process at least the profile's memory, less the driver's and the
CUDA context's share.

The whole GPU is allocated in blocks (1 GiB, halving after each refusal down to 2 MiB) until it
runs out; the sum is what a job can use. The profile's ``inventory.min_memory_mib`` is the
card's memory as NVML reports it, so the floor is that minimum less
``harness.memory.usable.CONTEXT_ALLOWANCE_MIB`` (see there for why 1.5 GiB). Memory held by
anything else, or a card with less memory, falls below it.
"""

import pytest

from harness.memory.device import Gpu
from harness.memory.sizes import MIB
from harness.memory.usable import UsableMemory, allocatable_bytes
from harness.profiles import Profile


@pytest.mark.required_check("memory.usable")
def test_usable_memory_meets_the_profile(gpu: Gpu, profile: Profile, record_metric) -> None:
    minimum = profile.inventory.min_memory_mib
    if minimum is None:
        pytest.skip(f"profile {profile.name} sets no inventory.min_memory_mib")
    gpu.memory.release()
    free, total = gpu.memory.free_and_total()
    # Tensors this process still holds (session fixtures, caches) are memory it was given.
    held = gpu.memory.allocated()
    usable = UsableMemory((held + allocatable_bytes(gpu.memory)) / MIB, minimum)
    record_metric(
        "usable_memory",
        round(usable.usable_mib),
        "MiB",
        reference=minimum,
        tolerance=usable.tolerance,
    )
    record_metric("memory_total", round(total / MIB), "MiB")
    # The CUDA context and any other process, before this test allocated anything.
    record_metric("memory_in_use_before", round((total - free) / MIB), "MiB")
    if not usable.ok:
        pytest.fail(f"{gpu.label}: {usable.describe()}", pytrace=False)
