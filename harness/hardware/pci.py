"""GPUs as the PCI bus lists them, without NVML: a cross-check for what NVML reports.

A GPU that has fallen off the bus, or that the driver failed to bind, is missing from NVML's
list but still a PCI device. ``--profile auto`` matches NVML's count against the profiles, so
it first compares that count with the PCI bus's: otherwise a node with seven of eight GPUs
lost would be taken for a one-GPU node, and pass.
"""

from pathlib import Path

NVIDIA = "0x10de"
# PCI class 03: display controllers (0300 VGA, 0302 3D). NVSwitches (0680) and the GPUs'
# audio functions (0403) are not GPUs.
DISPLAY_CLASS = "0x03"
DEVICES = Path("/sys/bus/pci/devices")


def nvidia_gpus_on_pci(devices: Path = DEVICES) -> int | None:
    """How many NVIDIA display controllers the PCI bus lists; None where sysfs cannot tell."""
    if not devices.is_dir():
        return None
    count = 0
    try:
        for device in devices.iterdir():
            vendor = (device / "vendor").read_text().strip().lower()
            kind = (device / "class").read_text().strip().lower()
            if vendor == NVIDIA and kind.startswith(DISPLAY_CLASS):
                count += 1
    except OSError:
        return None
    return count
