"""The growth detector: a leak fails, lazily created state and temporaries do not."""

import pytest
import torch

from harness.memory.fake import FakeMemory
from harness.memory.growth import GrowthReport, measure_growth


class Loop:
    """A training loop on a fake device: each step allocates activations and frees them."""

    def __init__(self, memory: FakeMemory, *, leak: int = 0, lazy: int = 0) -> None:
        self.memory = memory
        self.leak = leak
        self.lazy = lazy
        self.kept: list[torch.Tensor] = []  # what a leaking loop holds on to (a loss history)
        self.state: torch.Tensor | None = None

    def step(self) -> None:
        activations = self.memory.allocate(4096)
        if self.state is None and self.lazy:
            self.state = self.memory.allocate(self.lazy)  # optimizer state, on the first step
        if self.leak:
            self.kept.append(self.memory.allocate(self.leak))
        del activations


def test_a_leak_is_detected():
    loop = Loop(FakeMemory(10**9), leak=512)
    report = measure_growth(loop.step, loop.memory.allocated, warmup=3, iterations=10)
    assert report.grew
    assert report.growth == 10 * 512
    assert report.first_growth == 1
    assert report.describe().startswith("grew by 5120 bytes over 10 iterations")


def test_state_created_during_warm_up_is_not_growth():
    loop = Loop(FakeMemory(10**9), lazy=10**6)
    report = measure_growth(loop.step, loop.memory.allocated, warmup=1, iterations=10)
    assert not report.grew
    assert report.growth == 0
    assert report.baseline == 10**6
    assert report.describe() == "stayed within 0 bytes of 1000000 over 10 iterations"


def test_a_leak_in_real_tensors_is_seen_by_a_byte_counter():
    kept = []

    def step() -> None:
        x = torch.randn(256, 16, requires_grad=True)
        loss = (x * 2).sum()
        loss.backward()
        if len(kept) < 100:
            kept.append(loss)  # a loss history kept with its graph

    report = measure_growth(
        step, lambda: sum(t.numel() * t.element_size() for t in kept), warmup=2, iterations=5
    )
    assert report.grew
    assert report.first_growth == 1


def test_a_late_leak_names_its_first_iteration():
    report = GrowthReport(baseline=100, readings=(100, 100, 100, 612, 612), tolerance=0)
    assert report.first_growth == 4
    assert report.growth == 512


def test_tolerance_is_inclusive():
    report = GrowthReport(baseline=100, readings=(164, 100), tolerance=64)
    assert not report.grew
    assert GrowthReport(baseline=100, readings=(165,), tolerance=64).grew


def test_shrinking_is_not_growth():
    report = GrowthReport(baseline=100, readings=(90, 80), tolerance=0)
    assert not report.grew
    assert report.growth == -10


def test_bad_arguments():
    with pytest.raises(ValueError):
        measure_growth(lambda: None, lambda: 0, warmup=0, iterations=1)
