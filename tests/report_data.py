"""Generated JUnit files of a GPU fleet, as the harness writes them, for the report self-tests.

``write_fleet(directory, nodes=8, gpus=8, ...)`` writes one pytest xunit2 file per node
(``junit-<host>.xml``), with the suite properties of ``harness.plugin.junit`` and
``harness.plugin.node_report`` (``host``, ``node.host``, ``node.gpu.<i>.*``, ``gpu.<i>.*``,
versions, ``profile``) and per-test properties as the ``figures`` fixture records them
(``metric.<name>`` with ``.reference``, ``.tolerance``, ``.verdict`` and ``.gpu``, plus ``gpu``
labels and timing details); names from ``harness.properties``, GPUs as ``harness.gpus.Gpu``
labels them (NVML and CUDA indices equal, as on a node without ``CUDA_VISIBLE_DEVICES``). With
``ranks`` each node also gets torchrun's per-rank files ``junit-<host>-rank<R>.xml`` carrying
``rank``/``world_size``/``local_rank``.

Figures are the h100-sxm-8x profile's references times a seeded noise of about 1%, so a fleet is
the same on every call with the same arguments. Faults make a node differ from the rest:

- ``fail={host: kind}``: ``"ecc"`` (uncorrectable ECC errors on GPU 3), ``"bandwidth"``
  (GPU 2's device copy below its tolerance: a failing verdict), ``"error"`` (the bf16 matmul
  of GPU 0 errors in setup);
- ``slow={(host, gpu): factor}``: every bandwidth and TFLOP/s figure of that GPU times
  ``factor`` (0.92: still inside the -20% tolerance, a fleet outlier nonetheless; below 0.8
  its verdict fails, and so does the test);
- ``vanish={host: text}``: the node's tests whose id contains ``text`` are missing;
- ``corrupt={host}``: that node's file is cut off mid-element (not valid XML).
"""

from __future__ import annotations

import random
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from harness import properties as names
from harness.gpus import Gpu

H100 = "NVIDIA H100 80GB HBM3"
H200 = "NVIDIA H200"
PCI_BUSES = ("18", "2A", "3A", "5D", "9A", "AB", "BA", "DB")
TIMESTAMP = "2026-11-27T02:{minute:02d}:{second:02d}.{micro:06d}+00:00"

# (metric, unit, reference, tolerance) as the shipped profiles judge them; p2p has no reference
# there, so it is recorded without one.
GPU_FIGURES = {
    "suites.hardware.test_bandwidth::test_copy_within_a_gpu": (
        "d2d_copy_bandwidth",
        "GB/s",
        2930.0,
        "-20%/+15% (warn beyond 10%)",
    ),
    "suites.hardware.test_bandwidth::test_pinned_host_to_gpu": (
        "h2d_pinned_bandwidth",
        "GB/s",
        55.0,
        "-20%/+15% (warn beyond 10%)",
    ),
    "suites.hardware.test_compute::test_bf16_matmul": (
        "bf16_matmul_tflops",
        "TFLOP/s",
        790.0,
        "-20%/+15% (warn beyond 10%)",
    ),
}
# Reference figures of an H200 node (the shipped h200 profiles').
H200_REFERENCES = {
    "d2d_copy_bandwidth": 4200.0,
    "h2d_pinned_bandwidth": 55.0,
    "bf16_matmul_tflops": 790.0,
}
P2P = ("suites.hardware.test_bandwidth::test_peer_to_peer", "p2p_bandwidth", "GB/s", 370.0)
ALLREDUCE = (
    "suites.hardware.test_bandwidth::test_allreduce_bus_bandwidth",
    "allreduce_busbw",
    360.0,
)
DP_CHECKS = (
    "suites.dp.test_gather::test_output_matches_the_single_device_module[mlp-float64]",
    "suites.dp.test_gather::test_output_lands_on_device_ids_0_by_default",
    "suites.dp.test_odd_batches::test_odd_batch_gives_the_single_device_outputs_and_gradients[batch=13-mlp]",
    "suites.dp.test_split::test_documented_chunkings[batch=10-replicas=3]",
)
RNN_SKIP = (
    "suites.dp.test_rnn::test_cudnn_warns_about_replica_weights_without_flatten_parameters[lstm]",
    "cuDNN's RNN weight-layout warning: torch 2.11 calls flatten_parameters on each replica",
)
DDP_CHECKS = (
    "suites.ddp.test_collectives::test_all_reduce_combines_every_ranks_values[SUM-float32-length=1]",
    "suites.ddp.test_collectives::test_broadcast_from_every_rank_delivers_that_ranks_values[float32-length=1]",
    "suites.ddp.test_sync::test_averaged_gradients_equal_single_process_full_batch_gradients[float32-mlp]",
)


