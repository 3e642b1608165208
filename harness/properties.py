"""Every JUnit property name the harness writes, and the report tools read.

The pytest plugin writes suite properties (one set per ``<testsuite>``: what ran, on what node,
against which profile) and test properties (per ``<testcase>``: the devices a test used and the
figures it measured); ``harness.report`` reads them back. Both sides take the names from here,
so they cannot drift apart, and ``TABLE`` is the documentation of each (docs/ci-and-reports.md
carries the same table, and a self-test holds the two together).

A *figure* is ``metric.<name>`` = ``"<number> <unit>"``, with optional ``metric.<name>.reference``
(same unit), ``.tolerance`` (``"-15%/+10%"``, ``"10%"`` or ``"-1.1%/no upper limit"``),
``.verdict`` (``pass``, ``warn`` or ``fail``) and ``.gpu`` (the UUIDs of the GPUs it belongs
to, comma-separated: one, or a pair's source and destination). A GPU is named everywhere as
``harness.gpus.Gpu`` names it; the suite properties ``node.gpu.<nvml index>.*`` and
``gpu.<cuda index>.*`` list the node's GPUs with both indices, so a report can label a UUID.
"""

from dataclasses import dataclass
from typing import Literal

Property = tuple[str, str]

# ---- suite properties ---------------------------------------------------------------------

HOST = "host"
HARNESS = "harness"
DEVICES = "devices"  # also per test
DP_IMPL = "dp_impl"  # also per test
DDP_IMPL = "ddp_impl"  # also per test, on tests that run it
# Stack versions, each "n/a" where absent.
VERSIONS = ("torch", "cuda", "cudnn", "nccl", "driver", "nvidia_ml_py")
# Process environment that changes what a run measures, recorded as "env.<NAME>".
ENVIRONMENT = (
    "CUDA_DEVICE_ORDER",
    "CUDA_VISIBLE_DEVICES",
    "CUBLAS_WORKSPACE_CONFIG",
    "PYTORCH_CUDA_ALLOC_CONF",
)
PROFILE = "profile"
PROFILE_CHOSEN_BY = "profile.chosen_by"  # "name", "path" or "auto"
ACCEPTANCE = "acceptance"
MEMORY_LIMIT = "memory_limit"
RANK = "rank"
WORLD_SIZE = "world_size"  # also per test: the test's world
LOCAL_RANK = "local_rank"

NODE_SOURCE = "node.source"
NODE_PROBLEM = "node.problem"
NODE_HOST = "node.host"
NODE_DRIVER = "node.driver"
NODE_CUDA = "node.cuda"
NODE_GPU_COUNT = "node.gpu_count"
NODE_GPU_FIELDS = ("name", "uuid", "pci_bus_id", "cuda_index")
CUDA_GPU_FIELDS = ("name", "uuid", "pci_bus_id", "nvml_index")

MERGE_PREFIX = "merge.classname_prefix"
MERGE_SOURCE = "merge.source"

# ---- test properties ----------------------------------------------------------------------

MODEL = "model"  # the --model a test ran, by the spec's name
GPU = "gpu"  # the label of the GPU a per-GPU test ran on
GPU_SOURCE = "gpu.source"  # and of a pair's two ends
GPU_DESTINATION = "gpu.destination"
GPU_LABELS = (GPU, GPU_SOURCE, GPU_DESTINATION)
DRIVER_VERSION = "driver_version"  # what the driver check read
DEVICES_COMPARED = "devices_compared"
RESULT_SHA256 = "result_sha256"

FIGURE_PREFIX = "metric."
REFERENCE, TOLERANCE, VERDICT, FIGURE_GPU = "reference", "tolerance", "verdict", "gpu"
FIGURE_SUFFIXES = (REFERENCE, TOLERANCE, VERDICT, FIGURE_GPU)
# How a measured figure was measured, as "<name>.<detail>" (not under "metric.": those are the
# figures themselves).
MEASUREMENT_DETAILS = ("median_time", "repeats", "warmup")


def env(name: str) -> str:
    return f"env.{name}"


def node_gpu(nvml_index: int, field: str) -> str:
    return f"node.gpu.{nvml_index}.{field}"


def cuda_gpu(cuda_index: int, field: str) -> str:
    return f"gpu.{cuda_index}.{field}"


def figure(name: str, suffix: str | None = None) -> str:
    """``metric.<name>``, or one of its ``FIGURE_SUFFIXES``: ``metric.<name>.reference``."""
    if suffix is not None and suffix not in FIGURE_SUFFIXES:
        raise ValueError(f"not a figure property: {suffix!r}")
    return f"{FIGURE_PREFIX}{name}" + (f".{suffix}" if suffix else "")


def split_figure(key: str) -> tuple[str, str | None] | None:
    """``metric.x.reference`` -> ``("x", "reference")``; ``metric.x`` -> ``("x", None)``; None
    for a key that is not a figure's."""
    if not key.startswith(FIGURE_PREFIX):
        return None
    name = key.removeprefix(FIGURE_PREFIX)
    head, _, last = name.rpartition(".")
    if head and last in FIGURE_SUFFIXES:
        return head, last
    return name, None


def measurement_detail(name: str, detail: str) -> str:
    return f"{name}.{detail}"


