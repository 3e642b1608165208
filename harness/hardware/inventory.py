"""Inventory judgements: does the node have what its profile says? Each judge reads one GPU;
``gpu_count`` and ``driver`` are node-wide."""

from harness import properties as names
from harness.gpus import Gpu
from harness.hardware.findings import Findings, GpuCheck, Judge
from harness.nvml import Unavailable
from harness.profiles import Profile, version_tuple


def gpu_count(gpus: list[Gpu], profile: Profile) -> Findings:
    findings = Findings(metrics=[("gpu_count", len(gpus), "", None)])
    expected = profile.inventory.gpu_count
    if len(gpus) != expected:
        listed = ", ".join(gpu.label for gpu in gpus) or "none"
        findings.problems.append(
            f"node: gpu_count = {len(gpus)}, limit {expected} (profile {profile.name}); "
            f"NVML lists: {listed}"
        )
    return findings


def driver(version: str, profile: Profile) -> Findings:
    findings = Findings(properties=[(names.DRIVER_VERSION, version)])
    minimum = profile.inventory.min_driver
    if minimum is None:
        return findings
    try:
        ok = version_tuple(version) >= version_tuple(minimum)
    except ValueError:
        ok = False
    if not ok:
        findings.problems.append(
            f"node: driver_version = {version}, limit >= {minimum} (profile {profile.name})"
        )
    return findings


def model(profile: Profile) -> Judge:
    def judge(gpu: GpuCheck) -> None:
        name = gpu.value("name")
        if name is None:
            return
        gpu.fact("name", name)
        if not profile.inventory.model_matches(name):
            gpu.problem(
                f"name = {name!r}, limit: matches /{profile.inventory.gpu_model}/ "
                f"(profile {profile.name})"
            )

    return judge


def memory(profile: Profile) -> Judge:
    minimum = profile.inventory.min_memory_mib

    def judge(gpu: GpuCheck) -> None:
        total = gpu.value("memory_total_mib")
        if total is None:
            return
        gpu.metric("memory_total_mib", total, "MiB")
        if minimum is not None and total < minimum:
            gpu.problem(
                f"memory_total_mib = {total} MiB, limit >= {minimum} MiB (profile {profile.name})"
            )

    return judge


def pcie(profile: Profile) -> Judge:
    """The link the GPU and its slot can reach (NVML's maximum of the pair), not its current
    state; health.pcie_link judges that."""
    limits = {
        "pcie_gen_max": profile.inventory.pcie_generation,
        "pcie_width_max": profile.inventory.pcie_width,
    }

    def judge(gpu: GpuCheck) -> None:
        for metric, minimum in limits.items():
            value = gpu.value(metric)
            if value is None:
                continue
            gpu.metric(metric, value)
            if minimum is not None and value < minimum:
                gpu.problem(f"{metric} = {value}, limit >= {minimum} (profile {profile.name})")

    return judge


def nvlink(profile: Profile) -> Judge:
    """The NVLink links the GPU has, up or down (health.nvlink judges those down). NVML's
    NotSupported means the GPU has none."""
    expected = profile.inventory.nvlink_links or 0

    def judge(gpu: GpuCheck) -> None:
        total = gpu.reading("nvlink_links_total")
        if isinstance(total, Unavailable) and total.reason == "NotSupported":
            total = 0
        total = gpu.available(total)
        if total is None:
            return
        gpu.metric("nvlink_links_total", total)
        if total < expected:
            gpu.problem(
                f"nvlink_links_total = {total}, limit >= {expected} (profile {profile.name})"
            )

    return judge


def mig_disabled(gpu: GpuCheck) -> None:
    """MIG splits a GPU into instances; profiles and checks describe whole GPUs, so MIG on is
    a fault rather than a note. NotSupported: a GPU without MIG, which is off."""
    enabled = gpu.reading("mig_enabled")
    if isinstance(enabled, Unavailable) and enabled.reason == "NotSupported":
        enabled = False
    enabled = gpu.available(enabled)
    if enabled is None:
        return
    gpu.metric("mig_enabled", enabled)
    if enabled:
        gpu.problem("mig_enabled = true, limit false (profiles describe whole GPUs)")
