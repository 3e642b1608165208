"""The real NVML, through nvidia-ml-py (``import pynvml``)."""

import ctypes
from collections.abc import Callable
from types import ModuleType
from typing import Any

from harness.nvml.interface import (
    NVML_ERROR,
    TOPOLOGY_LEVELS,
    GpuLostError,
    Nvml,
    NvmlUnavailableError,
    Reading,
    Unavailable,
    check_metric,
)

# NVML return codes (nvml.h); also pynvml.NVML_ERROR_*.
NOT_SUPPORTED, NO_PERMISSION, TIMEOUT, LIBRARY_NOT_FOUND, FUNCTION_NOT_FOUND, GPU_IS_LOST = (
    3,
    4,
    10,
    12,
    13,
    15,
)
UNAVAILABLE_CODES = {
    NOT_SUPPORTED: "NotSupported",
    NO_PERMISSION: "NoPermission",
    FUNCTION_NOT_FOUND: "FunctionNotFound",
}

# nvmlClocksEventReasons bits (nvml.h), in bit order.
CLOCK_EVENT_REASONS = {
    0x1: "GpuIdle",
    0x2: "ApplicationsClocksSetting",
    0x4: "SwPowerCap",
    0x8: "HwSlowdown",
    0x10: "SyncBoost",
    0x20: "SwThermalSlowdown",
    0x40: "HwThermalSlowdown",
    0x80: "HwPowerBrakeSlowdown",
    0x100: "DisplayClockSetting",
}
TOPOLOGY_CODES = dict(zip((0, 10, 20, 30, 40, 50), TOPOLOGY_LEVELS, strict=True))
NVLINK_MAX_LINKS = 18
MIB = 1 << 20
TEMPERATURE_GPU = 0  # nvmlTemperatureSensors_t
THRESHOLD_SHUTDOWN, THRESHOLD_SLOWDOWN = 0, 1  # nvmlTemperatureThresholds_t
EVENT_XID_CRITICAL_ERROR = 0x8  # nvmlEventTypeXidCriticalError
UNREADABLE_PREFIX = "GPU-unreadable-index-"  # the stand-in UUID of a GPU NVML cannot open


def text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def address(handle: Any) -> int | None:
    """A device handle's address: event data carries a new handle object for the same device."""
    return ctypes.cast(handle, ctypes.c_void_p).value


def xid_trouble(doing: str, err: Exception) -> Unavailable:
    """The XID readings when NVML failed at ``doing``: unavailable, with NVML's error."""
    return Unavailable("xid_events", f"{NVML_ERROR}{doing}: {err}")


def clock_event_names(mask: int) -> tuple[str, ...]:
    names = [name for bit, name in CLOCK_EVENT_REASONS.items() if mask & bit]
    rest = mask & ~sum(CLOCK_EVENT_REASONS)
    if rest:
        names.append(f"Unknown(0x{rest:x})")
    return tuple(names)


