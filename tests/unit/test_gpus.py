"""One GPU identity (``harness.gpus``): NVML's GPUs matched to CUDA's by UUID, never by index,
and what CUDA would show under ``CUDA_VISIBLE_DEVICES`` without asking CUDA."""

from types import SimpleNamespace

import pytest
import torch

from harness.gpus import (
    CudaDevice,
    CudaUnusableError,
    Gpu,
    NodeGpus,
    cuda_from_environment,
    cuda_from_torch,
    identify,
    normalise_uuid,
    nvml_gpus,
    same_uuid,
)
from harness.nvml import FakeNvml, load_snapshot
from tests.pytest_run import REPO

H100X8 = load_snapshot(REPO / "harness" / "profiles" / "shipped" / "snapshots" / "h100-sxm-x8.json")
NODE = nvml_gpus(FakeNvml(H100X8))
UUIDS = [gpu["uuid"] for gpu in H100X8.gpus]


def test_nvml_gpus_are_listed_in_nvml_order_with_their_index():
    assert [gpu.nvml_index for gpu in NODE] == list(range(8))
    assert [gpu.uuid for gpu in NODE] == UUIDS
    assert NODE[3].pci_bus_id == "00000000:5D:00.0"
    assert NODE[3].name == "NVIDIA H100 80GB HBM3"
    assert NODE[3].cuda_index is None  # not matched to CUDA yet


def test_cuda_devices_are_matched_by_uuid_not_by_index():
    # CUDA shows NVML's GPU 5 first and GPU 2 second; torch prints bare, upper-case UUIDs.
    cuda = [CudaDevice(UUIDS[5].removeprefix("GPU-").upper()), CudaDevice(UUIDS[2])]
    gpus = identify(NODE, cuda)
    assert [(g.nvml_index, g.cuda_index) for g in gpus] == [
        (0, None),
        (1, None),
        (2, 1),
        (3, None),
        (4, None),
        (5, 0),
        (6, None),
        (7, None),
    ]
    assert gpus[5].label == (
        "GPU 5 (cuda:0, NVIDIA H100 80GB HBM3, GPU-7c1e4b20-3f5a-4d8e-b6c1-0a9d2e5f8305, "
        "00000000:AB:00.0)"
    )
    assert gpus[5].device == torch.device("cuda", 0)
    with pytest.raises(LookupError, match=r"GPU 0 \(.*\) is not visible to CUDA"):
        _ = gpus[0].device


def test_a_cuda_device_nvml_does_not_list_is_a_gpu_of_its_own():
    # A MIG instance, or a snapshot of another node replayed on this one.
    gpus = identify(NODE[:1], [CudaDevice("MIG-1234", "NVIDIA H100 MIG 1g.10gb", "")])
    assert len(gpus) == 2
    assert gpus[1] == Gpu("MIG-1234", "NVIDIA H100 MIG 1g.10gb", "PCI bus id unknown", None, 0)
    assert gpus[1].label == "cuda:0 (NVIDIA H100 MIG 1g.10gb, MIG-1234, PCI bus id unknown)"
    assert gpus[1].short_label == "cuda:0"


def test_uuid_spellings():
    assert normalise_uuid("58389a3d-aaaa") == "GPU-58389a3d-aaaa"
    assert normalise_uuid("gpu-58389a3d") == "GPU-58389a3d"
    assert same_uuid("GPU-ABC", "abc")
    assert not same_uuid("GPU-abc", "GPU-abd")


@pytest.mark.parametrize(
    ("visible", "expected"),
    [
        (None, [0, 1, 2, 3, 4, 5, 6, 7]),
        ("", []),
        ("2,0", [2, 0]),
        ("7", [7]),
        ("1,9,2", [1]),  # CUDA stops at the first entry that names no GPU
        ("3,3", []),  # and shows none for a list that repeats a GPU
        ("GPU-7c1e4b20-3f5a-4d8e-b6c1-0a9d2e5f8306,0", [6, 0]),  # a UUID
        ("GPU-7c1e4b20-3f5a-4d8e-b6c1-0a9d2e5f830", []),  # a prefix of several: ambiguous
        ("MIG-abcd", []),
    ],
)
def test_cuda_visible_devices_applied_to_nvmls_list(visible, expected):
    environ = {} if visible is None else {"CUDA_VISIBLE_DEVICES": visible}
    cuda = cuda_from_environment(NODE, environ)
    assert [UUIDS.index(device.uuid) for device in cuda] == expected


def test_the_pci_bus_order_is_used_whatever_nvmls_order():
    shuffled = [NODE[4], NODE[0], NODE[7]]
    cuda = cuda_from_environment(shuffled, {"CUDA_VISIBLE_DEVICES": "1"})
    assert [device.uuid for device in cuda] == [UUIDS[4]]  # bus 9A: second of 18, 9A, BA


def test_fastest_first_cannot_be_told_without_cuda():
    assert cuda_from_environment(NODE, {"CUDA_DEVICE_ORDER": "FASTEST_FIRST"}) is None


def test_node_gpus_look_up_both_numberings():
    node = NodeGpus(
        tuple(identify(NODE, cuda_from_environment(NODE, {"CUDA_VISIBLE_DEVICES": "6,1"})))
    )
    assert node.cuda(0).nvml_index == 6
    assert node.of(torch.device("cuda", 1)).nvml_index == 1
    assert [g.nvml_index for g in node.in_cuda_order] == [6, 1]
    assert [g.nvml_index for g in node.in_nvml_order] == list(range(8))
    with pytest.raises(LookupError, match="no GPU is cuda:2"):
        node.cuda(2)
    with pytest.raises(LookupError, match="not a CUDA device"):
        node.of(torch.device("cpu"))


def test_torchs_devices_are_read_from_their_properties(monkeypatch):
    props = {
        0: SimpleNamespace(
            name="NVIDIA H200",
            uuid="5f0c1234-aaaa",
            pci_domain_id=0,
            pci_bus_id=0x1A,
            pci_device_id=0,
        ),
        1: SimpleNamespace(name="NVIDIA H200", uuid="77ee0000-bbbb"),  # a torch without PCI ids
    }
    monkeypatch.setattr(torch.cuda, "init", lambda: None)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props[i])
    assert cuda_from_torch() == [
        CudaDevice("GPU-5f0c1234-aaaa", "NVIDIA H200", "00000000:1A:00.0"),
        CudaDevice("GPU-77ee0000-bbbb", "NVIDIA H200", ""),
    ]
    # A MIG instance: CUDA gives its own UUID, which nvidia-smi writes MIG-...
    props[1] = SimpleNamespace(name="NVIDIA H100 80GB HBM3 MIG 1g.10gb", uuid="aa11-22")
    assert cuda_from_torch()[1].uuid == "MIG-aa11-22"


def test_a_cuda_that_fails_is_one_line(monkeypatch):
    def broken() -> None:
        raise RuntimeError("CUDA driver version is insufficient\nfor CUDA runtime version")

    monkeypatch.setattr(torch.cuda, "init", broken)
    with pytest.raises(CudaUnusableError, match=r"^CUDA driver version is insufficient for CUDA"):
        cuda_from_torch()


def test_a_gpu_without_a_bus_id_leaves_the_order_unknown():
    lost = [NODE[0], Gpu(UUIDS[1], "name unknown: GPU lost", "PCI bus id unknown: GPU lost", 1)]
    assert cuda_from_environment(lost, {}) is None
