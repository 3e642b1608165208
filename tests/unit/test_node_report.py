"""The node's facts for the header and JUnit: ``harness.plugin.node_report``."""

import copy

from harness.nvml import FakeNvml, Unavailable, load_snapshot
from harness.nvml.snapshot import LOST
from harness.plugin.node_report import NodeFacts, read_node
from tests.pytest_run import REPO

H100X8 = REPO / "profiles" / "snapshots" / "h100-sxm-x8.json"


def test_reads_every_gpu_in_nvml_order():
    snapshot = load_snapshot(H100X8)
    facts = read_node(FakeNvml(snapshot), "fake-node x.json", snapshot.host)
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


def test_a_lost_or_unavailable_reading_is_written_not_raised():
    snapshot = copy.deepcopy(load_snapshot(H100X8))
    snapshot.gpus[2]["name"] = LOST
    snapshot.gpus[3]["pci_bus_id"] = Unavailable("pci_bus_id", "NoPermission")
    facts = read_node(FakeNvml(snapshot), "nvml")
    assert facts.gpus[2].name == "GPU lost"
    assert facts.gpus[3].pci_bus_id == "n/a (NoPermission)"
    assert "2x" not in facts.line().split(":", 1)[0]


def test_no_nvml_says_why():
    facts = NodeFacts("none", problem="NVML unavailable: NVML library not found")
    assert facts.properties() == [
        ("node.source", "none"),
        ("node.problem", "NVML unavailable: NVML library not found"),
    ]
    assert facts.line() == "node: none (NVML unavailable: NVML library not found)"
