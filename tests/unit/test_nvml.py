"""The NVML interface: the real implementation over a stub ``pynvml``, and the fake."""

import sys
import types
from pathlib import Path
from typing import Any

import pytest

from harness.nvml import (
    METRICS,
    FakeNvml,
    GpuLostError,
    NvmlUnavailableError,
    RealNvml,
    Unavailable,
    load_snapshot,
    take_snapshot,
)
from harness.nvml.real import address, clock_event_names

SNAPSHOTS = Path(__file__).resolve().parents[2] / "harness" / "profiles" / "shipped" / "snapshots"
UUIDS = ["GPU-aaaaaaaa-0000-0000-0000-000000000000", "GPU-bbbbbbbb-0000-0000-0000-000000000001"]


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


def stub_pynvml(
    fail: dict[str, int] | None = None,
    init_error: int | None = None,
    events: list[tuple[int, int, int]] | None = None,
) -> Any:
    """A stand-in for nvidia-ml-py with two H200-like GPUs (handles 1 and 2); ``fail`` maps a
    function name to the NVML error code it raises; ``events`` are (handle, event type, data)
    queued for the event set, ``nv.events`` once made."""
    fail = fail or {}
    nv = types.ModuleType("pynvml")
    nv.NVMLError = NVMLError
    nv.calls = []
    nv.events = [
        types.SimpleNamespace(device=h, eventType=t, eventData=d) for h, t, d in events or []
    ]
    nv.registered = []

    def fn(name: str, result: Any) -> None:
        def call(*args: Any) -> Any:
            nv.calls.append(name)
            if name in fail:
                raise NVMLError(fail[name])
            return result(*args) if callable(result) else result

        setattr(nv, name, call)

    def init() -> None:
        if init_error is not None:
            raise NVMLError(init_error)

    nv.nvmlInit = init
    nv.nvmlShutdown = lambda: None
    fn("nvmlSystemGetDriverVersion", "580.95.05")
    fn("nvmlSystemGetCudaDriverVersion_v2", 13000)
    fn("nvmlDeviceGetCount", 2)
    fn("nvmlDeviceGetHandleByIndex", lambda i: i + 1)
    fn("nvmlDeviceGetUUID", lambda h: UUIDS[h - 1].encode())  # old bindings return bytes
    fn("nvmlDeviceGetName", "NVIDIA H200")
    fn("nvmlDeviceGetPciInfo", lambda h: types.SimpleNamespace(busId=f"00000000:{h:02X}:00.0"))
    fn("nvmlDeviceGetMemoryInfo", types.SimpleNamespace(total=143771 << 20, used=512 << 20))
    fn("nvmlDeviceGetEccMode", (1, 1))
    fn("nvmlDeviceGetTotalEccErrors", lambda h, kind, counter: 10 * kind + counter)
    fn("nvmlDeviceGetRemappedRows", (2, 1, 1, 0))
    fn("nvmlDeviceGetRetiredPagesPendingStatus", 0)
    fn("nvmlDeviceGetTemperature", 31)
    fn("nvmlDeviceGetTemperatureThreshold", lambda h, kind: {0: 92, 1: 89}[kind])
    fn("nvmlDeviceGetPowerUsage", 76500)
    fn("nvmlDeviceGetEnforcedPowerLimit", 700000)
    fn("nvmlDeviceGetClockInfo", lambda h, clock: {1: 345, 2: 3201}[clock])
    fn("nvmlDeviceGetCurrentClocksEventReasons", 0x1 | 0x40)
    fn("nvmlDeviceGetCurrPcieLinkGeneration", 4)
    fn("nvmlDeviceGetMaxPcieLinkGeneration", 5)
    fn("nvmlDeviceGetCurrPcieLinkWidth", 8)
    fn("nvmlDeviceGetMaxPcieLinkWidth", 16)

    def link_state(h: int, link: int) -> int:
        if link >= 4:
            raise NVMLError(2)  # InvalidArgument: past the GPU's links
        return int(link != 3)

    fn("nvmlDeviceGetNvLinkState", link_state)
    fn("nvmlDeviceGetMigMode", (0, 0))
    fn("nvmlDeviceGetTopologyCommonAncestor", 40)
    fn("nvmlEventSetCreate", "event set")
    fn("nvmlEventSetFree", None)
    fn("nvmlDeviceRegisterEvents", lambda h, kinds, event_set: nv.registered.append((h, kinds)))

    def wait(event_set: str, timeout_ms: int) -> Any:
        assert (event_set, timeout_ms) == ("event set", 0)
        if not nv.events:
            raise NVMLError(10)  # Timeout: nothing queued
        return nv.events.pop(0)

    fn("nvmlEventSetWait_v2", wait)
    return nv


