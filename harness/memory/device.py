"""One GPU's memory as the suites use it: allocate, count, cap, release.

``DeviceMemory`` is the small interface the memory checks are written against, so the logic that
decides (how much fits, whether memory grew, what a search found) can be tested on the CPU with a
fake that has a memory budget. ``CudaMemory`` is the real one over torch's caching allocator.

What torch's numbers mean (PyTorch 2.x):

- ``memory_allocated``: bytes of live tensors (rounded up to the allocator's block size);
- ``memory_reserved``: bytes the caching allocator holds from CUDA, live or cached;
- ``set_per_process_memory_fraction(f)``: the allocator refuses to *reserve* more than
  ``f * total`` (``total`` from ``cudaMemGetInfo``), after first releasing its cached blocks
  and retrying; the refusal is a ``torch.OutOfMemoryError``. The CUDA context and the memory
  cuBLAS/cuDNN take outside the allocator do not count against it;
- ``empty_cache``: returns cached, unused blocks to CUDA.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

import torch

from harness.memory.sizes import GIB, format_size


class DeviceMemory(Protocol):
    """What the memory checks need from a device."""

    def allocate(self, nbytes: int) -> object:
        """A block of ``nbytes`` held until the returned object is dropped; raises
        ``torch.OutOfMemoryError`` when the device (or its cap) cannot give it."""

    def allocated(self) -> int:
        """Bytes held by live allocations."""

    def reserved(self) -> int:
        """Bytes the allocator holds, live or cached; what a cap limits."""

    def free_and_total(self) -> tuple[int, int]:
        """The device's free and total bytes, as the driver reports them."""

    def release(self) -> None:
        """Hand cached, unused blocks back to the device once its queued work is done."""

    def reset_peak(self) -> None:
        """Start a new peak measurement."""

    def peak(self) -> int:
        """The most bytes held by live allocations since ``reset_peak``."""

    def fraction(self) -> float:
        """The cap in force, as a fraction of the total (1.0: none)."""

    def set_fraction(self, fraction: float) -> None:
        """Cap what the allocator may reserve at ``fraction`` of the total."""


class CudaMemory:
    """``DeviceMemory`` over torch's CUDA caching allocator for one GPU."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.device = torch.device("cuda", index)

    def allocate(self, nbytes: int) -> torch.Tensor:
        return torch.empty(nbytes, dtype=torch.uint8, device=self.device)

    def allocated(self) -> int:
        return torch.cuda.memory_allocated(self.device)

    def reserved(self) -> int:
        return torch.cuda.memory_reserved(self.device)

    def free_and_total(self) -> tuple[int, int]:
        free, _ = torch.cuda.mem_get_info(self.device)
        # The total the allocator takes a fraction of (cudaDeviceProp.totalGlobalMem in torch
        # 2.13; cudaMemGetInfo's total, the same number, in older releases).
        return free, torch.cuda.get_device_properties(self.device).total_memory

    def release(self) -> None:
        torch.cuda.synchronize(self.device)
        with torch.cuda.device(self.device):
            torch.cuda.empty_cache()

    def reset_peak(self) -> None:
        torch.cuda.reset_peak_memory_stats(self.device)

    def peak(self) -> int:
        return torch.cuda.max_memory_allocated(self.device)

    def fraction(self) -> float:
        getter = getattr(torch.cuda, "get_per_process_memory_fraction", None)
        # torch releases before 2.6 cannot read it back; 1.0 is the allocator's default.
        return 1.0 if getter is None else float(getter(self.device))

    def set_fraction(self, fraction: float) -> None:
        torch.cuda.set_per_process_memory_fraction(float(fraction), self.device)


@contextmanager
def memory_cap(memory: DeviceMemory, cap: int) -> Iterator[int]:
    """Let the allocator reserve at most ``cap`` bytes in all, then restore the cap it had.

    Cached blocks are released first, so only live tensors count against the cap on entry.
    Yields the cap in bytes. ``cap`` above the device's total is a ``ValueError``.
    """
    _, total = memory.free_and_total()
    if cap > total:
        raise ValueError(f"cap of {cap} bytes exceeds the device's {total} bytes")
    previous = memory.fraction()
    memory.release()
    memory.set_fraction(cap / total)
    try:
        yield cap
    finally:
        memory.set_fraction(previous)


# Memory cuBLAS and cuDNN take for themselves, outside torch's allocator, when they create a
# handle or a plan: kept free under a cap, because running out there is a library error
# (CUBLAS_STATUS_ALLOC_FAILED), not a clean torch.OutOfMemoryError.
LIBRARY_HEADROOM = GIB


def allocator_cap(memory: DeviceMemory, limit: int | None) -> int:
    """The cap for torch's allocator that emulates a card with ``limit`` bytes (None: this
    card's free memory), keeping ``LIBRARY_HEADROOM`` free for CUDA libraries.

    Raises ``ValueError`` naming the sizes when the GPU cannot give ``limit``.
    """
    memory.release()
    free, total = memory.free_and_total()
    available = memory.reserved() + free - LIBRARY_HEADROOM
    if limit is None:
        if available <= 0:
            raise ValueError(f"only {format_size(free)} free of {format_size(total)}")
        return available
    if limit > available:
        raise ValueError(
            f"--memory-limit {format_size(limit)} is more than this GPU can give: "
            f"{format_size(free)} free of {format_size(total)}, less "
            f"{format_size(LIBRARY_HEADROOM)} kept for CUDA libraries"
        )
    return limit


# The quick default of the largest-batch search: a card of this size is emulated unless
# --memory-limit says otherwise. At a whole H200 (about 138 GiB under the cap) the search over
# the realistic zoo runs 20-40 training steps per model at batches in the thousands, with
# gigabytes of inputs per step (tiled on the GPU, ``harness.memory.inputs``; drawn on the CPU
# they took most of an estimated half hour): about 8 minutes of GPU time, estimated from the
# sizes. At 4 GiB every model's batch is still set by memory (tens to hundreds, far below the
# ceiling) and the suite takes seconds. The thorough search of the whole card is
# ``--memory-limit`` near the GPU's free memory.
QUICK_SEARCH_LIMIT = 4 * GIB


def search_cap(memory: DeviceMemory, limit: int | None) -> int:
    """The cap of the largest-batch search: ``limit`` when given (see ``allocator_cap``), else
    ``QUICK_SEARCH_LIMIT`` or the GPU's free memory, whichever is less."""
    if limit is not None:
        return allocator_cap(memory, limit)
    return min(allocator_cap(memory, None), QUICK_SEARCH_LIMIT)


def cap_unsupported() -> str | None:
    """Why ``set_per_process_memory_fraction`` has no effect here, or None when it works."""
    backend = torch.cuda.get_allocator_backend()
    if backend != "native":
        return (
            f"torch's {backend} allocator backend (PYTORCH_CUDA_ALLOC_CONF) applies "
            "set_per_process_memory_fraction to bytes in use, not to reserved memory as the "
            "cap here assumes; the native caching allocator is needed"
        )
    return None
