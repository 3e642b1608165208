"""What the harness reads from NVML, and the values it reads."""

from abc import ABC, abstractmethod
from dataclasses import dataclass

# Reasons a metric can be unavailable without anything being wrong with the GPU, named after
# NVML's error codes.
UNAVAILABLE_REASONS = ("NotSupported", "NoPermission", "FunctionNotFound")
# A reading an older snapshot format did not record (see harness.nvml.snapshot).
NOT_IN_SNAPSHOT = "NotInSnapshot"
# How a reason starts when an optional NVML facility failed with an error of its own.
NVML_ERROR = "NVML error "

# Every per-GPU metric and the Python type of its reading. ``tuple`` readings are tuples of str.
METRICS: dict[str, type] = {
    "name": str,
    "uuid": str,
    "pci_bus_id": str,
    "memory_total_mib": int,
    "memory_used_mib": int,
    "ecc_enabled": bool,
    "ecc_aggregate_corrected": int,
    "ecc_aggregate_uncorrected": int,
    "ecc_volatile_corrected": int,
    "ecc_volatile_uncorrected": int,
    "remapped_rows_correctable": int,
    "remapped_rows_uncorrectable": int,
    "remapped_rows_pending": bool,
    "remapped_rows_failure": bool,
    "retired_pages_pending": bool,
    "temperature_c": int,
    "temperature_slowdown_c": int,  # NVML's threshold where the GPU starts to slow down
    "temperature_shutdown_c": int,  # and where it shuts down
    "power_usage_w": float,
    "power_limit_w": float,
    "sm_clock_mhz": int,
    "memory_clock_mhz": int,
    "clock_event_reasons": tuple,
    "pcie_gen_current": int,
    "pcie_gen_max": int,
    "pcie_width_current": int,
    "pcie_width_max": int,
    "nvlink_links_total": int,  # links the GPU has, up or not
    "nvlink_links_up": int,
    "mig_enabled": bool,
}

# NVML's nvmlGpuTopologyLevel_t, nearest first.
TOPOLOGY_LEVELS = ("internal", "single", "multiple", "hostbridge", "node", "system")


@dataclass(frozen=True)
class Unavailable:
    """A metric NVML cannot give here: ``reason`` is one of ``UNAVAILABLE_REASONS``,
    ``NOT_IN_SNAPSHOT`` for a reading an older snapshot did not record, or NVML's error where
    an optional facility failed (``xid_events``: "NVML error registering for XID events: ...").
    """

    metric: str
    reason: str

    def __str__(self) -> str:
        return f"{self.metric} unavailable ({self.reason})"


Reading = str | int | float | bool | tuple[str, ...] | Unavailable


class GpuLostError(RuntimeError):
    """NVML_ERROR_GPU_IS_LOST: the GPU stopped answering. A failure, never a skip."""

    def __init__(self, gpu: str, metric: str) -> None:
        super().__init__(f"GPU {gpu} is lost (NVML_ERROR_GPU_IS_LOST reading {metric})")
        self.gpu = gpu
        self.metric = metric


class NvmlUnavailableError(RuntimeError):
    """NVML cannot be used on this machine at all (no library, no driver, no bindings)."""


class Nvml(ABC):
    """The NVML readings the harness uses. GPUs are named by UUID, in NVML (PCI bus) order."""

    @abstractmethod
    def driver_version(self) -> str: ...

    @abstractmethod
    def cuda_version(self) -> str:
        """The CUDA version the driver supports, ``"13.0"``."""

    @abstractmethod
    def gpu_uuids(self) -> list[str]: ...

    @abstractmethod
    def read(self, uuid: str, metric: str) -> Reading:
        """One reading of ``metric`` (a key of ``METRICS``) on the GPU ``uuid``.

        Raises ``GpuLostError`` for a lost GPU and ``KeyError`` for an unknown GPU or metric.
        """

    @abstractmethod
    def topology(self, uuid_a: str, uuid_b: str) -> str | Unavailable:
        """The nearest common ancestor of two GPUs, one of ``TOPOLOGY_LEVELS``."""

    def watch_xid(self) -> None:  # noqa: B027 - optional hook
        """Start collecting XID (critical error) events; ``xid_events`` returns those seen from
        here on. Calling it again changes nothing."""

    @abstractmethod
    def xid_events(self, uuid: str) -> tuple[int, ...] | Unavailable:
        """The XID numbers NVML reported for the GPU ``uuid`` since ``watch_xid`` (started by
        this call if it was not), oldest first. Raises ``GpuLostError`` for a lost GPU."""

    def readings(self, uuid: str) -> dict[str, Reading]:
        """Every metric of one GPU."""
        return {metric: self.read(uuid, metric) for metric in METRICS}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release NVML; a no-op for implementations that hold nothing."""


def check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise KeyError(f"unknown NVML metric {metric!r}")
