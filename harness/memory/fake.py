"""A device with a memory budget, for testing the memory logic on the CPU.

``FakeMemory`` follows the caching allocator's rules as ``DeviceMemory`` describes them: freed
blocks stay reserved (cached) until ``release``; a cap limits what is reserved; an allocation
that does not fit first drops the cache and retries, then raises ``torch.OutOfMemoryError``.
Blocks are tiny CPU tensors that stand for their size, so budgets of any size cost nothing.

``FakeModel`` is a training step whose footprint is ``per_sample * batch + fixed`` bytes.
"""

import weakref

import torch

# The message torch's allocator gives, shortened.
OOM_MESSAGE = "CUDA out of memory. Tried to allocate {size} bytes (fake device)"
STAND_IN_BYTES = 64


class FakeMemory:
    """``DeviceMemory`` over a budget of ``total`` bytes, ``context`` of them not for the
    allocator (the CUDA context)."""

    def __init__(self, total: int, context: int = 0) -> None:
        self.total = total
        self.context = context
        self.live = 0
        self.cached = 0
        self.max_live = 0
        self.cap_fraction = 1.0
        self.releases = 0

    def limit(self) -> int:
        """The most the allocator may reserve: the free device or the cap, whichever is less."""
        return min(self.total - self.context, int(self.cap_fraction * self.total))

    def allocate(self, nbytes: int) -> torch.Tensor:
        if self.live + self.cached + nbytes > self.limit():
            self.drop_cache()
        if self.live + self.cached + nbytes > self.limit():
            raise torch.OutOfMemoryError(OOM_MESSAGE.format(size=nbytes))
        self.live += nbytes
        self.max_live = max(self.max_live, self.live)
        block = torch.zeros(min(nbytes, STAND_IN_BYTES), dtype=torch.uint8)
        weakref.finalize(block, self._free, nbytes)
        return block

    def _free(self, nbytes: int) -> None:
        self.live -= nbytes
        self.cached += nbytes

    def drop_cache(self) -> None:
        """What the allocator does by itself before it gives up: free the cached blocks."""
        self.cached = 0

    def allocated(self) -> int:
        return self.live

    def reserved(self) -> int:
        return self.live + self.cached

    def free_and_total(self) -> tuple[int, int]:
        return self.total - self.context - self.reserved(), self.total

    def release(self) -> None:
        self.releases += 1
        self.cached = 0

    def reset_peak(self) -> None:
        self.max_live = self.live

    def peak(self) -> int:
        return self.max_live

    def fraction(self) -> float:
        return self.cap_fraction

    def set_fraction(self, fraction: float) -> None:
        if not 0 <= fraction <= 1:
            raise ValueError(f"Invalid fraction value: {fraction}. Allowed range: 0~1")
        self.cap_fraction = fraction


class FakeModel:
    """A training step on a ``FakeMemory`` needing ``footprint(batch)`` bytes at its peak;
    ``steps`` counts the calls."""

    def __init__(self, memory: FakeMemory, per_sample: int, fixed: int = 0) -> None:
        self.memory = memory
        self.per_sample = per_sample
        self.fixed = fixed
        self.steps: list[int] = []

    def footprint(self, batch: int) -> int:
        return self.per_sample * batch + self.fixed

    def __call__(self, batch: int) -> None:
        self.steps.append(batch)
        activations = self.memory.allocate(self.footprint(batch))
        del activations

    def largest(self, limit: int) -> int:
        """The true answer: the largest batch whose footprint fits in ``limit`` bytes."""
        return max(0, (limit - self.fixed) // self.per_sample)
