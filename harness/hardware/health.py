"""Health judgements: is each GPU fit to take jobs now? One judge per check, each reading one
GPU through a ``GpuCheck``."""

from harness.hardware.findings import GpuCheck, Judge
from harness.nvml import Unavailable
from harness.profiles import Health, Profile

# Clock-event reasons that are no fault: an idle GPU, or clocks an operator set.
BENIGN_CLOCK_EVENTS = ("GpuIdle", "ApplicationsClocksSetting")
# Judged by the temperature check, so one thermal fault fails one check.
THERMAL_CLOCK_EVENTS = ("SwThermalSlowdown", "HwThermalSlowdown")
ECC_UNCORRECTED = ("ecc_volatile_uncorrected", "ecc_aggregate_uncorrected")
ECC_CORRECTED = ("ecc_volatile_corrected", "ecc_aggregate_corrected")


def ecc(gpu: GpuCheck) -> None:
    """ECC on, and no uncorrectable error: since the driver loaded (volatile) or ever
    (aggregate, kept in the GPU's infoROM). Corrected errors are figures, not faults."""
    enabled = gpu.value("ecc_enabled")
    if enabled is not None:
        gpu.metric("ecc_enabled", enabled)
        if not enabled:
            gpu.problem("ecc_enabled = false, limit true (memory errors would go unseen)")
    for metric in ECC_UNCORRECTED:
        count = gpu.value(metric)
        if count is not None:
            gpu.metric(metric, count)
            if count > 0:
                gpu.problem(f"{metric} = {count}, limit 0")
    for metric in ECC_CORRECTED:
        count = gpu.reading(metric)
        if not isinstance(count, Unavailable):
            gpu.metric(metric, count)


def row_remap(gpu: GpuCheck) -> None:
    """No row remap waiting for a reset and no remap failure (Ampere and later); on GPUs
    without row remapping, no retired page waiting for a reset. Where one mechanism is
    supported the other's NotSupported is no gap."""
    remap = {m: gpu.reading(m) for m in ("remapped_rows_pending", "remapped_rows_failure")}
    remapping = any(not isinstance(r, Unavailable) for r in remap.values())
    retired = gpu.reading("retired_pages_pending")
    flags = dict(remap) if remapping else {}
    if not isinstance(retired, Unavailable) or not remapping:
        flags["retired_pages_pending"] = retired
    if not remapping and isinstance(retired, Unavailable):
        flags.update(remap)  # neither mechanism: every reason is named
    why = {
        "remapped_rows_pending": "a row remap waits for a GPU reset",
        "remapped_rows_failure": "row remapping failed: the GPU needs service",
        "retired_pages_pending": "a page retirement waits for a GPU reset",
    }
    for metric, reading in flags.items():
        flag = gpu.available(reading)
        if flag is None:
            continue
        gpu.metric(metric, flag)
        if flag:
            gpu.problem(f"{metric} = true, limit false ({why[metric]})")
    for metric in ("remapped_rows_correctable", "remapped_rows_uncorrectable"):
        count = gpu.reading(metric)
        if not isinstance(count, Unavailable):
            gpu.metric(metric, count)


def clocks(gpu: GpuCheck) -> None:
    """No clock-event reason but idle or application clocks (thermal ones: ``temperature``)."""
    reasons = gpu.value("clock_event_reasons")
    if reasons is None:
        return
    gpu.fact("clock_event_reasons", ", ".join(reasons) or "none")
    held = [r for r in reasons if r not in BENIGN_CLOCK_EVENTS + THERMAL_CLOCK_EVENTS]
    if held:
        gpu.problem(
            f"clock_event_reasons = {', '.join(held)}, "
            f"limit none but {', '.join(BENIGN_CLOCK_EVENTS)}"
        )


