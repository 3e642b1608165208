"""How much memory a process can actually allocate on a GPU.

The figure is judged through the profile (``harness.profiles.Profile.reference``): its
``min_memory_mib`` less an allowance for the driver's and the CUDA context's share.
"""

import gc

import torch

from harness.memory.device import DeviceMemory
from harness.memory.sizes import GIB, MIB

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
