"""Memory per device during a DataParallel training step.

DataParallel keeps the module, its gradients and optimizer state, the whole input batch and the
gathered outputs on the output device, while every other device holds a replica and its chunk:
the output device peaks highest. How much higher depends on the model and the batch, so the
imbalance is reported, not bounded. What must hold is that every device did its share: a
device other than the output device held at least its input chunk (the scatter copies it
there), and the output device at least the gathered outputs.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from harness.memory.device import DeviceMemory


@dataclass(frozen=True)
class DevicePeak:
    """Peak bytes above a device's holdings before the step, and the least it must reach."""

    label: str
    peak: int
    floor: int
    floor_what: str  # what the floor stands for, e.g. "its input chunk"

    @property
    def ok(self) -> bool:
        return self.peak >= self.floor

    def describe(self) -> str:
        return (
            f"{self.label}: step peak {self.peak} bytes above its holdings before the step, "
            f"below the {self.floor} bytes of {self.floor_what}"
        )


def step_peaks(memories: Mapping[int, DeviceMemory], step: Callable[[], object]) -> dict[int, int]:
    """Per device, the peak bytes held during ``step`` above what it held just before."""
    before = {}
    for index, memory in memories.items():
        memory.release()
        memory.reset_peak()
        before[index] = memory.allocated()
    step()
    return {index: memory.peak() - before[index] for index, memory in memories.items()}


def imbalance(peaks: Mapping[int, int], output: int) -> float:
    """The output device's peak over the mean of the others' (1.0: balanced)."""
    others = [peak for index, peak in peaks.items() if index != output]
    if not others:
        raise ValueError("imbalance needs at least two devices")
    mean = sum(others) / len(others)
    return peaks[output] / mean if mean > 0 else float("inf")


def tensor_bytes(obj: Any) -> int:
    """Bytes of every tensor in a (nested) structure of tuples, lists and dicts."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(value) for value in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(value) for value in obj)
    return 0