def gpu_fact(nvml_index: int, fact: str) -> str:
    """A health check's text reading of one GPU (``gpu3.clock_event_reasons``)."""
    return f"gpu{nvml_index}.{fact}"


def gpu_figure(nvml_index: int, reading: str) -> str:
    """The figure name of a hardware check's reading of one GPU: ``gpu3.temperature_c``; the
    figure's ``.gpu`` names the card by UUID."""
    return f"gpu{nvml_index}.{reading}"


# ---- the table ----------------------------------------------------------------------------

Level = Literal["suite", "test"]


@dataclass(frozen=True)
class Entry:
    name: str  # the name, or its pattern with <placeholders>
    level: Level
    meaning: str


TABLE: tuple[Entry, ...] = (
    Entry(HOST, "suite", "host name of the machine that ran pytest"),
    Entry(HARNESS, "suite", "harness version"),
    Entry(DEVICES, "suite", "the --devices in force (cpu:4, cuda:0,0, ...)"),
    Entry(DP_IMPL, "suite", "the --dp-impl under test"),
    Entry(DDP_IMPL, "suite", "the --ddp-impl under test"),
    *(Entry(name, "suite", f"{name} version, n/a where absent") for name in VERSIONS),
    Entry(
        "env.<NAME>",
        "suite",
        "environment variables that change what a run measures: "
        + ", ".join(ENVIRONMENT)
        + "; (unset) where not set",
    ),
    Entry(PROFILE, "suite", "the node profile judged against"),
    Entry(PROFILE_CHOSEN_BY, "suite", "how it was chosen: name, path or auto"),
    Entry(ACCEPTANCE, "suite", "true under --acceptance"),
    Entry(MEMORY_LIMIT, "suite", "the --memory-limit of the largest-batch search"),
    Entry(RANK, "suite", "the torchrun rank that wrote the file"),
    Entry(WORLD_SIZE, "suite", "the torchrun world size"),
    Entry(LOCAL_RANK, "suite", "the torchrun local rank"),
    Entry(NODE_SOURCE, "suite", "where node facts came from: nvml, fake-node FILE, or none"),
    Entry(NODE_PROBLEM, "suite", "why NVML gave nothing (with node.source none)"),
    Entry(NODE_HOST, "suite", "the host a --fake-node snapshot was taken on"),
    Entry(NODE_DRIVER, "suite", "driver version, as NVML reports it"),
    Entry(NODE_CUDA, "suite", "CUDA version the driver supports"),
    Entry(NODE_GPU_COUNT, "suite", "GPUs NVML lists"),
    Entry(
        "node.gpu.<nvml index>.<field>",
        "suite",
        "each GPU NVML lists: "
        + ", ".join(NODE_GPU_FIELDS)
        + " (cuda_index: none where CUDA does not see it)",
    ),
    Entry(
        "gpu.<cuda index>.<field>",
        "suite",
        "each GPU of --devices: "
        + ", ".join(CUDA_GPU_FIELDS)
        + " (nvml_index: none where NVML does not list it)",
    ),
    Entry(MERGE_PREFIX, "suite", "in a merged file: the prefix its classnames carry"),
    Entry(MERGE_SOURCE, "suite", "in a merged file: the file a suite first came from"),
    Entry(
        "verdict.<model>.<suite>: <claim>",
        "suite",
        "with --model: the claim's verdict for the model: passed, failed: <first line of the "
        "failure>, not applicable: <why>, or skipped: <why>",
    ),
    Entry(
        "verdict.<model>.largest_batch",
        "suite",
        "with --model: the largest per-GPU batch found and what limited it, or not measured: <why>",
    ),
    Entry("verdict.<model>.note", "suite", "with --model: how the model's claims were judged"),
    Entry(DEVICES, "test", "the --devices the test ran on"),
    Entry(MODEL, "test", "with --model: the model the test ran, by its spec's name"),
    Entry(DP_IMPL, "test", "the --dp-impl it ran"),
    Entry(DDP_IMPL, "test", "the --ddp-impl, on tests that run it"),
    Entry(WORLD_SIZE, "test", "the world size of a distributed test"),
    Entry(GPU, "test", "label of the GPU a per-GPU test ran on"),
    Entry(GPU_SOURCE, "test", "label of a GPU pair's source"),
    Entry(GPU_DESTINATION, "test", "label of a GPU pair's destination"),
    Entry(DRIVER_VERSION, "test", "the driver version the inventory check judged"),
    Entry(DEVICES_COMPARED, "test", "how many devices the agreement check compared"),
    Entry(RESULT_SHA256, "test", "digest of the agreed result"),
    Entry("metric.<name>", "test", "a figure: number and unit"),
    Entry("metric.<name>.reference", "test", "the value it is judged against, same unit"),
    Entry("metric.<name>.tolerance", "test", "allowed deviation below/above the reference"),
    Entry("metric.<name>.verdict", "test", "pass, warn or fail against the reference"),
    Entry("metric.<name>.gpu", "test", "UUIDs of the GPUs the figure belongs to"),
    *(
        Entry(f"<name>.{detail}", "test", f"how a timed figure was measured: {detail}")
        for detail in MEASUREMENT_DETAILS
    ),
    Entry("<name>.<detail>", "test", "what a timed figure measured (size, dtype, direction ...)"),
    Entry("gpu<nvml index>.<fact>", "test", "a hardware check's text reading of one GPU"),
)
