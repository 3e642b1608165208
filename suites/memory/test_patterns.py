"""Claim: every byte of the memory a job can use holds what was written to it.

``--memory-test-share`` (default 0.9) of each GPU's free memory is one buffer; eight patterns
are written and read back in turn (zeros, ones, both checkerboards, walking ones and zeros,
each word's own index, seeded random words; ``harness.memory.patterns``). A mismatch names the
GPU, the pattern, the number of bad 8-byte words and the byte offset of the first.
"""

import pytest

from harness.memory.device import Gpu
from harness.memory.patterns import run_memory_test
from harness.memory.sizes import GIB


@pytest.mark.required_check("memory.pattern")
def test_memory_holds_every_pattern(gpu: Gpu, memory_test_share: float, record_metric) -> None:
    run = run_memory_test(gpu.memory, gpu.device, memory_test_share)
    record_metric("memory_test.bytes", run.bytes_tested / GIB, "GiB")
    record_metric("memory_test.share", memory_test_share, "")
    record_metric("memory_test.patterns", run.patterns, "")
    record_metric("memory_test.time", run.seconds, "s")
    if run.mismatches:
        pytest.fail(
            "\n".join(f"{gpu.label}: {mismatch.describe()}" for mismatch in run.mismatches),
            pytrace=False,
        )
