"""Hardware acceptance: inventory and health judgements over NVML readings (real or a node
snapshot), named the same way in every failure. The suites in ``suites/hardware`` run them."""

from harness.hardware.findings import Findings, GpuCheck, Judge, assess
from harness.hardware.gpus import Gpu, list_gpus

__all__ = ["Findings", "Gpu", "GpuCheck", "Judge", "assess", "list_gpus"]
