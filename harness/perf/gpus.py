"""Which GPUs a run measures, and how a message names one."""

import itertools
from functools import cache

import torch

from harness.devices import DeviceSet
from harness.rankpool import torchrun

UNDER_TORCHRUN = (
    "performance is measured by one plain pytest per node: under torchrun every rank would "
    "measure the same GPUs at once"
)


def distinct_gpus(devices: DeviceSet) -> list[torch.device]:
    """Each GPU of ``--devices`` once, in its order (``cuda:0,0`` is one GPU); none on CPU."""
    if devices.kind != "cuda":
        return []
    return list(dict.fromkeys(devices.devices))


def needs_gpus(devices: DeviceSet, count: int) -> str | None:
    """Why a measurement on ``count`` distinct GPUs cannot run here; None when it can."""
    if torchrun.active():
        return UNDER_TORCHRUN
    if devices.kind != "cuda":
        return f"needs a CUDA GPU; --devices {devices.label} are virtual CPU devices"
    found = distinct_gpus(devices)
    if len(found) < count:
        names = ", ".join(str(gpu) for gpu in found)
        return f"needs {count} distinct GPUs; --devices {devices.label} has {len(found)} ({names})"
    return None


def ordered_pairs(gpus: list[torch.device]) -> list[tuple[torch.device, torch.device]]:
    """Every (source, destination) pair of distinct GPUs: both directions of each link."""
    return list(itertools.permutations(gpus, 2))


@cache
def gpu_label(device: torch.device) -> str:
    """``cuda:3 (NVIDIA H200, GPU-5f0c..., 00000000:1A:00.0)``: the index alone is not enough,
    since CUDA_VISIBLE_DEVICES renumbers GPUs; ``cpu`` for the CPU."""
    if device.type != "cuda":
        return str(device)
    props = torch.cuda.get_device_properties(device)
    uuid = str(props.uuid)
    if not uuid.startswith("GPU-"):  # torch prints the bare UUID; NVML and nvidia-smi prefix it
        uuid = f"GPU-{uuid}"
    parts = [getattr(props, f"pci_{part}_id", None) for part in ("domain", "bus", "device")]
    if all(isinstance(part, int) for part in parts):  # torch builds before 2.5 lack them
        domain, bus, slot = parts
        pci = f"{domain:08X}:{bus:02X}:{slot:02X}.0"  # NVIDIA GPUs are PCI function 0
    else:
        pci = "PCI bus id unknown"
    return f"{device} ({props.name}, {uuid}, {pci})"
