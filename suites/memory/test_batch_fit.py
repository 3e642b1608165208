"""Claim: for each model of the realistic zoo, on each GPU, the largest batch that fits under
the memory cap runs a full training step (forward, backward, Adam step), and its peak stays
under the cap.

The realistic zoo (``harness.models.MEMORY_ZOO``) holds the data-parallel zoo's kinds at real
sizes: a transformer's MLP block over 128 tokens, VGG's first convolution with BatchNorm over
224x224 images, 2-layer LSTM and bidirectional GRU (hidden 1024) over 256 steps, a BERT-large
encoder layer over 512 tokens, a 50k x 1024 sparse embedding over 2048 tokens, a dict-output
model over 128 tokens. ``--model MODULE:ATTR`` replaces it with the user's models.

``--memory-limit SIZE`` emulates a card of SIZE by capping torch's allocator there
(``set_per_process_memory_fraction``). Without it the search is the quick one: a 4 GiB card
(``QUICK_SEARCH_LIMIT``, or the GPU's free memory if less), seconds per model; the thorough
search of a whole GPU is ``--memory-limit`` near its free memory (e.g. 130GiB on an H200),
minutes per model. The batch
is found by doubling from 1 until a step runs out of memory, then bisecting; a failure counts
only when it repeats, and the answer is run once more before it is reported
(``harness.memory.search``). The search stops at ``BATCH_CEILING`` (65535), where batch-sized
kernel grids reach CUDA's launch limit; reaching it is reported, not a failure. The tiny zoo
of the data-parallel suites would reach it on any GPU (``harness.memory.estimate``).
"""

import pytest

from harness.gpus import Gpu
from harness.memory.device import CudaMemory, memory_cap, search_cap
from harness.memory.search import BATCH_CEILING, largest_batch, oom_trial
from harness.memory.sizes import MIB, format_size
from harness.memory.steps import TrainingStep
from harness.model_specs import memory_spec


def test_largest_batch_runs_a_training_step(
    capped_gpu: Gpu,
    gpu_memory: CudaMemory,
    memory_model: str,
    memory_limit: int | None,
    figures,
) -> None:
    try:
        cap = search_cap(gpu_memory, memory_limit)
    except ValueError as err:
        pytest.skip(f"{capped_gpu.label}: {err}")
    spec = memory_spec(memory_model)
    step = TrainingStep(spec, capped_gpu.device, gpu_memory)
    with memory_cap(gpu_memory, cap):
        result = largest_batch(oom_trial(step, gpu_memory), ceiling=BATCH_CEILING)
    where = f"{capped_gpu.label}: model {spec.name} under a cap of {format_size(cap)}"
    figures.record("memory_cap", cap / MIB, "MiB", gpu=capped_gpu)
    figures.record("largest_batch", result.batch, "samples", gpu=capped_gpu)
    figures.record("largest_batch.trials", len(result.trials), "", gpu=capped_gpu)
    if result.ceiling_reached:
        figures.record("largest_batch.ceiling", BATCH_CEILING, "samples", gpu=capped_gpu)
    if result.batch == 0:
        pytest.fail(f"{where}: even a batch of 1 does not fit", pytrace=False)
    peak = step.peaks[result.batch]
    figures.record(
        "largest_batch.peak_memory", peak / MIB, "MiB", reference=cap / MIB, gpu=capped_gpu
    )
    if peak > cap:
        pytest.fail(
            f"{where}: the step at batch {result.batch} peaked at {format_size(peak)}, above the "
            "cap",
            pytrace=False,
        )
