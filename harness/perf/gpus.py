"""Which GPUs a run measures, and what a measurement runs on."""

import itertools
from collections.abc import Sequence
from typing import TypeVar

import torch

from harness.devices import DeviceSet
from harness.gpus import Gpu
from harness.rankpool import torchrun

T = TypeVar("T")

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


def ordered_pairs(gpus: Sequence[T]) -> list[tuple[T, T]]:
    """Every (source, destination) pair of distinct GPUs: both directions of each link."""
    return list(itertools.permutations(gpus, 2))


# What a measurement runs on: a GPU of the node (named by its label) or a plain torch device
# (the CPU, in the unit tests; named as torch names it).
Target = Gpu | torch.device


def place(target: Target) -> tuple[torch.device, str]:
    """The device to measure on, and how messages name it."""
    if isinstance(target, Gpu):
        return target.device, target.label
    return target, str(target)
