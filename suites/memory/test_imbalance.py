"""Claim: in a DataParallel training step every GPU holds its share, and the memory each one
needs is reported.

For each model of the zoo under ``--dp-impl``, with 4096 rows per GPU, the peak memory each GPU
holds during one step (after a warm-up step) above what it held before is recorded, with the
output device's peak over the others' mean (``memory_imbalance``). The output device keeps the
module, gradients, optimizer state, the whole batch and the gathered outputs, so it peaks
highest by an amount that depends on the model and batch: reported, not bounded. What must
hold: every other GPU held at least its input chunk (the scatter puts it there), and the
output device at least the gathered outputs (``harness.memory.imbalance``). An implementation
that leaves a GPU idle fails.
"""

import pytest
import torch

from harness.devices import DeviceSet
from harness.memory.device import CudaMemory
from harness.memory.imbalance import DevicePeak, imbalance, step_peaks, tensor_bytes
from harness.memory.sizes import MIB
from harness.memory.steps import TrainingStep
from harness.model_specs import model_spec
from harness.plugin.node_report import devices_under_test

ROWS_PER_DEVICE = 4096


def test_every_gpu_holds_its_share_of_a_data_parallel_step(
    cuda_devices: DeviceSet, model: str, data_parallel, figures, pytestconfig
) -> None:
    spec = model_spec(model)
    labelled = devices_under_test(pytestconfig)
    gpus = [gpu.device.index for gpu in labelled]
    if len(gpus) < 2 or len(gpus) != cuda_devices.count:
        pytest.skip(
            "needs two or more GPUs, each used once, to tell their memory apart; --devices is "
            f"{cuda_devices.label}"
        )
    batch = ROWS_PER_DEVICE * len(gpus)
    step = TrainingStep(spec, cuda_devices.primary, CudaMemory(gpus[0]), wrap=data_parallel)
    step(batch)  # warm-up: optimizer state and library workspaces on every GPU
    peaks = step_peaks({index: CudaMemory(index) for index in gpus}, lambda: step(batch))

    args, kwargs = spec.make_inputs(batch, torch.float32, torch.device("cpu"))
    with torch.no_grad():
        outputs = spec.make(torch.float32, torch.device("cpu"))(*args, **kwargs)
    chunk = tensor_bytes((args, kwargs)) // len(gpus)
    output, *others = labelled
    checked = [
        DevicePeak(output.label, peaks[gpus[0]], tensor_bytes(outputs), "the gathered outputs"),
        *(
            DevicePeak(gpu.label, peaks[index], chunk, "its input chunk")
            for gpu, index in zip(others, gpus[1:], strict=True)
        ),
    ]
    for gpu, index in zip(labelled, gpus, strict=True):
        figures.record(f"memory_step_peak.cuda{index}", peaks[index] / MIB, "MiB", gpu=gpu)
    figures.record("memory_imbalance", imbalance(peaks, output=gpus[0]), "")
    problems = [f"model {spec.name}: {peak.describe()}" for peak in checked if not peak.ok]
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)
