"""The node's facts for the header and JUnit: ``harness.plugin.node_report``."""

import copy

from harness.gpus import NodeGpus, cuda_from_environment, identify, nvml_gpus
from harness.nvml import FakeNvml, Unavailable, load_snapshot
from harness.nvml.snapshot import LOST
from harness.plugin.node_report import NodeFacts, gpu_table, read_node
from tests.pytest_run import REPO

H100X8 = REPO / "harness" / "profiles" / "shipped" / "snapshots" / "h100-sxm-x8.json"


def identified(nvml: FakeNvml, visible: str | None = None) -> NodeGpus:
    listed = nvml_gpus(nvml)
    environ = {} if visible is None else {"CUDA_VISIBLE_DEVICES": visible}
    return NodeGpus(tuple(identify(listed, cuda_from_environment(listed, environ))))


def test_reads_every_gpu_in_nvml_order():
    snapshot = load_snapshot(H100X8)
    nvml = FakeNvml(snapshot)
    facts = read_node(nvml, identified(nvml), "fake-node x.json", snapshot.host)
    assert len(facts.gpus) == 8
    assert [gpu.uuid for gpu in facts.gpus] == [gpu["uuid"] for gpu in snapshot.gpus]
    assert facts.gpus[0].name == "NVIDIA H100 80GB HBM3"
    assert facts.line() == (
        "node: fake-node x.json of h100x8-example: 8x NVIDIA H100 80GB HBM3, "
        f"driver {snapshot.driver_version}, CUDA {snapshot.cuda_version}"
    )
    properties = dict(facts.properties())
    assert properties["node.source"] == "fake-node x.json"
    assert properties["node.gpu_count"] == "8"
    assert properties["node.gpu.7.pci_bus_id"] == snapshot.gpus[7]["pci_bus_id"]
    assert properties["node.gpu.7.cuda_index"] == "7"


def test_each_gpu_is_listed_with_both_indices():
    nvml = FakeNvml(load_snapshot(H100X8))
    gpus = identified(nvml, visible="5,2")
    properties = dict(read_node(nvml, gpus, "nvml").properties())
    assert properties["node.gpu.5.cuda_index"] == "0"
    assert properties["node.gpu.2.cuda_index"] == "1"
    assert properties["node.gpu.0.cuda_index"] == "none"
    assert dict(gpu_table(gpus.in_cuda_order, by="cuda")) == {
        "gpu.0.name": "NVIDIA H100 80GB HBM3",
        "gpu.0.uuid": gpus.cuda(0).uuid,
        "gpu.0.pci_bus_id": "00000000:AB:00.0",
        "gpu.0.nvml_index": "5",
        "gpu.1.name": "NVIDIA H100 80GB HBM3",
        "gpu.1.uuid": gpus.cuda(1).uuid,
        "gpu.1.pci_bus_id": "00000000:3A:00.0",
        "gpu.1.nvml_index": "2",
    }


def test_a_lost_or_unavailable_reading_is_written_not_raised():
    snapshot = copy.deepcopy(load_snapshot(H100X8))
    snapshot.gpus[2]["name"] = LOST
    snapshot.gpus[3]["pci_bus_id"] = Unavailable("pci_bus_id", "NoPermission")
    nvml = FakeNvml(snapshot)
    facts = read_node(nvml, identified(nvml), "nvml")
    assert facts.gpus[2].name == "name unknown: GPU lost"
    assert facts.gpus[3].pci_bus_id == "PCI bus id unknown: NoPermission"
    assert "2x" not in facts.line().split(":", 1)[0]


def test_no_nvml_says_why():
    facts = NodeFacts("none", problem="NVML unavailable: NVML library not found")
    assert facts.properties() == [
        ("node.source", "none"),
        ("node.problem", "NVML unavailable: NVML library not found"),
    ]
    assert facts.line() == "node: none (NVML unavailable: NVML library not found)"
