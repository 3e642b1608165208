"""The node under test as NVML sees it, in the report header and the JUnit suite properties.

The ``gpu.<index>.*`` properties (``harness.plugin.junit``) describe the torch devices the
suites run on; these describe the node being judged, which is the ``--fake-node`` snapshot when
one is given, so a replayed or fault-injected node is never reported as the machine that ran it.
"""

from dataclasses import dataclass, field

import pytest
from _pytest.junitxml import xml_key

from harness.nvml import GpuLostError, Nvml, Unavailable
from harness.plugin.node import NoNvml, fake_node_key, open_nvml

Property = tuple[str, str]


@dataclass(frozen=True)
class NodeGpu:
    name: str
    uuid: str
    pci_bus_id: str


@dataclass(frozen=True)
class NodeFacts:
    source: str  # "nvml", "fake-node <path>", or "none"
    host: str = ""
    driver: str = ""
    cuda: str = ""
    gpus: tuple[NodeGpu, ...] = field(default_factory=tuple)
    problem: str = ""  # why NVML gave nothing, for source "none"

    def properties(self) -> list[Property]:
        properties = [("node.source", self.source)]
        if self.problem:
            return [*properties, ("node.problem", self.problem)]
        if self.host:
            properties.append(("node.host", self.host))
        properties += [
            ("node.driver", self.driver),
            ("node.cuda", self.cuda),
            ("node.gpu_count", str(len(self.gpus))),
        ]
        for i, gpu in enumerate(self.gpus):
            properties += [
                (f"node.gpu.{i}.name", gpu.name),
                (f"node.gpu.{i}.uuid", gpu.uuid),
                (f"node.gpu.{i}.pci_bus_id", gpu.pci_bus_id),
            ]
        return properties

    def line(self) -> str:
        if self.problem:
            return f"node: {self.source} ({self.problem})"
        models: dict[str, int] = {}
        for gpu in self.gpus:
            models[gpu.name] = models.get(gpu.name, 0) + 1
        gpus = ", ".join(f"{count}x {name}" for name, count in models.items()) or "no GPU"
        host = f" of {self.host}" if self.host else ""
        return f"node: {self.source}{host}: {gpus}, driver {self.driver}, CUDA {self.cuda}"


def read_node(nvml: Nvml, source: str, host: str = "") -> NodeFacts:
    """What ``nvml`` says about the node; a GPU or reading NVML cannot give is written as such
    rather than failing the report."""
    gpus = []
    for uuid in nvml.gpu_uuids():
        name, bus = (_text(nvml, uuid, metric) for metric in ("name", "pci_bus_id"))
        gpus.append(NodeGpu(name, uuid, bus))
    return NodeFacts(source, host, nvml.driver_version(), nvml.cuda_version(), tuple(gpus))


def _text(nvml: Nvml, uuid: str, metric: str) -> str:
    try:
        value = nvml.read(uuid, metric)
    except GpuLostError:
        return "GPU lost"
    return str(value) if not isinstance(value, Unavailable) else f"n/a ({value.reason})"


node_facts_key = pytest.StashKey[NodeFacts]()


def node_facts(config: pytest.Config) -> NodeFacts:
    """The node's facts, read once per process."""
    facts = config.stash.get(node_facts_key, None)
    if facts is None:
        snapshot = config.stash.get(fake_node_key, None)
        nvml = open_nvml(config)
        try:
            if isinstance(nvml, NoNvml):
                facts = NodeFacts("none", problem=f"NVML unavailable: {nvml.reason}")
            elif snapshot is not None:
                source = f"fake-node {config.getoption('fake_node')}"
                facts = read_node(nvml, source, snapshot.host)
            else:
                facts = read_node(nvml, "nvml")
        finally:
            nvml.close()
        config.stash[node_facts_key] = facts
    return facts


def pytest_report_header(config: pytest.Config) -> str:
    return node_facts(config).line()


def pytest_sessionstart(session: pytest.Session) -> None:
    config = session.config
    xml = config.stash.get(xml_key, None)
    if xml is None or hasattr(config, "workerinput"):
        return
    for name, value in node_facts(config).properties():
        xml.add_global_property(name, value)
