"""What a hardware check found: problems (one line each, naming the GPU, the value and the
limit), readings NVML could not give, and the figures it read, for JUnit.

A check is a judge run over every GPU (``assess``) or built directly for node-wide facts. The
plugin turns findings into a test outcome: any problem fails the test, else any unavailable
reading skips it naming the metric and reason, else it passes. A lost GPU is a problem of that
GPU, never a skip.
"""

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from harness import properties as names
from harness.gpus import Gpu
from harness.nvml import GpuLostError, Nvml, Unavailable

# A figure: name, value, unit, and the GPU it belongs to (None: the node).
Figure = tuple[str, float, str, Gpu | None]


@dataclass
class Findings:
    problems: list[str] = field(default_factory=list)
    unavailable: list[str] = field(default_factory=list)
    metrics: list[Figure] = field(default_factory=list)
    properties: list[names.Property] = field(default_factory=list)  # facts, not numbers


class GpuCheck:
    """One GPU's readings for a judge, and where its findings go."""

    def __init__(self, nvml: Nvml, gpu: Gpu, findings: Findings) -> None:
        self.nvml = nvml
        self.gpu = gpu
        self.findings = findings

    def reading(self, metric: str) -> Any:
        """The raw reading, ``Unavailable`` included. Raises ``GpuLostError`` for a lost GPU."""
        return self.nvml.read(self.gpu.uuid, metric)

    def value(self, metric: str) -> Any:
        """The reading, or None when NVML cannot give it (recorded as unavailable)."""
        return self.available(self.reading(metric))

    def xid_events(self) -> tuple[int, ...] | None:
        """The XIDs seen on the GPU, or None when NVML cannot watch them (recorded)."""
        return self.available(self.nvml.xid_events(self.gpu.uuid))

    def available(self, reading: Any) -> Any:
        """``reading`` itself, or None for an ``Unavailable`` one (recorded as such)."""
        if isinstance(reading, Unavailable):
            self.findings.unavailable.append(f"{self.gpu.label}: {reading}")
            return None
        return reading

    def problem(self, text: str) -> None:
        self.findings.problems.append(f"{self.gpu.label}: {text}")

    def metric(self, name: str, value: float, unit: str = "") -> None:
        """A figure of this GPU, named ``gpu<NVML index>.<name>``; booleans as 0 or 1."""
        number = int(value) if isinstance(value, bool) else value
        figure = names.gpu_figure(self._index, name)
        self.findings.metrics.append((figure, number, unit, self.gpu))

    def fact(self, name: str, value: str) -> None:
        self.findings.properties.append((names.gpu_fact(self._index, name), value))

    @property
    def _index(self) -> int:
        assert self.gpu.nvml_index is not None, "hardware checks judge the GPUs NVML lists"
        return self.gpu.nvml_index


Judge = Callable[[GpuCheck], None]


def assess(
    nvml: Nvml,
    gpus: list[Gpu],
    judge: Judge,
    around: Callable[[Gpu], AbstractContextManager[Any]] | None = None,
) -> Findings:
    """Run ``judge`` on every GPU, each inside ``around(gpu)`` when given (e.g. a load)."""
    findings = Findings()
    for gpu in gpus:
        check = GpuCheck(nvml, gpu, findings)
        try:
            with around(gpu) if around is not None else nullcontext():
                judge(check)
        except GpuLostError as err:
            check.problem(f"GPU lost (NVML_ERROR_GPU_IS_LOST reading {err.metric})")
    return findings
