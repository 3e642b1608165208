"""Usable memory, the cap and the out-of-memory probe against fake devices, faults included."""

import gc

import pytest
import torch

from harness.memory.device import memory_cap
from harness.memory.fake import FakeMemory
from harness.memory.oom import probe_oom_boundary
from harness.memory.usable import allocatable_bytes

MIB = 2**20
GIB = 2**30


# ------------------------------------------------------------------ usable memory


def test_allocatable_bytes_is_the_free_memory_to_two_mib():
    memory = FakeMemory(total=80 * GIB + 123 * MIB + 4567, context=500 * MIB)
    free, _ = memory.free_and_total()
    usable = allocatable_bytes(memory)
    assert free - 2 * MIB < usable <= free
    assert memory.allocated() == 0  # everything given back
    assert memory.reserved() == 0


def test_memory_held_elsewhere_is_not_usable():
    memory = FakeMemory(total=80 * GIB)
    held = memory.allocate(30 * GIB)
    assert allocatable_bytes(memory) == 50 * GIB
    del held


class Cycle:
    """An object in a reference cycle holding a block: freed only by the garbage collector."""

    def __init__(self, block: torch.Tensor) -> None:
        self.block = block
        self.me = self


@pytest.fixture
def no_automatic_gc():
    # The collector must not run on its own during these tests: only where the code asks.
    gc.disable()
    yield
    gc.enable()


def test_garbage_of_earlier_tests_counts_as_usable(no_automatic_gc):
    memory = FakeMemory(total=8 * GIB)
    Cycle(memory.allocate(GIB))  # unreachable at once, still holding its block
    assert memory.allocated() == GIB
    assert allocatable_bytes(memory) == 8 * GIB


# ------------------------------------------------------------------ the cap


def test_memory_cap_limits_reservations_and_is_lifted_afterwards():
    memory = FakeMemory(total=10 * GIB)
    memory.set_fraction(0.75)
    with memory_cap(memory, 2 * GIB) as cap:
        assert cap == 2 * GIB
        assert memory.fraction() == pytest.approx(0.2)
        with pytest.raises(torch.OutOfMemoryError):
            memory.allocate(2 * GIB + 1)
        block = memory.allocate(2 * GIB)
        del block
    assert memory.fraction() == 0.75


def test_memory_cap_is_lifted_when_the_body_fails():
    memory = FakeMemory(total=GIB)
    with pytest.raises(RuntimeError), memory_cap(memory, MIB):
        raise RuntimeError("boom")
    assert memory.fraction() == 1.0


def test_a_cap_above_the_card_is_refused():
    with pytest.raises(ValueError, match="exceeds"), memory_cap(FakeMemory(total=GIB), 2 * GIB):
        pass


# ------------------------------------------------------------------ the OOM probe


def test_a_healthy_device_passes_the_probe():
    memory = FakeMemory(total=80 * GIB, context=GIB)
    kept = memory.allocate(GIB)  # a model already on the device
    probe = probe_oom_boundary(memory)
    assert probe.problems == ()
    assert probe.headroom == 4 * GIB
    assert probe.cap == 5 * GIB
    assert probe.beyond == 6 * GIB
    assert memory.fraction() == 1.0
    del kept


def test_a_small_device_probes_a_quarter_of_its_free_memory():
    probe = probe_oom_boundary(FakeMemory(total=64 * MIB))
    assert probe.problems == ()
    assert probe.headroom == 16 * MIB


def test_the_probe_collects_earlier_garbage_first(no_automatic_gc):
    memory = FakeMemory(total=8 * GIB)
    Cycle(memory.allocate(GIB))
    probe = probe_oom_boundary(memory)
    assert probe.problems == ()
    assert probe.headroom == 2 * GIB  # a quarter of all 8 GiB: the garbage was collected first
    assert memory.allocated() == 0


class FreedElsewhere(FakeMemory):
    """Another owner's block is freed while the probe runs (a collector, another thread)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.other = super().allocate(MIB)

    def allocate(self, nbytes: int) -> torch.Tensor:
        self.other = None
        return super().allocate(nbytes)


def test_memory_freed_by_others_during_the_probe_is_not_a_leak():
    assert probe_oom_boundary(FreedElsewhere(total=64 * MIB)).problems == ()


class IgnoresCap(FakeMemory):
    def limit(self) -> int:
        return self.total - self.context


class WrongError(FakeMemory):
    def allocate(self, nbytes: int) -> torch.Tensor:
        try:
            return super().allocate(nbytes)
        except torch.OutOfMemoryError:
            raise RuntimeError("CUDA error: an illegal memory access was encountered") from None


class Leaks(FakeMemory):
    """Keeps a block alive for every out-of-memory error (an allocator bug)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.kept = []

    def allocate(self, nbytes: int) -> torch.Tensor:
        try:
            return super().allocate(nbytes)
        except torch.OutOfMemoryError:
            self.kept.append(super().allocate(MIB))
            raise


class Wedged(FakeMemory):
    """After its first out-of-memory error the device refuses everything."""

    wedged = False

    def allocate(self, nbytes: int) -> torch.Tensor:
        if self.wedged:
            raise torch.OutOfMemoryError("wedged")
        try:
            return super().allocate(nbytes)
        except torch.OutOfMemoryError:
            self.wedged = True
            raise


class KeepsCap(FakeMemory):
    """Cannot lift a cap once set."""

    def set_fraction(self, fraction: float) -> None:
        if self.cap_fraction == 1.0:
            super().set_fraction(fraction)


@pytest.mark.parametrize(
    ("fake", "problem"),
    [
        (IgnoresCap, "an allocation of 24 MiB beyond the cap of 16 MiB succeeded"),
        (
            WrongError,
            "an allocation of 24 MiB beyond the cap of 16 MiB raised RuntimeError, not "
            "torch.OutOfMemoryError: CUDA error: an illegal memory access was encountered",
        ),
        (Leaks, "memory_allocated is 1048576 bytes after the probe, 0 before"),
        (Wedged, "after the out-of-memory error, 8 MiB under the cap could not be allocated"),
        (KeepsCap, "memory fraction is 0.25 after the probe, 1.0 before"),
    ],
)
def test_each_fault_is_named(fake, problem):
    probe = probe_oom_boundary(fake(total=64 * MIB))
    assert any(p.startswith(problem) for p in probe.problems), probe.problems