class RealNvml(Nvml):
    """NVML on this machine. ``RealNvml()`` initialises NVML or raises ``NvmlUnavailableError``
    with one line saying why; ``close()`` shuts it down."""

    def __init__(self, module: ModuleType | None = None) -> None:
        if module is None:
            try:
                import pynvml as module  # nvidia-ml-py
            except ImportError as err:
                raise NvmlUnavailableError(f"nvidia-ml-py is not installed ({err})") from None
        self.nv = module
        try:
            self.nv.nvmlInit()
        except self.nv.NVMLError as err:
            if getattr(err, "value", None) == LIBRARY_NOT_FOUND:
                raise NvmlUnavailableError(
                    "NVML library not found (libnvidia-ml.so.1; no NVIDIA driver here?)"
                ) from None
            raise NvmlUnavailableError(f"NVML failed to initialise: {err}") from None
        self.handles: dict[str, Any] = {}
        # A GPU NVML counts but cannot open (fallen off the bus: NVML_ERROR_GPU_IS_LOST) keeps
        # its place in NVML's order under a stand-in UUID, and every reading of it is lost.
        self.unreadable: dict[str, str] = {}
        for index in range(self.nv.nvmlDeviceGetCount()):
            try:
                handle = self.nv.nvmlDeviceGetHandleByIndex(index)
                uuid = text(self.nv.nvmlDeviceGetUUID(handle))
            except self.nv.NVMLError as err:
                uuid, handle = f"{UNREADABLE_PREFIX}{index}", None
                self.unreadable[uuid] = str(err)
            self.handles[uuid] = handle
        self.event_set: Any = None
        # Per GPU: the XIDs seen since watch_xid, or why they cannot be (empty: not watching).
        self.xids: dict[str, list[int] | Unavailable | GpuLostError] = {}

    def close(self) -> None:
        if self.event_set is not None:
            self.nv.nvmlEventSetFree(self.event_set)
            self.event_set = None
        self.nv.nvmlShutdown()

    def driver_version(self) -> str:
        return text(self.nv.nvmlSystemGetDriverVersion())

    def cuda_version(self) -> str:
        version = self.nv.nvmlSystemGetCudaDriverVersion_v2()
        return f"{version // 1000}.{version % 1000 // 10}"

    def gpu_uuids(self) -> list[str]:
        return list(self.handles)

    def read(self, uuid: str, metric: str) -> Reading:
        check_metric(metric)
        handle = self.opened(uuid, metric)
        return self.call(uuid, metric, lambda: getattr(self, f"_{metric}")(handle))

    def opened(self, uuid: str, metric: str) -> Any:
        """The GPU's handle; ``GpuLostError`` for a GPU NVML could not open."""
        handle = self.handles[uuid]
        if handle is None:
            raise GpuLostError(uuid, metric)
        return handle

    def topology(self, uuid_a: str, uuid_b: str) -> str | Unavailable:
        a, b = self.opened(uuid_a, "topology"), self.opened(uuid_b, "topology")
        return self.call(
            uuid_a,
            "topology",
            lambda: TOPOLOGY_CODES[self.nv.nvmlDeviceGetTopologyCommonAncestor(a, b)],
        )

    def watch_xid(self) -> None:
        """Register for XID events. An NVML error doing so (a driver or VM that refuses event
        sets) makes the XID readings unavailable, naming the error; it never raises."""
        if self.event_set is not None or self.xids:
            return
        try:
            created = self.call("", "xid_events", lambda: self.nv.nvmlEventSetCreate())
        except self.nv.NVMLError as err:
            created = xid_trouble("registering for XID events", err)
        if isinstance(created, Unavailable):
            self.xids = dict.fromkeys(self.handles, created)
            return
        self.event_set = created
        for uuid, handle in self.handles.items():
            if handle is None:
                self.xids[uuid] = GpuLostError(uuid, "xid_events")
                continue
            try:
                registered = self.call(
                    uuid,
                    "xid_events",
                    lambda h=handle: self.nv.nvmlDeviceRegisterEvents(
                        h, EVENT_XID_CRITICAL_ERROR, self.event_set
                    ),
                )
            except GpuLostError as err:
                registered = err
            except self.nv.NVMLError as err:
                registered = xid_trouble("registering for XID events", err)
            self.xids[uuid] = registered if isinstance(registered, Exception | Unavailable) else []

    def xid_events(self, uuid: str) -> tuple[int, ...] | Unavailable:
        self.watch_xid()
        handle = self.opened(uuid, "xid_events")
        if self.event_set is not None:
            try:
                self.drain_xids()
            except self.nv.NVMLError as err:
                if getattr(err, "value", None) != GPU_IS_LOST:
                    return xid_trouble("reading XID events", err)
                # Some GPU fell off the bus, and the wait does not say which: ask this one.
                try:
                    self.call(uuid, "xid_events", lambda: self.nv.nvmlDeviceGetUUID(handle))
                except self.nv.NVMLError as other:
                    return xid_trouble("reading XID events", other)
        seen = self.xids[uuid]
        if isinstance(seen, GpuLostError):
            raise GpuLostError(uuid, "xid_events")
        return seen if isinstance(seen, Unavailable) else tuple(seen)

    def drain_xids(self) -> None:
        """Move every queued XID event into ``self.xids``, without waiting for new ones."""
        wait = getattr(self.nv, "nvmlEventSetWait_v2", None) or self.nv.nvmlEventSetWait
        by_address = {
            address(handle): uuid for uuid, handle in self.handles.items() if handle is not None
        }
        while True:
            try:
                event = wait(self.event_set, 0)
            except self.nv.NVMLError as err:
                if getattr(err, "value", None) == TIMEOUT:  # the queue is empty
                    return
                raise
            if not event.eventType & EVENT_XID_CRITICAL_ERROR:
                continue
            seen = self.xids.get(by_address.get(address(event.device), ""))
            if isinstance(seen, list):
                seen.append(int(event.eventData))

    def call(self, uuid: str, metric: str, read: Callable[[], Any]) -> Any:
        try:
            return read()
        except AttributeError:  # bindings older than the function
            return Unavailable(metric, "FunctionNotFound")
        except self.nv.NVMLError as err:
            code = getattr(err, "value", None)
            if code == GPU_IS_LOST:
                raise GpuLostError(uuid, metric) from None
            if code in UNAVAILABLE_CODES:
                return Unavailable(metric, UNAVAILABLE_CODES[code])
            raise

    # One reader per metric, named _<metric>.
    def _name(self, h: Any) -> str:
        return text(self.nv.nvmlDeviceGetName(h))

    def _uuid(self, h: Any) -> str:
        return text(self.nv.nvmlDeviceGetUUID(h))

    def _pci_bus_id(self, h: Any) -> str:
        return text(self.nv.nvmlDeviceGetPciInfo(h).busId)

    def _memory_total_mib(self, h: Any) -> int:
        return int(self.nv.nvmlDeviceGetMemoryInfo(h).total) // MIB

    def _memory_used_mib(self, h: Any) -> int:
        return int(self.nv.nvmlDeviceGetMemoryInfo(h).used) // MIB

    def _ecc_enabled(self, h: Any) -> bool:
        current, _pending = self.nv.nvmlDeviceGetEccMode(h)
        return bool(current)

    def _ecc(self, h: Any, uncorrected: bool, aggregate: bool) -> int:
        return int(self.nv.nvmlDeviceGetTotalEccErrors(h, int(uncorrected), int(aggregate)))

    def _ecc_aggregate_corrected(self, h: Any) -> int:
        return self._ecc(h, uncorrected=False, aggregate=True)

    def _ecc_aggregate_uncorrected(self, h: Any) -> int:
        return self._ecc(h, uncorrected=True, aggregate=True)

    def _ecc_volatile_corrected(self, h: Any) -> int:
        return self._ecc(h, uncorrected=False, aggregate=False)

    def _ecc_volatile_uncorrected(self, h: Any) -> int:
        return self._ecc(h, uncorrected=True, aggregate=False)

    def _remapped_rows_correctable(self, h: Any) -> int:
        return int(self.nv.nvmlDeviceGetRemappedRows(h)[0])

    def _remapped_rows_uncorrectable(self, h: Any) -> int:
        return int(self.nv.nvmlDeviceGetRemappedRows(h)[1])

    def _remapped_rows_pending(self, h: Any) -> bool:
        return bool(self.nv.nvmlDeviceGetRemappedRows(h)[2])

    def _remapped_rows_failure(self, h: Any) -> bool:
        return bool(self.nv.nvmlDeviceGetRemappedRows(h)[3])

    def _retired_pages_pending(self, h: Any) -> bool:
        return bool(self.nv.nvmlDeviceGetRetiredPagesPendingStatus(h))

    def _temperature_c(self, h: Any) -> int:
        return int(self.nv.nvmlDeviceGetTemperature(h, TEMPERATURE_GPU))

    def _temperature_slowdown_c(self, h: Any) -> int:
        return int(self.nv.nvmlDeviceGetTemperatureThreshold(h, THRESHOLD_SLOWDOWN))

    def _temperature_shutdown_c(self, h: Any) -> int:
        return int(self.nv.nvmlDeviceGetTemperatureThreshold(h, THRESHOLD_SHUTDOWN))

    def _power_usage_w(self, h: Any) -> float:
        return self.nv.nvmlDeviceGetPowerUsage(h) / 1000.0

    def _power_limit_w(self, h: Any) -> float:
        return self.nv.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0

    def _sm_clock_mhz(self, h: Any) -> int:
        return int(self.nv.nvmlDeviceGetClockInfo(h, 1))  # NVML_CLOCK_SM

    def _memory_clock_mhz(self, h: Any) -> int:
        return int(self.nv.nvmlDeviceGetClockInfo(h, 2))  # NVML_CLOCK_MEM

    def _clock_event_reasons(self, h: Any) -> tuple[str, ...]:
        get = getattr(self.nv, "nvmlDeviceGetCurrentClocksEventReasons", None)
        if get is None:
            get = self.nv.nvmlDeviceGetCurrentClocksThrottleReasons
        return clock_event_names(int(get(h)))

    def _pcie_gen_current(self, h: Any) -> int:
        return int(self.nv.nvmlDeviceGetCurrPcieLinkGeneration(h))

    def _pcie_gen_max(self, h: Any) -> int:
        return int(self.nv.nvmlDeviceGetMaxPcieLinkGeneration(h))

    def _pcie_width_current(self, h: Any) -> int:
        return int(self.nv.nvmlDeviceGetCurrPcieLinkWidth(h))

    def _pcie_width_max(self, h: Any) -> int:
        return int(self.nv.nvmlDeviceGetMaxPcieLinkWidth(h))

    def _nvlink_states(self, h: Any) -> list[bool]:
        """Whether each of the GPU's NVLink links is up. Link 0 failing means no NVLink here
        (the error propagates: NotSupported); a later link failing means the GPU has fewer
        links than the maximum."""
        states = [bool(self.nv.nvmlDeviceGetNvLinkState(h, 0))]
        for link in range(1, NVLINK_MAX_LINKS):
            try:
                states.append(bool(self.nv.nvmlDeviceGetNvLinkState(h, link)))
            except self.nv.NVMLError as err:
                if getattr(err, "value", None) == GPU_IS_LOST:
                    raise
                break
        return states

    def _nvlink_links_total(self, h: Any) -> int:
        return len(self._nvlink_states(h))

    def _nvlink_links_up(self, h: Any) -> int:
        return sum(self._nvlink_states(h))

    def _mig_enabled(self, h: Any) -> bool:
        current, _pending = self.nv.nvmlDeviceGetMigMode(h)
        return bool(current)
