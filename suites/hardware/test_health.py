"""Claims: every GPU is fit to take jobs now, as NVML (or the --fake-node snapshot) reports.

- ECC is on and has seen no uncorrectable error, since the driver loaded or ever; corrected
  counts are recorded, not judged.
- No row remap waits for a reset and none has failed (retired pages on GPUs without row
  remapping).
- No clock-event reason holds the clocks down but idle or application clocks (thermal reasons
  belong to the temperature claim).
- The PCIe link runs at its maximum width, and generation (judged only on a busy GPU: an idle
  one lowers its link generation to save power; on a real node the GPU is loaded briefly),
  and at least the profile's.
- Every NVLink link is up.
- Every GPU is cooler than its slowdown threshold less a margin (and the profile's limit, if
  any), and none is slowed down for heat.
- No XID (critical error) event was reported during the run. This test runs after the other
  tests of its process; under pytest-xdist it sees its own worker's run only.

Each failure names the GPU (index, UUID, PCI bus id), the value and the limit; every reading
used is a JUnit property (``metric.gpu<index>.<reading>``).
"""

import pytest

from harness.checks import Check
from harness.hardware import assess
from harness.hardware import health as fit


@pytest.mark.required_check(Check.HEALTH_ECC)
def test_no_uncorrectable_ecc_errors(nvml, node_gpus, figures):
    figures.conclude(assess(nvml, node_gpus, fit.ecc))


@pytest.mark.required_check(Check.HEALTH_ROW_REMAP)
def test_no_pending_or_failed_row_remap(nvml, node_gpus, figures):
    figures.conclude(assess(nvml, node_gpus, fit.row_remap))


@pytest.mark.required_check(Check.HEALTH_CLOCKS)
def test_clocks_not_held_down(nvml, node_gpus, figures):
    figures.conclude(assess(nvml, node_gpus, fit.clocks))


@pytest.mark.required_check(Check.HEALTH_PCIE_LINK)
def test_pcie_link_at_full_width_and_speed(nvml, node_gpus, node_profile, gpu_load, figures):
    figures.conclude(assess(nvml, node_gpus, fit.pcie_link(node_profile), around=gpu_load))


@pytest.mark.required_check(Check.HEALTH_NVLINK)
def test_nvlink_links_up(nvml, node_gpus, node_profile, figures):
    if node_profile is not None and not node_profile.inventory.nvlink_links:
        pytest.skip(f"profile {node_profile.name} expects no NVLink: nothing to check")
    figures.conclude(assess(nvml, node_gpus, fit.nvlink))


@pytest.mark.required_check(Check.HEALTH_TEMPERATURE)
def test_temperature_below_slowdown(nvml, node_gpus, node_profile, figures):
    figures.conclude(assess(nvml, node_gpus, fit.temperature(node_profile)))


@pytest.mark.run_last
@pytest.mark.required_check(Check.HEALTH_XID)
def test_no_xid_during_the_run(nvml, node_gpus, figures):
    figures.conclude(assess(nvml, node_gpus, fit.xid))
