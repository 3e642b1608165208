"""Claim: every byte of the memory a job can use holds what was written to it.

``--memory-test-share`` (default 0.9) of each GPU's free memory is one buffer; eight patterns
are written and read back in turn (zeros, ones, both checkerboards, walking ones and zeros,
each word's own index, seeded random words; ``harness.memory.patterns``). A mismatch names the
GPU, the pattern, the number of bad 8-byte words and the byte offset of the first.
"""

import pytest

from harness.checks import Check
from harness.gpus import Gpu
from harness.memory.device import CudaMemory
from harness.memory.patterns import run_memory_test
from harness.memory.sizes import GIB


@pytest.mark.required_check(Check.MEMORY_PATTERN)
def test_memory_holds_every_pattern(
    gpu: Gpu, gpu_memory: CudaMemory, memory_test_share: float, figures
) -> None:
    run = run_memory_test(gpu_memory, gpu.device, memory_test_share)
    figures.record("memory_test.bytes", run.bytes_tested / GIB, "GiB", gpu=gpu)
    figures.record("memory_test.share", memory_test_share, "", gpu=gpu)
    figures.record("memory_test.patterns", run.patterns, "", gpu=gpu)
    figures.record("memory_test.time", run.seconds, "s", gpu=gpu)
    if run.mismatches:
        pytest.fail(
            "\n".join(f"{gpu.label}: {mismatch.describe()}" for mismatch in run.mismatches),
            pytrace=False,
        )
