"""Every GPU computes the same bits.

One seeded, deterministic computation (matmuls, GELU, softmax, a reduction) runs on each
distinct GPU, in float32 and bfloat16; the results must be bitwise identical, and a GPU that
differs is named against the majority. On virtual CPU devices the same code runs on the one
CPU: it exercises the comparison, not hardware.
"""

import pytest
import torch

from harness import properties
from harness.checks import Check
from harness.perf.agreement import devices_to_compare, run_everywhere
from harness.perf.gpus import needs_gpus
from harness.plugin.node_report import devices_under_test


@pytest.fixture
def compared(devices, pytestconfig):
    if devices.kind == "cuda" and (reason := needs_gpus(devices, 2)) is not None:
        pytest.skip(f"compares nothing across GPUs: {reason}")
    found = devices_to_compare(devices, devices_under_test(pytestconfig))
    if len(found) < 2:
        pytest.skip(f"compares nothing: --devices {devices.label} is one device")
    return found


@pytest.mark.required_check(Check.COMPUTE_CROSS_GPU_AGREEMENT)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_every_gpu_computes_the_same_bits(compared, dtype, request):
    agreement = run_everywhere(compared, dtype)
    # user_properties rather than record_property, which warns under junit_family=xunit2.
    request.node.user_properties += [
        (properties.DEVICES_COMPARED, str(len(compared))),
        (properties.RESULT_SHA256, agreement.digest()),
    ]
    assert agreement.agree, "\n".join(agreement.disagreements())
