"""Claims: the node has what its --profile says, as NVML (or the --fake-node snapshot) reports.

- As many GPUs as the profile, no more and no fewer.
- Every GPU is the profile's model (its NVML name matches the profile's regex).
- Every GPU has at least the profile's memory.
- The driver is at least the profile's minimum.
- Every GPU's PCIe link can reach the profile's generation and width (NVML's maximum for the
  GPU in its slot; the link's current state is a health check).
- Every GPU has at least the profile's NVLink links, up or down (links down: health).
- No GPU is split by MIG: profiles and checks describe whole GPUs.

Each failure names the GPU (index, UUID, PCI bus id), the value and the limit.
"""

import pytest

from harness.checks import Check
from harness.hardware import assess
from harness.hardware import inventory as expect


@pytest.mark.required_check(Check.INVENTORY_GPU_COUNT)
def test_gpu_count(node_gpus, profile, figures):
    figures.conclude(expect.gpu_count(node_gpus, profile))


@pytest.mark.required_check(Check.INVENTORY_GPU_MODEL)
def test_gpu_model(nvml, node_gpus, profile, figures):
    figures.conclude(assess(nvml, node_gpus, expect.model(profile)))


@pytest.mark.required_check(Check.INVENTORY_MEMORY)
def test_memory_per_gpu(nvml, node_gpus, profile, figures):
    figures.conclude(assess(nvml, node_gpus, expect.memory(profile)))


@pytest.mark.required_check(Check.INVENTORY_DRIVER)
def test_driver_version(nvml, profile, figures):
    figures.conclude(expect.driver(nvml.driver_version(), profile))


@pytest.mark.required_check(Check.INVENTORY_PCIE)
def test_pcie_capability(nvml, node_gpus, profile, figures):
    figures.conclude(assess(nvml, node_gpus, expect.pcie(profile)))


@pytest.mark.required_check(Check.INVENTORY_NVLINK)
def test_nvlink_links(nvml, node_gpus, profile, figures):
    if not profile.inventory.nvlink_links:
        pytest.skip(f"profile {profile.name} expects no NVLink: nothing to check")
    figures.conclude(assess(nvml, node_gpus, expect.nvlink(profile)))


@pytest.mark.required_check(Check.INVENTORY_MIG)
def test_mig_disabled(nvml, node_gpus, figures):
    figures.conclude(assess(nvml, node_gpus, expect.mig_disabled))
