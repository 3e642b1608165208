"""One GPU identity: how every part of the harness names a GPU.

A GPU has two indices that need not agree. NVML numbers every GPU of the node (nvidia-smi's
index, PCI bus order); CUDA numbers the GPUs this process sees, after ``CUDA_VISIBLE_DEVICES``
(``cuda:0`` under ``CUDA_VISIBLE_DEVICES=2,0`` is NVML's GPU 2). A ``Gpu`` carries both, with the
UUID that ties them together, the PCI bus id and the name, and every failure message, JUnit
property and report names a GPU through it (``Gpu.label``).

``identify`` builds the node's GPUs once per session: NVML's list, each matched by UUID to the
CUDA device with that UUID (torch's own numbering, ``cuda_from_torch``) or, where CUDA is not
used, to the index CUDA would give it (``cuda_from_environment``, which applies
``CUDA_VISIBLE_DEVICES`` to NVML's list the way the CUDA driver does). CUDA devices NVML does
not list (MIG instances; a node snapshot replayed on another machine) are GPUs of their own,
without an NVML index.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from harness.nvml import Nvml


@dataclass(frozen=True)
class Gpu:
    """One GPU of the node under test."""

    uuid: str  # "GPU-7c1e...", as NVML, nvidia-smi and CUDA_VISIBLE_DEVICES write it
    name: str  # "NVIDIA H200"
    pci_bus_id: str  # "00000000:18:00.0"
    nvml_index: int | None = None  # nvidia-smi's index; None: NVML does not list it
    cuda_index: int | None = None  # cuda:N in this process; None: not visible to CUDA

    @property
    def label(self) -> str:
        """``GPU 2 (cuda:0, NVIDIA H200, GPU-7c1e..., 00000000:2A:00.0)``: both indices, the
        name, the UUID and the bus id, so the card can be found whichever numbering the reader
        uses. A GPU NVML does not list starts with its CUDA index instead."""
        facts = [fact for fact in (self.name, self.uuid, self.pci_bus_id) if fact]
        if self.nvml_index is None:
            head = f"cuda:{self.cuda_index}" if self.cuda_index is not None else self.uuid
            return f"{head} ({', '.join(facts)})"
        if self.cuda_index is not None:
            facts.insert(0, f"cuda:{self.cuda_index}")
        return f"GPU {self.nvml_index} ({', '.join(facts)})"

    @property
    def short_label(self) -> str:
        """``GPU 2``, else ``cuda:0``, else the UUID: for lists that name many GPUs."""
        if self.nvml_index is not None:
            return f"GPU {self.nvml_index}"
        return f"cuda:{self.cuda_index}" if self.cuda_index is not None else self.uuid

    @property
    def device(self) -> torch.device:
        """``cuda:N``; ``LookupError`` for a GPU this process cannot reach through CUDA."""
        import torch

        if self.cuda_index is None:
            raise LookupError(f"{self.label} is not visible to CUDA in this process")
        return torch.device("cuda", self.cuda_index)


def normalise_uuid(uuid: object) -> str:
    """``GPU-58389a3d-...``: torch prints the bare UUID, NVML and nvidia-smi prefix it."""
    text = str(uuid).strip()
    if text.lower().startswith(("gpu-", "mig-")):
        return text[:3].upper() + text[3:]
    return f"GPU-{text}"


def same_uuid(a: object, b: object) -> bool:
    """Whether two spellings name one GPU (``GPU-ABC...`` and ``abc...`` do)."""
    return normalise_uuid(a).lower() == normalise_uuid(b).lower()


def _key(uuid: object) -> str:
    return normalise_uuid(uuid).lower()


@dataclass(frozen=True)
class CudaDevice:
    """What CUDA says of one device: its UUID, and its name and bus id where known."""

    uuid: str
    name: str = ""
    pci_bus_id: str = ""


def identify(nvml_gpus: Sequence[Gpu], cuda: Sequence[CudaDevice] | None) -> list[Gpu]:
    """The node's GPUs: ``nvml_gpus`` (NVML order, ``nvml_index`` set) with the CUDA index of
    the CUDA device of the same UUID, then every CUDA device NVML does not list. ``cuda`` is
    CUDA's devices in CUDA order, or None where CUDA's view is unknown."""
    order = {_key(d.uuid): i for i, d in enumerate(cuda or ())}
    known = {_key(gpu.uuid) for gpu in nvml_gpus}
    gpus = [
        Gpu(gpu.uuid, gpu.name, gpu.pci_bus_id, gpu.nvml_index, order.get(_key(gpu.uuid)))
        for gpu in nvml_gpus
    ]
    for index, device in enumerate(cuda or ()):
        if _key(device.uuid) not in known:
            bus = device.pci_bus_id or "PCI bus id unknown"
            gpus.append(Gpu(normalise_uuid(device.uuid), device.name, bus, None, index))
    return gpus


def nvml_gpus(nvml: Nvml) -> list[Gpu]:
    """Every GPU NVML lists, in its order; a name or bus id NVML cannot give is written as
    such, not raised (a lost GPU must still be named)."""
    from harness.nvml import GpuLostError, Unavailable

    def read(uuid: str, metric: str) -> str:
        what = {"name": "name", "pci_bus_id": "PCI bus id"}[metric]
        try:
            value = nvml.read(uuid, metric)
        except GpuLostError:
            return f"{what} unknown: GPU lost"
        except Exception as err:  # any NVML error: the GPU must still be named, not crash a run
            return f"{what} unknown: {err}"
        return f"{what} unknown: {value.reason}" if isinstance(value, Unavailable) else str(value)

    return [
        Gpu(uuid, read(uuid, "name"), read(uuid, "pci_bus_id"), index)
        for index, uuid in enumerate(nvml.gpu_uuids())
    ]


class CudaUnusableError(RuntimeError):
    """CUDA cannot be initialised or read here; the message is one line."""


def cuda_from_torch() -> list[CudaDevice]:
    """CUDA's devices as torch numbers them, from their properties. This initialises CUDA
    first: before that, torch counts devices through NVML, which may differ from what CUDA
    shows (MIG instances, a GPU CUDA refuses). ``CudaUnusableError`` where CUDA fails."""
    import torch

    try:
        torch.cuda.init()
        count = torch.cuda.device_count()
        found = [torch.cuda.get_device_properties(index) for index in range(count)]
    except (RuntimeError, AssertionError) as err:
        raise CudaUnusableError(" ".join(str(err).split()) or type(err).__name__) from None
    devices = []
    for props in found:
        parts = [getattr(props, f"pci_{part}_id", None) for part in ("domain", "bus", "device")]
        bus = ""
        if all(isinstance(part, int) for part in parts):  # torch builds before 2.5 lack them
            bus = "{:08X}:{:02X}:{:02X}.0".format(*parts)  # NVIDIA GPUs are PCI function 0
        # CUDA names a MIG instance by its own UUID, which nvidia-smi and CUDA_VISIBLE_DEVICES
        # write "MIG-..."; torch prints it bare, as it prints a GPU's.
        mig = " MIG " in f" {props.name} " and not str(props.uuid).upper().startswith("MIG-")
        uuid = f"MIG-{props.uuid}" if mig else normalise_uuid(props.uuid)
        devices.append(CudaDevice(uuid, props.name, bus))
    return devices


def cuda_from_environment(
    nvml_gpus: Sequence[Gpu], environ: Mapping[str, str] = os.environ
) -> list[CudaDevice] | None:
    """The devices CUDA would show this process on a node with ``nvml_gpus``, in CUDA order,
    without asking CUDA: ``CUDA_VISIBLE_DEVICES`` applied to the GPUs in PCI bus order (the
    harness sets ``CUDA_DEVICE_ORDER=PCI_BUS_ID``). As the CUDA driver does, entries are
    indices or UUID prefixes, the list ends at the first entry that names no GPU, and a list
    naming one GPU twice shows none. None when the order cannot be told without CUDA:
    ``FASTEST_FIRST``, or a GPU whose bus id NVML could not give (a lost GPU has no place in
    the bus order)."""
    if environ.get("CUDA_DEVICE_ORDER", "PCI_BUS_ID") != "PCI_BUS_ID":
        return None
    if not all(_BUS_ID.fullmatch(gpu.pci_bus_id) for gpu in nvml_gpus):
        return None
    by_bus = sorted(nvml_gpus, key=lambda gpu: gpu.pci_bus_id.lower())
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    chosen: list[Gpu] = list(by_bus) if visible is None else []
    for entry in _entries(visible):
        gpu = _named(entry, by_bus)
        if gpu is None:
            break
        if gpu in chosen:  # CUDA refuses a list that names a GPU twice: it shows none
            return []
        chosen.append(gpu)
    return [CudaDevice(gpu.uuid, gpu.name, gpu.pci_bus_id) for gpu in chosen]


_BUS_ID = re.compile(r"[0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7]")


def _entries(visible: str | None) -> Iterable[str]:
    return [] if visible is None else [entry.strip() for entry in visible.split(",")]


def _named(entry: str, by_bus: Sequence[Gpu]) -> Gpu | None:
    if entry.isdigit():
        index = int(entry)
        return by_bus[index] if index < len(by_bus) else None
    if entry.upper().startswith("GPU-") and len(entry) > 4:
        matches = [gpu for gpu in by_bus if gpu.uuid.upper().startswith(entry.upper())]
        return matches[0] if len(matches) == 1 else None
    return None  # MIG instances and anything else: CUDA stops here, and so does the view


@dataclass(frozen=True)
class NodeGpus:
    """The node's GPUs (``identify``), and where their CUDA indices came from: ``torch``,
    ``CUDA_VISIBLE_DEVICES`` (what CUDA would show, ``cuda_from_environment``) or ``unknown``."""

    gpus: tuple[Gpu, ...]
    cuda_source: str = "unknown"

    @property
    def in_nvml_order(self) -> list[Gpu]:
        """The GPUs NVML lists, in its order."""
        return sorted((g for g in self.gpus if g.nvml_index is not None), key=_nvml_order)

    @property
    def in_cuda_order(self) -> list[Gpu]:
        """The GPUs CUDA shows this process, in its order."""
        return sorted((g for g in self.gpus if g.cuda_index is not None), key=_cuda_order)

    def cuda(self, index: int) -> Gpu:
        """The GPU ``cuda:index``; ``LookupError`` when CUDA shows none by that index."""
        for gpu in self.gpus:
            if gpu.cuda_index == index:
                return gpu
        raise LookupError(f"no GPU is cuda:{index} here ({self.cuda_source})")

    def of(self, device: torch.device) -> Gpu:
        """The GPU of a CUDA ``torch.device`` (``cuda`` alone is ``cuda:0``)."""
        if device.type != "cuda":
            raise LookupError(f"{device} is not a CUDA device")
        return self.cuda(device.index or 0)


def _nvml_order(gpu: Gpu) -> int:
    return gpu.nvml_index if gpu.nvml_index is not None else -1


def _cuda_order(gpu: Gpu) -> int:
    return gpu.cuda_index if gpu.cuda_index is not None else -1
