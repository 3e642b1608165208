"""Cross-device agreement: bitwise comparison, the majority, and naming the device that differs."""

import hashlib
import os
import struct
import subprocess
import sys

import pytest
import torch

from harness.devices import parse_devices
from harness.environment import prepare_environment
from harness.perf import agreement
from harness.perf.agreement import compare, devices_to_compare, reference_computation

CPU = torch.device("cpu")


def results(count: int, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    result = reference_computation(CPU, dtype, size=32)
    return {f"cuda:{i}": result.clone() for i in range(count)}


def test_identical_results_agree():
    found = compare(results(4))
    assert found.agree
    assert found.groups == (("cuda:0", "cuda:1", "cuda:2", "cuda:3"),)
    assert found.disagreements() == []
    assert len(found.digest()) == 64


def test_the_device_that_differs_is_named_against_the_majority():
    outputs = results(4)
    outputs["cuda:2"][0, :3] += torch.tensor([0.5, -2.0, 0.25])
    found = compare(outputs)
    assert not found.agree
    assert found.majority == ("cuda:0", "cuda:1", "cuda:3")
    assert found.disagreements() == [
        "cuda:2: float32 result differs from the majority (cuda:0, cuda:1, cuda:3): "
        f"3 of {outputs['cuda:2'].numel()} elements differ, max abs difference 2"
    ]


def test_a_single_ulp_in_bfloat16_is_a_difference():
    outputs = results(3, torch.bfloat16)
    bits = outputs["cuda:0"].view(torch.int16)
    bits[5, 5] += 1  # the next representable bfloat16
    (line,) = compare(outputs).disagreements()
    assert line.startswith(
        "cuda:0: bfloat16 result differs from the majority (cuda:1, cuda:2): 1 of"
    )


def test_two_devices_that_differ_have_no_majority():
    outputs = results(2)
    outputs["cuda:1"][3, 3] = -outputs["cuda:1"][3, 3]
    found = compare(outputs)
    assert found.majority is None
    (line,) = found.disagreements()
    assert "cuda:1: float32 result differs from cuda:0 (no majority" in line
    assert "1 of" in line


def test_a_tie_has_no_majority_and_names_the_other_side():
    outputs = results(4)
    outputs["cuda:2"] += 1
    outputs["cuda:3"] += 1
    found = compare(outputs)
    assert found.majority is None
    assert [line.split(" (no majority")[0] for line in found.disagreements()] == [
        "cuda:2: float32 result differs from cuda:0, cuda:1",
        "cuda:3: float32 result differs from cuda:0, cuda:1",
    ]


def test_bits_decide_nans_and_signed_zeros():
    nan = {"a": torch.tensor([float("nan"), 1.0]), "b": torch.tensor([float("nan"), 1.0])}
    assert compare(nan).agree
    zeros = {"a": torch.tensor([0.0]), "b": torch.tensor([0.0]), "c": torch.tensor([-0.0])}
    assert compare(zeros).groups == (("a", "b"), ("c",))


def test_run_everywhere_names_an_injected_divergent_device():
    calls = []

    def compute(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        calls.append(device)
        result = reference_computation(device, dtype, size=32)
        return result + 1 if len(calls) == 3 else result

    found = agreement.run_everywhere(
        devices_to_compare(parse_devices("cpu:4")), torch.float32, compute
    )
    assert len(calls) == 4
    assert found.majority == (
        "virtual cpu device 0",
        "virtual cpu device 1",
        "virtual cpu device 3",
    )
    assert found.disagreements()[0].startswith("virtual cpu device 2: float32 result differs")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_computation_is_reproducible_and_not_trivial(dtype):
    first = reference_computation(CPU, dtype, size=64)
    assert torch.equal(first, reference_computation(CPU, dtype, size=64))
    assert first.dtype == dtype
    assert first.shape == (64, 65)
    assert bool(torch.isfinite(first).all())
    assert float(first.float().abs().mean()) > 0.1  # not zeros, not collapsed


def test_the_computation_runs_deterministic_and_in_full_fp32():
    seen = {}

    with agreement.deterministic():
        seen["deterministic"] = torch.are_deterministic_algorithms_enabled()
        seen["precision"] = torch.get_float32_matmul_precision()
    assert seen == {"deterministic": True, "precision": "highest"}
    assert not torch.are_deterministic_algorithms_enabled()  # restored


@pytest.mark.parametrize("preset", [None, ":16:8"])
def test_the_process_environment_fixes_cublas_workspace_before_any_matmul(preset):
    # torch checks CUBLAS_WORKSPACE_CONFIG once, at the first cuBLAS call of the process: the
    # plugin sets it at configure time, before any test; a value the user set is kept.
    environ = {} if preset is None else {"CUBLAS_WORKSPACE_CONFIG": preset}
    prepare_environment(environ)
    assert environ["CUBLAS_WORKSPACE_CONFIG"] == (preset or ":4096:8")
    assert environ["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"


def test_importing_the_module_changes_no_environment():
    env = {k: v for k, v in os.environ.items() if k != "CUBLAS_WORKSPACE_CONFIG"}
    code = "import os, harness.perf.agreement; print(os.environ.get('CUBLAS_WORKSPACE_CONFIG'))"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "None"


def test_gpus_are_compared_once_each():
    assert list(devices_to_compare(parse_devices("cpu:2"))) == [
        "virtual cpu device 0",
        "virtual cpu device 1",
    ]


def test_digest_is_the_sha256_of_the_result_bytes():
    # Checked against bytes packed by hand: the digest is built without NumPy, which torch
    # does not require (CI's venv has none).
    values = [1.5, -0.0, 3.25]  # exact in bfloat16 too: its bits are float32's upper half
    words = struct.unpack("<3I", struct.pack("<3f", *values))
    tensor = torch.tensor(values, dtype=torch.float32)
    assert agreement._sha256(tensor) == hashlib.sha256(struct.pack("<3f", *values)).hexdigest()
    bf16 = struct.pack("<3H", *(word >> 16 for word in words))
    assert agreement._sha256(tensor.to(torch.bfloat16)) == hashlib.sha256(bf16).hexdigest()
    assert compare({"a": tensor, "b": tensor.clone()}).digest() == agreement._sha256(tensor)
