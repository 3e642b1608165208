"""GPUs as the PCI bus lists them, without NVML: a cross-check for what NVML reports.

A GPU that has fallen off the bus, or that the driver failed to bind, is missing from NVML's
list but still a PCI device. ``--profile auto`` matches NVML's count against the profiles, so
it first checks that the bus lists no more GPUs than NVML: otherwise a node with seven of eight
GPUs lost would be taken for a one-GPU node, and pass.

Counted: NVIDIA display controllers (class 03) that are whole cards (no SR-IOV virtual
functions) and are bound to the ``nvidia`` driver or to none (failed to bind). Not counted:
NVSwitches, the GPUs' audio functions, cards given to another driver on purpose (``vfio-pci``
for a VM, ``nouveau``). Inside a container the bus shows the host's cards, not the ones the
container was given, so there is no count.
"""

import os
from collections.abc import Mapping
from pathlib import Path

NVIDIA = "0x10de"
# PCI class 03: display controllers (0300 VGA, 0302 3D). NVSwitches (0680) and the GPUs'
# audio functions (0403) are not GPUs.
DISPLAY_CLASS = "0x03"
DEVICES = Path("/sys/bus/pci/devices")
CONTAINER_MARKS = (Path("/.dockerenv"), Path("/run/.containerenv"))


def in_container(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this looks like a container given some of the host's GPUs."""
    visible = environ.get("NVIDIA_VISIBLE_DEVICES")
    return (visible is not None and visible != "all") or any(m.exists() for m in CONTAINER_MARKS)


def nvidia_gpus_on_pci(devices: Path = DEVICES, *, container: bool | None = None) -> int | None:
    """How many NVIDIA GPUs the PCI bus lists for the driver; None where it cannot tell (no
    sysfs, or a container)."""
    if container if container is not None else in_container():
        return None
    if not devices.is_dir():
        return None
    count = 0
    try:
        for device in devices.iterdir():
            vendor = (device / "vendor").read_text().strip().lower()
            kind = (device / "class").read_text().strip().lower()
            if vendor != NVIDIA or not kind.startswith(DISPLAY_CLASS):
                continue
            if (device / "physfn").exists():  # an SR-IOV virtual function, not a card
                continue
            driver = device / "driver"
            if driver.exists() and driver.resolve().name != "nvidia":
                continue  # vfio-pci, pci-stub, nouveau: not this node's compute GPU
            count += 1
    except OSError:
        return None
    return count