def test_real_reads_every_metric_with_its_type() -> None:
    nvml = RealNvml(stub_pynvml())
    assert nvml.driver_version() == "580.95.05"
    assert nvml.cuda_version() == "13.0"
    assert nvml.gpu_uuids() == UUIDS
    readings = nvml.readings(UUIDS[1])
    for metric, kind in METRICS.items():
        assert type(readings[metric]) is kind, metric
    assert readings["uuid"] == UUIDS[1]
    assert readings["pci_bus_id"] == "00000000:02:00.0"
    assert readings["memory_total_mib"] == 143771
    assert readings["memory_used_mib"] == 512
    assert readings["ecc_aggregate_uncorrected"] == 11
    assert readings["ecc_volatile_corrected"] == 0
    assert readings["remapped_rows_correctable"] == 2
    assert readings["remapped_rows_pending"] is True
    assert readings["remapped_rows_failure"] is False
    assert readings["power_usage_w"] == 76.5
    assert readings["clock_event_reasons"] == ("GpuIdle", "HwThermalSlowdown")
    assert (readings["pcie_gen_current"], readings["pcie_width_max"]) == (4, 16)
    assert (readings["nvlink_links_total"], readings["nvlink_links_up"]) == (4, 3)
    assert (readings["temperature_slowdown_c"], readings["temperature_shutdown_c"]) == (89, 92)
    assert nvml.topology(*UUIDS) == "node"


@pytest.mark.parametrize(
    ("code", "reason"), [(3, "NotSupported"), (4, "NoPermission"), (13, "FunctionNotFound")]
)
def test_unsupported_metric_is_an_explicit_unavailable(code: int, reason: str) -> None:
    nvml = RealNvml(stub_pynvml({"nvmlDeviceGetRetiredPagesPendingStatus": code}))
    assert nvml.read(UUIDS[0], "retired_pages_pending") == Unavailable(
        "retired_pages_pending", reason
    )
    assert nvml.read(UUIDS[0], "temperature_c") == 31


def test_nvlink_not_supported_and_missing_binding() -> None:
    nv = stub_pynvml({"nvmlDeviceGetNvLinkState": 3})
    del nv.nvmlDeviceGetMigMode  # bindings older than the function
    nvml = RealNvml(nv)
    assert nvml.read(UUIDS[0], "nvlink_links_up") == Unavailable("nvlink_links_up", "NotSupported")
    assert nvml.read(UUIDS[0], "mig_enabled") == Unavailable("mig_enabled", "FunctionNotFound")


XID = 0x8  # nvmlEventTypeXidCriticalError


def test_xid_events_are_drained_per_gpu_without_waiting() -> None:
    nv = stub_pynvml(events=[(2, XID, 79), (1, XID, 48), (2, 0x1, 5), (2, XID, 94)])
    nvml = RealNvml(nv)
    nvml.watch_xid()
    nvml.watch_xid()  # a second call changes nothing
    assert nv.registered == [(1, XID), (2, XID)]
    assert nvml.xid_events(UUIDS[1]) == (79, 94)  # the single-bit ECC event (0x1) is not an XID
    assert nvml.xid_events(UUIDS[0]) == (48,)
    nv.events.append(types.SimpleNamespace(device=1, eventType=XID, eventData=13))
    assert nvml.xid_events(UUIDS[0]) == (48, 13)
    nvml.close()
    assert nv.calls.count("nvmlEventSetFree") == 1


def test_xid_events_start_watching_when_asked_first() -> None:
    nv = stub_pynvml()
    assert RealNvml(nv).xid_events(UUIDS[0]) == ()
    assert nv.calls.count("nvmlEventSetCreate") == 1


