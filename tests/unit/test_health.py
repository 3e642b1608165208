"""Inventory and health judgements (harness.hardware) over fake nodes: each fault is a problem
naming the GPU, the value and the limit; what NVML cannot give is unavailable, never a pass."""

import copy
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytest

from harness.gpus import Gpu, nvml_gpus
from harness.hardware import Findings, assess, health, inventory
from harness.hardware.load import load_for
from harness.nvml import FakeNvml, Unavailable, load_snapshot
from harness.nvml.snapshot import LOST, XID_EVENTS
from harness.profiles import Health, load_profile

SNAPSHOTS = Path(__file__).resolve().parents[2] / "harness" / "profiles" / "shipped" / "snapshots"
H100X8 = load_snapshot(SNAPSHOTS / "h100-sxm-x8.json")
PROFILE = load_profile("h100-sxm-8x")
GPU0 = "GPU 0 (NVIDIA H100 80GB HBM3, GPU-7c1e4b20-3f5a-4d8e-b6c1-0a9d2e5f8300, 00000000:18:00.0)"
NOT_SUPPORTED = "NotSupported"


def node(gpus: int = 8, **gpu0: Any) -> FakeNvml:
    """The shipped 8x H100 node cut to ``gpus`` GPUs, GPU 0's readings edited; a string value
    naming an NVML reason ("NotSupported") becomes that unavailable reading."""
    snapshot = copy.deepcopy(H100X8)
    snapshot.gpus = snapshot.gpus[:gpus]
    for metric, value in gpu0.items():
        if value in ("NotSupported", "NoPermission"):
            value = Unavailable(metric, value)
        snapshot.gpus[0][metric] = value
    return FakeNvml(snapshot)


def judge(judge: Any, gpus: int = 1, **gpu0: Any) -> Findings:
    nvml = node(gpus, **gpu0)
    return assess(nvml, nvml_gpus(nvml), judge)


def metrics(findings: Findings) -> dict[str, float]:
    return {name: value for name, value, _, _ in findings.metrics}


# ---- naming and outcomes -----------------------------------------------------------------


def test_gpus_are_named_by_index_name_uuid_and_bus_id() -> None:
    gpus = nvml_gpus(node(gpus=2, pci_bus_id=LOST))
    assert gpus[1].label == (
        "GPU 1 (NVIDIA H100 80GB HBM3, GPU-7c1e4b20-3f5a-4d8e-b6c1-0a9d2e5f8301, 00000000:2A:00.0)"
    )
    assert gpus[0].pci_bus_id == "PCI bus id unknown: GPU lost"
    gpus = nvml_gpus(node(gpus=1, pci_bus_id="NoPermission"))
    assert gpus[0].pci_bus_id == "PCI bus id unknown: NoPermission"


def test_a_lost_gpu_is_a_problem_of_that_gpu() -> None:
    found = judge(health.ecc, gpus=2, ecc_volatile_uncorrected=LOST)
    assert found.problems == [
        f"{GPU0}: GPU lost (NVML_ERROR_GPU_IS_LOST reading ecc_volatile_uncorrected)"
    ]
    assert "gpu1.ecc_volatile_uncorrected" in metrics(found)


# ---- inventory ---------------------------------------------------------------------------


def test_gpu_count_names_what_nvml_lists() -> None:
    nvml = node(gpus=7)
    found = inventory.gpu_count(nvml_gpus(nvml), PROFILE)
    (problem,) = found.problems
    assert problem.startswith("node: gpu_count = 7, limit 8 (profile h100-sxm-8x); NVML lists: ")
    assert GPU0 in problem
    assert not inventory.gpu_count(nvml_gpus(node()), PROFILE).problems


@pytest.mark.parametrize(
    ("version", "ok"), [("535.104", True), ("580.95.05", True), ("535.54", False), ("r550", False)]
)
def test_driver(version: str, ok: bool) -> None:
    found = inventory.driver(version, PROFILE)
    assert found.properties == [("driver_version", version)]
    expected = (
        [] if ok else [f"node: driver_version = {version}, limit >= 535.104 (profile h100-sxm-8x)"]
    )
    assert found.problems == expected


INVENTORY_FAULTS = [
    (
        inventory.model,
        {"name": "NVIDIA H100 PCIe"},
        "name = 'NVIDIA H100 PCIe', limit: matches /H100 80GB HBM3/ (profile h100-sxm-8x)",
    ),
    (
        inventory.memory,
        {"memory_total_mib": 40960},
        "memory_total_mib = 40960 MiB, limit >= 80000 MiB (profile h100-sxm-8x)",
    ),
    (
        inventory.pcie,
        {"pcie_gen_max": 4},
        "pcie_gen_max = 4, limit >= 5 (profile h100-sxm-8x)",
    ),
    (
        inventory.pcie,
        {"pcie_width_max": 8},
        "pcie_width_max = 8, limit >= 16 (profile h100-sxm-8x)",
    ),
    (
        inventory.nvlink,
        {"nvlink_links_total": 12},
        "nvlink_links_total = 12, limit >= 18 (profile h100-sxm-8x)",
    ),
    (
        inventory.nvlink,
        {"nvlink_links_total": NOT_SUPPORTED},
        "nvlink_links_total = 0, limit >= 18 (profile h100-sxm-8x)",
    ),
]


