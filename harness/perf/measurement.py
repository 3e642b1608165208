"""A measured figure with how it was measured, for JUnit properties."""

from dataclasses import dataclass

from harness.perf.timing import Timing


@dataclass(frozen=True)
class Measurement:
    """``value`` in ``unit``, from the median of ``timing``'s repeats.

    ``details`` say what was measured (size, dtype, what counts as bytes moved), as
    (name, text) pairs.
    """

    value: float
    unit: str
    timing: Timing
    details: tuple[tuple[str, str], ...] = ()

    def properties(self, metric: str) -> list[tuple[str, str]]:
        """``<metric>.median_time``, ``.repeats``, ``.warmup`` and each detail.

        Not under ``metric.``: those keys are the judged figures themselves."""
        return [
            (f"{metric}.median_time", f"{self.timing.median * 1e3:.6g} ms"),
            (f"{metric}.repeats", str(self.timing.repeats)),
            (f"{metric}.warmup", str(self.timing.warmup)),
            *((f"{metric}.{name}", text) for name, text in self.details),
        ]