def test_xid_events_unsupported_or_lost_per_gpu() -> None:
    nv = stub_pynvml()
    answers = iter([NVMLError(3), NVMLError(15)])

    def register(h: int, kinds: int, event_set: str) -> None:
        raise next(answers)

    nv.nvmlDeviceRegisterEvents = register
    nvml = RealNvml(nv)
    assert nvml.xid_events(UUIDS[0]) == Unavailable("xid_events", "NotSupported")
    with pytest.raises(GpuLostError, match=f"GPU {UUIDS[1]} is lost .*xid_events"):
        nvml.xid_events(UUIDS[1])


def test_xid_events_without_event_bindings() -> None:
    nv = stub_pynvml()
    del nv.nvmlEventSetCreate
    assert RealNvml(nv).xid_events(UUIDS[1]) == Unavailable("xid_events", "FunctionNotFound")


@pytest.mark.parametrize("function", ["nvmlEventSetCreate", "nvmlDeviceRegisterEvents"])
def test_an_nvml_error_registering_for_xids_makes_them_unavailable_naming_it(function) -> None:
    nvml = RealNvml(stub_pynvml(fail={function: 999}))  # NVML_ERROR_UNKNOWN
    nvml.watch_xid()  # no exception: the XID check is unavailable, not the run broken
    for uuid in UUIDS:
        found = nvml.xid_events(uuid)
        assert isinstance(found, Unavailable)
        assert found.reason.startswith("NVML error registering for XID events: ")


def test_an_nvml_error_reading_xids_makes_them_unavailable() -> None:
    nvml = RealNvml(stub_pynvml(fail={"nvmlEventSetWait_v2": 999}))
    found = nvml.xid_events(UUIDS[0])
    assert isinstance(found, Unavailable)
    assert found.reason.startswith("NVML error reading XID events: ")


def test_xid_wait_says_a_gpu_is_lost_and_each_gpu_is_asked() -> None:
    nv = stub_pynvml(fail={"nvmlEventSetWait_v2": 15})
    nvml = RealNvml(nv)
    nvml.watch_xid()
    assert nvml.xid_events(UUIDS[0]) == ()  # this GPU still answers
    nv.nvmlDeviceGetUUID = lambda h: (_ for _ in ()).throw(NVMLError(15))
    with pytest.raises(GpuLostError, match=UUIDS[1]):
        nvml.xid_events(UUIDS[1])


def test_event_handles_match_by_address() -> None:
    import ctypes

    import pynvml

    device = pynvml.struct_c_nvmlDevice_t()
    mine = ctypes.pointer(device)
    from_event = ctypes.cast(ctypes.addressof(device), pynvml.c_nvmlDevice_t)
    assert mine is not from_event
    assert address(mine) == address(from_event) == ctypes.addressof(device)


def test_gpu_lost_is_an_error_not_unavailable() -> None:
    nvml = RealNvml(stub_pynvml({"nvmlDeviceGetTemperature": 15}))
    with pytest.raises(GpuLostError, match=f"GPU {UUIDS[0]} is lost .*temperature_c"):
        nvml.read(UUIDS[0], "temperature_c")


def test_other_nvml_errors_propagate() -> None:
    nvml = RealNvml(stub_pynvml({"nvmlDeviceGetTemperature": 999}))
    with pytest.raises(NVMLError):
        nvml.read(UUIDS[0], "temperature_c")


def test_unknown_metric_is_a_key_error() -> None:
    with pytest.raises(KeyError, match="no_such_metric"):
        RealNvml(stub_pynvml()).read(UUIDS[0], "no_such_metric")


def test_no_library_is_one_clear_error() -> None:
    with pytest.raises(NvmlUnavailableError, match="NVML library not found"):
        RealNvml(stub_pynvml(init_error=12))


def test_uses_nvidia_ml_py_when_no_module_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", stub_pynvml())
    assert RealNvml().gpu_uuids() == UUIDS


def test_clock_event_names() -> None:
    assert clock_event_names(0) == ()
    assert clock_event_names(0x4 | 0x1000) == ("SwPowerCap", "Unknown(0x1000)")


def test_fake_reads_like_the_real_one() -> None:
    real = RealNvml(stub_pynvml({"nvmlDeviceGetRetiredPagesPendingStatus": 3}))
    fake = FakeNvml(take_snapshot(real))
    assert fake.gpu_uuids() == real.gpu_uuids()
    assert (fake.driver_version(), fake.cuda_version()) == ("580.95.05", "13.0")
    for uuid in real.gpu_uuids():
        fake_readings, real_readings = fake.readings(uuid), real.readings(uuid)
        assert fake_readings == real_readings
        for metric in METRICS:
            assert type(fake_readings[metric]) is type(real_readings[metric]), metric
    assert fake.topology(*UUIDS) == fake.topology(*reversed(UUIDS)) == "node"