@pytest.mark.parametrize(("make", "edit", "problem"), INVENTORY_FAULTS)
def test_inventory_fault_names_gpu_value_and_limit(make: Any, edit: dict, problem: str) -> None:
    assert not judge(make(PROFILE), gpus=2).problems
    found = judge(make(PROFILE), gpus=2, **edit)
    gpu0 = GPU0.replace("NVIDIA H100 80GB HBM3", edit.get("name", "NVIDIA H100 80GB HBM3"))
    assert found.problems == [f"{gpu0}: {problem}"]


def test_mig() -> None:
    assert judge(inventory.mig_disabled, mig_enabled=True).problems == [
        f"{GPU0}: mig_enabled = true, limit false (profiles describe whole GPUs)"
    ]
    found = judge(inventory.mig_disabled, mig_enabled=NOT_SUPPORTED)  # no MIG on this GPU
    assert (found.problems, found.unavailable) == ([], [])
    found = judge(inventory.mig_disabled, mig_enabled="NoPermission")
    assert found.unavailable == [f"{GPU0}: mig_enabled unavailable (NoPermission)"]


# ---- health ------------------------------------------------------------------------------


def test_ecc() -> None:
    found = judge(health.ecc, ecc_volatile_corrected=12, ecc_aggregate_corrected=40)
    assert not found.problems
    assert metrics(found)["gpu0.ecc_volatile_corrected"] == 12  # reported, not judged
    found = judge(health.ecc, ecc_volatile_uncorrected=2, ecc_aggregate_uncorrected=3)
    assert found.problems == [
        f"{GPU0}: ecc_volatile_uncorrected = 2, limit 0",
        f"{GPU0}: ecc_aggregate_uncorrected = 3, limit 0",
    ]
    found = judge(health.ecc, ecc_enabled=False, ecc_volatile_corrected=NOT_SUPPORTED)
    assert found.problems == [
        f"{GPU0}: ecc_enabled = false, limit true (memory errors would go unseen)"
    ]
    assert found.unavailable == []  # a corrected count NVML lacks is no gap
    found = judge(health.ecc, ecc_aggregate_uncorrected=NOT_SUPPORTED)
    assert found.unavailable == [f"{GPU0}: ecc_aggregate_uncorrected unavailable (NotSupported)"]


def test_row_remap() -> None:
    found = judge(health.row_remap, remapped_rows_pending=True, remapped_rows_uncorrectable=1)
    assert found.problems == [
        f"{GPU0}: remapped_rows_pending = true, limit false (a row remap waits for a GPU reset)"
    ]
    assert metrics(found)["gpu0.remapped_rows_uncorrectable"] == 1
    found = judge(health.row_remap, remapped_rows_failure=True)
    assert found.problems == [
        f"{GPU0}: remapped_rows_failure = true, limit false (row remapping failed: the GPU "
        "needs service)"
    ]
    assert not judge(health.row_remap).unavailable  # retired pages NotSupported: Hopper remaps


def test_retired_pages_judge_gpus_without_row_remapping() -> None:
    no_remap = {"remapped_rows_pending": NOT_SUPPORTED, "remapped_rows_failure": NOT_SUPPORTED}
    found = judge(health.row_remap, retired_pages_pending=True, **no_remap)
    assert found.problems == [
        f"{GPU0}: retired_pages_pending = true, limit false (a page retirement waits for a GPU "
        "reset)"
    ]
    assert found.unavailable == []
    found = judge(health.row_remap, **no_remap)  # neither mechanism readable
    assert [line.split(": ")[1] for line in found.unavailable] == [
        "retired_pages_pending unavailable (NotSupported)",
        "remapped_rows_pending unavailable (NotSupported)",
        "remapped_rows_failure unavailable (NotSupported)",
    ]


def test_clocks() -> None:
    found = judge(health.clocks, clock_event_reasons=("GpuIdle", "SwPowerCap", "HwSlowdown"))
    assert found.problems == [
        f"{GPU0}: clock_event_reasons = SwPowerCap, HwSlowdown, "
        "limit none but GpuIdle, ApplicationsClocksSetting"
    ]
    assert found.properties == [("gpu0.clock_event_reasons", "GpuIdle, SwPowerCap, HwSlowdown")]
    assert not judge(health.clocks, clock_event_reasons=("ApplicationsClocksSetting",)).problems
    # Thermal reasons are the temperature check's, so one fault fails one check.
    assert not judge(health.clocks, clock_event_reasons=("HwThermalSlowdown",)).problems


