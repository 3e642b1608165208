"""Facts about the host and the software stack, for the report header and JUnit properties, and
the process environment the harness sets before any test runs.

Host facts never touch CUDA.
"""

import functools
import os
import socket
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from importlib import metadata

import torch

from harness import properties

NOT_AVAILABLE = "n/a"
UNSET = "(unset)"

# Set (unless the user set them) before anything initialises CUDA or runs a matmul:
# - CUDA_DEVICE_ORDER: CUDA numbers GPUs in PCI bus order, as nvidia-smi and NVML do, rather
#   than fastest first;
# - CUBLAS_WORKSPACE_CONFIG: torch refuses deterministic cuBLAS matmuls (the cross-GPU
#   agreement check) unless it fixes cuBLAS's workspace, and reads it once, at the process's
#   first cuBLAS call, so it must be set before any test runs one.
PROCESS_ENVIRONMENT = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}


def prepare_environment(environ: MutableMapping[str, str] = os.environ) -> None:
    """Set ``PROCESS_ENVIRONMENT``'s variables the user has not set."""
    for name, value in PROCESS_ENVIRONMENT.items():
        environ.setdefault(name, value)


def recorded_environment(environ: Mapping[str, str] = os.environ) -> list[properties.Property]:
    """``env.<NAME>`` for each variable of ``properties.ENVIRONMENT``, ``(unset)`` if unset."""
    return [(properties.env(name), environ.get(name, UNSET)) for name in properties.ENVIRONMENT]


@dataclass(frozen=True)
class HostFacts:
    """Versions are strings, or None where the component is absent."""

    hostname: str
    torch: str
    cuda: str | None
    cudnn: str | None
    nccl: str | None
    driver: str | None
    nvidia_ml_py: str | None = None

    def versions(self) -> dict[str, str]:
        """Component versions by name (``properties.VERSIONS``), ``n/a`` where absent."""
        return {name: getattr(self, name) or NOT_AVAILABLE for name in properties.VERSIONS}


@functools.cache
def host_facts() -> HostFacts:
    """Host name and stack versions, computed once per process."""
    cuda = torch.version.cuda
    return HostFacts(
        hostname=socket.gethostname(),
        torch=torch.__version__,
        cuda=cuda,
        cudnn=_cudnn_version() if cuda else None,
        nccl=_nccl_version() if cuda else None,
        driver=driver_version(),
        nvidia_ml_py=_distribution_version("nvidia-ml-py"),
    )


def _distribution_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def driver_version() -> str | None:
    """The NVIDIA driver version from NVML, or None where NVML is missing or fails."""
    from harness.nvml import NvmlUnavailableError, RealNvml

    try:
        nvml = RealNvml()
    except NvmlUnavailableError:
        return None
    try:
        return nvml.driver_version()
    except nvml.nv.NVMLError:
        return None
    finally:
        nvml.close()


def _cudnn_version() -> str | None:
    try:
        version = torch.backends.cudnn.version()  # e.g. 91002 for 9.10.2
    except RuntimeError:  # a cuDNN torch cannot use; the suites that need it will say so
        return None
    if version is None:
        return None
    major, rest = divmod(version, 10000) if version >= 90000 else divmod(version, 1000)
    minor, patch = divmod(rest, 100)
    return f"{major}.{minor}.{patch}"


def _nccl_version() -> str | None:
    try:
        version = torch.cuda.nccl.version()
    except (AttributeError, RuntimeError):  # a build without NCCL
        return None
    return ".".join(map(str, version)) if isinstance(version, tuple) else str(version)
