"""Matrix-multiply throughput of every GPU, against the node profile.

TFLOP/s = 2*M*N*K / t for 8192-square operands. float32 is true fp32: TF32 is off.
"""

import pytest
import torch

from harness.perf.compute import matmul_throughput


@pytest.mark.required_check("performance.bf16_matmul_tflops")
def test_bf16_matmul(gpu_device, report_metric):
    report_metric("bf16_matmul_tflops", matmul_throughput(gpu_device, torch.bfloat16))


@pytest.mark.required_check("performance.fp32_matmul_tflops")
def test_fp32_matmul_without_tf32(gpu_device, report_metric):
    report_metric("fp32_matmul_tflops", matmul_throughput(gpu_device, torch.float32))
