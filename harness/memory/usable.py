"""How much memory a process can actually allocate on a GPU, and the floor it is judged by.

The profile's ``min_memory_mib`` is the card's memory as NVML reports it. A process gets less:
the driver reserves some for itself (NVML's "reserved" memory, about 0.5 GiB on Hopper), the
process's own CUDA context takes some (0.3 to 0.6 GiB with torch's lazy module loading, the
default since CUDA 11.7), and cuBLAS/cuDNN handles a little more. ``CONTEXT_ALLOWANCE_MIB``
covers these with a margin; memory held by anything else (a stray process, a MIG slice, a
card with less memory) shows up beyond it and fails the check.
"""

import gc
from dataclasses import dataclass

import torch

from harness.memory.device import DeviceMemory
from harness.memory.sizes import GIB, MIB

CONTEXT_ALLOWANCE_MIB = 1536

# Allocations start at 1 GiB and halve after each refusal down to 2 MiB, the caching
# allocator's granularity for large blocks: what is left unmeasured is under 2 MiB.
LARGEST_CHUNK = GIB
SMALLEST_CHUNK = 2 * MIB


def allocatable_bytes(
    memory: DeviceMemory, *, largest: int = LARGEST_CHUNK, smallest: int = SMALLEST_CHUNK
) -> int:
    """Bytes ``memory.allocate`` gives before it runs out, all held at once; freed again
    (and the cache released) before returning.

    Unreachable tensors of earlier tests (in reference cycles) are collected first, and the
    cache released, so what they held counts as available.
    """
    gc.collect()
    memory.release()
    held = []
    total = 0
    chunk = largest
    try:
        while chunk >= smallest:
            try:
                held.append(memory.allocate(chunk))
            except torch.OutOfMemoryError:
                chunk //= 2
            else:
                total += chunk
    finally:
        held.clear()
        memory.release()
    return total


@dataclass(frozen=True)
class UsableMemory:
    """One GPU's allocatable memory against a profile's minimum."""

    usable_mib: float
    min_memory_mib: int
    allowance_mib: int = CONTEXT_ALLOWANCE_MIB

    @property
    def floor_mib(self) -> int:
        return self.min_memory_mib - self.allowance_mib

    @property
    def ok(self) -> bool:
        return self.usable_mib >= self.floor_mib

    @property
    def tolerance(self) -> float:
        """The allowance as a fraction of the minimum, how JUnit records it."""
        return self.allowance_mib / self.min_memory_mib

    def describe(self) -> str:
        return (
            f"usable memory = {self.usable_mib:.0f} MiB, limit >= {self.floor_mib} MiB (profile "
            f"minimum {self.min_memory_mib} MiB less {self.allowance_mib} MiB for the driver "
            f"and CUDA context)"
        )
