"""NVML access behind one small interface: a real implementation over nvidia-ml-py and a fake
one that replays a node snapshot.

Readings are plain values of the types in ``METRICS``; a metric the GPU or driver does not offer
(NotSupported, NoPermission, FunctionNotFound) reads as ``Unavailable(metric, reason)``; a GPU that
has fallen off the bus raises ``GpuLostError``.
"""

from harness.nvml.fake import FakeNvml
from harness.nvml.interface import (
    METRICS,
    NOT_IN_SNAPSHOT,
    TOPOLOGY_LEVELS,
    UNAVAILABLE_REASONS,
    GpuLostError,
    Nvml,
    NvmlUnavailableError,
    Reading,
    Unavailable,
)
from harness.nvml.real import RealNvml
from harness.nvml.snapshot import (
    FORMAT,
    XID_EVENTS,
    Snapshot,
    SnapshotError,
    load_snapshot,
    take_snapshot,
    write_snapshot,
)

__all__ = [
    "FORMAT",
    "METRICS",
    "NOT_IN_SNAPSHOT",
    "TOPOLOGY_LEVELS",
    "UNAVAILABLE_REASONS",
    "XID_EVENTS",
    "FakeNvml",
    "GpuLostError",
    "Nvml",
    "NvmlUnavailableError",
    "Reading",
    "RealNvml",
    "Snapshot",
    "SnapshotError",
    "Unavailable",
    "load_snapshot",
    "take_snapshot",
    "write_snapshot",
]
