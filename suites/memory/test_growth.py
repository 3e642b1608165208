"""Claim: training does not accumulate memory. After warm-up, ``memory_allocated`` (summed
over the GPUs in use) is the same after every one of the next iterations, for each model of
the zoo, alone and under the DataParallel implementation under test.

The tolerance is 0 bytes: with fixed shapes every step allocates and frees the same tensors,
and whatever is created once (optimizer state, cuBLAS workspaces) is created during warm-up
(``harness.memory.growth``).
"""

import pytest

from harness.devices import DeviceSet
from harness.impl import DPImpl
from harness.memory.device import CudaMemory
from harness.memory.growth import measure_growth
from harness.memory.steps import TrainingStep
from harness.model_specs import model_spec
from harness.perf.gpus import distinct_gpus

BATCH = 64
WARMUP = 3
ITERATIONS = 10


@pytest.mark.parametrize("wrapped", [False, True], ids=["module", "data_parallel"])
def test_no_memory_growth_across_iterations(
    cuda_devices: DeviceSet,
    model: str,
    wrapped: bool,
    data_parallel,
    dp_impl: DPImpl,
    figures,
) -> None:
    spec = model_spec(model)
    memories = [CudaMemory(device.index) for device in distinct_gpus(cuda_devices)]
    step = TrainingStep(
        spec, cuda_devices.primary, memories[0], wrap=data_parallel if wrapped else None
    )
    report = measure_growth(
        lambda: step(BATCH),
        lambda: sum(memory.allocated() for memory in memories),
        warmup=WARMUP,
        iterations=ITERATIONS,
    )
    figures.record("memory_growth", report.growth, "B", reference=0)
    figures.record("memory_held_after_warmup", report.baseline, "B")
    if report.grew:
        how = f"under --dp-impl {dp_impl.name}" if wrapped else "alone"
        pytest.fail(
            f"model {spec.name} {how} on {cuda_devices.label}: memory_allocated "
            f"{report.describe()}",
            pytrace=False,
        )