def host(index: int) -> str:
    """The generated fleet's host names: ``gpu-node01``, ``gpu-node02``, ..."""
    return f"gpu-node{index + 1:02d}"


def labels(nodes: int, ranks: int = 0) -> list[str]:
    """A generated fleet's run labels, in file order: ``gpu-node01``, ``gpu-node01/rank0``..."""
    return [
        label
        for index in range(nodes)
        for label in (
            host(index),
            *(f"{host(index)}/rank{rank}" for rank in range(index * ranks, (index + 1) * ranks)),
        )
    ]


@dataclass
class _Case:
    classname: str
    name: str
    time: float
    properties: list[tuple[str, str]] = field(default_factory=list)
    result: tuple[str, str, str] | None = None  # (tag, message, text)


def write_fleet(
    directory: str | Path,
    nodes: int = 8,
    gpus: int = 8,
    *,
    seed: int = 0,
    model: str | Mapping[str, str] = H100,
    fail: Mapping[str, str] | None = None,
    slow: Mapping[tuple[str, int], float] | None = None,
    vanish: Mapping[str, str] | None = None,
    corrupt: Iterable[str] = (),
    ranks: int = 0,
    noise: float = 0.01,
) -> list[Path]:
    """Write the fleet's JUnit files into ``directory``; their paths, node by node.

    ``model`` is every node's GPU model, or a ``{host: model}`` map (others get H100s);
    ``ranks`` is the torchrun ranks per node (0: no torchrun files); ``seed`` varies the
    noise (another night)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    corrupt = set(corrupt)
    paths = []
    for index in range(nodes):
        name = host(index)
        gpu_model = model.get(name, H100) if isinstance(model, Mapping) else model
        node = _Node(name, index, gpus, gpu_model, seed, noise, slow or {})
        cases = node.cases((fail or {}).get(name))
        if vanish and name in vanish:
            cases = [c for c in cases if vanish[name] not in f"{c.classname}::{c.name}"]
        path = directory / f"junit-{name}.xml"
        _write(path, node.suite(cases, node.properties()), truncate=name in corrupt)
        paths.append(path)
        for rank in range(index * ranks, (index + 1) * ranks):
            extra = [("rank", str(rank)), ("world_size", str(nodes * ranks))]
            extra.append(("local_rank", str(rank - index * ranks)))
            rank_cases = [node.case(check, 0.9) for check in DDP_CHECKS]
            for case in rank_cases:
                case.properties += [("world_size", str(nodes * ranks)), ("ddp_impl", "reference")]
            rank_path = directory / f"junit-{name}-rank{rank}.xml"
            _write(rank_path, node.suite(rank_cases, node.properties() + extra), truncate=False)
            paths.append(rank_path)
    return paths


class _Node:
    def __init__(self, name, index, gpus, model, seed, noise, slow) -> None:
        self.name, self.index, self.gpus, self.model = name, index, gpus, model
        self.slow, self.noise = slow, noise
        self.random = random.Random(f"{seed}:{name}")
        self.serial = f"{index:02x}{seed % 256:02x}"

    def uuid(self, gpu: int) -> str:
        return f"GPU-7c1e4b20-3f5a-4d8e-{self.serial}-0a9d2e5f83{gpu:02d}"

    def pci(self, gpu: int) -> str:
        return f"00000000:{PCI_BUSES[gpu % len(PCI_BUSES)]}:00.0"

    def gpu(self, gpu: int) -> Gpu:
        return Gpu(self.uuid(gpu), self.model, self.pci(gpu), gpu, gpu)

    def label(self, gpu: int) -> str:
        return self.gpu(gpu).label

    def owner(self, metric: str, *gpus: int) -> tuple[str, str]:
        uuids = ",".join(self.uuid(gpu) for gpu in gpus)
        return names.figure(metric, names.FIGURE_GPU), uuids

    def properties(self) -> list[tuple[str, str]]:
        props = [
            ("node.source", "nvml"),
            ("node.host", self.name),
            ("node.driver", "580.95.05"),
            ("node.cuda", "13.0"),
            ("node.gpu_count", str(self.gpus)),
        ]
        for gpu in range(self.gpus):
            props += [
                (names.node_gpu(gpu, "name"), self.model),
                (names.node_gpu(gpu, "uuid"), self.uuid(gpu)),
                (names.node_gpu(gpu, "pci_bus_id"), self.pci(gpu)),
                (names.node_gpu(gpu, "cuda_index"), str(gpu)),
            ]
        devices = ",".join(str(gpu) for gpu in range(self.gpus))
        props += [
            ("host", self.name),
            ("devices", f"cuda:{devices}"),
            ("dp_impl", "reference"),
            ("ddp_impl", "reference"),
            ("torch", "2.11.0+cu130"),
            ("cuda", "13.0"),
            ("cudnn", "91300"),
            ("nccl", "2.27.7"),
            ("driver", "580.95.05"),
            ("harness", "0.1.0"),
        ]
        for gpu in range(self.gpus):
            props += [
                (names.cuda_gpu(gpu, "name"), self.model),
                (names.cuda_gpu(gpu, "uuid"), self.uuid(gpu)),
                (names.cuda_gpu(gpu, "pci_bus_id"), self.pci(gpu)),
                (names.cuda_gpu(gpu, "nvml_index"), str(gpu)),
            ]
        profile = "h200-sxm-8x" if "H200" in self.model else "h100-sxm-8x"
        return [*props, ("profile", profile), ("acceptance", "true")]

    def factor(self, gpu: int) -> float:
        return self.slow.get((self.name, gpu), 1.0) * (1 + self.random.gauss(0, self.noise))

    def case(self, check: str, seconds: float) -> _Case:
        classname, name = check.split("::")
        time = seconds * (1 + self.random.uniform(-0.1, 0.1))
        devices = f"cuda:{','.join(str(g) for g in range(self.gpus))}"
        return _Case(classname, name, time, [("devices", devices), ("dp_impl", "reference")])

    def cases(self, fault: str | None) -> list[_Case]:
        cases = [self._gpu_count(), self._ecc(fault == "ecc")]
        for check, (metric, unit, reference, tolerance) in GPU_FIGURES.items():
            if "H200" in self.model:
                reference = H200_REFERENCES[metric]
            for gpu in range(self.gpus):
                failing = fault == "bandwidth" and gpu == 2 and metric == "d2d_copy_bandwidth"
                erroring = fault == "error" and gpu == 0 and metric == "bf16_matmul_tflops"
                case = self.case(f"{check}[cuda:{gpu}]", 1.2)
                case.properties.append(("gpu", self.label(gpu)))
                if erroring:
                    case.result = ("error", _CUBLAS_ERROR, f"E   {_CUBLAS_ERROR}")
                    cases.append(case)
                    continue
                value = reference * (0.7 if failing else self.factor(gpu))
                judged = _judged(metric, value, unit, reference, tolerance)
                case.properties += [*judged, self.owner(metric, gpu), *_measurement(metric, value)]
                if judged[-1][1] == "fail":  # as check_metric does: a failing verdict fails
                    side, bound = ("below", 0.8) if value < reference else ("above", 1.15)
                    limit = reference * bound
                    message = (
                        f"{self.label(gpu)}: {metric}: {value:.6g} {unit}: fail, {side} "
                        f"{limit:.6g} {unit} (reference {reference:.6g} {unit}, {tolerance})"
                    )
                    case.result = ("failure", message, message)
                cases.append(case)
        check, metric, unit, value = P2P
        for source in range(self.gpus):
            for destination in range(self.gpus):
                if source != destination:
                    case = self.case(f"{check}[cuda:{source}-cuda:{destination}]", 0.6)
                    case.properties += [
                        ("gpu.source", self.label(source)),
                        ("gpu.destination", self.label(destination)),
                    ]
                    figure = value * min(self.factor(source), self.factor(destination))
                    case.properties += [
                        (names.figure(metric), f"{figure:.6g} {unit}"),
                        self.owner(metric, source, destination),
                    ]
                    cases.append(case)
        check, metric, value = ALLREDUCE
        case = self.case(check, 3.0)
        case.properties.append((f"metric.{metric}", f"{value * self.factor(-1):.6g} GB/s"))
        cases.append(case)
        cases += [self.case(check, 0.05) for check in DP_CHECKS]
        skipped = self.case(RNN_SKIP[0], 0.0)
        where = "/opt/harness/suites/dp/test_rnn.py:88"
        skipped.result = ("skipped", RNN_SKIP[1], f"{where}: {RNN_SKIP[1]}")
        return [*cases, skipped]

    def _gpu_count(self) -> _Case:
        case = self.case("suites.hardware.test_inventory::test_gpu_count", 0.01)
        case.properties.append(("metric.gpu_count", str(self.gpus)))
        return case

    def _ecc(self, faulty: bool) -> _Case:
        case = self.case("suites.hardware.test_health::test_no_uncorrectable_ecc_errors", 0.02)
        for gpu in range(self.gpus):
            errors = 2 if faulty and gpu == 3 else 0
            for reading in ("ecc_volatile_uncorrected", "ecc_aggregate_uncorrected"):
                figure = names.gpu_figure(gpu, reading)
                case.properties += [(names.figure(figure), str(errors)), self.owner(figure, gpu)]
        if faulty:
            message = f"{self.label(3)}: ecc_volatile_uncorrected = 2, limit 0"
            case.result = ("failure", message, message)
        return case

    def suite(self, cases: list[_Case], properties: list[tuple[str, str]]) -> ET.Element:
        root = ET.Element("testsuites", name="pytest tests")
        tally = {
            tag: sum(c.result is not None and c.result[0] == tag for c in cases)
            for tag in ("error", "failure", "skipped")
        }
        stamp = TIMESTAMP.format(
            minute=self.index, second=self.random.randrange(60), micro=self.random.randrange(10**6)
        )
        suite = ET.SubElement(
            root,
            "testsuite",
            name="pytest",
            errors=str(tally["error"]),
            failures=str(tally["failure"]),
            skipped=str(tally["skipped"]),
            tests=str(len(cases)),
            time=f"{sum(c.time for c in cases) + 4.2:.3f}",
            timestamp=stamp,
            hostname=self.name,
        )
        _properties(suite, properties)
        for case in cases:
            element = ET.SubElement(
                suite, "testcase", classname=case.classname, name=case.name, time=f"{case.time:.3f}"
            )
            _properties(element, case.properties)
            if case.result is not None:
                tag, message, text = case.result
                kind = {"failure": "Failed", "error": "RuntimeError", "skipped": "pytest.skip"}[tag]
                child = ET.SubElement(element, tag, type=kind, message=message)
                child.text = text
        return root


_CUBLAS_ERROR = "RuntimeError: CUDA error: CUBLAS_STATUS_EXECUTION_FAILED when calling cublasGemmEx"


def _measurement(metric: str, value: float) -> list[tuple[str, str]]:
    return [
        (f"{metric}.median_time", f"{0.12 * 2930 / max(value, 1):.6g} ms"),
        (f"{metric}.repeats", "20"),
        (f"{metric}.warmup", "3"),
    ]


def _judged(metric: str, value: float, unit: str, reference: float, tolerance: str):
    deviation = (value - reference) / reference * 100
    verdict = (
        "fail" if deviation < -20 or deviation > 15 else "warn" if abs(deviation) > 10 else "pass"
    )
    key = f"metric.{metric}"
    return [
        (key, f"{value:.6g} {unit}"),
        (f"{key}.reference", f"{reference:.6g} {unit}"),
        (f"{key}.tolerance", tolerance),
        (f"{key}.verdict", verdict),
    ]


def _properties(parent: ET.Element, properties: list[tuple[str, str]]) -> None:
    if properties:
        container = ET.SubElement(parent, "properties")
        for name, value in properties:
            ET.SubElement(container, "property", name=name, value=value)


def _write(path: Path, root: ET.Element, *, truncate: bool) -> None:
    text = '<?xml version="1.0" encoding="utf-8"?>' + ET.tostring(root, encoding="unicode")
    if truncate:  # a node that died while writing: the file stops inside a test case
        text = text[: len(text) // 2]
    path.write_text(text, encoding="utf-8")
