"""Claim: under ``set_per_process_memory_fraction`` an allocation beyond the cap is a clean
``torch.OutOfMemoryError``, the device stays usable, and nothing is left behind.

The cap sits a quarter of the free memory (at most 4 GiB) above what the process holds, so only
the cap can refuse. Half of that headroom must fit; one and a half times it must raise
``torch.OutOfMemoryError`` (not another error, not succeed); after freeing, half the headroom
must be allocatable and hold what is written; afterwards ``memory_allocated`` is back at its
value before, and the fraction at its previous value (``harness.memory.oom``).
"""

import pytest

from harness.checks import Check
from harness.gpus import Gpu
from harness.memory.device import CudaMemory
from harness.memory.oom import probe_oom_boundary
from harness.memory.sizes import MIB


@pytest.mark.required_check(Check.MEMORY_OOM_BOUNDARY)
def test_allocation_beyond_the_cap_is_a_clean_oom(
    capped_gpu: Gpu, gpu_memory: CudaMemory, figures
) -> None:
    probe = probe_oom_boundary(gpu_memory)
    figures.record("oom.cap", probe.cap / MIB, "MiB", gpu=capped_gpu)
    figures.record("oom.refused_allocation", probe.beyond / MIB, "MiB", gpu=capped_gpu)
    if probe.problems:
        pytest.fail("\n".join(f"{capped_gpu.label}: {p}" for p in probe.problems), pytrace=False)