def test_pcie_width_is_always_judged() -> None:
    found = judge(health.pcie_link(PROFILE), pcie_width_current=8)
    assert found.problems == [f"{GPU0}: pcie_width_current = 8, limit >= 16 (its maximum)"]


def test_pcie_generation_is_judged_only_off_idle() -> None:
    idle = judge(health.pcie_link(PROFILE), pcie_gen_current=1)
    assert idle.problems == []
    assert idle.properties == [
        ("gpu0.pcie_gen_judged", "no: GpuIdle, the link may be saving power")
    ]
    assert metrics(idle)["gpu0.pcie_gen_current"] == 1
    busy = judge(health.pcie_link(PROFILE), pcie_gen_current=3, clock_event_reasons=())
    assert busy.problems == [f"{GPU0}: pcie_gen_current = 3, limit >= 5 (its maximum)"]
    unknown = judge(health.pcie_link(None), clock_event_reasons=NOT_SUPPORTED)
    assert unknown.properties == [
        (
            "gpu0.pcie_gen_judged",
            "no: clock_event_reasons unavailable (NotSupported), so idleness is unknown",
        )
    ]


def test_pcie_link_below_the_profile_names_it() -> None:
    found = judge(health.pcie_link(PROFILE), pcie_width_max=8, pcie_width_current=8)
    assert found.problems == [f"{GPU0}: pcie_width_current = 8, limit >= 16 (profile h100-sxm-8x)"]
    assert not judge(health.pcie_link(None), pcie_width_max=8, pcie_width_current=8).problems


def test_nvlink_down() -> None:
    found = judge(health.nvlink, nvlink_links_up=16)
    assert found.problems == [f"{GPU0}: nvlink_links_up = 16, limit 18 (2 of 18 down)"]
    found = judge(health.nvlink, nvlink_links_up=NOT_SUPPORTED, nvlink_links_total=NOT_SUPPORTED)
    assert len(found.unavailable) == 2


def test_temperature_against_slowdown_threshold_and_profile() -> None:
    assert not judge(health.temperature(PROFILE), temperature_c=84).problems
    found = judge(health.temperature(PROFILE), temperature_c=85)
    assert found.problems == [
        f"{GPU0}: temperature_c = 85 C, limit <= 84 C (5 C below its slowdown threshold 89 C)"
    ]
    assert metrics(found) == {
        "gpu0.temperature_slowdown_c": 89,
        "gpu0.temperature_shutdown_c": 92,
        "gpu0.temperature_c": 85,
    }
    strict = PROFILE.__class__(**{**vars(PROFILE), "health": Health(max_temperature_c=70)})
    found = judge(health.temperature(strict), temperature_c=75)
    assert found.problems == [f"{GPU0}: temperature_c = 75 C, limit <= 70 C (profile h100-sxm-8x)"]
    # Without NVML's threshold the profile's limit still judges; without either, a skip.
    found = judge(health.temperature(strict), temperature_slowdown_c=NOT_SUPPORTED)
    assert (found.problems, found.unavailable) == ([], [])
    found = judge(health.temperature(PROFILE), temperature_slowdown_c=NOT_SUPPORTED)
    assert found.unavailable == [f"{GPU0}: temperature_slowdown_c unavailable (NotSupported)"]


def test_thermal_slowdown_is_a_temperature_fault() -> None:
    found = judge(health.temperature(None), clock_event_reasons=("SwThermalSlowdown",))
    assert found.problems == [
        f"{GPU0}: clock_event_reasons include SwThermalSlowdown, limit none (thermal slowdown)"
    ]


def test_xid() -> None:
    found = judge(health.xid, gpus=2, **{XID_EVENTS: (79, 48)})
    assert found.problems == [f"{GPU0}: xid_events = 79, 48 during the run, limit none"]
    assert metrics(found) == {"gpu0.xid_count": 2, "gpu1.xid_count": 0}
    found = judge(health.xid, **{XID_EVENTS: NOT_SUPPORTED})
    assert found.unavailable == [f"{GPU0}: xid_events unavailable (NotSupported)"]
    assert judge(health.xid, **{XID_EVENTS: LOST}).problems == [
        f"{GPU0}: GPU lost (NVML_ERROR_GPU_IS_LOST reading xid_events)"
    ]


def test_a_snapshot_is_judged_as_recorded_without_load() -> None:
    around = load_for(node())
    assert isinstance(around(Gpu("GPU-x", "H100", "bus", 0, 0)), nullcontext)
