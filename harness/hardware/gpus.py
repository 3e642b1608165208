"""The GPUs of the node under test, named the way every hardware failure names them."""

from dataclasses import dataclass

from harness.nvml import GpuLostError, Nvml, Unavailable


@dataclass(frozen=True)
class Gpu:
    """One GPU as NVML lists it: ``index`` is NVML's (PCI bus) order, not CUDA's."""

    index: int
    uuid: str
    pci_bus_id: str

    @property
    def label(self) -> str:
        """``GPU 3 (GPU-5f0c..., 00000000:1A:00.0)``: index, UUID and PCI bus id, so the one
        GPU can be found on the node whichever numbering the reader uses."""
        return f"GPU {self.index} ({self.uuid}, {self.pci_bus_id})"


def list_gpus(nvml: Nvml) -> list[Gpu]:
    """Every GPU NVML lists; a bus id NVML cannot give is written as such, not raised."""
    gpus = []
    for index, uuid in enumerate(nvml.gpu_uuids()):
        try:
            bus = nvml.read(uuid, "pci_bus_id")
        except GpuLostError:
            bus = "PCI bus id unknown: GPU lost"
        if isinstance(bus, Unavailable):
            bus = f"PCI bus id unknown: {bus.reason}"
        gpus.append(Gpu(index, uuid, str(bus)))
    return gpus
