"""Memory growth across training iterations: a leak detector.

After warm-up (optimizer state, library workspaces and anything else created lazily on the
first steps), a training step with fixed shapes allocates and frees the same tensors every
time, so the bytes held between steps are the same after every step. Any growth is memory that
something still references: a leak. The default tolerance is therefore 0 bytes.
"""

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class GrowthReport:
    """``readings[i]`` is the bytes held after the i-th step following warm-up."""

    baseline: int
    readings: tuple[int, ...]
    tolerance: int

    @property
    def growth(self) -> int:
        """The largest increase over the baseline (negative when memory only went down)."""
        return max(self.readings) - self.baseline

    @property
    def grew(self) -> bool:
        return self.growth > self.tolerance

    @property
    def first_growth(self) -> int | None:
        """The 1-based iteration after warm-up where memory first exceeded the tolerance."""
        return next(
            (i + 1 for i, r in enumerate(self.readings) if r - self.baseline > self.tolerance),
            None,
        )

    def describe(self) -> str:
        """One line: ``grew by 4096 bytes over 10 iterations, from ... (first after iteration 1;
        tolerance 0 bytes)``, or that it stayed within the tolerance."""
        steps = len(self.readings)
        if not self.grew:
            return (
                f"stayed within {self.tolerance} bytes of {self.baseline} over {steps} iterations"
            )
        return (
            f"grew by {self.growth} bytes over {steps} iterations, from {self.baseline} to "
            f"{max(self.readings)} (first after iteration {self.first_growth}; tolerance "
            f"{self.tolerance} bytes)"
        )


def measure_growth(
    step: Callable[[], object],
    held: Callable[[], int],
    *,
    warmup: int,
    iterations: int,
    tolerance: int = 0,
) -> GrowthReport:
    """Run ``step`` ``warmup`` times, read ``held()`` as the baseline, then run it
    ``iterations`` more times reading ``held()`` after each."""
    if warmup < 1 or iterations < 1 or tolerance < 0:
        raise ValueError("need warmup >= 1, iterations >= 1 and tolerance >= 0")
    for _ in range(warmup):
        step()
    baseline = held()
    readings = []
    for _ in range(iterations):
        step()
        readings.append(held())
    return GrowthReport(baseline, tuple(readings), tolerance)
