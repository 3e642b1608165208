"""Matrix-multiply throughput of every GPU, against the node profile.

TFLOP/s = 2*M*N*K / t for 8192-square operands. float32 is true fp32: TF32 is off.
"""

import pytest
import torch

from harness.checks import Check
from harness.perf.compute import matmul_throughput


@pytest.mark.required_check(Check.PERFORMANCE_BF16_MATMUL_TFLOPS)
def test_bf16_matmul(gpu, figures):
    figures.record("bf16_matmul_tflops", matmul_throughput(gpu, torch.bfloat16))


@pytest.mark.required_check(Check.PERFORMANCE_FP32_MATMUL_TFLOPS)
def test_fp32_matmul_without_tf32(gpu, figures):
    figures.record("fp32_matmul_tflops", matmul_throughput(gpu, torch.float32))
