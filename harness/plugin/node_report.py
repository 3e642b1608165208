"""The node under test in the report header and the JUnit suite properties.

``node.*`` describe the node being judged, as NVML sees it: the ``--fake-node`` snapshot when one
is given, so a replayed or fault-injected node is never reported as the machine that ran it.
``node.gpu.<nvml index>.*`` list its GPUs with the CUDA index each has in this run, and
``gpu.<cuda index>.*`` the GPUs of ``--devices`` with their NVML index: the same identities
(``harness.gpus.Gpu``) seen from both numberings, so a report can label any GPU a figure names.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field

import pytest

from harness import properties
from harness.gpus import Gpu, NodeGpus
from harness.nvml import Nvml
from harness.plugin.node import NoNvml, fake_node, node_gpus, node_nvml
from harness.plugin.options import chosen_devices

NONE = "none"


@dataclass(frozen=True)
class NodeFacts:
    source: str  # "nvml", "fake-node <spec>", or "none"
    host: str = ""
    driver: str = ""
    cuda: str = ""
    gpus: tuple[Gpu, ...] = field(default_factory=tuple)  # NVML's, in its order
    problem: str = ""  # why NVML gave nothing, for source "none"

    def properties(self) -> list[properties.Property]:
        found = [(properties.NODE_SOURCE, self.source)]
        if self.problem:
            return [*found, (properties.NODE_PROBLEM, self.problem)]
        if self.host:
            found.append((properties.NODE_HOST, self.host))
        found += [
            (properties.NODE_DRIVER, self.driver),
            (properties.NODE_CUDA, self.cuda),
            (properties.NODE_GPU_COUNT, str(len(self.gpus))),
        ]
        return found + gpu_table(self.gpus, by="nvml")

    def line(self) -> str:
        if self.problem:
            return f"node: {self.source} ({self.problem})"
        models: dict[str, int] = {}
        for gpu in self.gpus:
            models[gpu.name] = models.get(gpu.name, 0) + 1
        gpus = ", ".join(f"{count}x {name}" for name, count in models.items()) or "no GPU"
        host = f" of {self.host}" if self.host else ""
        return f"node: {self.source}{host}: {gpus}, driver {self.driver}, CUDA {self.cuda}"


def read_node(nvml: Nvml, gpus: NodeGpus, source: str, host: str = "") -> NodeFacts:
    """What ``nvml`` says about the node, with its GPUs as identified."""
    return NodeFacts(
        source, host, nvml.driver_version(), nvml.cuda_version(), tuple(gpus.in_nvml_order)
    )


def gpu_table(gpus: Iterable[Gpu], *, by: str) -> list[properties.Property]:
    """One row per GPU, keyed by its NVML index (``node.gpu.<i>.*``, with its CUDA index) or by
    its CUDA index (``gpu.<i>.*``, with its NVML index): name, UUID, bus id, the other index."""
    found = []
    for gpu in gpus:
        index, other = (
            (gpu.nvml_index, gpu.cuda_index) if by == "nvml" else (gpu.cuda_index, gpu.nvml_index)
        )
        assert index is not None, f"{gpu.label} has no {by} index"
        name = properties.node_gpu if by == "nvml" else properties.cuda_gpu
        fields = properties.NODE_GPU_FIELDS if by == "nvml" else properties.CUDA_GPU_FIELDS
        values = (gpu.name, gpu.uuid, gpu.pci_bus_id, NONE if other is None else str(other))
        found += [(name(index, f), v) for f, v in zip(fields, values, strict=True)]
    return found


node_facts_key = pytest.StashKey[NodeFacts]()


def node_facts(config: pytest.Config) -> NodeFacts:
    """The node's facts, read once per process."""
    facts = config.stash.get(node_facts_key, None)
    if facts is None:
        nvml = node_nvml(config)
        snapshot = fake_node(config)
        if isinstance(nvml, NoNvml):
            facts = NodeFacts(NONE, problem=f"NVML unavailable: {nvml.reason}")
        elif snapshot is not None:
            source = f"fake-node {config.getoption('fake_node')}"
            facts = read_node(nvml, node_gpus(config), source, snapshot.host)
        else:
            facts = read_node(nvml, node_gpus(config), "nvml")
        config.stash[node_facts_key] = facts
    return facts


def devices_under_test(config: pytest.Config) -> list[Gpu]:
    """The distinct GPUs of ``--devices``, in its order; none on CPU devices."""
    devices = chosen_devices(config)
    if devices.kind != "cuda":
        return []
    gpus = node_gpus(config)
    return [gpus.cuda(index) for index in dict.fromkeys(devices.device_ids)]


def pytest_harness_suite_properties(config: pytest.Config) -> list[properties.Property]:
    return [*node_facts(config).properties(), *gpu_table(devices_under_test(config), by="cuda")]