def test_fake_replays_xid_events() -> None:
    real = RealNvml(stub_pynvml(events=[(1, XID, 79)]))
    fake = FakeNvml(take_snapshot(real))
    assert fake.xid_events(UUIDS[0]) == (79,)
    assert fake.xid_events(UUIDS[1]) == ()


def test_fake_gpu_lost_from_snapshot() -> None:
    fake = FakeNvml(take_snapshot(RealNvml(stub_pynvml({"nvmlDeviceGetPowerUsage": 15}))))
    with pytest.raises(GpuLostError):
        fake.read(UUIDS[0], "power_usage_w")
    assert fake.read(UUIDS[0], "temperature_c") == 31


@pytest.mark.parametrize("name", ["h200x1.json", "h100-sxm-x8.json"])
def test_shipped_snapshots_load(name: str) -> None:
    fake = FakeNvml(load_snapshot(SNAPSHOTS / name))
    for uuid in fake.gpu_uuids():
        readings = fake.readings(uuid)
        assert readings["ecc_enabled"] is True
        assert readings["clock_event_reasons"] == ("GpuIdle",)
        assert (readings["pcie_gen_max"], readings["pcie_width_max"]) == (5, 16)


def test_shipped_h200_matches_design_facts() -> None:
    fake = FakeNvml(load_snapshot(SNAPSHOTS / "h200x1.json"))
    (uuid,) = fake.gpu_uuids()
    assert fake.read(uuid, "retired_pages_pending") == Unavailable(
        "retired_pages_pending", "NotSupported"
    )
    assert fake.read(uuid, "nvlink_links_up") == Unavailable("nvlink_links_up", "NotSupported")
    assert isinstance(fake.read(uuid, "remapped_rows_pending"), bool)


def test_shipped_h100_has_nvlink() -> None:
    fake = FakeNvml(load_snapshot(SNAPSHOTS / "h100-sxm-x8.json"))
    assert len(fake.gpu_uuids()) == 8
    for metric in ("nvlink_links_total", "nvlink_links_up"):
        assert {fake.read(uuid, metric) for uuid in fake.gpu_uuids()} == {18}
    assert {fake.xid_events(uuid) for uuid in fake.gpu_uuids()} == {()}


def test_environment_driver_version_goes_through_the_interface(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from harness.environment import driver_version

    monkeypatch.setitem(sys.modules, "pynvml", stub_pynvml())
    assert driver_version() == "580.95.05"
    monkeypatch.setitem(sys.modules, "pynvml", stub_pynvml(init_error=12))
    assert driver_version() is None


def test_a_gpu_nvml_cannot_open_keeps_its_place_and_reads_as_lost() -> None:
    nv = stub_pynvml()
    opened = nv.nvmlDeviceGetHandleByIndex

    def handle(index: int) -> Any:
        if index == 0:
            raise NVMLError(15)  # NVML_ERROR_GPU_IS_LOST: fallen off the bus
        return opened(index)

    nv.nvmlDeviceGetHandleByIndex = handle
    nvml = RealNvml(nv)
    lost, healthy = nvml.gpu_uuids()
    assert lost == "GPU-unreadable-index-0"
    assert healthy == UUIDS[1]
    with pytest.raises(GpuLostError, match="GPU-unreadable-index-0 is lost"):
        nvml.read(lost, "temperature_c")
    nvml.watch_xid()
    with pytest.raises(GpuLostError):
        nvml.xid_events(lost)
    assert nvml.xid_events(healthy) == ()
    # and the GPU is still named, its readings written as unknown
    from harness.gpus import nvml_gpus

    assert nvml_gpus(nvml)[0].label == (
        "GPU 0 (name unknown: GPU lost, GPU-unreadable-index-0, PCI bus id unknown: GPU lost)"
    )


def test_an_unexpected_nvml_error_still_names_the_gpu() -> None:
    from harness.gpus import nvml_gpus

    nvml = RealNvml(stub_pynvml(fail={"nvmlDeviceGetName": 999}))
    assert nvml_gpus(nvml)[1].name == "name unknown: NVML error 999"
