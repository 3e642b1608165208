"""Hardware acceptance: inventory and health judgements over NVML readings (real or a node
snapshot), named the same way in every failure. The suites in ``suites/hardware`` run them."""

from harness.hardware.findings import Findings, GpuCheck, Judge, assess

__all__ = ["Findings", "GpuCheck", "Judge", "assess"]