def pcie_link(profile: Profile | None) -> Judge:
    """The link runs at its maximum width and generation, and at least the profile's.

    A narrower link is always a fault (a lane, riser or seating problem). The generation is
    judged only when the GPU is not idle: an idle GPU lowers its link generation to save power,
    so a low generation at idle says nothing. The suites read the link under a short CUDA load
    where they can (real GPUs visible to torch); a snapshot is judged as recorded.
    """
    wanted: dict[str, int | None] = {"pcie_gen": None, "pcie_width": None}
    if profile is not None:
        wanted = {
            "pcie_gen": profile.inventory.pcie_generation,
            "pcie_width": profile.inventory.pcie_width,
        }

    def judge(gpu: GpuCheck) -> None:
        reasons = gpu.reading("clock_event_reasons")
        if isinstance(reasons, Unavailable):
            idle = f"{reasons}, so idleness is unknown"
        else:
            idle = "GpuIdle, the link may be saving power" if "GpuIdle" in reasons else ""
        for kind, from_profile in wanted.items():
            current, maximum = gpu.value(f"{kind}_current"), gpu.value(f"{kind}_max")
            if current is None or maximum is None:
                continue
            gpu.metric(f"{kind}_current", current)
            gpu.metric(f"{kind}_max", maximum)
            if kind == "pcie_gen":
                gpu.fact("pcie_gen_judged", f"no: {idle}" if idle else "yes: GPU not idle")
                if idle:
                    continue
            limit, source = maximum, "its maximum"
            if profile is not None and from_profile is not None and from_profile > maximum:
                limit, source = from_profile, f"profile {profile.name}"
            if current < limit:
                gpu.problem(f"{kind}_current = {current}, limit >= {limit} ({source})")

    return judge


def nvlink(gpu: GpuCheck) -> None:
    """Every NVLink link the GPU has is up."""
    total, up = gpu.value("nvlink_links_total"), gpu.value("nvlink_links_up")
    if total is None or up is None:
        return
    gpu.metric("nvlink_links_total", total)
    gpu.metric("nvlink_links_up", up)
    if up < total:
        gpu.problem(f"nvlink_links_up = {up}, limit {total} ({total - up} of {total} down)")


def temperature(profile: Profile | None) -> Judge:
    """Cooler than the GPU's slowdown threshold less a margin, and than the profile's limit
    if it has one; and no thermal clock-event reason."""
    health = profile.health if profile is not None else Health()
    fixed = []
    if profile is not None and health.max_temperature_c is not None:
        fixed.append((health.max_temperature_c, f"profile {profile.name}"))
    margin = health.slowdown_margin_c

    def judge(gpu: GpuCheck) -> None:
        limits = list(fixed)
        slowdown = gpu.reading("temperature_slowdown_c")
        # Without NVML's threshold the profile's limit still judges; without both, skip.
        if not (limits and isinstance(slowdown, Unavailable)):
            slowdown = gpu.available(slowdown)
            if slowdown is not None:
                gpu.metric("temperature_slowdown_c", slowdown, "C")
                limits.append(
                    (slowdown - margin, f"{margin} C below its slowdown threshold {slowdown} C")
                )
        shutdown = gpu.reading("temperature_shutdown_c")
        if not isinstance(shutdown, Unavailable):
            gpu.metric("temperature_shutdown_c", shutdown, "C")
        current = gpu.value("temperature_c")
        if current is not None:
            gpu.metric("temperature_c", current, "C")
            if limits:
                limit, source = min(limits)
                if current > limit:
                    gpu.problem(f"temperature_c = {current} C, limit <= {limit} C ({source})")
        for reason in gpu.value("clock_event_reasons") or ():
            if reason in THERMAL_CLOCK_EVENTS:
                gpu.problem(f"clock_event_reasons include {reason}, limit none (thermal slowdown)")

    return judge


def xid(gpu: GpuCheck) -> None:
    """No XID (critical error event) reported for the GPU during the run."""
    events = gpu.xid_events()
    if events is None:
        return
    gpu.metric("xid_count", len(events))
    if events:
        gpu.fact("xid_events", ", ".join(map(str, events)))
        gpu.problem(f"xid_events = {', '.join(map(str, events))} during the run, limit none")
