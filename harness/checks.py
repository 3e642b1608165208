"""The registry of check names: what a profile can require and a test can implement.

A test implementing a check is marked ``@pytest.mark.required_check(Check.HEALTH_ECC)``; a
profile requires checks by name in ``[required].checks`` (and ``performance.<metric>`` for each
of its ``[performance]`` figures). Both are validated against this enum where they are
written: a profile naming an unknown check fails to load, naming the closest known one, and a
marker naming one fails the run at collection. A typo can no longer surface only at the end of
an acceptance run as a required check nothing implemented.

``FIGURES`` are the figures a profile can give a reference for, with their units.
"""

import difflib
from enum import StrEnum

# Figures a profile's [performance] tables may give a reference for, with their units.
FIGURES: dict[str, str] = {
    "d2d_copy_bandwidth": "GB/s",  # device-to-device copy, read + write bytes counted
    "h2d_pinned_bandwidth": "GB/s",
    "d2h_pinned_bandwidth": "GB/s",
    "p2p_bandwidth": "GB/s",  # one direction, per GPU pair
    "allreduce_busbw": "GB/s",  # nccl-tests' bus bandwidth
    "bf16_matmul_tflops": "TFLOP/s",
    "fp32_matmul_tflops": "TFLOP/s",
}
# A figure judged through the profile without a [performance] table of its own: its reference
# is derived from [inventory] (``harness.profiles.Profile.reference``).
USABLE_MEMORY = "usable_memory"
DERIVED_FIGURES: dict[str, str] = {USABLE_MEMORY: "MiB"}


class Check(StrEnum):
    INVENTORY_GPU_COUNT = "inventory.gpu_count"
    INVENTORY_GPU_MODEL = "inventory.gpu_model"
    INVENTORY_MEMORY = "inventory.memory"
    INVENTORY_DRIVER = "inventory.driver"
    INVENTORY_PCIE = "inventory.pcie"
    INVENTORY_NVLINK = "inventory.nvlink"
    INVENTORY_MIG = "inventory.mig"
    HEALTH_ECC = "health.ecc"
    HEALTH_ROW_REMAP = "health.row_remap"
    HEALTH_CLOCKS = "health.clocks"
    HEALTH_PCIE_LINK = "health.pcie_link"
    HEALTH_NVLINK = "health.nvlink"
    HEALTH_TEMPERATURE = "health.temperature"
    HEALTH_XID = "health.xid"
    MEMORY_USABLE = "memory.usable"
    MEMORY_PATTERN = "memory.pattern"
    MEMORY_OOM_BOUNDARY = "memory.oom_boundary"
    COMPUTE_CROSS_GPU_AGREEMENT = "compute.cross_gpu_agreement"
    PERFORMANCE_D2D_COPY_BANDWIDTH = "performance.d2d_copy_bandwidth"
    PERFORMANCE_H2D_PINNED_BANDWIDTH = "performance.h2d_pinned_bandwidth"
    PERFORMANCE_D2H_PINNED_BANDWIDTH = "performance.d2h_pinned_bandwidth"
    PERFORMANCE_P2P_BANDWIDTH = "performance.p2p_bandwidth"
    PERFORMANCE_ALLREDUCE_BUSBW = "performance.allreduce_busbw"
    PERFORMANCE_BF16_MATMUL_TFLOPS = "performance.bf16_matmul_tflops"
    PERFORMANCE_FP32_MATMUL_TFLOPS = "performance.fp32_matmul_tflops"


def performance_check(figure: str) -> Check:
    """The check of a ``[performance]`` figure: ``performance.<figure>``."""
    return Check(f"performance.{figure}")


def is_check(name: object) -> bool:
    return isinstance(name, str) and name in Check._value2member_map_


def unknown_check(name: object) -> str:
    """The one-line complaint about a name that is not a check, with the closest one."""
    close = difflib.get_close_matches(str(name), [c.value for c in Check], n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}?" if close else "known: " + ", ".join(c.value for c in Check)
    return f"unknown check {name!r} ({hint})"
