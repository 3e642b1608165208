"""Per-device peaks during a step, the floors every device must reach, and the imbalance."""

import pytest
import torch

from harness.memory.fake import FakeMemory
from harness.memory.imbalance import DevicePeak, imbalance, step_peaks, tensor_bytes


def test_step_peaks_are_above_what_each_device_held_before():
    memories = {0: FakeMemory(10**6), 1: FakeMemory(10**6)}
    model_on_0 = memories[0].allocate(1000)  # the module, before the step

    def step() -> None:
        gathered = memories[0].allocate(300)
        replica = memories[1].allocate(200)
        chunk = memories[1].allocate(50)
        del gathered, replica, chunk

    assert step_peaks(memories, step) == {0: 300, 1: 250}
    del model_on_0


def test_an_idle_device_fails_its_floor():
    peak = DevicePeak("GPU 1 (GPU-abc, 00000000:1B:00.0)", 0, 4096, "its input chunk")
    assert not peak.ok
    assert peak.describe() == (
        "GPU 1 (GPU-abc, 00000000:1B:00.0): step peak 0 bytes above its holdings before the step, "
        "below the 4096 bytes of its input chunk"
    )
    assert DevicePeak("GPU 0", 4096, 4096, "the gathered outputs").ok


def test_imbalance_is_the_output_device_over_the_others_mean():
    assert imbalance({0: 300, 1: 100, 2: 200}, output=0) == 2.0
    assert imbalance({0: 100, 1: 100}, output=0) == 1.0
    assert imbalance({0: 100, 1: 0}, output=0) == float("inf")
    with pytest.raises(ValueError):
        imbalance({0: 100}, output=0)


def test_tensor_bytes_walks_nested_structures():
    x = torch.zeros(4, 3)  # 48 bytes
    tokens = torch.zeros(2, 5, dtype=torch.int64)  # 80 bytes
    assert tensor_bytes(((x,), {"tokens": tokens, "flag": True, "pair": [x, None]})) == 176
